"""Style transfer (Gatys, Ecker & Bethge, *A Neural Algorithm of Artistic Style*, 2015) as objectives for ``render``.

The style of an image at a layer is the Gram matrix of its activation: with F the (C, HW)
matrix of the map, G = F F^T / (HW), the correlation of every pair of channels, averaged over
positions, so where things are is gone and which features occur together stays. Style transfer
looks for an image whose Gram matrices at several layers match a style image's while its
activation at one deeper layer matches a content photo's:

    maximize  - style_weight * sum_l ||G_l(x) - G_l(s)||^2 / ||G_l(s)||^2  - content_weight * ||A(x) - A(c)||^2 / ||A(c)||^2

:func:`gram_matrix`, the objective :func:`style` and :func:`style_transfer`, the recipe: one
:func:`render` with the parameterization (pixels or Fourier, from the content photo or from
noise) as its one real choice. Mordvintsev et al. (*Differentiable Image Parameterizations*,
Distill 2018) show that a decorrelated Fourier parameterization makes style transfer work on
networks other than VGG, where the pixel one gives noise; notebook 09 tries both.

>>> picture = style_transfer(model, load_image("chelsea", 160), load_image("coffee", 160))
"""
from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from ..checks import check_images
from .inversion import _check_weight, _recipe_setup, activation_match, photo_activations
from .objectives import Objective, _check_batch, _check_layer_name, _check_layer_shape, _select

__all__ = ["gram_matrix", "style", "default_style_layers", "style_transfer", "STYLE_LAYERS"]

#: Default (style layers, content layer) per model of ``load_model``: the classic choice for VGG
#: (Gatys et al.: relu1_1 ... relu5_1 for style, relu4_2 for content), and for EfficientNet-Lite0 the
#: stem and the ends of its first four stages for style, the end of the fourth for content.
STYLE_LAYERS: dict[str, tuple[tuple[str, ...], str]] = {
    "vgg19": (("features.1", "features.6", "features.11", "features.20", "features.29"), "features.22"),
    "vgg16": (("features.1", "features.6", "features.11", "features.18", "features.25"), "features.20"),
    "efficientnet_lite0": (("bn1", "blocks.0", "blocks.1", "blocks.2", "blocks.3"), "blocks.3"),
}


def gram_matrix(activations: torch.Tensor) -> torch.Tensor:
    """G = F F^T / (H W) for activations (N, C, H, W): (N, C, C), the channels' correlations over positions.

    >>> gram_matrix(torch.ones(1, 2, 4, 4))
    tensor([[[1., 1.],
             [1., 1.]]])
    """
    if not isinstance(activations, torch.Tensor) or activations.dim() != 4:
        shape = tuple(activations.shape) if isinstance(activations, torch.Tensor) else type(activations).__name__
        raise ValueError(f"gram_matrix needs activations of shape (N, C, H, W), got {shape}; take them at a "
                         "convolutional layer.")
    flat = activations.flatten(2)  # (N, C, HW)
    return flat @ flat.transpose(1, 2) / flat.shape[2]


def style(targets: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None,
          batch: int | None = None) -> Objective:
    """Minus the style loss: sum over layers of w_l ||G_l(x) - G_l(s)||^2 / ||G_l(s)||^2 (to maximize).

    ``targets``: layer name -> the style image's activation (1, C, H, W) there, as
    :func:`photo_activations` returns them (their Gram matrices are computed once, here). The
    relative error makes layers of any scale weigh alike; ``weights`` ({layer: weight}, 1 for a layer not named)
    change that.

    >>> objective = style(photo_activations(model, painting, ["blocks.1", "blocks.2"]))
    """
    if not isinstance(targets, Mapping) or not targets:
        raise ValueError("style needs {layer name: the style image's activation there}, e.g. "
                         "photo_activations(model, style_image, ['blocks.1', 'blocks.2']).")
    unknown = set(weights or {}) - set(targets)
    if unknown:
        raise ValueError(f"weights name layers that have no target: {sorted(unknown)}; the targets are {list(targets)}.")
    weights = {name: 1.0 for name in targets} | dict(weights or {})  # a layer the weights do not name keeps 1
    grams = {}
    for name, activation in targets.items():
        _check_layer_name(name)
        _check_weight(weights.get(name, 0.0), f"the weight of {name!r}")
        if not isinstance(activation, torch.Tensor) or activation.dim() != 4 or activation.shape[0] != 1:
            shape = tuple(activation.shape) if isinstance(activation, torch.Tensor) else type(activation).__name__
            raise ValueError(f"the style target of {name!r} must be one image's activation (1, C, H, W), got {shape}.")
        grams[name] = gram_matrix(activation.detach().float())
    cache: dict = {}

    def inner(acts):
        total = 0.0
        for name, goal in grams.items():
            gram = gram_matrix(acts[name])
            key = (name, gram.device, gram.dtype)
            if key not in cache:
                cache[key] = (goal.to(device=gram.device, dtype=gram.dtype), goal.pow(2).sum().clamp(min=1e-12).item())
            goal_here, norm = cache[key]
            total = total + weights.get(name, 0.0) * (gram - goal_here).pow(2).flatten(1).sum(1) / norm
        return _select(-total, batch)

    def check_channels(shapes, batch_size):
        for name, goal in grams.items():
            shape = shapes.get(name)
            if shape is not None and (len(shape) != 4 or shape[1] != goal.shape[1]):
                raise ValueError(f"layer {name!r} has activations of shape {tuple(shape)} but its style target has "
                                 f"{goal.shape[1]} channels; take the targets at the same layers of the same model.")

    checks = [_check_layer_shape(name) for name in grams] + [check_channels, _check_batch(batch)]
    return Objective(inner, f"style {len(grams)} layers", list(grams), checks=checks)


def default_style_layers(model: nn.Module) -> tuple[tuple[str, ...], str]:
    """The default (style layers, content layer) of a model of ``load_model`` (:data:`STYLE_LAYERS`)."""
    from ..models import model_info

    try:
        name = model_info(model).name
    except (ValueError, TypeError, AttributeError):
        name = None
    if name not in STYLE_LAYERS:
        raise ValueError(
            f"no default style layers for {name or type(model).__name__}: pass style_layers=[...] and content_layer=... "
            "yourself (a few layers from early to middle for style, one middle layer for content, names as "
            f"print(model) shows them). Defaults exist for {sorted(STYLE_LAYERS)}."
        )
    return STYLE_LAYERS[name]


def style_transfer(
    model: nn.Module,
    content_image: torch.Tensor,
    style_image: torch.Tensor,
    style_layers: Iterable[str] | None = None,
    content_layer: str | None = None,
    style_weight: float = 1.0,
    content_weight: float = 1.0,
    param: str = "fourier",
    init: str = "content",
    transforms=None,
    steps: int | None = None,
    lr: float = 0.05,
    seed: int = 0,
    progress: bool = True,
    return_losses: bool = False,
):
    """The content of ``content_image`` (1, 3, H, W) painted in the style of ``style_image`` (1, 3, H', W').

    One :func:`render` of ``style_weight * style(...) + content_weight * activation_match(content_layer, ...)``
    at the content photo's size. ``param``: ``"fourier"`` or ``"pixels"``; ``init``: ``"content"``
    (start from the photo) or ``"noise"``. The layers default to :func:`default_style_layers` of the model,
    so ``load_model("vgg19")`` gives the classic result with the same call. With
    ``return_losses=True`` also returns ``{"style": (start, end), "content": (start, end)}``: the
    two losses (positive, relative) on the starting image and on the result.

    >>> picture = style_transfer(model, photo, painting, param="fourier", init="noise")
    """
    from .param import fourier, pixels
    from .render import evaluate, render

    if style_layers is None or content_layer is None:
        default_style, default_content = default_style_layers(model)
        style_layers = default_style if style_layers is None else style_layers
        content_layer = default_content if content_layer is None else content_layer
    style_names = [style_layers] if isinstance(style_layers, str) else list(style_layers)
    if param not in ("fourier", "pixels"):
        raise ValueError(f"param must be 'fourier' or 'pixels', got {param!r}")
    if init not in ("content", "noise"):
        raise ValueError(f"init must be 'content' or 'noise', got {init!r}")
    style_weight = _check_weight(style_weight, "style_weight")
    content_weight = _check_weight(content_weight, "content_weight")
    check_images(style_image, "style_image")
    if style_image.shape[0] != 1:
        raise ValueError(f"give one style image (1, 3, H, W), got {style_image.shape[0]}.")
    content_image, content_targets = _recipe_setup(model, content_image, [content_layer])
    style_objective = style(photo_activations(model, style_image, style_names))
    content_objective = activation_match(content_layer, content_targets[content_layer], "l2")
    objective = style_weight * style_objective + content_weight * content_objective
    start = content_image if init == "content" else None
    recipe = (fourier if param == "fourier" else pixels)(init=start)
    size = tuple(content_image.shape[-2:])
    result = render(model, objective, param=recipe, transforms=transforms, steps=steps, image_size=size, lr=lr,
                    seed=seed, progress=progress)
    if not return_losses:
        return result
    if start is None:  # the noise render started from: the same recipe and seed give the same first image
        device = next(iter(content_targets.values())).device
        with torch.no_grad():
            start = recipe(1, size, device, torch.Generator().manual_seed(seed))()
    both = torch.cat([start.to(result.device), result])  # one pass per loss for the two images
    losses = {}
    for name, term in (("style", style_objective), ("content", content_objective)):
        before, after = (-evaluate(model, both, term)).tolist()
        losses[name] = (before, after)
    return result, losses
