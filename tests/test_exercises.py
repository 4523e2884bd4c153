"""Every exercise of notebooks 00–05: its solution passes its self-check, its typical mistake fails it,
and the notebook's exercise headings, its `check_exercise` calls and the registry name the same exercises."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nnvis_helpers.exercises import check_exercise, exercise_ids, get_exercise, show_solution

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_WITH_EXERCISES = ("00", "01", "02", "03", "04", "05", "07", "08", "09", "10")
HEADING = re.compile(r"^### Exercise (\d\d\.\d+)\b", re.M)
CALL = re.compile(r"check_exercise\(\s*[\"'](\d\d\.\d+)[\"']")


def _notebook(prefix: str) -> Path:
    (path,) = (ROOT / "notebooks").glob(f"{prefix}_*.ipynb")
    return path


def _cells(path: Path) -> list[tuple[str, str]]:
    cells = json.loads(path.read_text())["cells"]
    return [(cell["cell_type"], "".join(cell["source"])) for cell in cells]


@pytest.mark.parametrize("exercise_id", exercise_ids())
def test_solution_passes_its_check(exercise_id, capsys):
    exercise = get_exercise(exercise_id)
    context = exercise.make_context()
    assert check_exercise(exercise_id, exercise.solution, **context) is True
    assert "passes" in capsys.readouterr().out


@pytest.mark.parametrize("exercise_id", exercise_ids())
def test_typical_mistake_fails_its_check(exercise_id):
    exercise = get_exercise(exercise_id)
    context = exercise.make_context()
    with pytest.raises(AssertionError):
        check_exercise(exercise_id, exercise.wrong, **context)


@pytest.mark.parametrize("exercise_id", exercise_ids())
def test_unanswered_exercise_only_says_so(exercise_id, capsys):
    def unanswered(**context):
        ...

    assert check_exercise(exercise_id, unanswered, **get_exercise(exercise_id).make_context()) is False
    out = capsys.readouterr().out
    assert "not answered yet" in out and f"show_solution({exercise_id!r})" in out


@pytest.mark.parametrize("exercise_id", exercise_ids())
def test_show_solution_prints_code_and_answer(exercise_id, capsys):
    text = show_solution(exercise_id)
    assert "def " in text and capsys.readouterr().out.strip()
    assert get_exercise(exercise_id).answer.strip(), f"exercise {exercise_id}: say the answer in words too"


@pytest.mark.parametrize("prefix", NOTEBOOKS_WITH_EXERCISES)
def test_notebook_exercises_match_the_registry(prefix):
    path = _notebook(prefix)
    cells = _cells(path)
    headings = [match for kind, source in cells if kind == "markdown" for match in HEADING.findall(source)]
    calls = [match for kind, source in cells if kind == "code" for match in CALL.findall(source)]
    assert headings, f"{path.name}: no '### Exercise {prefix}.1 — title' headings under '## Exercises'"
    assert headings == calls, f"{path.name}: each exercise heading needs one check_exercise call, in order: {headings} vs {calls}"
    assert sorted(headings) == exercise_ids(prefix), f"{path.name}: the notebook's exercises {headings} vs the registry {exercise_ids(prefix)}"
    assert all(h.startswith(prefix + ".") for h in headings)


def test_unknown_exercise_lists_the_known_ones():
    with pytest.raises(KeyError, match="03"):
        get_exercise("99.9")
