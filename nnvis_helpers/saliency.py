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
import sys
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_images, check_target
from .layers import _model_device, get_layer, preserve_model_state

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

#: The activations whose backward pass guided backprop and deconvnet replace.
RECTIFIERS = (nn.ReLU, nn.ReLU6)


# ----------------------------------------------------------------------------- shared steps


def _prepare(model: nn.Module, images: torch.Tensor, target) -> tuple[torch.Tensor, torch.Tensor]:
    """Check the inputs and move them to the model's device: (images, target as a long (N,) tensor)."""
    check_images(images)
    info = getattr(model, "info", None)
    num_classes = getattr(info, "num_classes", sys.maxsize)  # other models: checked on the output
    device = _model_device(model)
    return images.detach().to(device), check_target(target, len(images), num_classes, device)


def _class_scores(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The score (logit) of each image's target class, shape (N,)."""
    if outputs.dim() != 2:
        raise ValueError(f"the model should return class scores (N, classes), got shape {tuple(outputs.shape)}.")
    check_target(target, len(outputs), outputs.shape[1])  # a clear error for a class that does not exist
    return outputs.gather(1, target[:, None])[:, 0]


def _input_gradient(model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """d score_target / d images, (N, 3, H, W). ``autograd.grad`` writes no ``.grad`` anywhere."""
    images = images.detach().requires_grad_(True)
    with torch.enable_grad():  # works inside a caller's torch.no_grad() too
        scores = _class_scores(model(images), target)
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
    images, target = _prepare(model, images, target)
    with preserve_model_state(model):
        gradient = _input_gradient(model, images, target)
    return _reduce_colour(gradient.abs() if abs else gradient, reduce)


def gradient_x_input(model: nn.Module, images: torch.Tensor, target) -> torch.Tensor:
    """Gradient times input, (N, 3, H, W), signed: each pixel's first-order contribution to the score.

    >>> gradient_x_input(model, load_image("chelsea"), 281).shape
    torch.Size([1, 3, 224, 224])
    """
    images, target = _prepare(model, images, target)
    with preserve_model_state(model):
        return images * _input_gradient(model, images, target)


@contextmanager
def _rectifier_backward_rule(model: nn.Module, rule: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Inside the block, every ReLU / ReLU6 module passes ``rule(grad_in, grad_out)`` backwards.

    ``grad_out`` is the gradient arriving at the activation's output, ``grad_in`` what the
    ordinary backward pass would send to its input. The hooks work with in-place activations
    (the input is cloned first, so each call gets its own tensor) and with modules that run
    several times in one forward pass (each call keeps its own ``grad_out``).
    """
    pending: dict[nn.Module, dict] = {}

    def before(module, inputs):
        call = pending[module] = {}
        private = inputs[0].clone()  # an in-place activation overwrites this copy, not a shared tensor
        if private.requires_grad:
            private.register_hook(lambda grad_in: rule(grad_in, call["grad_out"]))
        return (private, *inputs[1:])

    def after(module, inputs, output):
        call = pending.pop(module)
        if output.requires_grad:
            output.register_hook(lambda grad_out: call.__setitem__("grad_out", grad_out))

    handles = []
    try:
        for module in model.modules():
            if isinstance(module, RECTIFIERS):
                handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
        yield
    finally:
        for handle in handles:
            handle.remove()


def guided_backprop(model: nn.Module, images: torch.Tensor, target) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2014), (N, 3, H, W).

    At every ReLU / ReLU6 only positive gradients pass, and only where the unit was active:
    R_in = [0 < x < top] * max(R_out, 0) (top = 6 for ReLU6, infinity for ReLU).

    >>> guided_backprop(model, load_image("chelsea"), 281).shape
    torch.Size([1, 3, 224, 224])
    """
    images, target = _prepare(model, images, target)
    with preserve_model_state(model), _rectifier_backward_rule(model, lambda grad_in, grad_out: grad_in.clamp(min=0)):
        return _input_gradient(model, images, target)


def deconvnet(model: nn.Module, images: torch.Tensor, target) -> torch.Tensor:
    """The deconvnet of Zeiler & Fergus (2014), (N, 3, H, W).

    Every ReLU / ReLU6 is reversed by a ReLU on the backward signal, whatever the forward pass
    did: R_in = max(R_out, 0).

    >>> deconvnet(model, load_image("chelsea"), 281).shape
    torch.Size([1, 3, 224, 224])
    """
    images, target = _prepare(model, images, target)
    with preserve_model_state(model), _rectifier_backward_rule(model, lambda grad_in, grad_out: grad_out.clamp(min=0)):
        return _input_gradient(model, images, target)


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
    (the paper recommends 10-20 %), drawn from a generator seeded with ``seed``: the same seed
    gives the same noise as captum's ``NoiseTunnel`` after ``torch.manual_seed(seed)``.
    ``squared=True`` averages the squared gradients (SmoothGrad-Squared). ``batch_size`` noisy
    copies of each image go through the model at once. Output as in :func:`vanilla_gradient`.

    >>> smoothgrad(model, load_image("chelsea"), 281, n_samples=25).shape
    torch.Size([1, 224, 224])
    """
    images, target = _prepare(model, images, target)
    if n_samples < 1 or batch_size < 1:
        raise ValueError(f"n_samples and batch_size must be at least 1, got {n_samples} and {batch_size}.")
    generator = torch.Generator(device=images.device).manual_seed(seed)
    total = torch.zeros_like(images)
    with preserve_model_state(model):
        for start in range(0, n_samples, batch_size):
            chunk = min(batch_size, n_samples - start)
            # The noisy copies of image 0 first, then of image 1 ...: the order captum uses too.
            noisy = images.repeat_interleave(chunk, dim=0)
            noisy = noisy + noise_level * torch.randn(noisy.shape, generator=generator, device=noisy.device)
            gradient = _input_gradient(model, noisy, target.repeat_interleave(chunk))
            gradient = gradient.abs() if abs else gradient
            gradient = gradient.square() if squared else gradient
            total += gradient.view(len(images), chunk, *images.shape[1:]).sum(dim=1)
    return _reduce_colour(total / n_samples, reduce)


# ----------------------------------------------------------------------------- class activation maps

_LAST_CONV: "weakref.WeakKeyDictionary[nn.Module, str]" = weakref.WeakKeyDictionary()


def last_conv_layer(model: nn.Module, input_size: int | None = None) -> str:
    """The name of the layer Grad-CAM explains by default: the output of the last conv block.

    One forward pass records what every module returns; after the last ``Conv2d``, the last
    module (outermost block included) whose output still has the spatial size of that conv is
    chosen: the ReLU after VGG's last conv, ResNet's ``layer4``, EfficientNet's ``bn2``.

    >>> last_conv_layer(load_model("vgg16"))
    'features.29'
    """
    cached = _LAST_CONV.get(model)
    if cached is not None:
        return cached
    size = input_size or getattr(getattr(model, "info", None), "input_size", 224)
    calls: list[tuple[str, nn.Module, tuple]] = []  # in the order the modules finish
    names = {module: name for name, module in model.named_modules() if name}

    def record(module, inputs, output):
        if isinstance(output, torch.Tensor):
            calls.append((names[module], module, tuple(output.shape)))

    with preserve_model_state(model), torch.no_grad():
        handles = [module.register_forward_hook(record) for module in names]
        try:
            model(torch.zeros(1, 3, size, size, device=_model_device(model)))
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
    _LAST_CONV[model] = name
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
    images, target = _prepare(model, images, target)
    name = last_conv_layer(model) if layer is None else layer
    with preserve_model_state(model), _keep_output(get_layer(model, name)) as kept, torch.enable_grad():
        scores = _class_scores(model(images), target)
        activation = kept["output"]
        if activation.dim() != 4:
            raise ValueError(f"layer {name!r} outputs shape {tuple(activation.shape)}; Grad-CAM needs a conv map (N, C, h, w).")
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

    images, target = _prepare(model, images, target)
    count, _, height, width = images.shape
    if not 0 < stride <= window <= min(height, width):
        raise ValueError(f"need 0 < stride <= window <= image side ({min(height, width)}), got stride={stride}, window={window}.")
    baseline = torch.as_tensor(baseline, dtype=images.dtype, device=images.device).expand_as(images)
    # Positions 0, stride, ...; the last patch may stick out of the image (and is cut), as in captum.
    patches = [(top, left) for top in range(0, height - window + stride, stride) for left in range(0, width - window + stride, stride)]
    per_pass = max(1, batch_size // count)
    drops = torch.zeros(count, height, width, device=images.device)
    covered = torch.zeros(height, width, device=images.device)
    with preserve_model_state(model), torch.no_grad():
        reference = _class_scores(model(images), target)
        for start in tqdm(range(0, len(patches), per_pass), desc="occlusion", disable=not progress):
            chunk = patches[start : start + per_pass]
            occluded = images.repeat(len(chunk), 1, 1, 1)  # patch-major: patch 0 on every image, then patch 1 ...
            for index, (top, left) in enumerate(chunk):
                rows, cols, batch = slice(top, top + window), slice(left, left + window), slice(index * count, (index + 1) * count)
                occluded[batch, :, rows, cols] = baseline[:, :, rows, cols]
            drop = reference.repeat(len(chunk)) - _class_scores(model(occluded), target.repeat(len(chunk)))
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

    images, target = _prepare(model, images, target)
    if methods is None:
        layer = last_conv_layer(model)
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
