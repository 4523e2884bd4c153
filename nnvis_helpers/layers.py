"""Finding layers by the names ``print(model)`` shows, and looking inside them with hooks.

Every hook in the course is registered inside a context manager and removed in ``finally``,
so no helper ever leaves a hook behind, not even when it raises.
"""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .checks import check_model

__all__ = [
    "LayerNotFoundError",
    "LayerInfo",
    "layer_names",
    "get_layer",
    "list_layers",
    "format_layer_table",
    "capture_activations",
    "capture_gradients",
    "count_hooks",
    "preserve_model_state",
    "fixed_input_size",
    "probe_size",
]

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


class LayerNotFoundError(ValueError):
    """A layer name that the model does not have."""


class _StopForward(BaseException):
    """Raised by a forward hook once every needed activation is captured, to skip the rest of the network.

    The helper whose hook raises it catches it around its own ``model(images)`` call
    (``featurevis.render``, ``datasets.collect_activations``), so it never reaches a user.
    A BaseException, so that a model's own ``except Exception`` cannot swallow it.
    """


def layer_names(model: nn.Module) -> list[str]:
    """Every submodule's name, in the order ``print(model)`` shows them (``"features.28"``)."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (as in ``print(model)``); an unknown name lists the closest.

    >>> get_layer(vgg, "features.28")
    Conv2d(512, 512, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
    """
    if isinstance(name, nn.Module):
        if any(module is name for module in model.modules()):
            return name
        raise LayerNotFoundError("that module is not part of this model; pass a layer name instead.")
    if not isinstance(name, str):
        raise TypeError(f"a layer name is a string such as 'features.28', got {type(name).__name__}")
    if name == "":
        return model
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = layer_names(model)
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        if not close:  # e.g. 'features.99': suggest the siblings under the same parent
            parent = name.rsplit(".", 1)[0]
            close = [n for n in names if n.startswith(parent + ".") and n.count(".") == name.count(".")][:5]
        hint = f" Closest valid names: {', '.join(repr(n) for n in close)}." if close else ""
        raise LayerNotFoundError(
            f"this model has no layer {name!r}.{hint} print(model) or layer_names(model) shows all "
            f"{len(names)} names."
        ) from None


def _resolve(model: nn.Module, layers: str | Sequence[str]) -> dict[str, nn.Module]:
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ValueError("give at least one layer name.")
    return {name: get_layer(model, name) for name in names}  # all checked before any hook exists


@dataclass(frozen=True)
class LayerInfo:
    """One row of the layer table."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    parameters: int
    depth: int


def _model_device(model: nn.Module) -> torch.device:
    """The device of the model's first floating-point parameter (or buffer); every helper follows it."""
    return check_model(model)[0]


def _first_tensor(output) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (list, tuple)):
        for item in output:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(output, dict):
        return _first_tensor(list(output.values()))
    return None


def fixed_input_size(model: nn.Module) -> tuple[int, int] | None:
    """The (height, width) a model only accepts, when it declares one; None for most CNNs, which take any size.

    Vision transformers cut the image into a fixed number of patches: timm's ``PatchEmbed`` (with
    ``strict_img_size``) and torchvision's ``VisionTransformer`` say which size. A CNN with a
    ``Flatten`` + ``Linear`` head also needs one size but does not say so: helpers then use the
    images' own size, which is why they probe the model with the images you give.

    >>> fixed_input_size(timm.create_model("vit_tiny_patch16_224", img_size=64))
    (64, 64)
    """
    image_size = getattr(model, "image_size", None)  # torchvision VisionTransformer
    if isinstance(image_size, int) and type(model).__name__ == "VisionTransformer":
        return (image_size, image_size)
    for module in model.modules():
        size = getattr(module, "img_size", None)  # timm PatchEmbed
        if size is not None and getattr(module, "strict_img_size", False) and not getattr(module, "dynamic_img_size", False):
            size = (size, size) if isinstance(size, int) else tuple(size)
            if len(size) == 2 and all(isinstance(side, int) for side in size):
                return size
    return None


def probe_size(model: nn.Module) -> tuple[int, int]:
    """The image size a helper uses to look at a model when it has no images: the fixed size, the
    model's nominal size (``model.info.input_size``) or 224."""
    fixed = fixed_input_size(model)
    if fixed is not None:
        return fixed
    nominal = getattr(getattr(model, "info", None), "input_size", None)
    return (nominal, nominal) if isinstance(nominal, int) else (224, 224)


def _probe_forward(model: nn.Module, images: torch.Tensor, what: str) -> None:
    """``model(images)`` for a helper that only looks (shapes, layer order); a failure says which size to pass."""
    try:
        model(images)
    except _StopForward:
        raise
    except (RuntimeError, ValueError, AssertionError) as error:
        size = tuple(images.shape)
        raise RuntimeError(
            f"{what} ran the model on a batch of shape {size} and the model failed: {error}\n"
            f"If your model needs another input size (a 32 px CIFAR network, a ViT built for 64 px), pass it: "
            f"input_size=(1, 3, 32, 32), or give images of that size."
        ) from error


def list_layers(
    model: nn.Module,
    input_size: tuple[int, ...] | None = None,
    leaves_only: bool = False,
) -> list[LayerInfo]:
    """Every layer with its type, output shape (from one forward pass) and parameter count.

    ``input_size`` (N, 3, H, W) of the zero batch the shapes come from; default
    (1, 3) + :func:`probe_size` (the model's fixed or nominal size, else 224).

    >>> [row.name for row in list_layers(vgg)][:2]
    ['features', 'features.0']
    """
    if input_size is None:
        input_size = (1, 3, *probe_size(model))
    input_size = tuple(input_size)
    if len(input_size) != 4 or not all(isinstance(side, int) and side > 0 for side in input_size):
        raise ValueError(f"input_size must be (N, 3, H, W) with positive ints, such as (1, 3, 224, 224); got {input_size}.")
    modules = [(name, module) for name, module in model.named_modules() if name]
    if leaves_only:
        modules = [(name, module) for name, module in modules if not any(True for _ in module.children())]
    shapes: dict[str, tuple[int, ...]] = {}

    def recorder(name: str):
        def hook(_module, _inputs, output):
            tensor = _first_tensor(output)
            if tensor is not None and name not in shapes:
                shapes[name] = tuple(tensor.shape)

        return hook

    with preserve_model_state(model):
        handles = []
        try:
            for name, module in modules:
                handles.append(module.register_forward_hook(recorder(name)))
            with torch.no_grad():
                device, dtype = check_model(model)
                _probe_forward(model, torch.zeros(input_size, device=device, dtype=dtype), "list_layers")
        finally:
            for handle in handles:
                handle.remove()
    return [
        LayerInfo(
            name=name,
            type=type(module).__name__,
            output_shape=shapes.get(name),
            parameters=sum(p.numel() for p in module.parameters()),
            depth=name.count(".") + 1,
        )
        for name, module in modules
    ]


def format_layer_table(rows: Sequence[LayerInfo]) -> str:
    """A plain-text table of :func:`list_layers` rows, for ``print``."""
    header = ("name", "type", "output shape", "parameters")
    lines = [
        (row.name, row.type, "x".join(map(str, row.output_shape)) if row.output_shape else "-", f"{row.parameters:,}")
        for row in rows
    ]
    widths = [max(len(str(item)) for item in column) for column in zip(header, *lines)]
    out = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths))]
    out.append("  ".join("-" * width for width in widths))
    out += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in lines]
    return "\n".join(out)


@contextmanager
def capture_activations(
    model: nn.Module, layers: str | Sequence[str], detach: bool = True
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of named layers during forward passes inside the ``with`` block.

    The dict fills in as the model runs; a layer called twice keeps its last output. Outputs
    are copied, so a later in-place operation (``ReLU(inplace=True)``) cannot change them;
    ``detach=False`` keeps the autograd graph, to take gradients of an activation.

    >>> with capture_activations(model, "features.28") as acts:
    ...     model(images)
    >>> acts["features.28"].shape
    torch.Size([1, 512, 14, 14])
    """
    modules = _resolve(model, layers)
    activations: dict[str, torch.Tensor] = {}
    handles = []

    def recorder(name: str):
        def hook(_module, _inputs, output):
            tensor = _first_tensor(output)
            if tensor is not None:
                # Clone: an in-place ReLU after this layer would otherwise overwrite what we stored.
                # clone() keeps the autograd graph when detach=False.
                tensor = tensor.detach().clone() if detach else tensor.clone()
            activations[name] = tensor

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(recorder(name)))
        yield activations
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture_gradients(model: nn.Module, layers: str | Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record d(loss)/d(output) of named layers for backward passes inside the ``with`` block.

    The outputs must be part of a graph: give the input ``requires_grad_()`` (the models of
    :func:`load_model` have frozen parameters).

    >>> with capture_gradients(model, "features.28") as grads:
    ...     model(images.requires_grad_())[0, 281].backward()
    >>> grads["features.28"].shape
    torch.Size([1, 512, 14, 14])
    """
    modules = _resolve(model, layers)
    gradients: dict[str, torch.Tensor] = {}
    handles = []

    def recorder(name: str):
        def store(grad: torch.Tensor) -> None:
            gradients[name] = grad.detach()

        def hook(_module, _inputs, output):
            tensor = _first_tensor(output)
            if tensor is not None and tensor.requires_grad:
                tensor.register_hook(store)  # lives and dies with this tensor, not the module

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(recorder(name)))
        yield gradients
    finally:
        for handle in handles:
            handle.remove()


def count_hooks(model: nn.Module) -> int:
    """How many hooks are registered on the model and all its submodules (0 when clean)."""
    return sum(len(getattr(module, attr, {}) or {}) for module in model.modules() for attr in _HOOK_DICTS)


@contextmanager
def preserve_model_state(model: nn.Module, eval_mode: bool = True) -> Iterator[nn.Module]:
    """Run the block with the model in eval mode, and give the model back exactly as it was.

    Every explanation in the course is computed in eval mode: BatchNorm uses its running
    statistics (so an image's map does not depend on the rest of the batch) and Dropout is off
    (two identical calls give the same map). ``eval_mode=False`` leaves the modes as they are.
    On exit, whatever happened inside (an error, Ctrl-C), the guard restores every module's
    ``training`` flag, every parameter's ``requires_grad`` and ``.grad``, the buffers of every
    module that was in train mode (BatchNorm's running statistics), and removes hooks registered
    inside the block (by us or by a library that raised before cleaning up). Weights, and the
    buffers of modules already in eval mode, are not copied: techniques must not change them.

    >>> with preserve_model_state(model):
    ...     model.training  # False inside; the model's own mode again after the block
    """
    # One walk of the module tree; everything below is restored from these lists.
    modules = list(model.modules())
    parameters = list({id(p): p for m in modules for p in m._parameters.values() if p is not None}.values())
    training = [module.training for module in modules]
    # The buffers of modules in train mode (BatchNorm's running statistics would be written there)
    # are copied and put back; in eval mode the course's layers never write theirs.
    buffers = list({id(b): b for m, flag in zip(modules, training) if flag for b in m._buffers.values() if b is not None}.values())
    saved_parameters = [(p.requires_grad, p.grad) for p in parameters]
    saved_buffers = [b.detach().clone() for b in buffers]
    # Every hook handle takes the next id of this (private) counter, so hooks with a larger id
    # were registered inside the block; the hook dicts are scanned only if the counter moved.
    first_new_hook = RemovableHandle.next_id
    try:
        if eval_mode:
            for module in modules:
                if module.training:  # nn.Module.__setattr__ is slow: touch only what changes
                    module.training = False
        yield model
    finally:
        if RemovableHandle.next_id != first_new_hook:
            for module in modules:
                for attr in _HOOK_DICTS:
                    hooks = module.__dict__.get(attr)
                    if hooks:
                        for key in [key for key in hooks if key >= first_new_hook]:
                            del hooks[key]
        for module, flag in zip(modules, training):
            if module.training is not flag:
                module.training = flag
        for parameter, (requires_grad, grad) in zip(parameters, saved_parameters):
            if parameter.requires_grad is not requires_grad:
                parameter.requires_grad_(requires_grad)
            if parameter.grad is not grad:
                parameter.grad = grad
        with torch.no_grad():
            for buffer, saved in zip(buffers, saved_buffers):
                if buffer.shape == saved.shape:
                    buffer.copy_(saved)
