"""Exercises with self-checks and solutions, one module per notebook (``nb02`` holds notebook 02's).

A notebook's exercise is a function for the learner to fill in, then one call::

    def exercise_1(model, images):
        ...                                       # your code: return the map, shape (N, H, W)

    check_exercise("02.1", exercise_1, model=model, images=images)

``check_exercise`` calls the learner's function with the keyword arguments given (or takes a plain value),
and while the body is still ``...`` it only says "not answered yet", so the notebook runs from top to bottom
as it is. Once there is an answer the exercise's check judges it: it passes with a short message, or fails
with an ``AssertionError`` that says what is off. ``show_solution("02.1")`` prints our solution and the
answer in words — open it only on purpose. ``tests/test_exercises.py`` runs every solution through its
check, and every exercise's typical mistake (``wrong``) through the same check, which must reject it: a
solution that rots, or a check that cannot fail, fails CI.
"""
from __future__ import annotations

import importlib
import inspect
import textwrap
from dataclasses import dataclass
from typing import Any, Callable, Optional

__all__ = ["Exercise", "register", "get_exercise", "exercise_ids", "check_exercise", "show_solution"]

#: The notebook modules that register exercises, imported on first use.
NOTEBOOK_MODULES = ("nb00", "nb01", "nb02", "nb03", "nb04", "nb05", "nb07", "nb08", "nb09", "nb10")


@dataclass(frozen=True)
class Exercise:
    """One exercise: what it asks, how an answer is judged, our solution and a typical mistake.

    ``check(value, **context)`` raises ``AssertionError`` (with a message for the learner) when the
    value is wrong and returns a one-line message when it is right. ``solution(**context)`` is the
    function a learner would write; ``wrong(**context)`` a plausible wrong answer the check must reject.
    With ``takes_function=True`` the check receives the learner's function itself, to call it on more inputs.
    ``make_context()`` builds the keyword arguments the notebook passes (fast sizes; used by the tests).
    """

    id: str
    title: str
    check: Callable[..., str]
    solution: Callable[..., Any]
    wrong: Callable[..., Any]
    make_context: Callable[[], dict]
    answer: str = ""
    #: True when the check needs the learner's function itself (to call it on other inputs), not only its value.
    takes_function: bool = False

    @property
    def notebook(self) -> str:
        return self.id.split(".")[0]


_REGISTRY: dict[str, Exercise] = {}
_loaded = False


def register(exercise: Exercise) -> Exercise:
    """Add an exercise to the registry (each notebook module calls this once per exercise)."""
    if exercise.id in _REGISTRY and _REGISTRY[exercise.id] is not exercise:
        raise ValueError(f"exercise {exercise.id!r} is registered twice")
    _REGISTRY[exercise.id] = exercise
    return exercise


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for name in NOTEBOOK_MODULES:
            try:
                importlib.import_module(f"{__name__}.{name}")
            except ModuleNotFoundError as error:
                if error.name != f"{__name__}.{name}":
                    raise
        _loaded = True


def exercise_ids(notebook: Optional[str] = None) -> list[str]:
    """The registered exercise ids ("03.2", ...), all or those of one notebook ("03")."""
    _load_all()
    return sorted(key for key, exercise in _REGISTRY.items() if notebook is None or exercise.notebook == notebook)


def get_exercise(exercise_id: str) -> Exercise:
    """The exercise with this id; an unknown id lists the known ones."""
    _load_all()
    try:
        return _REGISTRY[exercise_id]
    except KeyError:
        raise KeyError(
            f"no exercise {exercise_id!r}; the exercises are {', '.join(exercise_ids())}. "
            "Ids are 'notebook.number', as in the exercise's heading, e.g. '03.2'."
        ) from None


def _not_answered(value: Any) -> bool:
    return value is None or value is Ellipsis


def check_exercise(exercise_id: str, answer: Any, **context: Any) -> bool:
    """Judge a learner's answer: a function (called with ``context``) or a value.

    Returns True when the answer passes, False while it is not answered yet (the function's body is
    still ``...``, or the value is None). A wrong answer raises ``AssertionError`` saying what is off.
    """
    exercise = get_exercise(exercise_id)
    value = answer(**context) if callable(answer) else answer
    if _not_answered(value):
        print(
            f"Exercise {exercise_id} ({exercise.title}): not answered yet. Write your answer above and rerun this cell.\n"
            f"Stuck? show_solution({exercise_id!r}) prints our solution."
        )
        return False
    if exercise.takes_function:
        if not callable(answer):
            raise TypeError(f"exercise {exercise_id} expects a function, got {type(answer).__name__}")
        message = exercise.check(answer, **context)
    else:
        message = exercise.check(value, **context)
    print(f"Exercise {exercise_id} ({exercise.title}) passes: {message}")
    return True


def show_solution(exercise_id: str) -> str:
    """Print our solution to an exercise (its code and the answer in words), and return it as text."""
    exercise = get_exercise(exercise_id)
    code = textwrap.dedent(inspect.getsource(exercise.solution))
    text = f"Solution to exercise {exercise_id} ({exercise.title}):\n\n{code}"
    if exercise.answer:
        text += "\n" + textwrap.fill(" ".join(exercise.answer.split()), width=100) + "\n"
    print(text)
    return text
