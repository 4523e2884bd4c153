"""Network dissection on concepts the course makes itself: which channels detect which colour, grating or texture?

Network Dissection (Bau et al. 2017, "Network Dissection: Quantifying Interpretability of Deep
Visual Representations") labels a channel with the concept whose pixels its strongest
activations cover best. Per channel k, a threshold T_k is the top quantile (0.995: the top
0.5 %) of all its activations over the dataset; each activation map is upsampled (bilinear) to
the image size and thresholded into a mask M_k(x); against the concept's pixel mask L_c(x)

    IoU_{k,c} = sum_x |M_k(x) ∩ L_c(x)| / sum_x |M_k(x) ∪ L_c(x)|,

summed, as in the paper, over the images that carry labels of c's category (here: c's group).

* :func:`concept_images` — a :class:`ConceptSet`: colour patches, gratings at 4 orientations and
  3 periods, and texture patches cut from texture photos that ship with scikit-image, each pasted
  as a square or a disc on a plain grey or photo background, so its pixel mask is known exactly.
* :func:`dissect` — one streaming forward pass: the thresholds, the IoU of every channel with
  every concept, and a simpler selectivity measure (mean activation inside vs outside the mask),
  in a :class:`Dissection` (``top_channels``, ``best_concept``, ``detectors``, ``summary``).
* :func:`draw_dissection` (best IoU per concept with its top channels, or a heat map) and
  :func:`show_concepts` (example concept images with their mask outlined).

How this differs from full Network Dissection: Bau et al. use Broden, about 63 000 real photos
with hand-labelled segmentations of about 1 200 concepts in six categories (colours, textures,
materials, parts, objects, scenes), so they can find, say, a "dog face" or "airplane" unit in a
late layer. The course has no labelled segmentations, so it makes its own images: 12 colours,
12 gratings and a few textures, pasted on backgrounds. Only low-level concepts, on synthetic
pictures; the method (quantile threshold, upsampling, IoU) is the paper's, the concepts are not.
Expect clear detectors in early layers; a late layer's object units will find no concept here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_model
from ..config import pick
from ..layers import _StopForward, _first_tensor, get_layer, preserve_model_state

__all__ = [
    "ConceptSet",
    "concept_images",
    "grating_name",
    "available_textures",
    "CONCEPT_GROUPS",
    "Dissection",
    "dissect",
    "draw_dissection",
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


# ----------------------------------------------------------------------------- dissection


@dataclass
class Dissection:
    """What :func:`dissect` measured for every channel of one layer and every concept.

    ``iou`` (C, K): IoU of channel k's thresholded map with concept c's masks; ``thresholds`` (C,)
    the T_k; ``mean_inside`` / ``mean_outside`` (C, K): the channel's mean (upsampled) activation
    on the concept's pixels and on the rest of those images. Per image i the counts behind the IoU:
    ``active_pixels`` (N, C) = |M_k(x_i)|, ``overlap_pixels`` (N, C) = |M_k(x_i) ∩ L(x_i)|,
    ``mask_pixels`` (N,) = |L(x_i)|, with ``concept`` (N,) the image's concept; pixels are counted at
    the ``resolution`` that :func:`dissect` compared at.

    >>> result = dissect(model, "blocks.1", concept_images())
    >>> result.top_channels("red", 3)  # [(channel, IoU), ...]
    >>> print(result.summary(10))
    """

    layer: str
    names: list[str]
    groups: list[str]
    iou: torch.Tensor
    thresholds: torch.Tensor
    mean_inside: torch.Tensor
    mean_outside: torch.Tensor
    active_pixels: torch.Tensor
    overlap_pixels: torch.Tensor
    mask_pixels: torch.Tensor
    concept: torch.Tensor
    quantile: float
    over: str

    @property
    def num_channels(self) -> int:
        return self.iou.shape[0]

    def top_channels(self, concept: str | int, n: int = 5) -> list[tuple[int, float]]:
        """The ``n`` channels with the highest IoU for ``concept`` (a name or index): [(channel, IoU), ...]."""
        column = self.iou[:, _concept_index(concept, self.names)]
        values, channels = column.sort(descending=True)
        return [(int(channel), float(value)) for channel, value in zip(channels[:n], values[:n])]

    def best_concept(self, channel: int | None = None):
        """The concept with the highest IoU for ``channel``: (name, IoU); for every channel a list of them when None."""
        values, indices = self.iou.max(dim=1)
        if channel is None:
            return [(self.names[int(index)], float(value)) for value, index in zip(values, indices)]
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= channel < self.num_channels:
            raise ValueError(f"channel must be an int from 0 to {self.num_channels - 1} ({self.layer} has {self.num_channels}), got {channel!r}.")
        return self.names[int(indices[channel])], float(values[channel])

    def detectors(self, min_iou: float = 0.04) -> list[tuple[int, str, float]]:
        """Channels whose best IoU exceeds ``min_iou`` (Bau et al. count a unit as a detector above 0.04),
        best first: [(channel, concept, IoU), ...]."""
        rows = [(channel, name, value) for channel, (name, value) in enumerate(self.best_concept()) if value > min_iou]
        return sorted(rows, key=lambda row: -row[2])

    def selectivity(self) -> torch.Tensor:
        """(C, K): mean activation inside the concept's mask minus outside, in units of the channel's threshold T_k."""
        scale = self.thresholds.abs().clamp_min(1e-8)[:, None]
        return (self.mean_inside - self.mean_outside) / scale

    def summary(self, n: int = 10) -> str:
        """A text table of the ``n`` channels with the highest IoU: channel, best concept, group, IoU, selectivity."""
        best = self.best_concept()
        order = sorted(range(self.num_channels), key=lambda k: -best[k][1])[:n]
        selectivity = self.selectivity()
        lines = [
            f"Dissection of {self.layer!r}: {self.num_channels} channels x {len(self.names)} concepts "
            f"(threshold: top {100 * (1 - self.quantile):.2g}% of each channel; IoU summed over the images of the concept's {self.over})",
            f"{'channel':>7}  {'best concept':<22} {'group':<8} {'IoU':>6}  {'inside-outside':>14}",
        ]
        for k in order:
            name, value = best[k]
            c = self.names.index(name)
            lines.append(f"{k:>7}  {name:<22} {self.groups[c]:<8} {value:>6.3f}  {float(selectivity[k, c]):>14.2f}")
        lines.append(f"{len(self.detectors())} of {self.num_channels} channels have a best IoU above 0.04 (Bau et al.'s detector threshold).")
        return "\n".join(lines)

    def concept_table(self, n: int = 3) -> str:
        """A text table with one row per concept: its ``n`` best channels and their IoU."""
        lines = [f"{'concept':<22} {'group':<8} top channels (IoU)"]
        for c, name in enumerate(self.names):
            best = ", ".join(f"{k} ({value:.3f})" for k, value in self.top_channels(c, n))
            lines.append(f"{name:<22} {self.groups[c]:<8} {best}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Dissection(layer={self.layer!r}, {self.num_channels} channels x {len(self.names)} concepts, quantile={self.quantile})"


def _iou_from_counts(active, overlap, mask_pixels, concept, groups: Sequence[str], over: str) -> torch.Tensor:
    """IoU (C, K) from the per-image counts; ``over`` says which images each concept's sums run over."""
    num_concepts = len(groups)
    one_hot = F.one_hot(concept, num_concepts).double()  # (N, K): image i shows concept c
    intersection = one_hot.T @ overlap.double()  # (K, C): sum over the images of c of |M ∩ L|
    label_area = one_hot.T @ mask_pixels.double()  # (K,)
    if over == "concept":
        counted = one_hot
    elif over == "group":
        group_of_image = [groups[int(c)] for c in concept]
        counted = torch.tensor([[groups[c] == g for c in range(num_concepts)] for g in group_of_image], dtype=torch.float64)
    else:  # "all"
        counted = torch.ones_like(one_hot)
    active_sum = counted.T @ active.double()  # (K, C): sum of |M_k| over the counted images
    union = active_sum + label_area[:, None] - intersection
    return (intersection / union.clamp_min(1)).T.float()


class _LayerKeeper:
    """Forward hook: keeps the layer's output of the batch; after the first batch, stops the pass there.

    The first batch runs the whole model and counts how often the layer runs (a shared module may
    run several times); the map of its last call is kept, as ``capture_activations`` does.
    """

    def __init__(self):
        self.expected_calls: int | None = None
        self.calls = 0
        self.output = None

    def __call__(self, _module, _inputs, output) -> None:
        self.calls += 1
        tensor = _first_tensor(output)
        self.output = tensor.detach().float().clone() if isinstance(tensor, torch.Tensor) else None
        if self.expected_calls is not None and self.calls == self.expected_calls:
            raise _StopForward

    def run(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor | None:
        self.calls, self.output = 0, None
        try:
            model(images)
        except _StopForward:
            pass
        if self.expected_calls is None:
            self.expected_calls = self.calls
        return self.output


def dissect(
    model: nn.Module,
    layer: str,
    concepts: ConceptSet,
    quantile: float = 0.995,
    over: str = "group",
    resolution: int | None = 112,
    batch_size: int = 32,
    progress: bool = True,
) -> Dissection:
    """Network Dissection of ``layer`` on a :class:`ConceptSet`: the IoU of every channel with every concept.

    One forward pass over the images (stopped right after ``layer``) keeps the layer's maps
    (N, C, h, w) on the CPU, never more images than the ConceptSet holds. Then, per channel k,
    T_k = the ``quantile`` of all its activations (Bau et al. 2017: 0.995, the top 0.5 %); each
    map is upsampled (bilinear) to the image size and M_k = map > T_k. IoU_{k,c} =
    sum |M_k ∩ L_c| / sum |M_k ∪ L_c| over the images of c's ``over``: ``"group"`` (the paper's
    rule: the images that carry labels of c's category, here colour / grating / texture),
    ``"concept"`` (only the images of c) or ``"all"``. Maps and masks are compared at
    ``resolution`` pixels a side (at most the image size; None: the image size): Broden's labels
    are 112 px, and a smaller side makes large layers much faster. Runs in eval mode, without gradients,
    on the model's device; the model comes back as it was.

    Returns a :class:`Dissection` with ``iou`` (C, K), ``thresholds`` (C,), mean activations inside /
    outside the masks (C, K) and the per-image pixel counts.

    >>> result = dissect(load_model(), "blocks.1", concept_images())
    >>> result.best_concept(5), result.top_channels("red", 3)
    """
    device, dtype = check_model(model)
    module = get_layer(model, layer)  # an unknown name lists the closest ones
    layer_name = layer if isinstance(layer, str) else next(name for name, m in model.named_modules() if m is module)
    if not isinstance(concepts, ConceptSet):
        raise TypeError(f"concepts must be a ConceptSet, as concept_images() makes, got {type(concepts).__name__}.")
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 < quantile < 1:
        raise ValueError(f"quantile must be a number strictly between 0 and 1, e.g. 0.995 (Bau et al.: the top 0.5 %), got {quantile!r}.")
    if over not in ("group", "concept", "all"):
        raise ValueError(f"over must be 'group' (the paper's rule), 'concept' or 'all', got {over!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 2):
        raise ValueError(f"resolution must be an int of at least 2 (pixels a side where maps meet masks, e.g. 112) or None, got {resolution!r}.")
    from tqdm.auto import tqdm

    keeper = _LayerKeeper()
    maps: list[torch.Tensor] = []
    with preserve_model_state(model):
        handle = module.register_forward_hook(keeper)
        try:
            with torch.no_grad(), tqdm(total=len(concepts), desc=f"dissect {layer_name}", unit="image", disable=not progress) as bar:
                for start in range(0, len(concepts), batch_size):
                    images = concepts.images[start : start + batch_size].to(device=device, dtype=dtype)
                    output = keeper.run(model, images)
                    if keeper.calls == 0:
                        raise ValueError(f"layer {layer_name!r} never ran during the forward pass: pick a layer on the path from the image to the output.")
                    if output is None or output.dim() != 4 or output.shape[0] != images.shape[0] or output.shape[2] * output.shape[3] < 2:
                        got = f"output of shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else "no tensor"
                        raise ValueError(
                            f"layer {layer_name!r} gives {got}; dissection needs spatial maps (N, C, h, w) with more than one "
                            "position, to compare with the concept masks. Pick a convolution block before the global pooling "
                            "(layer_names(model) lists them)."
                        )
                    maps.append(output.cpu())
                    bar.update(images.shape[0])
        finally:
            handle.remove()
    maps_all = torch.cat(maps)  # (N, C, h, w)
    del maps
    num_channels = maps_all.shape[1]
    thresholds = _channel_quantiles(maps_all, quantile)

    size = tuple(concepts.images.shape[-2:])
    if resolution is not None and resolution < max(size):
        size = (min(size[0], resolution), min(size[1], resolution))
        # A mask pixel at the coarser grid is concept where most of its image pixels are.
        masks = F.interpolate(concepts.masks.float(), size=size, mode="area") > 0.5
    else:
        masks = concepts.masks
    count = len(concepts)
    active = torch.zeros(count, num_channels, dtype=torch.long)
    overlap = torch.zeros(count, num_channels, dtype=torch.long)
    sum_inside = torch.zeros(count, num_channels, dtype=torch.float64)
    sum_all = torch.zeros(count, num_channels, dtype=torch.float64)
    # Upsampled maps are (images, channels, S, S): a chunk of images at a time keeps that near 2**24 values.
    step = max(1, 2**24 // (num_channels * size[0] * size[1]))
    with torch.no_grad():
        for start in range(0, count, step):
            chunk = maps_all[start : start + step].to(device)
            upsampled = F.interpolate(chunk, size=size, mode="bilinear", align_corners=False)
            label = masks[start : start + step].to(device)
            hot = upsampled > thresholds.to(device)[None, :, None, None]
            end = start + chunk.shape[0]
            active[start:end] = hot.sum(dim=(2, 3)).cpu()
            overlap[start:end] = (hot & label).sum(dim=(2, 3)).cpu()
            sum_inside[start:end] = (upsampled * label).sum(dim=(2, 3)).double().cpu()
            sum_all[start:end] = upsampled.sum(dim=(2, 3)).double().cpu()
    mask_pixels = masks.flatten(1).sum(dim=1)
    iou = _iou_from_counts(active, overlap, mask_pixels, concepts.concept, concepts.groups, over)

    one_hot = F.one_hot(concepts.concept, len(concepts.names)).double()  # (N, K)
    pixels = float(size[0] * size[1])
    inside_area = one_hot.T @ mask_pixels.double()
    outside_area = one_hot.sum(dim=0) * pixels - inside_area
    mean_inside = (one_hot.T @ sum_inside / inside_area.clamp_min(1)[:, None]).T.float()
    mean_outside = (one_hot.T @ (sum_all - sum_inside) / outside_area.clamp_min(1)[:, None]).T.float()
    return Dissection(
        layer=layer_name,
        names=list(concepts.names),
        groups=list(concepts.groups),
        iou=iou,
        thresholds=thresholds,
        mean_inside=mean_inside,
        mean_outside=mean_outside,
        active_pixels=active,
        overlap_pixels=overlap,
        mask_pixels=mask_pixels,
        concept=concepts.concept.clone(),
        quantile=float(quantile),
        over=over,
    )


def _channel_quantiles(maps: torch.Tensor, quantile: float) -> torch.Tensor:
    """Per channel, the ``quantile`` of all its values in ``maps`` (N, C, h, w), as ``torch.quantile`` (linear) gives it.

    ``torch.quantile`` refuses more than 2**24 values, so the two order statistics around the
    position are taken with ``kthvalue`` instead, one channel at a time.
    """
    values = maps.transpose(0, 1).reshape(maps.shape[1], -1)
    count = values.shape[1]
    position = quantile * (count - 1)
    below = int(math.floor(position))
    fraction = position - below
    result = torch.empty(values.shape[0])
    for k in range(values.shape[0]):
        low = values[k].kthvalue(below + 1).values
        high = values[k].kthvalue(min(below + 2, count)).values
        result[k] = low + fraction * (high - low)
    return result


# ----------------------------------------------------------------------------- pictures


_GROUP_COLOURS = {"grating": "0.45", "texture": "#8c6d46"}


def draw_dissection(dissection: Dissection, ax=None, kind: str = "bars", top: int = 3, channels: int = 16):
    """Draw a :class:`Dissection` and return the figure.

    ``kind="bars"``: one horizontal bar per concept, its best IoU, labelled with its ``top`` best
    channels (colour bars in their own colour). ``kind="heatmap"``: IoU of concepts (rows) x the
    ``channels`` channels with the highest best IoU (columns).

    >>> fig = draw_dissection(dissect(model, "blocks.1", concept_images()))
    """
    import matplotlib.pyplot as plt

    if not isinstance(dissection, Dissection):
        raise TypeError(f"draw_dissection needs the Dissection that dissect() returns, got {type(dissection).__name__}.")
    if kind not in ("bars", "heatmap"):
        raise ValueError(f"kind must be 'bars' or 'heatmap', got {kind!r}.")
    names = dissection.names
    if kind == "bars":
        if ax is None:
            fig, ax = plt.subplots(figsize=(7, 0.26 * len(names) + 1.2))
        fig = ax.figure
        best = dissection.iou.max(dim=0).values.numpy()
        colours = [
            tuple(_COLOURS[name]) if group == "colour" else _GROUP_COLOURS[group]
            for name, group in zip(names, dissection.groups)
        ]
        rows = np.arange(len(names))
        ax.barh(rows, best, color=colours, edgecolor="0.2", linewidth=0.5)
        for row, c in enumerate(range(len(names))):
            label = " ".join(f"#{k}" for k, _ in dissection.top_channels(c, top))
            ax.text(best[row], row, " " + label, va="center", fontsize=7)
        ax.set_yticks(rows, names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, max(0.05, float(best.max()) * 1.35))
        ax.set_xlabel("best IoU of any channel (its top channels labelled)")
        ax.set_title(f"{dissection.layer}: which channels detect which concept", fontsize=9)
        fig.tight_layout()
        return fig
    order = dissection.iou.max(dim=1).values.argsort(descending=True)[:channels]
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.35 * len(order) + 3, 0.26 * len(names) + 1.2))
    fig = ax.figure
    image = ax.imshow(dissection.iou[order].T.numpy(), cmap="viridis", aspect="auto", vmin=0)
    ax.set_xticks(range(len(order)), [str(int(k)) for k in order], fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("channel (the highest best IoU first)")
    ax.set_title(f"{dissection.layer}: IoU of concepts x channels", fontsize=9)
    fig.colorbar(image, ax=ax, label="IoU", fraction=0.04)
    fig.tight_layout()
    return fig


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
