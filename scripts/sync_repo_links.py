"""Keep the Colab badges and setup cells of every notebook in step with pyproject's [tool.nnvis].

The GitHub path of the course lives in one place, ``pyproject.toml``::

    [tool.nnvis]
    github = "owner/repo"
    branch = "main"

Run ``python scripts/sync_repo_links.py`` after changing it: the first cell of every notebook
gets its "Open in Colab" badge, the second cell the canonical setup cell, and the README its
badges. ``tests/test_notebooks.py`` fails when they disagree.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"


def course_repo() -> tuple[str, str]:
    """(owner/repo, branch) from pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[tool.nnvis]", 1)[1].split("\n[", 1)[0]
    github = re.search(r'^github\s*=\s*"([^"]+)"', section, re.M).group(1)
    branch = re.search(r'^branch\s*=\s*"([^"]+)"', section, re.M).group(1)
    return github, branch


def colab_url(notebook: str) -> str:
    github, branch = course_repo()
    return f"https://colab.research.google.com/github/{github}/blob/{branch}/notebooks/{notebook}"


def badge(notebook: str) -> str:
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(notebook)})"


def setup_cell_source() -> str:
    github, branch = course_repo()
    return (
        "# Setup. In Colab: install the course helpers (and graphviz, for notebook 01).\n"
        "# Elsewhere nothing happens here: `make course`, `make lab` or `pip install -e .` installed them.\n"
        "import subprocess, sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        "    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\",\n"
        f"                    \"nnvis-helpers @ git+https://github.com/{github}@{branch}\"], check=True)\n"
        "    subprocess.run(\"command -v dot >/dev/null || apt-get -qq install -y graphviz >/dev/null\",\n"
        "                   shell=True, check=True)"
    )


_BADGE_PATTERN = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")


def sync_notebook(path: Path) -> bool:
    notebook = json.loads(path.read_text())
    cells = notebook["cells"]
    first = "".join(cells[0]["source"])
    new_first = _BADGE_PATTERN.sub(badge(path.name), first) if _BADGE_PATTERN.search(first) else badge(path.name) + "\n\n" + first
    new_setup = setup_cell_source()
    changed = new_first != first or "".join(cells[1]["source"]) != new_setup
    cells[0]["source"] = new_first
    cells[1]["source"] = new_setup
    if changed:
        path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
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
