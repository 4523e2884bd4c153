"""Every notebook: committed without outputs, with the course's skeleton and the canonical setup cell."""
from __future__ import annotations

import json
import re
import subprocess
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
    assert "".join(cells[1]["source"]) == sync_repo_links.setup_cell_source(path.name), (
        f"{path.name}: the second cell must be the canonical setup cell; run scripts/sync_repo_links.py"
    )
    headings = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown").lower()
    for section in ("## summary", "## exercises", "## references"):
        assert section in headings, f"{path.name}: section '{section}' missing"


# A code cell draws a figure when it calls one of these; the Markdown cell right after it is the caption.
FIGURE_CALL = re.compile(
    r"\b(show_images|show_heatmap|show_unit|show_cell|plot_[a-z_]+|draw_[a-z_]+|plt\.subplots|plt\.figure|"
    r"visualize_image_attr\w*)\("
)
CAPTION = "*What to look for:*"


def _sources(path):
    return [(cell["cell_type"], "".join(cell["source"])) for cell in json.loads(path.read_text())["cells"]]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_states_prerequisites_and_time(path):
    head = "\n".join(source for kind, source in _sources(path)[:4] if kind == "markdown")
    assert "**Prerequisites:**" in head, f"{path.name}: say what a learner should know first ('**Prerequisites:** ...') near the top"
    assert re.search(r"\*\*Time:\*\* about \d+", head), f"{path.name}: give a time estimate ('**Time:** about N min ...') near the top"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_figure_has_a_caption(path):
    cells = _sources(path)
    for index, (kind, source) in enumerate(cells):
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))
        if kind == "code" and FIGURE_CALL.search(code) and "def " not in code.split(FIGURE_CALL.search(code).group(0))[0]:
            following = cells[index + 1] if index + 1 < len(cells) else ("", "")
            assert following[0] == "markdown" and following[1].lstrip().startswith(CAPTION), (
                f"{path.name} cell {index} draws a figure: the next cell should be a Markdown caption starting "
                f"with {CAPTION!r}\n---\n{source[:300]}"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_is_shown_as_code_cells_and_installs_live_in_the_setup_cell(path):
    cells = _sources(path)
    for index, (kind, source) in enumerate(cells[2:], start=2):
        if kind != "code":
            continue
        assert "inspect.getsource" not in source, (
            f"{path.name} cell {index}: show the method as a code cell a learner can read and edit, not as printed source"
        )
        assert not re.search(r"pip install|\"pip\"|'pip'", source), (
            f"{path.name} cell {index}: installs belong in the setup cell (cell 1), not mid-notebook"
        )


def _git(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def test_every_badge_and_setup_cell_opens_a_ref_that_holds_every_notebook():
    github, release = sync_repo_links.course_repo()
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        assert f"git+https://github.com/{github}@{release}\"" in "".join(cells[1]["source"]), f"{path.name}: setup cell"
        assert f"/blob/{release}/notebooks/{path.name})" in "".join(cells[0]["source"]), f"{path.name}: badge"
    assert _git("rev-parse", "--git-dir").returncode == 0, "run the tests in a git clone of the course"
    refs = [release, f"origin/{release}", f"refs/remotes/origin/{release}"]
    ref = next((r for r in refs if _git("rev-parse", "--verify", "--quiet", f"{r}^{{commit}}").returncode == 0), None)
    assert ref is not None, (
        f"the badges open {release!r}, which is not in this clone's history: a learner would get a 404. "
        "Point [tool.nnvis] release at the default branch and run scripts/sync_repo_links.py"
    )
    committed = _git("ls-tree", "--name-only", "HEAD", "notebooks/").stdout.split()
    missing = [name for name in committed if name.endswith(".ipynb") and _git("cat-file", "-e", f"{ref}:{name}").returncode]
    assert not missing, f"{release} lacks {missing}: their badges would open a 404 until it holds them"


def test_another_branch_as_release_is_refused(monkeypatch):
    settings = sync_repo_links._settings()
    settings["tool"]["nnvis"]["release"] = "feature-x"
    monkeypatch.setattr(sync_repo_links, "_settings", lambda: settings)
    with pytest.raises(ValueError, match="not another branch"):
        sync_repo_links.course_repo()