"""Small random changes applied to the image at every step, in pure torch on its device.

A feature the network really detects survives being shifted, scaled and rotated a little;
high-frequency noise that fools one exact pixel grid does not. Optimizing through random
transforms (Mordvintsev et al. 2015; Olah et al. 2017) therefore removes much of the noise.

Each transform is a closure ``inner(images, rng) -> images`` where ``rng`` is a
``random.Random`` owned by :func:`render` (seeded, so results repeat; no global state).
They keep the device and dtype of the images and are differentiable.

>>> transform = compose(pad(12), jitter(8), random_scale([0.9, 1.0, 1.1]), random_rotate(range(-10, 11)))
>>> out = transform(images, random.Random(0))
"""
from __future__ import annotations

import math
import random
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["pad", "jitter", "random_scale", "random_rotate", "resize", "compose", "standard_transforms", "as_transform"]

Transform = Callable[[torch.Tensor, random.Random], torch.Tensor]


def pad(width: int, mode: str = "constant", value: float = 0.5) -> Transform:
    """Pad every side by ``width`` pixels (grey by default; or ``mode="reflect"``)."""
    if width < 0:
        raise ValueError(f"pad width must be >= 0, got {width}")

    def inner(images, rng):
        if mode == "constant":
            return F.pad(images, (width,) * 4, mode="constant", value=value)
        return F.pad(images, (width,) * 4, mode=mode)

    return inner


def jitter(distance: int) -> Transform:
    """Cut out a random crop ``distance`` pixels smaller than the image: a random shift."""
    if distance < 1:
        raise ValueError(f"jitter distance must be >= 1 pixel, got {distance}")

    def inner(images, rng):
        height, width = images.shape[-2:]
        dy, dx = rng.randrange(distance), rng.randrange(distance)
        return images[..., dy:dy + height - distance, dx:dx + width - distance]

    return inner


def random_scale(scales: Sequence[float]) -> Transform:
    """Resize by a factor picked from ``scales`` (bilinear)."""
    scales = list(scales)
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive factors such as [0.95, 1.0, 1.05], got {scales}")

    def inner(images, rng):
        return _resample(images, factor=rng.choice(scales), angle=0.0)

    inner.draw = lambda rng: (rng.choice(scales), 0.0)  # lets compose() fuse it with a rotation
    return inner


def random_rotate(angles: Sequence[float]) -> Transform:
    """Rotate about the centre by an angle in degrees picked from ``angles``."""
    angles = list(angles)
    if not angles:
        raise ValueError("random_rotate needs at least one angle, e.g. range(-10, 11)")

    def inner(images, rng):
        return _resample(images, factor=1.0, angle=rng.choice(angles))

    inner.draw = lambda rng: (1.0, rng.choice(angles))
    return inner


def resize(size: int | tuple[int, int]) -> Transform:
    """Resize to ``size`` (bilinear): put last, it gives a network built for one input size that size."""
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if not all(isinstance(side, int) and side > 0 for side in (height, width)):
        raise ValueError(f"resize needs a positive size in pixels, such as 64 or (64, 64); got {size!r}")

    def inner(images, rng):
        if images.shape[-2:] == (height, width):
            return images
        return F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False)

    return inner


def _resample(images: torch.Tensor, factor: float, angle: float) -> torch.Tensor:
    """Scale by ``factor`` and rotate by ``angle`` degrees in one bilinear resampling."""
    if factor == 1 and angle == 0:
        return images
    batch, channels, height, width = images.shape
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    if angle == 0:
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    radians = math.radians(angle)
    cos, sin = math.cos(radians), math.sin(radians)
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=images.dtype).to(images.device, non_blocking=True)
    grid = F.affine_grid(theta.expand(batch, 2, 3), [batch, channels, *size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def compose(*transforms: Transform | Sequence[Transform]) -> Transform:
    """Apply transforms one after another: ``compose(pad(12), jitter(8))`` or ``compose([...])``."""
    flat: list[Transform] = []
    for item in transforms:
        if callable(item):
            flat.append(item)
        elif isinstance(item, (list, tuple)):
            flat.extend(item)
        else:
            raise TypeError(f"compose takes transforms (callables), got {type(item).__name__}")
    for item in flat:
        if not callable(item):
            raise TypeError(f"compose takes transforms (callables), got {type(item).__name__}")

    # Neighbouring scale and rotate steps become one resampling: cheaper, and sharper.
    steps: list = []
    for transform in flat:
        if hasattr(transform, "draw") and steps and isinstance(steps[-1], list):
            steps[-1].append(transform)
        else:
            steps.append([transform] if hasattr(transform, "draw") else transform)

    def inner(images, rng):
        for step in steps:
            if isinstance(step, list):
                factor, angle = 1.0, 0.0
                for transform in step:  # the same random draws, in the same order, as unfused
                    f, a = transform.draw(rng)
                    factor, angle = factor * f, angle + a
                images = _resample(images, factor, angle)
            else:
                images = step(images, rng)
        return images

    inner.transforms = flat
    return inner


def standard_transforms() -> Transform:
    """Lucid's standard robustness transforms: pad 12, jitter 8, scale ±10 %, rotate ±10°, jitter 4."""
    return compose(
        pad(12),
        jitter(8),
        random_scale([1 + (i - 5) / 50 for i in range(11)]),
        random_rotate(list(range(-10, 11)) + 5 * [0]),
        jitter(4),
    )


def as_transform(transforms) -> Transform | None:
    """``"standard"`` -> :func:`standard_transforms`; ``None`` or ``[]`` -> no transforms; a list -> composed."""
    if transforms is None:
        return None
    if isinstance(transforms, str):
        if transforms != "standard":
            raise ValueError(f"unknown transforms {transforms!r}; use 'standard', None, or a list of transforms.")
        return standard_transforms()
    if isinstance(transforms, (list, tuple)):
        return compose(*transforms) if transforms else None
    if callable(transforms):
        return transforms
    raise TypeError(f"transforms must be 'standard', None, a list of transforms or one, got {type(transforms).__name__}")
