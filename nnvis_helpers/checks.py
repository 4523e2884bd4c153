"""Input checks shared by every technique: the model, the images, the target classes, the options.

There is one checking path for the whole package, so one mistake gets one message wherever it is
made; each says what was wrong, what was expected and what to do:

* :func:`check_model`: an ``nn.Module``; its device and floating-point dtype.
* :func:`check_images`: a float batch (N, 3, H, W) in [0, 1].
* :func:`check_target`: class indices, one per image (an int for all).
* :func:`prepare`: the three above at once, images moved to the model's device and dtype.
* :func:`class_scores`: the model's output checked to be class scores (N, classes), the target's
  scores picked from it.
* :func:`check_number`: an option (``noise_level``, ``window`` ...) in its allowed range.
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from torch import nn

__all__ = ["check_images", "check_target", "check_model", "check_number", "prepare", "class_scores"]


def check_model(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Check ``model`` is an ``nn.Module`` and return (its device, its floating-point dtype).

    Both follow the first parameter (or buffer); a model without any runs on the CPU in float32.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module (for example load_model()), got {type(model).__name__}."
        )
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    for tensor in model.buffers():
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def check_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """Check ``images`` is a float batch (N, 3, H, W) of finite values in [0, 1] and return it.

    >>> check_images(load_image("chelsea"))  # (1, 3, 224, 224): passes
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (N, 3, H, W) with values in [0, 1], "
            f"got {type(images).__name__}. Use nnvis_helpers.load_image() to read a picture."
        )
    if images.dim() == 3 and images.shape[0] == 3:
        raise ValueError(
            f"{name} has shape {tuple(images.shape)}: one image without a batch dimension. "
            f"Pass {name}.unsqueeze(0) to make it a batch of one."
        )
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"{name} must have shape (N, 3, H, W) (a batch of RGB images), got "
            f"{tuple(images.shape)}. load_image() converts grayscale and RGBA pictures to RGB."
        )
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (0 images, shape {tuple(images.shape)}); pass at least one image.")
    if images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"{name} has no pixels (shape {tuple(images.shape)}); check how it was cropped.")
    if not images.is_floating_point():
        raise TypeError(
            f"{name} must be a float tensor in [0, 1], got dtype {images.dtype}. "
            f"Convert 8-bit pixels with {name}.float() / 255."
        )
    # One pass over the pixels and one synchronization: min, max and NaN together.
    low, high = torch.aminmax(images.detach())
    low, high = low.item(), high.item()
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} contains NaN or infinite values; check how it was computed.")
    if low < -1e-4 or high > 1 + 1e-4:
        hint = " It looks like 0-255 pixels: divide by 255." if high > 2 else ""
        raise ValueError(
            f"{name} must lie in [0, 1] (the models normalize internally), got values in "
            f"[{low:.3g}, {high:.3g}].{hint}"
        )
    return images


def check_target(
    target: int | Sequence[int] | torch.Tensor,
    batch_size: int,
    num_classes: int | None,
    device: torch.device | str | None = None,
    name: str = "target",
) -> torch.Tensor:
    """Turn ``target`` (an int, a list of ints or a tensor) into a long tensor of shape (N,).

    One int is used for every image of the batch. Indices must lie in [0, num_classes);
    ``num_classes=None`` (not known yet) checks only that they are not negative: the upper end is
    checked on the model's output by :func:`class_scores`.

    >>> check_target(281, batch_size=2, num_classes=1000)
    tensor([281, 281])
    """
    if target is None:
        raise TypeError(f"{name} is missing: give the class to explain, an int (e.g. 281 for 'tabby') or one per image.")
    if isinstance(target, bool):
        raise TypeError(f"{name} must be a class index (int), not a bool.")
    if isinstance(target, numbers.Integral):
        tensor = torch.full((batch_size,), int(target), dtype=torch.long)
    else:
        if isinstance(target, str):
            raise TypeError(
                f"{name} must be a class index, got the string {target!r}. "
                f"imagenet_labels().index({target!r}) finds the index of a class name."
            )
        if isinstance(target, (list, tuple)) and any(isinstance(item, (list, tuple)) for item in target):
            raise ValueError(f"{name} must be a flat list of class indices, one per image; got a nested list.")
        try:
            tensor = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(
                f"{name} must be an int, a list of ints or a tensor of class indices, got {target!r}"
            ) from error
        if tensor.dim() > 1:
            raise ValueError(
                f"{name} must be one class index per image, shape ({batch_size},), or a single int; got shape "
                f"{tuple(tensor.shape)}. One-hot rows or probabilities become indices with {name}.argmax(dim=1)."
            )
        if tensor.is_floating_point() or tensor.dtype == torch.bool or tensor.is_complex():
            raise TypeError(
                f"{name} must hold integer class indices, got dtype {tensor.dtype}. "
                f"Use {name}.long() for whole numbers, or {name}.argmax(dim=1) for scores."
            )
        tensor = tensor.reshape(-1).long()
        if tensor.numel() == 1:
            tensor = tensor.expand(batch_size).clone()
        elif tensor.numel() != batch_size:
            raise ValueError(
                f"{name} has {tensor.numel()} entries but the batch has {batch_size} images; "
                "give one class per image, or a single int for all."
            )
    negative = tensor < 0
    if negative.any():
        raise ValueError(
            f"{name} class {tensor[negative][0].item()} is negative: class indices start at 0. "
            "imagenet_labels().index('tabby') finds one by name."
        )
    if num_classes is not None:
        bad = tensor >= num_classes
        if bad.any():
            raise ValueError(
                f"{name} class {tensor[bad][0].item()} does not exist: this model has {num_classes} "
                f"classes, indices 0 to {num_classes - 1}. imagenet_labels().index('tabby') finds one by name."
            )
    return tensor.to(device) if device is not None else tensor


def known_num_classes(model: nn.Module) -> int | None:
    """The class count of a model made by load_model (``model.info``); None for others (checked on the output)."""
    count = getattr(getattr(model, "info", None), "num_classes", None)
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def prepare(
    model: nn.Module, images: torch.Tensor, target=None, name: str = "target"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check everything a technique is given, before any work: (images, target) ready to use.

    ``images`` come back detached, on the model's device and in its dtype (a float64 model gets
    float64 images); ``target`` as a long tensor (N,) on that device, or None when not given.

    >>> images, target = prepare(model, load_image("chelsea"), 281)
    """
    device, dtype = check_model(model)
    check_images(images)
    images = images.detach().to(device=device, dtype=dtype)
    if target is None:
        return images, None
    return images, check_target(target, len(images), known_num_classes(model), device, name=name)


def _describe(output) -> str:
    if isinstance(output, torch.Tensor):
        return f"a tensor of shape {tuple(output.shape)}"
    if isinstance(output, (tuple, list)):
        return f"a {type(output).__name__} of {len(output)} items"
    return f"a {type(output).__name__}"


def class_scores(output, target: torch.Tensor | None = None, name: str = "target") -> torch.Tensor:
    """Check the model's ``output`` is class scores (N, classes); return it, or each image's target score (N,).

    A model that returns a tuple, a dict or an object (torchvision's GoogLeNet in train mode,
    Hugging Face models) gets told how to wrap it.

    >>> class_scores(model(images), torch.tensor([281]))
    tensor([17.3])
    """
    if not isinstance(output, torch.Tensor):
        pick = "output.logits" if hasattr(output, "logits") else "output[0]"
        raise TypeError(
            f"the model returned {_describe(output)}, not a tensor of class scores (N, classes). Wrap it so "
            f"that forward returns the scores, e.g.\n"
            f"    class Scores(torch.nn.Module):\n"
            f"        def __init__(self, model):\n"
            f"            super().__init__()\n"
            f"            self.model = model\n"
            f"        def forward(self, x):\n"
            f"            output = self.model(x)\n"
            f"            return {pick}\n"
            f"and pass Scores(model) (its layer names gain the prefix 'model.')."
        )
    if output.dim() != 2:
        raise ValueError(
            f"the model should return class scores of shape (N, classes), got {_describe(output)}. "
            "A segmentation or detection model needs its own explanation method; flatten or pool to (N, classes) "
            "for a classifier."
        )
    if target is None:
        return output
    target = target.to(output.device)
    if len(target) != len(output) or bool(((target < 0) | (target >= output.shape[1])).any()):
        check_target(target, len(output), output.shape[1], name=name)  # says which class does not exist (one sync when fine)
    return output.gather(1, target[:, None])[:, 0]


def check_number(
    value,
    name: str,
    low: float | None = None,
    high: float | None = None,
    integer: bool = False,
    low_open: bool = False,
    hint: str = "",
):
    """Check an option is a number (an int when ``integer``) in [low, high] (``low_open``: (low, high]); return it.

    >>> check_number(0.15, "noise_level", low=0)
    0.15
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    kind = "a whole number" if integer else "a number"
    valid = not isinstance(value, bool) and isinstance(value, numbers.Integral if integer else numbers.Real)
    if valid:
        valid = math.isfinite(float(value))
    if valid and low is not None:
        valid = value > low if low_open else value >= low
    if valid and high is not None:
        valid = value <= high
    if not valid:
        left = "(" if low_open else "["
        span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ValueError(f"{name} must be {kind} in {span}, got {value!r}.{(' ' + hint) if hint else ''}")
    return int(value) if integer else float(value)
