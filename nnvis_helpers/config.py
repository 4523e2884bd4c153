"""The quality preset of the whole course, read from one place, and seeding.

Three presets:

* ``fast``: ``NNVIS_FAST=1`` (set by ``make test``). Fewest steps and smallest images that
  still run the real code path, so every notebook finishes in CI in a few minutes.
* ``full``: a GPU is present. The settings of the papers, for the best pictures.
* ``cpu``: no GPU. In between: good pictures on a laptop in reasonable time.

``NNVIS_QUALITY=fast|cpu|full`` forces a preset (``NNVIS_FAST=1`` wins over it).
Notebooks and helpers choose their numbers with :func:`pick`::

    steps = pick(fast=16, cpu=256, full=1024)

Every random draw of a notebook (noise, random starts, layouts) follows one seed, :func:`course_seed`:
``NNVIS_SEED=3`` reruns the whole course with other draws (0 by default), which is how the test matrix
(``make test-matrix``) checks that a notebook's claims do not hang on one lucky draw.
"""
from __future__ import annotations

import os
import random
from typing import TypeVar

import numpy as np
import torch

__all__ = ["PRESETS", "quality", "is_fast", "pick", "course_seed", "seed_everything"]

PRESETS = ("fast", "cpu", "full")
T = TypeVar("T")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def quality() -> str:
    """The preset in force now: ``"fast"``, ``"cpu"`` or ``"full"``.

    Read on every call (not at import), so a notebook may set ``os.environ`` first.
    """
    if _env_flag("NNVIS_FAST"):
        return "fast"
    forced = os.environ.get("NNVIS_QUALITY", "").strip().lower()
    if forced:
        if forced not in PRESETS:
            raise ValueError(
                f"NNVIS_QUALITY={forced!r} is not a preset; use one of {', '.join(PRESETS)} "
                "or unset it to choose automatically."
            )
        return forced
    from .device import get_device  # the one place that asks which hardware is here

    return "full" if get_device().type != "cpu" else "cpu"


def is_fast() -> bool:
    """True under ``NNVIS_FAST=1`` (tests and CI)."""
    return quality() == "fast"


def pick(fast: T, cpu: T, full: T) -> T:
    """The value of the preset in force: ``pick(fast=8, cpu=128, full=512)``."""
    return {"fast": fast, "cpu": cpu, "full": full}[quality()]


def course_seed() -> int:
    """The seed of the notebooks' random draws: ``NNVIS_SEED`` (a non-negative int), 0 when unset.

    >>> SEED = course_seed()      # then seed_everything(SEED), pgd(..., seed=SEED)
    """
    text = os.environ.get("NNVIS_SEED", "").strip()
    if not text:
        return 0
    if not text.isdigit():
        raise ValueError(f"NNVIS_SEED={text!r} is not a seed; use a non-negative whole number such as 0, 1 or 2, "
                         "or unset it for the default 0.")
    return int(text)


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and all GPUs) and return a seeded CPU generator.

    Call it at the top of a notebook for reproducible pictures; helpers that draw random
    numbers take their own ``seed`` argument instead of relying on global state.

    >>> generator = seed_everything(0)
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)
