"""Every notebook: committed without outputs, with the course's skeleton and the canonical setup cell."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import sync_repo_links  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks/NN_topic.ipynb found"
    assert NOTEBOOKS[0].name == "00_start_here.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped(path):
    notebook = json.loads(path.read_text())
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{path.name} cell {index} has outputs: strip them before committing"
            assert cell.get("execution_count") is None, f"{path.name} cell {index} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_skeleton(path):
    cells = json.loads(path.read_text())["cells"]
    first = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown"
    assert sync_repo_links.badge(path.name) in first, f"{path.name}: Colab badge missing or stale; run scripts/sync_repo_links.py"
    assert first.lstrip("[").count("\n# ") >= 1 or "\n# " in "\n" + first, f"{path.name}: a '# Title' is expected in the first cell"
    assert cells[1]["cell_type"] == "code"
    assert "".join(cells[1]["source"]) == sync_repo_links.setup_cell_source(), (
        f"{path.name}: the second cell must be the canonical setup cell; run scripts/sync_repo_links.py"
    )
    headings = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown").lower()
    for section in ("## summary", "## exercises", "## references"):
        assert section in headings, f"{path.name}: section '{section}' missing"
