"""Exercises of notebook 09 (what a layer keeps), each changing one thing, with a self-check, our solution and a typical mistake.

* 09.1 Another layer: invert the photo from ``blocks.2``.
* 09.2 The prior's weight: pixels with a total-variation penalty.
* 09.3 The parameterization: style transfer from noise with pixels and with a Fourier spectrum.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from . import Exercise, register

#: The sizes the tests use (the notebook passes its own photo and steps).
_TEST_SIZE = 64
_TEST_STEPS = 24


@lru_cache(maxsize=1)
def _model():
    from ..models import load_model

    return load_model("efficientnet_lite0", verbose=False)


@lru_cache(maxsize=2)
def _photo(name: str = "chelsea") -> torch.Tensor:
    from ..images import load_image

    return load_image(name, _TEST_SIZE)


def _checked_image(answer, photo: torch.Tensor) -> torch.Tensor:
    assert isinstance(answer, torch.Tensor), f"return the reconstruction as a tensor, got {type(answer).__name__}"
    assert tuple(answer.shape) == tuple(photo.shape), (
        f"expected one image of shape {tuple(photo.shape)} (1, 3, H, W), got {tuple(answer.shape)}")
    assert answer.min() >= 0 and answer.max() <= 1, "the image must lie in [0, 1]: return what invert returns"
    image = answer.detach().to(photo.device, torch.float32)
    assert (image - photo).abs().mean() > 0.01, "this is the photo itself: return the image the optimization found"
    return image


def _match(model, image: torch.Tensor, photo: torch.Tensor, layer_name: str) -> float:
    """The cosine of the image's and the photo's activations at the layer."""
    from ..featurevis import photo_activations

    reached = photo_activations(model, image, [layer_name])[layer_name]
    target = photo_activations(model, photo, [layer_name])[layer_name]
    return F.cosine_similarity(reached.flatten(), target.flatten(), dim=0).item()


def _total_variation(image: torch.Tensor) -> float:
    return ((image[..., 1:, :] - image[..., :-1, :]).abs().mean() + (image[..., :, 1:] - image[..., :, :-1]).abs().mean()).item()


def _inversion_context():
    return {"model": _model(), "photo": _photo(), "steps": _TEST_STEPS}


# ----------------------------------------------------------------------------- 09.1 another layer


def solution_1(model, photo, layer_name, steps):
    """The reconstruction of ``photo`` from its activation at ``layer_name``, with the default prior."""
    from ..featurevis import invert

    return invert(model, photo, layer_name, steps=steps, progress=False)


def wrong_1(model, photo, layer_name, steps):
    """The photo itself: it matches every layer perfectly, and says nothing about what the layer keeps."""
    return photo.clone()


def check_1(answer, model, photo, layer_name, steps):
    image = _checked_image(answer, photo)
    cosine = _match(model, image, photo, layer_name)
    needed = 0.7 if steps < 64 else 0.85
    assert cosine >= needed, (
        f"the activation of your image at {layer_name} points away from the photo's (cosine {cosine:.2f}, needed {needed}): "
        f"did you invert {layer_name}, with the steps given?")
    return f"cosine {cosine:.3f} with the photo's activation at {layer_name}; compare the picture with blocks.1's and blocks.3's"


register(Exercise(
    id="09.1", title="another layer", check=check_1, solution=solution_1, wrong=wrong_1,
    make_context=lambda: {**_inversion_context(), "layer_name": "blocks.2"},
    answer="invert(model, photo, 'blocks.2') matches the activation at blocks.2 closely; the picture lies between the "
           "blocks.1 and blocks.3 reconstructions: the shapes are in place, the fine texture and the exact colours start to drift.",
))


# ----------------------------------------------------------------------------- 09.2 the prior's weight

TV_WEIGHT = 3.0


def solution_2(model, photo, layer_name, steps):
    """Pixels, no Fourier prior, but a total-variation penalty of weight 3."""
    from ..featurevis import invert

    return invert(model, photo, layer_name, param="pixels", tv_weight=TV_WEIGHT, steps=steps, progress=False)


def wrong_2(model, photo, layer_name, steps):
    """The weight left at 0: the no-prior picture again."""
    from ..featurevis import invert

    return invert(model, photo, layer_name, param="pixels", steps=steps, progress=False)


@lru_cache(maxsize=2)
def _no_prior_reference(model, photo, layer_name, steps):
    return wrong_2(model, photo, layer_name, steps)


def check_2(answer, model, photo, layer_name, steps):
    image = _checked_image(answer, photo)
    reference = _no_prior_reference(model, photo, layer_name, steps)
    ours, theirs = _total_variation(image), _total_variation(reference)
    assert ours <= 0.9 * theirs, (
        f"total variation {ours:.3f} against {theirs:.3f} without the penalty: subtract tv_weight * total_variation, "
        f"tv_weight={TV_WEIGHT} (invert(..., tv_weight={TV_WEIGHT}))")
    cosine, reference_cosine = _match(model, image, photo, layer_name), _match(model, reference, photo, layer_name)
    assert cosine >= 0.8 * reference_cosine, (
        f"the match to {layer_name} fell from cosine {reference_cosine:.2f} to {cosine:.2f}: the penalty is too strong")
    return (f"total variation {ours:.3f} instead of {theirs:.3f}, the layer still matched (cosine {cosine:.2f} vs "
            f"{reference_cosine:.2f}); try tv_weight=30 and watch the match fall")


register(Exercise(
    id="09.2", title="the prior's weight", check=check_2, solution=solution_2, wrong=wrong_2,
    make_context=lambda: {**_inversion_context(), "layer_name": "blocks.3"},
    answer="A total-variation penalty lowers the speckle of the pixel reconstruction without losing the layer's match; a much "
           "larger weight flattens the picture and the match falls: a reconstruction always shows the layer and the prior.",
))


# ----------------------------------------------------------------------------- 09.3 the parameterization


def solution_3(model, content_image, style_image, style_weight, steps):
    """Final style losses from noise: (pixels, fourier)."""
    from ..featurevis import style_transfer

    finals = []
    for param in ("pixels", "fourier"):
        _, losses = style_transfer(model, content_image, style_image, style_weight=style_weight, param=param, init="noise",
                                   steps=steps, progress=False, return_losses=True)
        finals.append(losses["style"][1])
    return tuple(finals)


@lru_cache(maxsize=2)
def _reference_3(model, content_image, style_image, style_weight, steps):
    return solution_3(model, content_image, style_image, style_weight, steps)


def wrong_3(model, content_image, style_image, style_weight, steps):
    """The two losses in the wrong order."""
    pixels, fourier = _reference_3(model, content_image, style_image, style_weight, steps)
    return fourier, pixels


def check_3(answer, model, content_image, style_image, style_weight, steps):
    assert isinstance(answer, (tuple, list)) and len(answer) == 2, "return two numbers: (pixels, fourier)"
    pixels, fourier = (float(value) for value in answer)
    expected_pixels, expected_fourier = _reference_3(model, content_image, style_image, style_weight, steps)
    for name, value, expected in (("pixels", pixels, expected_pixels), ("fourier", fourier, expected_fourier)):
        if abs(value - expected) > 0.02 * expected:
            swapped = abs(pixels - expected_fourier) <= 0.02 * expected_fourier
            hint = " — the two are swapped: pixels first" if swapped else (
                " — use init='noise', the style weight and steps given, and losses['style'][1]")
            raise AssertionError(f"the {name} style loss should be {expected:.3f}, got {value:.3f}{hint}")
    return (f"from noise the Fourier parameterization ends at a style loss of {fourier:.3f}, the pixels at {pixels:.3f} "
            f"({pixels / fourier:.1f}x higher)")


register(Exercise(
    id="09.3", title="the parameterization, from noise", check=check_3, solution=solution_3, wrong=wrong_3,
    make_context=lambda: {"model": _model(), "content_image": _photo(), "style_image": _photo("ihc"), "style_weight": 3.0,
                          "steps": _TEST_STEPS},
    answer="From noise the decorrelated Fourier parameterization reaches a much lower style loss than the pixels, and its picture "
           "shows the cat in the style while the pixels give grey static: on a network that is not VGG, the parameterization "
           "decides whether style transfer works (Mordvintsev et al. 2018).",
))
