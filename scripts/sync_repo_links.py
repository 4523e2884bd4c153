"""Keep the Colab badges and setup cells of every notebook in step with pyproject's [tool.nnvis].

What a learner opens and installs in Colab is set in one place, ``pyproject.toml``::

    [tool.nnvis]
    github = "owner/repo"
    release = "main"                   # the default branch; or a tag vX.Y.Z / a 40-hex commit that is public
    colab_no_deps = { "05" = ["torchattacks>=3.5"] }   # peer libraries a notebook compares with

Run ``python scripts/sync_repo_links.py`` after changing it: the first cell of every notebook
gets its "Open in Colab" badge (opening the notebook at that ref, so notebook and helpers
match), the second cell the canonical setup cell, and the README its badges.
``tests/test_notebooks.py`` fails when they disagree, and when the ref is not in this clone's
history or lacks a notebook (a badge that would open a 404).

Why the default branch: tags and pushes made where this course is written never reach the public
repository, so a badge at a tag we create opens nothing. A learner who clicks a badge opens main's
notebook and installs main's helpers, tested together by CI on every change of main. Any other
branch is refused: it may be deleted, and nothing tests it.
"""
from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
DEFAULT_BRANCH = "main"
RELEASE_PATTERN = re.compile(r"^(main|v\d+\.\d+\.\d+|[0-9a-f]{40})$")


def _settings() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def course_repo() -> tuple[str, str]:
    """(owner/repo, release) from pyproject.toml; the release is the default branch, a tag or a commit."""
    settings = _settings()["tool"]["nnvis"]
    github, release = settings["github"], settings["release"]
    if not RELEASE_PATTERN.match(release):
        raise ValueError(
            f"[tool.nnvis] release = {release!r}: use the default branch {DEFAULT_BRANCH!r}, a tag 'vX.Y.Z' that is "
            "public, or a full commit hash, not another branch (it may vanish, and CI does not test it)"
        )
    return github, release


def colab_no_deps(notebook: str) -> list[str]:
    """Peer libraries this notebook installs in Colab with --no-deps (they pin old versions of what Colab has)."""
    return list(_settings()["tool"]["nnvis"].get("colab_no_deps", {}).get(notebook[:2], []))


def colab_url(notebook: str) -> str:
    github, release = course_repo()
    return f"https://colab.research.google.com/github/{github}/blob/{release}/notebooks/{notebook}"


def badge(notebook: str) -> str:
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(notebook)})"


def setup_cell_source(notebook: str) -> str:
    github, release = course_repo()
    peers = colab_no_deps(notebook)
    lines = [
        f"# Setup. In Colab: install the course helpers from {release} of the course, as this notebook (and graphviz, for 01).",
        "# Elsewhere nothing happens here: `make course`, `make lab` or `pip install -e .` installed them.",
        "import subprocess, sys",
        "",
        'if "google.colab" in sys.modules:',
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q",',
        f'                    "nnvis-helpers @ git+https://github.com/{github}@{release}"], check=True)',
    ]
    if peers:
        lines += [
            "    # The peer libraries this notebook compares with. --no-deps: they pin old versions of packages Colab has.",
            '    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", '
            + ", ".join(json.dumps(p) for p in peers) + "], check=True)",
        ]
    lines += [
        '    subprocess.run("command -v dot >/dev/null || apt-get -qq install -y graphviz >/dev/null",',
        "                   shell=True, check=True)",
    ]
    return "\n".join(lines)


_BADGE_PATTERN = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")


def sync_notebook(path: Path) -> bool:
    notebook = json.loads(path.read_text())
    cells = notebook["cells"]
    first = "".join(cells[0]["source"])
    new_first = _BADGE_PATTERN.sub(badge(path.name), first) if _BADGE_PATTERN.search(first) else badge(path.name) + "\n\n" + first
    new_setup = setup_cell_source(path.name)
    changed = new_first != first or "".join(cells[1]["source"]) != new_setup
    cells[0]["source"] = new_first
    cells[1]["source"] = new_setup
    if changed:
        path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    return changed


def sync_readme(path: Path) -> bool:
    text = path.read_text()
    new = re.sub(
        r"\(https://colab\.research\.google\.com/github/[^)]*/notebooks/([0-9]{2}_[A-Za-z0-9_]+\.ipynb)\)",
        lambda match: f"({colab_url(match.group(1))})",
        text,
    )
    if new != text:
        path.write_text(new)
    return new != text


def main() -> int:
    changed = [p.name for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) if sync_notebook(p)]
    if (ROOT / "README.md").exists() and sync_readme(ROOT / "README.md"):
        changed.append("README.md")
    print("updated: " + ", ".join(changed) if changed else "everything already points at " + "@".join(course_repo()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
