"""The notebook runner behind `make course` and `make test-matrix`, and its assert-margin logger."""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import nbformat
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import assert_margins  # noqa: E402
import run_notebooks  # noqa: E402


def run_with_margins(source: str, log: Path) -> dict:
    """Execute ``source`` as the kernel would after assert_margins.install, return its namespace."""
    assert_margins._LOG = str(log)
    tree = assert_margins._LogComparisons().visit(ast.parse(source))
    namespace = {"__nnvis_compare__": assert_margins.__nnvis_compare__, "torch": torch}
    exec(compile(tree, "<cell>", "exec"), namespace)
    return namespace


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_margins_of_bounds_chains_and_tensors(tmp_path):
    log = tmp_path / "claims.jsonl"
    run_with_margins("rate = 0.95\nassert rate >= 0.9\nassert 0.30 < 0.4 < 0.45\n"
                     "assert (torch.tensor([1.0, 2.0]) < 4).all()\nassert rate == 0.95", log)
    seen = records(log)
    assert [(r["op"], round(r["margin"], 4)) for r in seen] == [(">=", round(0.05 / 0.95, 4)), ("<", 0.25), ("<", 0.1111), ("<", 0.5)]
    assert seen[-1]["left"] == 2.0 and seen[-1]["right"] == 4.0, "a tensor's element closest to the bound is kept"
    assert all(r["assert"] for r in seen)


def test_logged_asserts_evaluate_as_python_does(tmp_path):
    log = tmp_path / "claims.jsonl"
    calls = run_with_margins("calls = []\ndef f(v):\n    calls.append(v)\n    return v\n"
                             "assert not (f(1) > f(2) > f(3))\nassert f(5) < 6 or f(99)", log)["calls"]
    assert calls == [1, 2, 5], "operands are evaluated once, left to right, and a false link stops the chain"
    with pytest.raises(AssertionError, match="too small"):
        run_with_margins("value = 0.4\nassert value >= 0.45, 'too small'", log)
    assert records(log)[-1]["margin"] < 0, "a failed bound is logged with its negative margin"


def notebook(tmp_path, *sources) -> Path:
    path = tmp_path / "99_check.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources]), path)
    return path


def test_execute_goes_on_after_a_failing_cell_and_writes_its_html(tmp_path):
    path = notebook(tmp_path, "x = 1", "assert x > 2, 'x is too small'", "y = 3\nassert y >= 1", "raise ValueError('late')")
    result = run_notebooks.execute(path, tmp_path, tmp_path / "claims.jsonl", timeout=120)
    assert result["failures"] == ["Cell 1: AssertionError: x is too small", "Cell 3: ValueError: late"]
    html = (tmp_path / "99_check.html").read_text()
    assert "x is too small" in html and "late" in html, "the page shows each error where it happened"
    margins = {r["assert"]: r["margin"] for r in records(tmp_path / "claims.jsonl")}
    assert margins == {"x > 2": pytest.approx(-0.5), "y >= 1": pytest.approx(2 / 3)}


def test_the_matrix_grid_names_every_setting():
    grid = dict(run_notebooks.settings(["native", "default"], [1, 2], [0, 1]))
    assert list(grid) == ["native/1t", "native/2t", "default/1t", "default/2t", "native/2t/seed1"]
    assert grid["default/1t"]["ATEN_CPU_CAPABILITY"] == "default" and grid["default/1t"]["OMP_NUM_THREADS"] == "1"
    assert grid["native/2t/seed1"]["NNVIS_SEED"] == "1"


def test_grid_options_are_comma_lists_so_notebook_names_stay_notebooks():
    parse = run_notebooks.comma_list(int)
    assert parse("1,2") == [1, 2] and parse("0") == [0]
    with pytest.raises(Exception, match="not among"):
        run_notebooks.comma_list(str, run_notebooks.ARITHMETIC)("native,avx9")
