"""How the image is made from the numbers we optimize: pixels, or a Fourier spectrum.

A parameterization is a recipe, ``pixels(...)`` or ``fourier(...)``; :func:`render` builds it
for a batch size, image size and device into an :class:`ImageParam`, a small module whose
``parameters()`` the optimizer changes and whose call returns images (N, 3, H, W) in [0, 1].

* :func:`pixels`: one number per pixel and colour. Plain gradient ascent on it gives the
  high-frequency noise of the naive algorithm.
* :func:`fourier`: the image's 2-D spectrum, scaled by 1/frequency so that every frequency
  gets about the same step (Olah et al. 2017, "Feature Visualization"; Lucid's ``fft_image``).
* ``decorrelate=True``: the three numbers per pixel live in a decorrelated colour space
  (ImageNet's colour covariance, square root), as in Lucid's ``to_valid_rgb``.

Both squash with a sigmoid so the image always stays in [0, 1].
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["ImageParam", "pixels", "fourier", "as_param", "COLOR_CORRELATION"]

# Square root of ImageNet's colour covariance (Lucid), columns scaled to max norm 1.
_COLOR_CORRELATION_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float32
)
COLOR_CORRELATION = _COLOR_CORRELATION_SVD_SQRT / _COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()


class ImageParam(nn.Module):
    """A batch of images made from optimizable numbers; ``param()`` -> (N, 3, H, W) in [0, 1].

    ``make(raw) -> images`` turns the raw tensor into images; ``raw`` is the one parameter.
    """

    def __init__(self, raw: torch.Tensor, make: Callable[[torch.Tensor], torch.Tensor], description: str):
        super().__init__()
        self.raw = nn.Parameter(raw)
        self._make = make
        self.description = description

    def forward(self) -> torch.Tensor:
        return self._make(self.raw)

    def extra_repr(self) -> str:
        return self.description


def _decorrelated_to_rgb(tensor: torch.Tensor) -> torch.Tensor:
    matrix = COLOR_CORRELATION.to(device=tensor.device, dtype=tensor.dtype)
    return torch.einsum("nchw,dc->ndhw", tensor, matrix)


def _rgb_to_decorrelated(tensor: torch.Tensor) -> torch.Tensor:
    inverse = torch.linalg.inv(COLOR_CORRELATION).to(device=tensor.device, dtype=tensor.dtype)
    return torch.einsum("nchw,dc->ndhw", tensor, inverse)


def _logit(images: torch.Tensor) -> torch.Tensor:
    return torch.logit(images.clamp(1e-3, 1 - 1e-3))


def _random(shape, sd: float, generator: torch.Generator, device) -> torch.Tensor:
    # Drawn on the CPU with our own generator: the same picture on every device, no global seed.
    return (torch.randn(shape, generator=generator) * sd).to(device)


def _init_batch(init: torch.Tensor, batch_size: int, image_size: tuple[int, int], device) -> torch.Tensor:
    from ..checks import check_images

    check_images(init, "init")
    if init.shape[0] not in (1, batch_size):
        raise ValueError(f"init has {init.shape[0]} images but the batch has {batch_size}; give 1 or {batch_size}.")
    if tuple(init.shape[2:]) != tuple(image_size):
        raise ValueError(
            f"init is {init.shape[2]}x{init.shape[3]} but image_size is {image_size[0]}x{image_size[1]}; "
            "load it with load_image(..., size=image_size) or leave image_size out."
        )
    return init.detach().to(device=device, dtype=torch.float32).expand(batch_size, -1, -1, -1).clone()


def pixels(sd: float = 0.01, decorrelate: bool = False, init: torch.Tensor | None = None,
           max_change: float | None = None):
    """Optimize the pixels directly (sigmoid-squashed): the naive parameterization.

    ``init``: start from these images (N or 1, 3, H, W) instead of grey noise.
    ``max_change``: with ``init``, every pixel stays within ``max_change`` of it (an L-infinity
    ball, as adversarial examples use): image = clip(init + max_change * tanh(raw)).

    >>> images = render(model, channel("blocks.3", 5), param=pixels(), transforms=None)
    """
    if max_change is not None and init is None:
        raise ValueError("max_change limits the change from an initial image: give init= too.")
    if max_change is not None and not 0 < max_change <= 1:
        raise ValueError(f"max_change is in pixel units (0, 1], e.g. 8/255; got {max_change!r}")

    def build(batch_size: int, image_size: tuple[int, int], device, generator: torch.Generator) -> ImageParam:
        shape = (batch_size, 3, *image_size)
        start = None if init is None else _init_batch(init, batch_size, image_size, device)
        if max_change is not None:
            raw = torch.zeros(shape, device=device)

            def make(raw):
                return (start + max_change * torch.tanh(raw)).clamp(0, 1)

            return ImageParam(raw, make, f"pixels within {max_change:.4g} of init, {shape}")
        if start is None:
            raw = _random(shape, sd, generator, device)
        else:
            raw = _logit(start)
            if decorrelate:
                raw = _rgb_to_decorrelated(raw)

        def make(raw):
            return torch.sigmoid(_decorrelated_to_rgb(raw) if decorrelate else raw)

        return ImageParam(raw, make, f"pixels{' decorrelated' if decorrelate else ''}, {shape}")

    build.description = "pixels"
    return build


def _frequencies(height: int, width: int) -> torch.Tensor:
    """|f| of every coefficient of ``rfft2`` for an (height, width) image, in cycles per pixel."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def fourier(sd: float = 0.01, decay_power: float = 1.0, decorrelate: bool = True, init: torch.Tensor | None = None):
    """Optimize the image's Fourier spectrum, scaled by 1/|f|^decay_power (Lucid's ``fft_image``).

    Low frequencies get as large steps as high ones, so the optimizer stops favouring noise.
    ``decorrelate=True`` also decorrelates the colours. ``init``: start from these images
    (N or 1, 3, H, W) instead of grey noise; their spectrum becomes the starting parameters, so
    the first image is ``init`` itself (to 1e-3: pixels are kept inside [0.001, 0.999]).

    >>> images = render(model, channel("blocks.3", 5), param=fourier())
    >>> styled = render(model, objective, param=fourier(init=photo), image_size=photo.shape[-2:])
    """

    def build(batch_size: int, image_size: tuple[int, int], device, generator: torch.Generator) -> ImageParam:
        height, width = image_size
        frequencies = _frequencies(height, width)
        scale = 1.0 / frequencies.clamp(min=1.0 / max(height, width)) ** decay_power
        scale = scale[None, None, :, :, None].to(device)  # real and imaginary parts alike
        if init is None:
            raw = _random((batch_size, 3, *frequencies.shape, 2), sd, generator, device)
        else:  # the inverse of make() below: logit, colours back, times Lucid's 4, spectrum, divided by the scale
            spatial = _logit(_init_batch(init, batch_size, image_size, device))
            if decorrelate:
                spatial = _rgb_to_decorrelated(spatial)
            spectrum = torch.fft.rfft2(4.0 * spatial, norm="ortho")
            raw = torch.view_as_real(spectrum) / scale

        def make(raw):
            spectrum = torch.view_as_complex((scale * raw).contiguous())
            image = torch.fft.irfft2(spectrum, s=(height, width), norm="ortho") / 4.0  # Lucid's constant
            return torch.sigmoid(_decorrelated_to_rgb(image) if decorrelate else image)

        return ImageParam(raw, make, f"fourier 1/f^{decay_power:g}{' decorrelated' if decorrelate else ''}, "
                                     f"{(batch_size, 3, height, width)}")

    build.description = "fourier"
    return build


def as_param(param) -> Callable:
    """A parameterization recipe from a recipe, or from the names ``"pixels"`` / ``"fourier"``."""
    if param is None:
        return fourier()
    if isinstance(param, str):
        recipes = {"pixels": pixels, "fourier": fourier, "fft": fourier}
        if param not in recipes:
            raise ValueError(f"unknown parameterization {param!r}; use 'pixels', 'fourier', pixels(...) or fourier(...).")
        return recipes[param]()
    if callable(param):
        return param
    raise TypeError(f"param must be pixels(...), fourier(...) or a name, got {type(param).__name__}")


def _size_pair(image_size) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        pair = (image_size, image_size)
    else:
        pair = tuple(image_size)
    if len(pair) != 2 or any(not isinstance(v, int) or v < 8 for v in pair):
        raise ValueError(f"image_size must be an int or (height, width) of at least 8 pixels, got {image_size!r}")
    return pair

