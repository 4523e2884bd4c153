"""Input checks shared by every technique: images and target classes.

Each check raises an error a person can act on: what was wrong, what was expected, what to do.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["check_images", "check_target"]


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
    if not images.is_floating_point():
        raise TypeError(
            f"{name} must be a float tensor in [0, 1], got dtype {images.dtype}. "
            f"Convert 8-bit pixels with {name}.float() / 255."
        )
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or infinite values; check how it was computed.")
    low, high = images.min().item(), images.max().item()
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
    num_classes: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Turn ``target`` (an int, a list of ints or a tensor) into a long tensor of shape (N,).

    One int is used for every image of the batch. Indices must lie in [0, num_classes).

    >>> check_target(281, batch_size=2, num_classes=1000)
    tensor([281, 281])
    """
    if isinstance(target, bool):
        raise TypeError("target must be a class index (int), not a bool.")
    if isinstance(target, int):
        tensor = torch.full((batch_size,), target, dtype=torch.long)
    else:
        try:
            tensor = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(
                f"target must be an int, a list of ints or a tensor of class indices, got {target!r}"
            ) from error
        if tensor.is_floating_point() or tensor.dtype == torch.bool or tensor.is_complex():
            raise TypeError(f"target must hold integer class indices, got dtype {tensor.dtype}.")
        tensor = tensor.reshape(-1).long()
        if tensor.numel() == 1:
            tensor = tensor.expand(batch_size).clone()
        elif tensor.numel() != batch_size:
            raise ValueError(
                f"target has {tensor.numel()} entries but the batch has {batch_size} images; "
                "give one class per image, or a single int for all."
            )
    bad = (tensor < 0) | (tensor >= num_classes)
    if bad.any():
        raise ValueError(
            f"target class {tensor[bad][0].item()} does not exist: this model has {num_classes} "
            f"classes, indices 0 to {num_classes - 1}. imagenet_labels().index('tabby') finds one by name."
        )
    return tensor.to(device) if device is not None else tensor
