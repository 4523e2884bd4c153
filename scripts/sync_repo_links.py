"""Keep the Colab badges and setup cells of every notebook in step with pyproject's [tool.nnvis].

What a learner installs in Colab is set in one place, ``pyproject.toml``::

    [project]
    version = "0.2.0"

    [tool.nnvis]
    github = "owner/repo"
    release = "v0.2.0"                 # a tag (v + project.version) or a 40-hex commit, never a branch
    colab_no_deps = { "05" = ["torchattacks>=3.5"] }   # peer libraries a notebook compares with

Run ``python scripts/sync_repo_links.py`` after changing it: the first cell of every notebook
gets its "Open in Colab" badge (opening the notebook of that release, so notebook and helpers
match), the second cell the canonical setup cell, and the README its badges.
``tests/test_notebooks.py`` fails when they disagree.

Releasing: raise ``project.version``, set ``release = "v<version>"``, run this script, commit,
then ``git tag v<version> && git push --tags``.
"""
from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
RELEASE_PATTERN = re.compile(r"^(v\d+\.\d+\.\d+|[0-9a-f]{40})$")


def _settings() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def course_repo() -> tuple[str, str]:
    """(owner/repo, release) from pyproject.toml; the release is a tag or a commit, never a branch."""
    settings = _settings()["tool"]["nnvis"]
    github, release = settings["github"], settings["release"]
    if not RELEASE_PATTERN.match(release):
        raise ValueError(
            f"[tool.nnvis] release = {release!r}: use a tag 'vX.Y.Z' or a full commit hash, "
            "not a branch (a branch moves, and the notebooks would install helpers they were not tested with)"
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
        "# Setup. In Colab: install the course helpers of this notebook's release (and graphviz, for notebook 01).",
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
