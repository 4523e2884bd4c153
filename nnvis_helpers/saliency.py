"""Saliency maps written from scratch: which pixels does the class score depend on?

Every method has one call shape, ``method(model, images, target, **options) -> Tensor``:
``images`` is a float batch (N, 3, H, W) in [0, 1], ``target`` a class index (an int for
every image, or a list / tensor with one per image). The maps come back on the model's
device, detached. Methods that keep colour return (N, 3, H, W); the others (N, H, W).

* :func:`vanilla_gradient`: d score / d pixel (Simonyan et al. 2013).
* :func:`gradient_x_input`: gradient times pixel values (Shrikumar et al. 2016).
* :func:`guided_backprop` (Springenberg et al. 2014) and :func:`deconvnet` (Zeiler & Fergus
  2014): the gradient with a different backward rule for every ReLU / ReLU6.
* :func:`smoothgrad`: the gradient averaged over noisy copies (Smilkov et al. 2017).
* :func:`grad_cam` and :func:`guided_grad_cam`: class activation maps from a conv layer
  (Selvaraju et al. 2017); :func:`last_conv_layer` picks the layer.
* :func:`occlusion`: how much the score drops when a patch is grey-boxed (Zeiler & Fergus 2014).
* :func:`sanity_check_randomization`: do the maps change when the weights are destroyed?
  (Adebayo et al. 2018).

Every helper leaves the model as it found it: no hook, the same ``training`` flags and
``requires_grad``, no ``.grad`` on parameters, also when it raises.
"""
from __future__ import annotations

import copy
import math
import warnings
import weakref
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from torch.overrides import TorchFunctionMode

from .checks import check_model, check_number, class_scores, prepare
from .layers import _probe_forward, get_layer, preserve_model_state, probe_size

__all__ = [
    "vanilla_gradient",
    "gradient_x_input",
    "guided_backprop",
    "deconvnet",
    "smoothgrad",
    "last_conv_layer",
    "grad_cam",
    "guided_grad_cam",
    "occlusion",
    "sanity_check_randomization",
    "SanityCheckResult",
    "relative_error",
    "relu6_as_relu",
]

# ----------------------------------------------------------------------------- shared steps


def _input_gradient(model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """d score_target / d images, (N, 3, H, W). ``autograd.grad`` writes no ``.grad`` anywhere."""
    images = images.detach().requires_grad_(True)
    with torch.enable_grad():  # works inside a caller's torch.no_grad() too
        scores = class_scores(model(images), target)
        # Images are independent (eval mode), so the gradient of the sum is every image's own gradient.
        (gradient,) = torch.autograd.grad(scores.sum(), images)
    return gradient


def _reduce_colour(maps: torch.Tensor, reduce: str | None) -> torch.Tensor:
    if reduce is None:
        return maps
    if reduce == "max":  # Simonyan et al.: the largest absolute value over the colour channels
        return maps.abs().amax(dim=1)
    raise ValueError(f"reduce must be 'max' (one map per image) or None (keep colour), got {reduce!r}.")


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """||ours - theirs|| / ||theirs||: 0 when equal; how we compare with a library.

    >>> relative_error(vanilla_gradient(model, x, 281, reduce=None), Saliency(model).attribute(x, 281))
    0.0
    """
    ours, theirs = ours.detach().float(), theirs.detach().float().to(ours.device)
    if ours.shape != theirs.shape:
        raise ValueError(f"cannot compare maps of shapes {tuple(ours.shape)} and {tuple(theirs.shape)}.")
    return float((ours - theirs).norm() / theirs.norm().clamp_min(1e-30))


# ----------------------------------------------------------------------------- gradients


def vanilla_gradient(model: nn.Module, images: torch.Tensor, target, abs: bool = True, reduce: str | None = "max") -> torch.Tensor:
    """The gradient of the class score with respect to the pixels (Simonyan et al. 2013).

    ``reduce="max"``: one map (N, H, W), the largest absolute value over colour channels, as in
    the paper. ``reduce=None``: (N, 3, H, W), absolute values when ``abs`` (captum's ``Saliency``).

    >>> vanilla_gradient(model, load_image("chelsea"), 281).shape
    torch.Size([1, 224, 224])
    """
    images, target = prepare(model, images, target)
    with preserve_model_state(model):
        gradient = _input_gradient(model, images, target)
    return _reduce_colour(gradient.abs() if abs else gradient, reduce)


def gradient_x_input(model: nn.Module, images: torch.Tensor, target) -> torch.Tensor:
    """Gradient times input, (N, 3, H, W), signed: each pixel's first-order contribution to the score.

    >>> gradient_x_input(model, load_image("chelsea"), 281).shape
    torch.Size([1, 3, 224, 224])
    """
    images, target = prepare(model, images, target)
    with preserve_model_state(model):
        return images * _input_gradient(model, images, target)


class _RectifierRule(torch.autograd.Function):
    """A ReLU (``top`` = inf) or ReLU6 (``top`` = 6) whose backward pass follows a modified rule.

    ``guided``: R_in = [0 < x < top] * max(R_out, 0); ``deconvnet``: R_in = max(R_out, 0).
    Guided backprop keeps the output for its backward pass, as PyTorch's own ReLU does (the unit
    was active where 0 < output < top); ``inplace=True`` rectifies ``x`` in place, without a copy.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, top: float, rule: str, inplace: bool) -> torch.Tensor:
        bounded = not math.isinf(top)
        if inplace:
            ctx.mark_dirty(x)
            output = x.clamp_(0, top) if bounded else x.clamp_(min=0)
        else:
            output = x.clamp(0, top) if bounded else torch.relu(x)
        ctx.rule, ctx.top = rule, top
        if rule == "guided":
            ctx.save_for_backward(output)
        return output

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        if ctx.rule != "guided":
            return grad_out.clamp(min=0), None, None, None
        # the ordinary backward of ReLU / ReLU6 (a new tensor), then max(., 0) in place: two passes
        (output,) = ctx.saved_tensors
        if math.isinf(ctx.top):
            grad_in = torch.ops.aten.threshold_backward(grad_out, output, 0)
        else:
            grad_in = torch.ops.aten.hardtanh_backward(grad_out, output, 0.0, ctx.top)
        return grad_in.clamp_(min=0), None, None, None


def _argument(args, kwargs, index: int, name: str, default):
    return kwargs[name] if name in kwargs else (args[index] if len(args) > index else default)


def _relu(args, kwargs):
    return math.inf, bool(_argument(args, kwargs, 1, "inplace", False))


def _relu6(args, kwargs):
    return 6.0, bool(_argument(args, kwargs, 1, "inplace", False))


def _hardtanh(args, kwargs, inplace: bool = False):
    low, high = _argument(args, kwargs, 1, "min_val", -1.0), _argument(args, kwargs, 2, "max_val", 1.0)
    if low == 0 and high > 0:  # hardtanh(x, 0, t) is a rectifier with top t (nn.ReLU6 calls it so)
        return float(high), inplace or bool(_argument(args, kwargs, 3, "inplace", False))
    return None


#: torch function -> (args, kwargs) -> (top, in place) for the rectifiers, None for the others.
_RECTIFIERS = {
    F.relu: _relu,
    torch.relu: lambda args, kwargs: (math.inf, False),
    torch.Tensor.relu: lambda args, kwargs: (math.inf, False),
    torch.relu_: lambda args, kwargs: (math.inf, True),
    torch.Tensor.relu_: lambda args, kwargs: (math.inf, True),
    F.relu_: lambda args, kwargs: (math.inf, True),
    F.relu6: _relu6,
    F.hardtanh: _hardtanh,
    F.hardtanh_: lambda args, kwargs: _hardtanh(args, kwargs, inplace=True),
}
#: Activations the rules have no definition for: they keep their ordinary gradient (a warning names them).
_UNCOVERED = {
    function: name
    for name in ("gelu", "silu", "hardswish", "mish", "elu", "selu", "celu", "leaky_relu", "prelu", "rrelu",
                 "softplus", "glu")
    for function in (getattr(F, name, None), getattr(torch, name, None), getattr(torch.Tensor, name, None))
    if function is not None
}


class _RectifierMode(TorchFunctionMode):
    """Inside this mode every rectifier the forward pass calls, module or functional
    (``nn.ReLU``, ``nn.ReLU6``, ``F.relu``, ``torch.relu_``, ``x.relu()``, ``F.relu6``,
    ``F.hardtanh(x, 0, 6)``), computes the same output with the backward rule ``rule``.

    A ``TorchFunctionMode`` sees every torch function called during the pass, so a ``F.relu``
    inside a model's ``forward`` (DenseNet's last one) is found as well as the modules, which is
    what captum's module hooks miss. Other activations are counted in ``uncovered``.
    """

    def __init__(self, rule: str):
        super().__init__()
        self.rule = rule
        self.replaced = 0
        self.uncovered: Counter = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rectifier = _RECTIFIERS.get(func)
        if rectifier is None:
            name = _UNCOVERED.get(func)
            if name is not None:
                self.uncovered[name] += 1
            return func(*args, **kwargs)
        found = rectifier(args, kwargs)
        x = args[0] if args else kwargs.get("input")
        if found is None or not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return func(*args, **kwargs)
        self.replaced += 1
        top, inplace = found
        return _RectifierRule.apply(x, top, self.rule, inplace)


def _warn_uncovered(model: nn.Module, mode: _RectifierMode, method: str) -> None:
    if not mode.uncovered and mode.replaced:
        return
    kinds = {name.replace("_", "") for name in mode.uncovered}
    modules = [name for name, module in model.named_modules() if type(module).__name__.lower() in kinds]
    seen = ", ".join(f"{name} x{count}" for name, count in sorted(mode.uncovered.items()))
    where = f" (modules: {', '.join(modules[:4])}{', ...' if len(modules) > 4 else ''})" if modules else ""
    if not mode.replaced:
        message = (
            f"{method}: the forward pass called no ReLU or ReLU6, so the rule changed nothing and the result is "
            f"the plain gradient{(': activations seen were ' + seen + where) if seen else ''}. "
            "Use vanilla_gradient for this model, or a method that does not depend on the activation (Grad-CAM, "
            "integrated gradients)."
        )
    else:
        message = (
            f"{method}: the rule applies to ReLU and ReLU6 only ({mode.replaced} calls); these activations kept their "
            f"ordinary gradient: {seen}{where}. The map mixes the rule with the plain gradient."
        )
    warnings.warn(message, UserWarning, stacklevel=3)


@contextmanager
def _rectifier_backward_rule(model: nn.Module, rule: str, method: str) -> Iterator[None]:
    """Inside the block, every rectifier of the forward pass follows ``rule`` ('guided' or 'deconvnet') backwards."""
    mode = _RectifierMode(rule)
    with mode:
        yield
    _warn_uncovered(model, mode, method)


def guided_backprop(model: nn.Module, images: torch.Tensor, target) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2014), (N, 3, H, W).

    At every ReLU / ReLU6 only positive gradients pass, and only where the unit was active:
    R_in = [0 < x < top] * max(R_out, 0) (top = 6 for ReLU6, infinity for ReLU). The rule covers
    modules and functional calls inside ``forward`` (``F.relu``, ``x.relu_()``); other activations
    (GELU, SiLU, Hardswish) have no such rule: they keep their gradient, and a warning names them.

    >>> guided_backprop(model, load_image("chelsea"), 281).shape
    torch.Size([1, 3, 224, 224])
    """
    images, target = prepare(model, images, target)
    with preserve_model_state(model), _rectifier_backward_rule(model, "guided", "guided_backprop"):
        gradient = _input_gradient(model, images, target)
    return gradient


def deconvnet(model: nn.Module, images: torch.Tensor, target) -> torch.Tensor:
    """The deconvnet of Zeiler & Fergus (2014), (N, 3, H, W).

    Every ReLU / ReLU6 (module or functional) is reversed by a ReLU on the backward signal,
    whatever the forward pass did: R_in = max(R_out, 0). Other activations keep their gradient,
    with a warning, as in :func:`guided_backprop`.

    >>> deconvnet(model, load_image("chelsea"), 281).shape
    torch.Size([1, 3, 224, 224])
    """
    images, target = prepare(model, images, target)
    with preserve_model_state(model), _rectifier_backward_rule(model, "deconvnet", "deconvnet"):
        gradient = _input_gradient(model, images, target)
    return gradient


def smoothgrad(
    model: nn.Module,
    images: torch.Tensor,
    target,
    n_samples: int = 50,
    noise_level: float = 0.15,
    squared: bool = False,
    seed: int = 0,
    batch_size: int = 16,
    abs: bool = True,
    reduce: str | None = "max",
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over ``n_samples`` noisy copies.

    The noise is Gaussian with standard deviation ``noise_level`` times the pixel range [0, 1]
    (the paper recommends 10-20 %), drawn from a generator seeded with ``seed``: all samples of
    image 0, then all of image 1, ..., the order and the numbers of captum's ``NoiseTunnel`` after
    ``torch.manual_seed(seed)`` with all its samples in one batch. The noise of every sample is
    drawn before the batches are cut, so ``batch_size`` (noisy copies per forward pass) changes
    the speed and the memory, never the maps. ``squared=True`` averages the squared gradients
    (SmoothGrad-Squared). Output as in :func:`vanilla_gradient`.

    >>> smoothgrad(model, load_image("chelsea"), 281, n_samples=25).shape
    torch.Size([1, 224, 224])
    """
    images, target = prepare(model, images, target)
    n_samples = check_number(n_samples, "n_samples", low=1, integer=True)
    batch_size = check_number(batch_size, "batch_size", low=1, integer=True, hint="It is the number of noisy copies per forward pass.")
    noise_level = check_number(noise_level, "noise_level", low=0, hint="It is the noise's standard deviation in pixel units: 0.1 to 0.2 is usual.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}.")
    _reduce_colour(images[:1, :, :1, :1], reduce)  # a bad `reduce` fails before the work
    generator = torch.Generator(device=images.device).manual_seed(seed)
    maps = []
    with preserve_model_state(model):
        for index in range(len(images)):
            # One draw per image for all its samples, in captum's order; then batches of it.
            noise = torch.randn((n_samples, *images.shape[1:]), generator=generator, device=images.device, dtype=images.dtype)
            total = torch.zeros_like(images[0])
            for start in range(0, n_samples, batch_size):
                chunk = noise[start:start + batch_size].mul_(noise_level).add_(images[index])
                gradient = _input_gradient(model, chunk, target[index].expand(len(chunk)))
                gradient = gradient.abs() if abs else gradient
                gradient = gradient.square() if squared else gradient
                total += gradient.sum(dim=0)
            maps.append(total / n_samples)
    return _reduce_colour(torch.stack(maps), reduce)


# ----------------------------------------------------------------------------- class activation maps

_LAST_CONV: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def last_conv_layer(model: nn.Module, images: torch.Tensor | None = None, input_size: int | None = None) -> str:
    """The name of the layer Grad-CAM explains by default: the output of the last conv block.

    One forward pass (eval mode, no gradients) on the first of ``images`` (default: a zero image of
    ``input_size``, the model's fixed or nominal size, else 224) records what every module returns;
    after the last ``Conv2d``, the last module (outermost block included) whose output still has
    the spatial size of that conv is chosen: the ReLU after VGG's last conv, ResNet's ``layer4``,
    EfficientNet's ``bn2``. Giving the images matters for networks that accept one size only (a
    32 px CIFAR network with a Linear head, a ViT).

    >>> last_conv_layer(load_model("vgg16"))
    'features.29'
    """
    if images is not None:
        probe, _ = prepare(model, images)
        probe = probe[:1]
    else:
        if input_size is not None:
            check_number(input_size, "input_size", low=1, integer=True)
        device, dtype = check_model(model)
        size = (input_size, input_size) if input_size is not None else probe_size(model)
        probe = torch.zeros(1, 3, *size, device=device, dtype=dtype)
    size = tuple(probe.shape[-2:])
    cache = _LAST_CONV.setdefault(model, {})
    if size in cache:
        return cache[size]
    calls: list[tuple[str, nn.Module, tuple]] = []  # in the order the modules finish
    names = {module: name for name, module in model.named_modules() if name}

    def record(module, inputs, output):
        if isinstance(output, torch.Tensor):
            calls.append((names[module], module, tuple(output.shape)))

    with preserve_model_state(model), torch.no_grad():
        handles = [module.register_forward_hook(record) for module in names]
        try:
            _probe_forward(model, probe, "last_conv_layer")
        finally:
            for handle in handles:
                handle.remove()
    convs = [index for index, (_, module, shape) in enumerate(calls) if isinstance(module, nn.Conv2d) and len(shape) == 4]
    if not convs:
        raise ValueError("this model has no nn.Conv2d layer; pass layer='name' (see layer_names(model)).")
    spatial = calls[convs[-1]][2][2:]
    name, module, _ = [call for call in calls[convs[-1]:] if len(call[2]) == 4 and call[2][2:] == spatial][-1]
    if sum(call[1] is module for call in calls) > 1:
        raise ValueError(f"layer {name!r} runs several times in one forward pass; pass layer='name' explicitly.")
    cache[size] = name
    return name


@contextmanager
def _keep_output(module: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Keep the module's output (graph included) in ``kept["output"]``; the model goes on with a copy.

    Handing the next layers a copy means an in-place op after the layer (VGG's ReLU after its
    conv) changes the copy, not the activation we take gradients of. The graph starts at the
    layer: the backward pass (and the memory it needs) covers only the layers after it.
    """
    kept: dict[str, torch.Tensor] = {}

    def hook(module, inputs, output):
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"{type(module).__name__} returns {type(output).__name__}, not a tensor; choose another layer.")
        if not output.requires_grad:  # frozen model: the graph starts here, nothing before it is recorded
            output.requires_grad_(True)
        kept["output"] = output
        return output.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield kept
    finally:
        handle.remove()


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    target,
    layer: str | None = None,
    relu: bool = True,
    upsample: bool = True,
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): the layer's channels weighted by their mean gradient.

    L = ReLU(sum_k alpha_k A_k) with alpha_k = mean over positions of d score / d A_k.
    ``layer`` is a name from ``print(model)``; default :func:`last_conv_layer`. Returns
    (N, H, W) upsampled bilinearly to the image when ``upsample``, else the layer's (N, h, w).

    >>> grad_cam(model, load_image("chelsea"), 281).shape
    torch.Size([1, 224, 224])
    """
    images, target = prepare(model, images, target)
    if not isinstance(relu, bool) or not isinstance(upsample, bool):
        raise TypeError(f"relu and upsample must be True or False, got {relu!r} and {upsample!r}.")
    name = last_conv_layer(model, images) if layer is None else layer
    with preserve_model_state(model), _keep_output(get_layer(model, name)) as kept, torch.enable_grad():
        scores = class_scores(model(images), target)
        activation = kept.get("output")
        if activation is None:
            raise ValueError(f"layer {name!r} did not run in the forward pass; choose a layer that does (list_layers(model)).")
        if activation.dim() != 4:
            raise ValueError(f"layer {name!r} outputs shape {tuple(activation.shape)}; Grad-CAM needs a conv map (N, C, h, w).")
        if activation.shape[2] * activation.shape[3] == 1:
            raise ValueError(
                f"layer {name!r} has a 1 x 1 map at this image size ({images.shape[-2]} x {images.shape[-1]} px): Grad-CAM "
                "would be one number spread over the image. Choose an earlier layer (list_layers(model) shows the "
                "map sizes) or give larger images."
            )
        # Only down to the layer: the rest of the backward pass is not needed.
        (gradient,) = torch.autograd.grad(scores.sum(), activation)
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # alpha_k: how much channel k matters
    cam = (weights * activation.detach()).sum(dim=1, keepdim=True)
    cam = cam.clamp(min=0) if relu else cam
    if upsample:
        cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return cam[:, 0]


def guided_grad_cam(model: nn.Module, images: torch.Tensor, target, layer: str | None = None) -> torch.Tensor:
    """Guided Grad-CAM: guided backprop (fine detail) times the upsampled Grad-CAM (where), (N, 3, H, W).

    >>> guided_grad_cam(model, load_image("chelsea"), 281).shape
    torch.Size([1, 3, 224, 224])
    """
    images, target = prepare(model, images, target)
    layer = last_conv_layer(model, images) if layer is None else layer
    cam = grad_cam(model, images, target, layer=layer, relu=True, upsample=True)
    return guided_backprop(model, images, target) * cam[:, None]


# ----------------------------------------------------------------------------- occlusion


def occlusion(
    model: nn.Module,
    images: torch.Tensor,
    target,
    window: int = 32,
    stride: int = 16,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int = 64,
    progress: bool = True,
) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus 2014): the drop of the class score when a square is covered, (N, H, W).

    A ``window`` x ``window`` patch set to ``baseline`` (a grey level in [0, 1] or images of the
    same shape) slides with ``stride``; each pixel gets the mean drop over the patches covering
    it. ``batch_size`` occluded images go through the model at once.

    >>> occlusion(model, load_image("chelsea"), 281, window=32, stride=16).shape
    torch.Size([1, 224, 224])
    """
    from tqdm.auto import tqdm

    images, target = prepare(model, images, target)
    count, _, height, width = images.shape
    window = check_number(window, "window", low=1, integer=True, hint="It is the side of the grey square, in pixels.")
    stride = check_number(stride, "stride", low=1, integer=True, hint="It is the step between squares, in pixels.")
    batch_size = check_number(batch_size, "batch_size", low=1, integer=True)
    if not isinstance(baseline, torch.Tensor):
        baseline = check_number(baseline, "baseline", low=0, high=1, hint="It is the grey level of the square, in [0, 1].")
    elif baseline.numel() != 1 and tuple(baseline.shape) not in (tuple(images.shape), (1, *images.shape[1:])):
        raise ValueError(f"baseline must be a grey level in [0, 1] or images of shape {tuple(images.shape)}, got shape {tuple(baseline.shape)}.")
    if not 0 < stride <= window <= min(height, width):
        raise ValueError(f"need 0 < stride <= window <= image side ({min(height, width)}), got stride={stride}, window={window}.")
    baseline = torch.as_tensor(baseline, dtype=images.dtype, device=images.device).expand_as(images)
    # Positions 0, stride, ...; the last patch may stick out of the image (and is cut), as in captum.
    patches = [(top, left) for top in range(0, height - window + stride, stride) for left in range(0, width - window + stride, stride)]
    per_pass = max(1, batch_size // count)
    drops = torch.zeros(count, height, width, device=images.device)
    covered = torch.zeros(height, width, device=images.device)
    with preserve_model_state(model), torch.no_grad():
        reference = class_scores(model(images), target)
        for start in tqdm(range(0, len(patches), per_pass), desc="occlusion", disable=not progress):
            chunk = patches[start : start + per_pass]
            occluded = images.repeat(len(chunk), 1, 1, 1)  # patch-major: patch 0 on every image, then patch 1 ...
            for index, (top, left) in enumerate(chunk):
                rows, cols, batch = slice(top, top + window), slice(left, left + window), slice(index * count, (index + 1) * count)
                occluded[batch, :, rows, cols] = baseline[:, :, rows, cols]
            drop = reference.repeat(len(chunk)) - class_scores(model(occluded), target.repeat(len(chunk)))
            for index, (top, left) in enumerate(chunk):
                drops[:, top : top + window, left : left + window] += drop[index * count : (index + 1) * count, None, None]
                covered[top : top + window, left : left + window] += 1
    return drops / covered


# ----------------------------------------------------------------------------- sanity check


@dataclass
class SanityCheckResult:
    """What :func:`sanity_check_randomization` measured.

    ``layers[i]`` is the layer randomized at step i (together with all the layers above it);
    ``correlations[method][i]`` the Spearman rank correlation of that method's map after step i
    with its map on the intact model, averaged over the images.
    """

    layers: list[str]
    correlations: dict[str, list[float]] = field(default_factory=dict)


def _randomization_order(model: nn.Module) -> list[str]:
    """Layers with weights, from the output back to the input; Sequentials/ModuleLists opened one level."""
    names = []
    for name, child in model.named_children():
        parts = child.named_children() if isinstance(child, (nn.Sequential, nn.ModuleList)) else [("", child)]
        for part_name, part in parts:
            if any(True for _ in part.parameters()):
                names.append(f"{name}.{part_name}" if part_name else name)
    return names[::-1]


def _spearman(first: torch.Tensor, second: torch.Tensor) -> float:
    """Mean over images of the Spearman rank correlation of |first| and |second| (ties share ranks)."""
    from scipy.stats import spearmanr

    def flat(maps: torch.Tensor):
        maps = maps.detach().abs()
        return (maps.amax(dim=1) if maps.dim() == 4 else maps).flatten(1).double().cpu().numpy()

    values = [spearmanr(a, b)[0] for a, b in zip(flat(first), flat(second))]
    return float(sum(0.0 if math.isnan(v) else v for v in values) / len(values))  # a constant map (NaN) counts as 0


def sanity_check_randomization(
    model: nn.Module,
    images: torch.Tensor,
    target,
    methods: dict[str, Callable] | None = None,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> SanityCheckResult:
    """Cascading randomization (Adebayo et al. 2018): destroy the weights from the top, layer by layer.

    On a deep copy of ``model`` (yours is never touched), the layers are randomized one after
    the other, cumulatively, starting at the output: each weight tensor becomes Gaussian noise
    of the same standard deviation. After each step every method's map is compared with its
    map on the intact model (Spearman rank correlation of absolute values). A method that
    explains the model must change: its correlation should fall towards 0.

    ``methods``: name -> ``method(model, images, target)``; default: the gradient methods and
    Grad-CAM of this module. ``layers``: the randomization order; default: every layer with
    weights from the output back (Sequentials opened one level, e.g. EfficientNet's blocks).

    >>> result = sanity_check_randomization(model, load_image("chelsea"), 281)
    >>> result.layers[0], result.correlations["guided backprop"][0]
    ('classifier', 0.98...)
    """
    from tqdm.auto import tqdm

    images, target = prepare(model, images, target)
    if methods is None:
        layer = last_conv_layer(model, images)
        methods = {
            "gradient": vanilla_gradient,
            "gradient x input": gradient_x_input,
            "guided backprop": guided_backprop,
            "deconvnet": deconvnet,
            "Grad-CAM": lambda m, x, t: grad_cam(m, x, t, layer=layer),
            "guided Grad-CAM": lambda m, x, t: guided_grad_cam(m, x, t, layer=layer),
        }
    order = list(layers) if layers is not None else _randomization_order(model)
    for name in order:
        get_layer(model, name)  # every name checked before any work
    originals = {name: method(model, images, target) for name, method in methods.items()}
    randomized = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    result = SanityCheckResult(layers=order, correlations={name: [] for name in methods})
    for name in tqdm(order, desc="randomizing layers", disable=not progress):
        with torch.no_grad():
            for parameter in get_layer(randomized, name).parameters():
                noise = torch.randn(parameter.shape, generator=generator).to(parameter.device)
                parameter.copy_(noise * parameter.std().nan_to_num(1.0).clamp_min(1e-3))
        for method_name, method in methods.items():
            result.correlations[method_name].append(_spearman(originals[method_name], method(randomized, images, target)))
    return result


# ----------------------------------------------------------------------------- captum interop


class _ReLU6SeenAsReLU(nn.ReLU6, nn.ReLU):
    """A ReLU6 that also passes ``isinstance(module, nn.ReLU)``; it computes exactly what ReLU6 does."""


def relu6_as_relu(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ReLU6 modules captum's GuidedBackprop / Deconvolution can see.

    captum changes the backward pass only of ``nn.ReLU`` modules; EfficientNet and MobileNet use
    ``nn.ReLU6``, which captum skips silently (it then returns the plain gradient). The copy
    computes the same outputs; only its ReLU6 modules also count as ``nn.ReLU``.

    >>> GuidedBackprop(relu6_as_relu(model)).attribute(images, target=281)
    """
    seen = copy.deepcopy(model)
    for module in seen.modules():
        if type(module) is nn.ReLU6:
            module.__class__ = _ReLU6SeenAsReLU
    return seen
