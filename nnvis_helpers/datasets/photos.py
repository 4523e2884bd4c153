"""Crops of the offline photos: thousands of different pictures with no download.

* :class:`OfflinePhotos` — seeded random crops, mirror images and colour jitter of the photos
  that ship inside scikit-image, scikit-learn and matplotlib: thousands of items with no download.

The crop helpers (``_photo_tensor``, ``_random_square``, ``_cut``) are shared with
``adversarial.evaluation_set``, so both make the same pixels from the same photos.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..images import _OFFLINE_PHOTOS, _to_rgb_array

__all__ = ["OfflinePhotos"]


def _check_int(value, name: str, smallest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < smallest:
        raise ValueError(f"{name} must be an int of at least {smallest}, got {value!r}.")
    return int(value)


@lru_cache(maxsize=None)
def _photo_tensor(name: str) -> torch.Tensor:
    """The offline photo ``name`` at full resolution, (3, H, W) float in [0, 1]; decoded once per process."""
    # Contiguous (3, H, W): an antialiased resize of a permuted (H, W, 3) view is up to 50x slower.
    return torch.from_numpy(_to_rgb_array(_OFFLINE_PHOTOS[name][0]())).permute(2, 0, 1).contiguous()


def _random_square(height: int, width: int, scale: tuple[float, float], generator: torch.Generator) -> tuple[int, int, int]:
    """A square (top, left, side) covering a fraction in ``scale`` of the photo's largest square, at a random place."""
    area = float(torch.empty(1).uniform_(scale[0], scale[1], generator=generator)) * min(height, width) ** 2
    side = max(1, int(round(math.sqrt(area))))
    top = int(torch.randint(0, height - side + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - side + 1, (1,), generator=generator))
    return top, left, side


def _cut(photo: torch.Tensor, box: tuple[int, int, int], size: int, mirrored: bool) -> torch.Tensor:
    """The square ``box`` = (top, left, side) of ``photo`` (3, H, W), resized to (3, size, size), maybe mirrored."""
    from torchvision.transforms.functional import hflip, resized_crop

    top, left, side = box
    crop = resized_crop(photo, top, left, side, side, [size, size], antialias=True).clamp(0, 1)
    return hflip(crop) if mirrored else crop


class _View(NamedTuple):
    """How item i of OfflinePhotos is made from its photo."""

    photo: int
    box: tuple[int, int, int]
    mirrored: bool
    brightness: float
    contrast: float
    saturation: float


class OfflinePhotos(Dataset):
    """Thousands of different pictures without a download: random crops of the photos that ship offline.

    Item ``i`` is made on demand from a generator seeded with (``seed``, i), so it is the same
    in any order and with any number of DataLoader workers: a photo drawn at random, a square
    crop covering a fraction in ``scale`` of the photo's largest square (torchvision's
    RandomResizedCrop measures the whole photo instead), resized to ``size``, mirrored with
    probability 1/2 if ``flip``, brightness, contrast and saturation each scaled by a factor in
    [1 - color_jitter, 1 + color_jitter]. Returns (image (3, size, size) in [0, 1], label):
    the label indexes ``.classes``, the names of the photos. ``photos=`` keeps only some.

    >>> photos = OfflinePhotos(length=1000, size=224)
    >>> image, label = photos[0]; image.shape, photos.classes[label]
    (torch.Size([3, 224, 224]), 'gravel')
    """

    def __init__(
        self,
        length: int = 2000,
        size: int = 224,
        seed: int = 0,
        photos: Sequence[str] | None = None,
        scale: tuple[float, float] = (0.08, 1.0),
        flip: bool = True,
        color_jitter: float = 0.1,
    ):
        self.length = _check_int(length, "length (the number of items)", 1)
        self.size = _check_int(size, "size (pixels per side)", 8)
        self.seed = _check_int(seed, "seed", 0)
        valid = list(_OFFLINE_PHOTOS)
        names = valid if photos is None else [photos] if isinstance(photos, str) else list(photos)
        unknown = [name for name in names if name not in _OFFLINE_PHOTOS]
        if unknown or not names:
            problem = f"unknown photo {unknown[0]!r}" if unknown else "photos=[] names no photo"
            raise ValueError(f"{problem}; the offline photos are: {', '.join(valid)}.")
        self.classes = names
        try:
            low, high = (float(value) for value in scale)
        except (TypeError, ValueError):
            raise ValueError(f"scale must be a pair (smallest, largest) of area fractions such as (0.08, 1.0), got {scale!r}.") from None
        if not 0 < low <= high <= 1:
            raise ValueError(
                f"scale={scale!r}: the area fractions must satisfy 0 < smallest <= largest <= 1, "
                "e.g. (0.08, 1.0) for crops from small details to the whole square."
            )
        self.scale = (low, high)
        self.flip = bool(flip)
        if isinstance(color_jitter, bool) or not isinstance(color_jitter, (int, float)) or not 0 <= color_jitter < 1:
            raise ValueError(f"color_jitter must be a number in [0, 1) such as 0.1 (plus or minus 10%), got {color_jitter!r}.")
        self.color_jitter = float(color_jitter)

    def __len__(self) -> int:
        return self.length

    def _view(self, index: int) -> _View:
        if isinstance(index, torch.Tensor):
            index = int(index)
        if not -self.length <= index < self.length:
            raise IndexError(f"item {index} does not exist: this dataset has {self.length} items.")
        index %= self.length
        # One generator per item, seeded from (seed, index): no item depends on another one.
        state = np.random.SeedSequence([self.seed, index]).generate_state(2, dtype=np.uint32)
        generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        photo = int(torch.randint(len(self.classes), (1,), generator=generator))
        height, width = _photo_tensor(self.classes[photo]).shape[1:]
        box = _random_square(height, width, self.scale, generator)
        mirrored = bool(torch.rand(1, generator=generator) < 0.5) and self.flip
        factors = 1 + self.color_jitter * (2 * torch.rand(3, generator=generator) - 1)
        return _View(photo, box, mirrored, *(float(factor) for factor in factors))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from torchvision.transforms.functional import adjust_brightness, adjust_contrast, adjust_saturation

        view = self._view(index)
        image = _cut(_photo_tensor(self.classes[view.photo]), view.box, self.size, view.mirrored)
        if self.color_jitter > 0:
            image = adjust_saturation(adjust_contrast(adjust_brightness(image, view.brightness), view.contrast), view.saturation)
        return image.clamp(0, 1), view.photo

    def describe(self, index: int) -> str:
        """What item ``index`` is, in words: the photo, the crop box, the mirror, the jitter."""
        view = self._view(index)
        name = self.classes[view.photo]
        height, width = _photo_tensor(name).shape[1:]
        top, left, side = view.box
        return (
            f"item {index}: {name!r} ({_OFFLINE_PHOTOS[name][1]}), the {side}x{side} square at row {top}, "
            f"column {left} of the {height}x{width} photo, resized to {self.size}x{self.size}"
            f"{', mirrored' if view.mirrored else ''}; brightness x{view.brightness:.2f}, "
            f"contrast x{view.contrast:.2f}, saturation x{view.saturation:.2f}"
        )

    def __repr__(self) -> str:
        return f"OfflinePhotos(length={self.length}, size={self.size}, seed={self.seed}, {len(self.classes)} photos)"
