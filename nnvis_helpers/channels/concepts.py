"""Concepts the course makes itself: colour patches, gratings and textures, each with its exact pixel mask.

Network Dissection (Bau et al. 2017, "Network Dissection: Quantifying Interpretability of Deep
Visual Representations") needs images in which the pixels of every concept are known. Bau et al.
use Broden, about 63 000 real photos with hand-labelled segmentations; the course has none, so it
paints its own: 12 colours, 12 gratings and a few textures, pasted on backgrounds, so that every
mask is exact. :mod:`.dissection` measures on them which channels detect which concept.

* :func:`concept_images` — a :class:`ConceptSet`: colour patches, gratings at 4 orientations and
  3 periods, and texture patches cut from texture photos that ship with scikit-image, each pasted
  as a square or a disc on a plain grey or photo background, so its pixel mask is known exactly.
* :func:`grating_name` and :func:`available_textures` — the names of the grating and texture concepts.
* :func:`show_concepts` — example concept images with their mask outlined.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from ..config import pick

__all__ = [
    "ConceptSet",
    "concept_images",
    "grating_name",
    "available_textures",
    "CONCEPT_GROUPS",
    "show_concepts",
]

CONCEPT_GROUPS = ("colour", "grating", "texture")

# Named colours (RGB in [0, 1]); every image jitters each channel by up to +-0.04.
_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.08, 0.08),
    "orange": (1.00, 0.55, 0.00),
    "yellow": (0.95, 0.90, 0.10),
    "green": (0.10, 0.65, 0.15),
    "cyan": (0.10, 0.85, 0.90),
    "blue": (0.10, 0.20, 0.85),
    "purple": (0.50, 0.15, 0.65),
    "pink": (1.00, 0.60, 0.75),
    "brown": (0.50, 0.30, 0.10),
    "black": (0.05, 0.05, 0.05),
    "white": (0.95, 0.95, 0.95),
    "grey": (0.50, 0.50, 0.50),
}
_ORIENTATIONS = (0, 45, 90, 135)  # direction of the stripes, counter-clockwise from horizontal
_PERIODS = (4, 8, 16)  # pixels per cycle


def _skimage_gray_or_rgb(name: str):
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


# Texture photos that ship inside scikit-image (no download); concept name -> loader.
_TEXTURES = {
    "brick": _skimage_gray_or_rgb("brick"),
    "grass": _skimage_gray_or_rgb("grass"),
    "gravel": _skimage_gray_or_rgb("gravel"),
    "chequered": _skimage_gray_or_rgb("checkerboard"),
    "stars": _skimage_gray_or_rgb("hubble_deep_field"),
    "cells": _skimage_gray_or_rgb("immunohistochemistry"),
    "printed text": _skimage_gray_or_rgb("page"),
}
# Photos for the backgrounds: the offline photos that are not themselves one of the textures.
_BACKGROUND_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle", "camera", "china", "flower", "grace_hopper")


def grating_name(orientation: int, period: int) -> str:
    """The concept name of a grating: ``grating_name(90, 8) == "grating 90deg 8px"`` (vertical stripes, 8 px a cycle)."""
    return f"grating {orientation}deg {period}px"


@lru_cache(maxsize=None)
def _texture_tensor(name: str) -> torch.Tensor | None:
    """The texture photo as (3, H, W) in [0, 1], or None when this scikit-image version lacks it."""
    from ..images import _to_rgb_array

    try:
        array = _TEXTURES[name]()
    except Exception:  # an older or newer scikit-image without the file: that texture is left out
        return None
    return torch.from_numpy(_to_rgb_array(array)).permute(2, 0, 1).contiguous()


def available_textures() -> list[str]:
    """The texture concepts this installation can make (the scikit-image photos present)."""
    return [name for name in _TEXTURES if _texture_tensor(name) is not None]


# ----------------------------------------------------------------------------- the concept images


@dataclass
class ConceptSet:
    """Images with one pasted concept each and its exact pixel mask.

    ``images`` (N, 3, S, S) float in [0, 1]; ``masks`` (N, 1, S, S) bool, True on the concept's
    pixels; ``concept`` (N,) long, an index into ``names``; ``groups[c]`` is the group of
    concept c (``"colour"``, ``"grating"`` or ``"texture"``). Item i is (image, concept index).

    >>> concepts = concept_images(size=96, per_concept=4)
    >>> concepts.images.shape, concepts.names[concepts.concept[0]]
    (torch.Size([124, 3, 96, 96]), 'red')
    """

    images: torch.Tensor
    masks: torch.Tensor
    concept: torch.Tensor
    names: list[str]
    groups: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.concept[index])

    @property
    def size(self) -> int:
        """Pixels per side, S."""
        return self.images.shape[-1]

    def index_of(self, concept: str | int) -> int:
        """The index of a concept given by name (``"red"``) or index; an unknown one lists the names."""
        return _concept_index(concept, self.names)

    def __repr__(self) -> str:
        counts = {group: self.groups.count(group) for group in CONCEPT_GROUPS if group in self.groups}
        parts = ", ".join(f"{count} {group}s" for group, count in counts.items())
        return f"ConceptSet({len(self)} images of {self.size}x{self.size} px; {len(self.names)} concepts: {parts})"


def _concept_index(concept: str | int, names: Sequence[str]) -> int:
    if isinstance(concept, (int, np.integer)) and not isinstance(concept, bool):
        if not 0 <= concept < len(names):
            raise ValueError(f"concept index {concept} is out of range: there are {len(names)} concepts (0 to {len(names) - 1}).")
        return int(concept)
    if isinstance(concept, str):
        if concept in names:
            return names.index(concept)
        import difflib

        close = difflib.get_close_matches(concept, names, n=4, cutoff=0.4)
        hint = f" Closest: {', '.join(repr(name) for name in close)}." if close else ""
        raise ValueError(f"there is no concept {concept!r}.{hint} The concepts are: {', '.join(names)}.")
    raise TypeError(f"a concept is a name such as 'red' or an index, got {type(concept).__name__}.")


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high, generator=generator))


def _region(size: int, generator: torch.Generator, scale: tuple[float, float]) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """A square or a disc of random side and place: (mask (S, S) bool, bounding box (top, left, side))."""
    side = max(4, int(round(_uniform(generator, *scale) * size)))
    top = int(torch.randint(0, size - side + 1, (), generator=generator))
    left = int(torch.randint(0, size - side + 1, (), generator=generator))
    mask = torch.zeros(size, size, dtype=torch.bool)
    if bool(torch.rand((), generator=generator) < 0.5):
        mask[top : top + side, left : left + side] = True
    else:
        rows = torch.arange(size, dtype=torch.float32)[:, None] + 0.5
        cols = torch.arange(size, dtype=torch.float32)[None, :] + 0.5
        centre, radius = side / 2, side / 2
        mask = (rows - top - centre) ** 2 + (cols - left - centre) ** 2 <= radius**2
    return mask, (top, left, side)


def _grating(size: int, orientation: int, period: int, generator: torch.Generator) -> torch.Tensor:
    """A full-image sinusoidal grating (3, S, S): stripes at ``orientation`` degrees, random phase and contrast."""
    angle = math.radians(orientation)
    rows = torch.arange(size, dtype=torch.float32)[:, None]
    cols = torch.arange(size, dtype=torch.float32)[None, :]
    # The wave runs across the stripes: along (sin a, cos a) in (column, row) with rows pointing down,
    # so 0 deg gives horizontal stripes, 90 deg vertical ones, 45 deg stripes rising to the right.
    phase = 2 * math.pi * (cols * math.sin(angle) + rows * math.cos(angle)) / period + _uniform(generator, 0, 2 * math.pi)
    contrast = _uniform(generator, 0.6, 1.0)
    return (0.5 + 0.5 * contrast * torch.sin(phase)).expand(3, size, size)


def _texture_patch(name: str, side: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """A random square of the texture photo for a patch of ``side`` pixels in an image of ``size``, (3, side, side).

    The whole image stands for a window of 50 % to 100 % of the photo's shorter side, so a texture
    looks the same (several bricks, a few letters) at every image size.
    """
    from torchvision.transforms.functional import resized_crop

    photo = _texture_tensor(name)
    height, width = photo.shape[1:]
    crop = min(height, width, max(4, int(round(side / size * min(height, width) * _uniform(generator, 0.5, 1.0)))))
    top = int(torch.randint(0, height - crop + 1, (), generator=generator))
    left = int(torch.randint(0, width - crop + 1, (), generator=generator))
    return resized_crop(photo, top, left, crop, crop, [side, side], antialias=True).clamp(0, 1)


def _plain_background(size: int, generator: torch.Generator, avoid: float | None) -> torch.Tensor:
    """A grey level in [0.3, 0.7] with mild noise; ``avoid`` keeps it 0.2 away from a grey patch's level."""
    level = _uniform(generator, 0.3, 0.7)
    while avoid is not None and abs(level - avoid) < 0.2:
        level = _uniform(generator, 0.3, 0.7)
    noise = 0.03 * torch.randn(1, size, size, generator=generator)
    return (level + noise).clamp(0, 1).expand(3, size, size).clone()


def concept_images(
    size: int | None = None,
    per_concept: int | None = None,
    seed: int = 0,
    groups: Sequence[str] = CONCEPT_GROUPS,
    background: str = "mixed",
    scale: tuple[float, float] = (0.3, 0.6),
) -> ConceptSet:
    """Make a :class:`ConceptSet`: ``per_concept`` images of every concept, each concept pasted with a known mask.

    Concepts: 12 named colours (``"red"``, ..., ``"grey"``), gratings ``"grating 90deg 8px"`` (stripes
    at 0, 45, 90, 135 degrees counter-clockwise from horizontal, so 90 is vertical; periods 4, 8, 16
    pixels; random phase and contrast), and textures cut from the scikit-image photos present
    (brick, grass, gravel, chequered, stars, cells, printed text). Each is pasted as a square or a
    disc whose side is a fraction in ``scale`` of the image, at a random place, on a ``background``:
    ``"plain"`` (a grey level in [0.3, 0.7] with mild noise), ``"photos"`` (a crop of an offline
    photo, as :class:`~nnvis_helpers.datasets.OfflinePhotos` makes) or ``"mixed"`` (half each).
    ``size`` and ``per_concept`` follow the preset: 96 px x 4 (fast), 160 x 10 (cpu), 224 x 20 (full).
    The same arguments give the same images.

    Returns images (N, 3, S, S) in [0, 1], masks (N, 1, S, S) bool, concept (N,), names, groups.

    >>> concepts = concept_images(size=96, per_concept=4, groups=("colour", "grating"))
    >>> len(concepts.names), concepts.masks.shape
    (24, torch.Size([96, 1, 96, 96]))
    """
    size = pick(fast=96, cpu=160, full=224) if size is None else size
    per_concept = pick(fast=4, cpu=10, full=20) if per_concept is None else per_concept
    for value, name, smallest in ((size, "size (pixels per side)", 16), (per_concept, "per_concept (images per concept)", 1), (seed, "seed", 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < smallest:
            raise ValueError(f"{name} must be an int of at least {smallest}, got {value!r}.")
    groups = [groups] if isinstance(groups, str) else list(groups)
    unknown = [group for group in groups if group not in CONCEPT_GROUPS]
    if unknown or not groups:
        raise ValueError(f"groups must name some of {', '.join(CONCEPT_GROUPS)}; got {groups!r}.")
    if background not in ("mixed", "plain", "photos"):
        raise ValueError(f"background must be 'mixed', 'plain' (grey with mild noise) or 'photos', got {background!r}.")
    try:
        low, high = (float(value) for value in scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a pair (smallest, largest) of side fractions such as (0.3, 0.6), got {scale!r}.") from None
    if not 0 < low <= high <= 1:
        raise ValueError(f"scale={scale!r}: the side fractions must satisfy 0 < smallest <= largest <= 1, e.g. (0.3, 0.6).")

    concepts: list[tuple[str, str, object]] = []  # (name, group, what to paint)
    if "colour" in groups:
        concepts += [(name, "colour", rgb) for name, rgb in _COLOURS.items()]
    if "grating" in groups:
        concepts += [(grating_name(o, p), "grating", (o, p)) for o in _ORIENTATIONS for p in _PERIODS]
    if "texture" in groups:
        concepts += [(name, "texture", name) for name in available_textures()]

    photos = None
    if background != "plain":
        from ..datasets import OfflinePhotos

        photos = OfflinePhotos(length=len(concepts) * per_concept, size=size, seed=seed, photos=list(_BACKGROUND_PHOTOS), scale=(0.1, 1.0))
    generator = torch.Generator().manual_seed(seed)
    images, masks, labels = [], [], []
    for index, (name, group, what) in enumerate(concepts):
        for repeat in range(per_concept):
            mask, (top, left, side) = _region(size, generator, (low, high))
            grey_level = None
            if group == "colour":
                jitter = 0.04 * (2 * torch.rand(3, generator=generator) - 1)
                colour = (torch.tensor(what) + jitter).clamp(0, 1)
                patch = colour[:, None, None].expand(3, size, size)
                if max(what) - min(what) < 0.01:  # black, white, grey: keep a plain background visibly different
                    grey_level = float(colour.mean())
            elif group == "grating":
                patch = _grating(size, *what, generator)
            else:
                patch = torch.zeros(3, size, size)
                patch[:, top : top + side, left : left + side] = _texture_patch(what, side, size, generator)
            use_photo = background == "photos" or (background == "mixed" and bool(torch.rand((), generator=generator) < 0.5))
            if use_photo:
                image = photos[index * per_concept + repeat][0].clone()
            else:
                image = _plain_background(size, generator, grey_level)
            image = torch.where(mask, patch, image)
            images.append(image)
            masks.append(mask)
            labels.append(index)
    return ConceptSet(
        images=torch.stack(images).clamp(0, 1),
        masks=torch.stack(masks)[:, None],
        concept=torch.tensor(labels, dtype=torch.long),
        names=[name for name, _, _ in concepts],
        groups=[group for _, group, _ in concepts],
    )


# ----------------------------------------------------------------------------- pictures


def show_concepts(concept_set: ConceptSet, per_concept: int = 1, concepts: Sequence[str | int] | None = None, columns: int = 8, ax=None):
    """A grid of example concept images, each with its mask outlined; returns the figure.

    ``per_concept`` images of each concept in ``concepts`` (names or indices; all when None),
    ``columns`` tiles a row, drawn as one mosaic into ``ax``.

    >>> fig = show_concepts(concept_images(), concepts=["red", "grating 90deg 8px", "brick"], per_concept=3)
    """
    import matplotlib.pyplot as plt

    if not isinstance(concept_set, ConceptSet):
        raise TypeError(f"show_concepts needs a ConceptSet, as concept_images() makes, got {type(concept_set).__name__}.")
    chosen = range(len(concept_set.names)) if concepts is None else [concept_set.index_of(c) for c in concepts]
    picked = []
    for c in chosen:
        indices = (concept_set.concept == c).nonzero().flatten()[:per_concept].tolist()
        picked += indices
    if not picked:
        raise ValueError("no image to show: per_concept must be at least 1 and the concepts must be in the set.")
    columns = max(1, min(columns, len(picked)))
    rows = math.ceil(len(picked) / columns)
    size, gap = concept_set.size, 2
    tile = size + gap
    mosaic = np.ones((rows * tile - gap, columns * tile - gap, 3), dtype=np.float32)
    outline = np.zeros(mosaic.shape[:2], dtype=np.float32)
    for slot, index in enumerate(picked):
        row, column = divmod(slot, columns)
        top, left = row * tile, column * tile
        mosaic[top : top + size, left : left + size] = concept_set.images[index].permute(1, 2, 0).numpy()
        outline[top : top + size, left : left + size] = concept_set.masks[index, 0].numpy()
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.6 * columns, 1.75 * rows))
    fig = ax.figure
    ax.imshow(mosaic, interpolation="nearest")
    ax.contour(outline, levels=[0.5], colors=["#ff00ff"], linewidths=0.8)
    for slot, index in enumerate(picked):
        row, column = divmod(slot, columns)
        ax.text(column * tile + 1, row * tile + 1, concept_set.names[int(concept_set.concept[index])], fontsize=6,
                va="top", ha="left", color="white", bbox=dict(facecolor="black", alpha=0.6, pad=1, linewidth=0))
    ax.axis("off")
    return fig
