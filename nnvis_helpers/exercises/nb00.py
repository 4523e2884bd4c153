"""Exercises of notebook 00 (start here): softmax by hand, sizes, two layers at once, a transparent photo."""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..images import load_image, load_images
from ..layers import capture_activations
from ..models import load_model
from . import Exercise, register


@functools.lru_cache(maxsize=1)
def _offline_model():
    return load_model("efficientnet_lite0", verbose=False)


# --- 00.1 softmax by hand ------------------------------------------------------------------------


def _softmax_context() -> dict:
    model = _offline_model()
    with torch.no_grad():
        logits = model(load_images(["chelsea", "coffee"], size=160))
    return {"logits": logits}


def solution_1(logits):
    """p_c = exp(S_c) / sum_k exp(S_k), computed without overflow: subtract the largest logit first."""
    shifted = logits - logits.max(dim=1, keepdim=True).values
    exponentials = shifted.exp()
    return exponentials / exponentials.sum(dim=1, keepdim=True)


def wrong_1(logits):
    """The textbook formula as written: exp overflows for logits above ~88 (float32)."""
    exponentials = logits.exp()
    return exponentials / exponentials.sum(dim=1, keepdim=True)


def check_1(answer, logits):
    probabilities = torch.as_tensor(answer(logits))
    assert probabilities.shape == logits.shape, f"expected one probability per logit, shape {tuple(logits.shape)}, got {tuple(probabilities.shape)}"
    expected = logits.softmax(dim=1)
    assert torch.allclose(probabilities, expected, atol=1e-6), "your probabilities differ from torch.softmax on the model's logits"
    # The same logits a hundred times larger, as a very confident network gives them.
    large = logits * 100.0
    probabilities = torch.as_tensor(answer(large))
    assert torch.isfinite(probabilities).all(), (
        "with logits 100 times larger (a very confident network) your softmax gives inf or NaN: "
        "exp(S_c) overflows above about 88 in float32. Subtract the largest logit first; the result is the same."
    )
    assert torch.allclose(probabilities, large.softmax(dim=1), atol=1e-6), "with large logits your probabilities differ from torch.softmax"
    return "equals torch.softmax, also for logits 100 times larger"


# --- 00.2 where the model becomes unsure -----------------------------------------------------------


def _sizes_context() -> dict:
    return {"model": _offline_model(), "sizes": (128, 224, 320)}


def solution_2(model, sizes):
    """The probability of the top class of the cat photo at each size."""
    confidence = {}
    for size in sizes:
        with torch.no_grad():
            probabilities = model(load_image("chelsea", size)).softmax(dim=1)
        confidence[size] = probabilities.max().item()
    return confidence


def wrong_2(model, sizes):
    """The top logit instead of the top probability: not a confidence, and not comparable across sizes."""
    confidence = {}
    for size in sizes:
        with torch.no_grad():
            confidence[size] = model(load_image("chelsea", size)).max().item()
    return confidence


def check_2(answer, model, sizes):
    assert isinstance(answer, dict) and sorted(answer) == sorted(sizes), f"return a dict {{size: probability}} for the sizes {sizes}"
    for size in sizes:
        with torch.no_grad():
            expected = model(load_image("chelsea", size)).softmax(dim=1).max().item()
        assert 0.0 <= answer[size] <= 1.0, f"size {size}: {answer[size]:.3f} is not a probability — apply the softmax to the logits"
        assert abs(answer[size] - expected) < 1e-4, f"size {size}: expected a top-1 probability of {expected:.4f}, got {answer[size]:.4f}"
    least = min(answer, key=answer.get)
    return f"the model is least sure at {least} px (p = {answer[least]:.2f}); it was trained at 224"


# --- 00.3 two layers at once -----------------------------------------------------------------------


def _layers_context() -> dict:
    return {"model": _offline_model(), "images": load_images(["chelsea"], size=160), "layers": ("blocks.1", "blocks.5")}


def solution_3(model, images, layers):
    """Channels and resolution of two layers, from one forward pass with both hooks."""
    with capture_activations(model, list(layers)) as activations:
        model(images)
    return {name: tuple(activations[name].shape[1:]) for name in layers}


def wrong_3(model, images, layers):
    """The whole shape, batch dimension included: (1, C, H, W) instead of (C, H, W)."""
    with capture_activations(model, list(layers)) as activations:
        model(images)
    return {name: tuple(activations[name].shape) for name in layers}


def check_3(answer, model, images, layers):
    with capture_activations(model, list(layers)) as activations:
        with torch.no_grad():
            model(images)
    for name in layers:
        expected = tuple(activations[name].shape[1:])
        assert name in answer, f"no entry for layer {name!r}"
        assert tuple(answer[name]) == expected, f"{name}: expected (channels, height, width) = {expected}, got {tuple(answer[name])}"
    early, late = (answer[name] for name in layers)
    return (f"{layers[0]} has {early[0]} channels at {early[1]}x{early[2]}, {layers[1]} {late[0]} channels at "
            f"{late[1]}x{late[2]}: deeper layers trade resolution for channels")


# --- 00.4 a photo with transparency ----------------------------------------------------------------


def _transparent_context() -> dict:
    folder = Path(tempfile.mkdtemp(prefix="nnvis_exercise_"))
    pixels = (load_image("coffee", 128)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    alpha = np.full(pixels.shape[:2], 255, dtype=np.uint8)
    alpha[:, :64] = 0                                   # the left half is fully transparent
    rgba = np.dstack([pixels, alpha])
    rgba[:, :64, :3] = 0                                # what a transparent pixel's colour often is: black
    path = folder / "half_transparent.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    return {"path": str(path)}


def solution_4(path):
    """Load the PNG as the course does, and return the mean value of its left (transparent) half."""
    image = load_image(path, size=None)
    return image[..., : image.shape[-1] // 2].mean().item()


def wrong_4(path):
    """PIL's convert("RGB") drops the alpha channel: transparent pixels show their hidden colour (black here)."""
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    return float(array[:, : array.shape[1] // 2].mean())


def check_4(answer, path):
    value = float(answer)
    assert 0.0 <= value <= 1.0, f"{value} is not a pixel value in [0, 1]: load with load_image, which scales to [0, 1]"
    assert value > 0.99, (
        f"the transparent half has mean {value:.3f}; composited over white it would be 1.0. "
        "Dropping the alpha channel shows whatever colour the transparent pixels happen to store."
    )
    return "the transparent half is white, as load_image composites RGBA pictures over white"


register(Exercise(
    id="00.1", title="softmax by hand", check=check_1, solution=solution_1, wrong=wrong_1,
    make_context=_softmax_context, takes_function=True,
    answer="Subtract the largest logit before exponentiating: softmax(S - max S) = softmax(S), and every exponent is then at most 0, so nothing overflows.",
))
register(Exercise(
    id="00.2", title="where the model becomes unsure", check=check_2, solution=solution_2, wrong=wrong_2,
    make_context=_sizes_context,
    answer="The softmax of the logits at each size; EfficientNet-Lite0 is least sure far from its training size of 224 px.",
))
register(Exercise(
    id="00.3", title="two layers at once", check=check_3, solution=solution_3, wrong=wrong_3, make_context=_layers_context,
    answer="One capture_activations block with a list of names records both; shape[1:] drops the batch dimension.",
))
register(Exercise(
    id="00.4", title="a photo with transparency", check=check_4, solution=solution_4, wrong=wrong_4,
    make_context=_transparent_context,
    answer="load_image composites RGBA over white, so the transparent half reads 1.0; PIL's convert('RGB') would keep the hidden colour.",
))
