"""Exercises of notebook 02 (saliency): softmax vs logit, SmoothGrad's noise, Grad-CAM at another layer,
occlusion's baseline, the sanity check for SmoothGrad."""
from __future__ import annotations

import functools

import torch

from ..images import load_images
from ..models import load_model
from ..saliency import _randomization_order, grad_cam, occlusion, relative_error, sanity_check_randomization, smoothgrad
from . import Exercise, register

#: Exercise images are small so that every check runs in seconds on a CPU.
SIZE = 96


@functools.lru_cache(maxsize=1)
def _offline_model():
    return load_model("efficientnet_lite0", verbose=False)


def _photo_context(size: int = SIZE) -> dict:
    model = _offline_model()
    images = load_images(["camera"], size=size)
    with torch.no_grad():
        target = model(images).argmax(dim=1)
    return {"model": model, "images": images, "target": target}


def _as_tensor(value, name: str) -> torch.Tensor:
    assert isinstance(value, torch.Tensor), f"return a torch.Tensor ({name}), got {type(value).__name__}"
    return value.detach().float()


def _spearman(first: torch.Tensor, second: torch.Tensor) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(first.flatten().cpu(), second.flatten().cpu())[0])


# --- 02.1 softmax vs logit -----------------------------------------------------------------------


def solution_1(model, images, target):
    """The gradient of the probability p_c instead of the logit S_c."""
    images = images.detach().requires_grad_(True)
    probabilities = model(images).softmax(dim=1).gather(1, target.view(-1, 1))   # p_c(x), shape (N, 1)
    (gradient,) = torch.autograd.grad(probabilities.sum(), images)
    return gradient


def wrong_1(model, images, target):
    """The logit's gradient: the softmax forgotten."""
    images = images.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(images).gather(1, target.view(-1, 1)).sum(), images)
    return gradient


def check_1(value, model, images, target):
    value = _as_tensor(value, "the gradient")
    assert value.shape == images.shape, f"expected one signed value per pixel and colour, shape {tuple(images.shape)}, got {tuple(value.shape)}"
    expected = solution_1(model, images, target)
    logit_gradient = wrong_1(model, images, target)
    if relative_error(value, logit_gradient) < 1e-4:
        raise AssertionError("this is the gradient of the logit S_c; take the softmax of the logits first and differentiate p_c")
    error = relative_error(value, expected)
    assert error < 1e-3, f"your gradient differs from d p_c / d x by {error:.1%} (relative error); is it the softmax over dim=1 of the class c?"
    with torch.no_grad():
        probability = model(images).softmax(dim=1).gather(1, target.view(-1, 1)).min().item()
    ratio = (value.norm() / logit_gradient.norm()).item()
    similarity = _spearman(value.abs().amax(dim=1), logit_gradient.abs().amax(dim=1))
    return (f"equals d p_c / d x. Here p_c = {probability:.2f}; the probability's gradient is {ratio:.2g} times the size of the "
            f"logit's, and its map ranks the pixels with rank correlation {similarity:.2f} to the logit's map")


register(Exercise(
    id="02.1", title="Softmax vs logit", check=check_1, solution=solution_1, wrong=wrong_1, make_context=_photo_context,
    answer="""The gradient of p_c is p_c times (the gradient of S_c minus the p-weighted mean of all classes' gradients). For a
    confident prediction it is much smaller than the logit's gradient (the softmax saturates) and it also shows what separates
    c from the other likely classes, so its map differs from the logit's. Explain the logit; the probability mixes in the
    other classes.""",
))


# --- 02.2 SmoothGrad's noise ---------------------------------------------------------------------


def _noise_context() -> dict:
    # 5 levels x 8 noisy copies, three times in a test: smaller images keep it to seconds.
    return {**_photo_context(size=64), "levels": (0.0, 0.05, 0.15, 0.3, 0.5)}


def solution_2(model, images, target, levels):
    """Roughness (mean neighbour difference / mean) of the SmoothGrad map at each noise level, the seed fixed."""
    values = []
    for level in levels:
        maps = smoothgrad(model, images, target, n_samples=8, noise_level=level, seed=0)
        roughness = maps.diff(dim=-1).abs().mean() + maps.diff(dim=-2).abs().mean()
        values.append(roughness / maps.mean())        # divided by the mean: the map's overall size does not count
    return torch.stack(values)


def wrong_2(model, images, target, levels):
    """The neighbour differences alone: they also shrink when the map as a whole gets smaller."""
    values = []
    for level in levels:
        maps = smoothgrad(model, images, target, n_samples=8, noise_level=level, seed=0)
        values.append(maps.diff(dim=-1).abs().mean() + maps.diff(dim=-2).abs().mean())
    return torch.stack(values)


def check_2(value, model, images, target, levels):
    value = _as_tensor(value, "one roughness per level").flatten()
    assert len(value) == len(levels), f"expected one number per noise level ({len(levels)}), got {len(value)}"
    expected = solution_2(model, images, target, levels)
    close = torch.allclose(value, expected.to(value.device), rtol=1e-3)
    assert close, (
        f"your roughness {[round(v, 3) for v in value.tolist()]} differs from ours {[round(v, 3) for v in expected.tolist()]}: "
        "divide the neighbour differences by the map's mean, use n_samples=8 and seed=0"
    )
    falls = [(a - b) / a for a, b in zip(expected[:-1].tolist(), expected[1:].tolist())]
    stop = next((levels[i] for i, drop in enumerate(falls) if drop < 0.1), levels[-1])
    return (f"roughness {', '.join(f'{l}: {v:.2f}' for l, v in zip(levels, expected.tolist()))}; "
            f"from noise level {stop} on it falls by less than 10 % per step")


register(Exercise(
    id="02.2", title="SmoothGrad's noise", check=check_2, solution=solution_2, wrong=wrong_2, make_context=_noise_context,
    answer="""Nearly all the smoothing happens between no noise (the plain gradient, the roughest map) and the first levels,
    0.05-0.15; beyond that the roughness stays about the same while the map loses the object's outline. Larger noise does
    not buy a smoother map, only a blurrier one: the paper's 10-20 % is a good default (more samples smooth further).""",
))


# --- 02.3 Grad-CAM at another layer --------------------------------------------------------------


def _layer_context() -> dict:
    context = _photo_context()
    model, images = context["model"], context["images"]
    with torch.no_grad():
        top_two = model(images).topk(2, dim=1).indices[0]
    return {"model": model, "image": images, "classes": top_two, "layer": "blocks.4"}


def solution_3(model, image, classes, layer):
    """Grad-CAM at `layer` for both classes, at the layer's resolution."""
    return grad_cam(model, image.expand(len(classes), -1, -1, -1), classes, layer=layer, upsample=False)


def wrong_3(model, image, classes, layer):
    """The default layer (the last conv block), upsampled: not the earlier layer asked for."""
    return grad_cam(model, image.expand(len(classes), -1, -1, -1), classes)


def check_3(value, model, image, classes, layer):
    value = _as_tensor(value, "two maps")
    images = image.expand(len(classes), -1, -1, -1)
    expected = solution_3(model, image, classes, layer)
    assert value.shape == expected.shape, (
        f"expected the maps at {layer!r}'s resolution, shape {tuple(expected.shape)}, got {tuple(value.shape)}: pass "
        f"layer={layer!r} and upsample=False"
    )
    error = relative_error(value, expected)
    assert error < 1e-3, f"your maps differ from Grad-CAM at {layer!r} by {error:.1%}; the predicted class first, with the ReLU"
    last = grad_cam(model, images, classes, upsample=False)
    here, there = _spearman(*expected), _spearman(*last)
    return (f"{layer!r} gives {expected.shape[-2]} x {expected.shape[-1]} positions against {last.shape[-2]} x {last.shape[-1]} "
            f"at the last layer; the two classes' maps have rank correlation {here:.2f} there against {there:.2f} at the last layer")


register(Exercise(
    id="02.3", title="Grad-CAM at another layer", check=check_3, solution=solution_3, wrong=wrong_3, make_context=_layer_context,
    answer="""An earlier block has twice (or more) the resolution, so the map can outline smaller parts; but its channels
    encode simpler, less class-specific features, and the gradient reaching them is noisier, so the maps of two classes are
    more alike (or noisier) than at the last layer. Grad-CAM is used at the last conv block for that reason.""",
))


# --- 02.4 occlusion's baseline -------------------------------------------------------------------


def solution_4(model, images, target):
    """Occlusion with a blurred copy of the image as the baseline: the patch loses its detail, not its colours."""
    import torchvision.transforms.functional as TF

    blurred = TF.gaussian_blur(images, kernel_size=31, sigma=8.0)
    return occlusion(model, images, target, window=32, stride=16, baseline=blurred, progress=False)


def wrong_4(model, images, target):
    """The default black baseline."""
    return occlusion(model, images, target, window=32, stride=16, progress=False)


def check_4(value, model, images, target):
    value = _as_tensor(value, "the occlusion map")
    assert value.shape == images.shape[:1] + images.shape[2:], f"expected one map per image, shape {(images.shape[0], *images.shape[2:])}, got {tuple(value.shape)}"
    expected = solution_4(model, images, target)
    black = wrong_4(model, images, target)
    if relative_error(value, black) < 1e-4:
        raise AssertionError("this is occlusion with a black patch (baseline=0); pass the blurred images as baseline=")
    error = relative_error(value, expected)
    assert error < 1e-3, f"your map differs from occlusion with the blurred baseline by {error:.1%}: kernel_size=31, sigma=8.0, window=32, stride=16"
    ratio = (expected.abs().mean() / black.abs().mean()).item()
    return (f"with a blurred patch the mean |drop| is {ratio:.2f} times the black patch's, and the two maps have rank "
            f"correlation {_spearman(expected, black):.2f}")


register(Exercise(
    id="02.4", title="Occlusion's baseline", check=check_4, solution=solution_4, wrong=wrong_4, make_context=_photo_context,
    answer="""A black patch removes colour and brightness as well as detail, and it is an unnatural object that can itself change
    the score; a blurred patch removes only the fine detail. The drops are usually smaller and concentrate on textured parts
    the network needs (edges, text, fine structure); flat regions that only mattered through their colour fade. The baseline
    is part of the question an occlusion map answers.""",
))


# --- 02.5 sanity check for SmoothGrad ------------------------------------------------------------


def _sanity_context() -> dict:
    context = _photo_context()
    return {**context, "layers": _randomization_order(context["model"])[:3]}


def solution_5(model, images, target, layers):
    """SmoothGrad's rank correlation with its intact map after randomizing each of `layers`, cumulatively."""
    result = sanity_check_randomization(model, images, target, methods={"smoothgrad": functools.partial(smoothgrad, n_samples=4)},
                                        layers=layers, seed=0, progress=False)
    return result.correlations["smoothgrad"]


def wrong_5(model, images, target, layers):
    """The plain gradient's correlations (the method passed is the gradient, not SmoothGrad)."""
    from ..saliency import vanilla_gradient

    result = sanity_check_randomization(model, images, target, methods={"smoothgrad": vanilla_gradient}, layers=layers,
                                        seed=0, progress=False)
    return result.correlations["smoothgrad"]


def check_5(value, model, images, target, layers):
    values = [float(v) for v in value]
    assert len(values) == len(layers), f"expected one correlation per randomized layer ({len(layers)}), got {len(values)}"
    expected = solution_5(model, images, target, layers)
    assert all(abs(a - b) < 1e-3 for a, b in zip(values, expected)), (
        f"your correlations {[round(v, 3) for v in values]} differ from SmoothGrad's {[round(v, 3) for v in expected]}: "
        "methods={'smoothgrad': functools.partial(smoothgrad, n_samples=4)}, the given layers, seed=0"
    )
    verdict = "passes: its map changes" if expected[0] < 0.8 else "fails: its map barely changes"
    return f"SmoothGrad's rank correlation after each step: {[round(v, 2) for v in expected]}; it {verdict} once the output layer is random"


register(Exercise(
    id="02.5", title="Does SmoothGrad pass the sanity check?", check=check_5, solution=solution_5, wrong=wrong_5,
    make_context=_sanity_context,
    answer="""SmoothGrad averages gradients, and the gradient passes: once the output layer is random, the class direction it
    differentiates is gone. SmoothGrad's correlation falls too (on the camera photo at 96 px to about 0.7, then lower), but
    less than the plain gradient's (about 0.3): averaging keeps the strong edges that all gradients share. It passes, more
    weakly; Adebayo et al. report the same. Averaging removes noise, not the dependence on the weights.""",
))
