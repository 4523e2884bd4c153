"""What a layer keeps of a photo: feature inversion and caricatures, as objectives for ``render``.

* **Feature inversion** (Mahendran & Vedaldi, *Understanding Deep Image Representations by
  Inverting Them*, CVPR 2015): find an image x whose activation A(x) at a layer matches the
  photo's, A0 = A(photo), starting from noise. :func:`activation_match` is the objective,
  minus the relative squared error ||A(x) - A0||^2 / ||A0||^2 (their loss), or the cosine of
  the two; :func:`invert` is the recipe. What the reconstruction lacks, the layer threw away.
* **Caricature** (Lucid's caricature notebook; Mordvintsev et al., *Differentiable Image
  Parameterizations*, Distill 2018): exaggerate what a layer sees in a photo by maximizing
  <A(x), A0> * cos(A(x), A0)^p, the dot product times a power of the cosine:
  :func:`activation_dot` and the recipe :func:`caricature`.

Both are ordinary objectives: they combine with the others (``- 0.1 * total_variation()``) and
run in :func:`~nnvis_helpers.featurevis.render`'s one loop. The target is the photo's activation
(``photo_activations``); ``MODEL_OUTPUT`` as the layer name means the logits. When random
transforms change the image's size, the target map is resized to the activation's size.

>>> targets = photo_activations(model, photo, ["blocks.3"])
>>> image = render(model, activation_match("blocks.3", targets["blocks.3"]), image_size=photo.shape[-2:])
>>> image = invert(model, photo, "blocks.3")          # the same, with the course's prior
"""
from __future__ import annotations

import numbers
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_images
from .objectives import MODEL_OUTPUT, Objective, _check_batch, _check_layer_name, _check_layer_shape, _select, total_variation

__all__ = ["photo_activations", "activation_match", "activation_dot", "invert", "caricature"]

_METRICS = ("l2", "cosine")


def _describe(layer_name: str) -> str:
    return "the logits" if layer_name == MODEL_OUTPUT else f"layer {layer_name!r}"


def photo_activations(model: nn.Module, images: torch.Tensor, layers: str | Iterable[str]) -> dict[str, torch.Tensor]:
    """The activations of ``images`` (N, 3, H, W) at each of ``layers``, without gradients, on the model's device.

    ``MODEL_OUTPUT`` among the layers adds the logits. One forward pass, stopped after the last
    layer needed; the model is given back as it was.

    >>> targets = photo_activations(model, photo, ["blocks.1", "blocks.5", MODEL_OUTPUT])
    """
    from .render import ActivationRunner

    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ValueError("name at least one layer, e.g. ['blocks.3'] (MODEL_OUTPUT for the logits).")
    for name in names:
        _check_layer_name(name)
    check_images(images)
    inner_layers = [name for name in names if name != MODEL_OUTPUT]
    reader = Objective(lambda acts: torch.zeros(()), "photo activations", inner_layers,
                       needs_output=MODEL_OUTPUT in names)
    with ActivationRunner(model, reader) as runner, torch.no_grad():
        activations = runner(images.to(device=runner.device))
    missing = [name for name in names if activations.get(name) is None]
    if missing:
        raise ValueError(f"{', '.join(map(repr, missing))} produced no tensor output in a forward pass; "
                         "pick layers listed by list_layers(model).")
    return {name: activations[name].detach() for name in names}


def _as_target(target, what: str) -> torch.Tensor:
    if not isinstance(target, torch.Tensor):
        target = torch.as_tensor(target, dtype=torch.float32)
    if not target.is_floating_point():
        raise ValueError(f"the {what} target must be a float tensor, got dtype {target.dtype}.")
    if not torch.isfinite(target).all():
        raise ValueError(f"the {what} target contains NaN or infinite values; check how it was computed.")
    if target.dim() not in (1, 2, 3, 4):
        raise ValueError(f"the {what} target must be an activation (N, C, H, W), (C, H, W), (N, C) or (C,); "
                         f"got shape {tuple(target.shape)}.")
    return target.detach()


def _target_check(layer_name: str, target: torch.Tensor, what: str):
    """Check the target against the layer's real shape: channels, number of dims, batch."""

    def check(shapes, batch_size):
        shape = shapes.get(layer_name)
        if shape is None:
            return  # _check_layer_shape says what is wrong
        expected = len(shape) - 1
        if target.dim() not in (expected, expected + 1):
            raise ValueError(
                f"{_describe(layer_name)} {'have' if layer_name == MODEL_OUTPUT else 'has'} activations of shape {tuple(shape)} but the {what} target has shape "
                f"{tuple(target.shape)}; take the target at the same layer, e.g. photo_activations(model, photo, "
                f"[{layer_name!r}])."
            )
        single = target.dim() == expected
        if target.shape[0 if single else 1] != shape[1]:
            units = "classes" if layer_name == MODEL_OUTPUT else "channels"
            raise ValueError(
                f"{_describe(layer_name)} {'have' if layer_name == MODEL_OUTPUT else 'has'} {shape[1]} {units} but the "
                f"{what} target has {target.shape[0 if single else 1]}; take the target at the same layer of the same model."
            )
        if not single and target.shape[0] not in (1, batch_size):
            raise ValueError(f"the {what} target holds {target.shape[0]} images but the batch has {batch_size}; "
                             f"give 1 target or {batch_size}.")

    return check


def _prepared(target: torch.Tensor, act: torch.Tensor, cache: dict) -> torch.Tensor:
    """The target on the activation's device, with a batch dim, resized to the activation's map if needed."""
    key = (act.device, act.dtype, tuple(act.shape[2:]))
    if key not in cache:
        moved = target.to(device=act.device, dtype=act.dtype)
        if moved.dim() == act.dim() - 1:
            moved = moved.unsqueeze(0)
        if act.dim() == 4 and moved.shape[-2:] != act.shape[-2:]:
            # random transforms (jitter, scale) change the map's size a little: follow it
            moved = F.interpolate(moved, size=act.shape[-2:], mode="bilinear", align_corners=False)
        if len(cache) > 16:
            cache.clear()
        cache[key] = moved
    return cache[key]


def _layer_objective(inner, name: str, layer_name: str, target: torch.Tensor, what: str, batch: int | None) -> Objective:
    is_output = layer_name == MODEL_OUTPUT
    checks = [_target_check(layer_name, target, what), _check_batch(batch)]
    if not is_output:
        checks.insert(0, _check_layer_shape(layer_name))
    return Objective(inner, name, [] if is_output else [layer_name], needs_output=is_output, checks=checks)


def activation_match(layer_name: str, target: torch.Tensor, metric: str = "l2", batch: int | None = None) -> Objective:
    """How close the activation at ``layer_name`` is to ``target`` (to maximize): feature inversion's objective.

    ``metric="l2"``: minus ||A(x) - A0||^2 / ||A0||^2 per image (0 is a perfect match; Mahendran
    & Vedaldi's normalized loss). ``metric="cosine"``: the cosine of A(x) and A0, flattened (1 is
    a perfect match, whatever the scale). ``target``: A0, (1 or N, C, H, W) or (C, H, W) for a
    convolutional layer, (1 or N, classes) for ``MODEL_OUTPUT``.

    >>> objective = activation_match("blocks.3", photo_activations(model, photo, "blocks.3")["blocks.3"])
    """
    _check_layer_name(layer_name)
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    target = _as_target(target, "activation_match")
    cache: dict = {}

    def inner(acts):
        act = acts[layer_name]
        goal = _prepared(target, act, cache).expand_as(act).flatten(1)
        flat = act.flatten(1)
        if metric == "cosine":
            value = F.cosine_similarity(flat, goal, dim=1, eps=1e-8)
        else:
            value = -(flat - goal).pow(2).sum(1) / goal.pow(2).sum(1).clamp(min=1e-12)
        return _select(value, batch)

    return _layer_objective(inner, f"match {metric} {_describe(layer_name)}", layer_name, target, "activation_match",
                            batch)


def activation_dot(layer_name: str, target: torch.Tensor, cosine_power: float = 1.0, batch: int | None = None) -> Objective:
    """<A(x), A0> * max(cos(A(x), A0), 0.1)^cosine_power at ``layer_name``: a caricature's objective.

    The dot product grows with everything the layer sees in the photo, the cosine keeps the
    image pointing the photo's way (Lucid's ``dot_compare``; the floor of 0.1 keeps the sign of a
    power from flipping when the cosine is negative). ``target`` as for :func:`activation_match`.
    """
    _check_layer_name(layer_name)
    if isinstance(cosine_power, bool) or not isinstance(cosine_power, numbers.Real) or cosine_power < 0:
        raise ValueError(f"cosine_power must be a number >= 0, got {cosine_power!r}")
    target = _as_target(target, "activation_dot")
    cache: dict = {}

    def inner(acts):
        act = acts[layer_name]
        goal = _prepared(target, act, cache).expand_as(act).flatten(1)
        flat = act.flatten(1)
        dot = (flat * goal).sum(1) / goal.norm(dim=1).clamp(min=1e-12)  # the length of A(x) along A0
        if cosine_power:
            cosine = F.cosine_similarity(flat, goal, dim=1, eps=1e-8)
            dot = dot * cosine.clamp(min=0.1) ** cosine_power
        return _select(dot, batch)

    return _layer_objective(inner, f"dot {_describe(layer_name)}", layer_name, target, "activation_dot", batch)


def _recipe_setup(model: nn.Module, photo: torch.Tensor, layers: list[str]):
    check_images(photo, "photo")
    if photo.shape[0] != 1:
        raise ValueError(f"give one photo (1, 3, H, W), got {photo.shape[0]}; call once per photo.")
    return photo, photo_activations(model, photo, layers)


def _check_weight(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
        raise ValueError(f"{what} must be a number >= 0, got {value!r}")
    return float(value)


def invert(
    model: nn.Module,
    photo: torch.Tensor,
    layers: str | Iterable[str],
    metric: str = "l2",
    param="fourier",
    tv_weight: float = 0.0,
    transforms=None,
    steps: int | None = None,
    lr: float = 0.05,
    seed: int = 0,
    progress: bool = True,
    return_history: bool = False,
):
    """Reconstruct ``photo`` (1, 3, H, W) from its activation at each of ``layers``: one image per layer.

    One batched :func:`render` from noise: image i matches the photo's activation at
    ``layers[i]`` (:func:`activation_match`, ``metric``), minus ``tv_weight`` times the total
    variation. The prior is the parameterization (``"fourier"``: smooth, decorrelated colours;
    ``"pixels"``: none) and the total variation; ``transforms`` as in :func:`render` (none by
    default: the maps must line up with the photo's). ``MODEL_OUTPUT`` inverts the logits.
    Returns images (len(layers), 3, H, W) in [0, 1] (and the history with ``return_history``).

    >>> reconstructions = invert(model, photo, ["blocks.1", "blocks.3", "blocks.5", MODEL_OUTPUT])
    """
    from .render import render

    names = [layers] if isinstance(layers, str) else list(layers)
    _check_weight(tv_weight, "tv_weight")
    photo, targets = _recipe_setup(model, photo, names)
    objective = sum(activation_match(name, targets[name], metric, batch=i) for i, name in enumerate(names))
    if tv_weight:
        objective = objective - tv_weight * total_variation()
    return render(model, objective, param=param, transforms=transforms, steps=steps, image_size=tuple(photo.shape[-2:]),
                  batch_size=len(names), lr=lr, seed=seed, progress=progress, return_history=return_history)


def caricature(
    model: nn.Module,
    photo: torch.Tensor,
    layers: str | Iterable[str],
    cosine_power: float = 1.0,
    param="fourier",
    transforms="standard",
    steps: int | None = None,
    lr: float = 0.05,
    seed: int = 0,
    progress: bool = True,
    return_history: bool = False,
):
    """Exaggerate what each of ``layers`` sees in ``photo`` (1, 3, H, W): one image per layer, from noise.

    One batched :func:`render` of :func:`activation_dot` with the photo's activations, Lucid's
    standard transforms and the Fourier parameterization by default. Returns images
    (len(layers), 3, H, W) in [0, 1].

    >>> pictures = caricature(model, photo, ["blocks.3", "blocks.5"])
    """
    from .render import render

    names = [layers] if isinstance(layers, str) else list(layers)
    photo, targets = _recipe_setup(model, photo, names)
    objective = sum(activation_dot(name, targets[name], cosine_power, batch=i) for i, name in enumerate(names))
    return render(model, objective, param=param, transforms=transforms, steps=steps, image_size=tuple(photo.shape[-2:]),
                  batch_size=len(names), lr=lr, seed=seed, progress=progress, return_history=return_history)
