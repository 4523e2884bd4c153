"""A notebook's claims about measured figures, printed with their bound and how close they came.

A notebook proves what it says with ``assert`` cells. When the figure is measured (an optimization's
result, a random draw, a statistic), the learner should see the figure, the bound and the margin, so
a pass by a hair reads differently from a pass by a mile::

    assert claim("PGD-10 fools", success_rate, ">=", 0.9)
    # PGD-10 fools: 1 >= 0.9 holds, margin 0.1 (10%)

**The rule for claims that depend on the model.** A figure measured on one network says nothing
certain about another. Pass ``model=`` and the claim is hard (the assert stops the notebook) only on
the models it was verified on, ``verified_on`` (pretrained EfficientNet-Lite0, the model every test
runs); on any other model (VGG-16 in Colab, random weights, your own network) it prints the same
line ending in "verified on efficientnet_lite0, shown here only" and lets the notebook go on.
Equalities against a library (ours = captum) are not claims: they stay hard asserts on every model::

    assert claim("DeepFool crosses with lead <= 1e-3", lead, "<=", 1e-3, model=model)

The margin is what the test matrix (``make test-matrix``) compares across CPU arithmetics, thread
counts and seeds: ``relative_margin`` is the gap to the bound over the larger of the two sizes
(the percentage printed), negative when the claim fails. When ``NNVIS_CLAIMS_LOG`` names a file, each claim is appended to
it as one JSON line.
"""
from __future__ import annotations

import json
import math
import numbers
import operator
import os

__all__ = ["VERIFIED_ON", "claim", "relative_margin"]

_OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def relative_margin(value: float, op: str, bound: float) -> float:
    """How far ``value op bound`` is from failing, relative to the larger size: 0.1 = 10 % to spare, < 0 = fails."""
    gap = bound - value if op in ("<", "<=") else value - bound
    return gap / max(abs(value), abs(bound), 1e-12)


VERIFIED_ON = ("efficientnet_lite0",)


def claim(text: str, value, op: str, bound, model=None, verified_on=VERIFIED_ON) -> bool:
    """Print ``text: value op bound`` with the margin, and return whether it holds; use it as ``assert claim(...)``.

    ``value`` and ``bound`` are numbers (a one-element tensor or array is read as its number);
    ``op`` is one of ``<``, ``<=``, ``>``, ``>=``. With ``model=`` (a model from ``load_model``) the
    claim is only checked on pretrained models named in ``verified_on``; on any other it is printed
    and returns True (see the module's rule).

    >>> assert claim("completeness gap", 0.004, "<", 0.01)
    completeness gap: 0.004 < 0.01 holds, margin 0.006 (60%)
    """
    if op not in _OPERATORS:
        raise ValueError(f"op must be one of {', '.join(_OPERATORS)}, got {op!r}: claim('what', value, '>=', bound).")
    value, bound = _number(value, "value"), _number(bound, "bound")
    holds = _OPERATORS[op](value, bound)
    margin = relative_margin(value, op, bound)
    gap = abs(bound - value)
    verdict = f"holds, margin {gap:.3g} ({margin:.0%})" if holds else f"FAILS, short by {gap:.3g}"
    unverified = _unverified_on(model, verified_on)
    if unverified:
        verdict = f"{'holds' if holds else 'does not hold'}: verified on {', '.join(verified_on)}, shown here only ({unverified})"
    print(f"{text}: {value:.4g} {op} {bound:.4g} {verdict}")
    log = os.environ.get("NNVIS_CLAIMS_LOG")
    if log:
        with open(log, "a") as file:
            file.write(json.dumps({"assert": text, "op": op, "left": value, "right": bound, "margin": margin,
                                   "checked": not unverified}) + "\n")
    return holds or bool(unverified)


def _unverified_on(model, verified_on) -> str:
    """'' when the claim is checked on ``model``; else what the model is ("vgg16, random weights")."""
    if model is None:
        return ""
    if isinstance(verified_on, str) or not verified_on:
        raise TypeError(f"verified_on must be a tuple of model names such as ('efficientnet_lite0',), got {verified_on!r}.")
    info = getattr(model, "info", None)
    name = getattr(info, "name", None)
    if name is None:
        return f"your own {type(model).__name__}"
    pretrained = getattr(info, "pretrained", True)
    if name in verified_on and pretrained:
        return ""
    return name if pretrained else f"{name}, random weights"


def _number(value, name: str) -> float:
    if hasattr(value, "item") and not isinstance(value, numbers.Number):   # a tensor or an array of one element
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            raise TypeError(f"claim: {name} must be one number, got an array of shape {tuple(value.shape)}; "
                            "reduce it first (.min(), .max(), .mean()).") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise TypeError(f"claim: {name} must be a number, got {value!r}.")
    return float(value)
