"""Exercises of notebook 10 (which attribution to believe), with a self-check, our solution and a typical mistake.

* 10.1 Does the ranking survive another baseline? How many places each method moves.
"""
from __future__ import annotations

from . import Exercise, register


def _ranks(auc: dict) -> dict:
    """Rank 1 = the smallest deletion AUC (the best); ties keep the given order."""
    return {name: place for place, name in enumerate(sorted(auc, key=lambda name: auc[name]), start=1)}


def _ex1_context():
    # Deletion AUCs of a run of notebook 10 (fast preset), rounded: enough to check the bookkeeping.
    blurred = {"gradient": 0.31, "gradient × input": 0.22, "Grad-CAM": 0.18, "occlusion": 0.20, "random (control)": 0.41}
    black = {"gradient": 0.27, "gradient × input": 0.29, "Grad-CAM": 0.12, "occlusion": 0.24, "random (control)": 0.35}
    return {"blurred_auc": blurred, "black_auc": black}


def solution_1(blurred_auc, black_auc):
    """{method: |rank with the blurred baseline - rank with black|}, rank 1 = the smallest AUC."""
    with_blur, with_black = _ranks(blurred_auc), _ranks(black_auc)
    return {name: abs(with_blur[name] - with_black[name]) for name in blurred_auc}


def wrong_1(blurred_auc, black_auc):
    """The signed difference: a method that moves down looks like it moved -2 places."""
    with_blur, with_black = _ranks(blurred_auc), _ranks(black_auc)
    return {name: with_blur[name] - with_black[name] for name in blurred_auc}


def check_1(answer, blurred_auc, black_auc):
    assert isinstance(answer, dict), f"return a dict {{method: places}}, got {type(answer).__name__}"
    assert set(answer) == set(blurred_auc), f"give one entry per method: {sorted(blurred_auc)}"
    expected = solution_1(blurred_auc, black_auc)
    for name, places in answer.items():
        if places != expected[name]:
            hint = " — count places, not directions: take the absolute value" if places == -expected[name] else (
                " — rank 1 is the smallest AUC in each column")
            raise AssertionError(f"{name}: moves {expected[name]} places, not {places}{hint}")
    moved = {name: places for name, places in expected.items() if places}
    return (f"{len(moved)} of {len(expected)} methods change places between the baselines"
            + (f"; most: {max(moved, key=moved.get)} ({max(moved.values())})" if moved else ""))


register(Exercise(
    id="10.1", title="does the ranking survive another baseline?", check=check_1, solution=solution_1, wrong=wrong_1,
    make_context=_ex1_context,
    answer="Rank the methods by deletion AUC under each baseline and compare positions. Several methods move: what "
           "'removing' a pixel means is part of the measure. A black baseline removes dark pixels at no cost, so maps "
           "that point at bright regions look better with it; a blur removes detail, so maps that point at edges and "
           "texture look better with that.",
))
