"""Which device the course runs on.

This is the only module that asks ``torch.cuda.is_available()``: every other helper follows
the device of the model or of the images it is given.
"""
from __future__ import annotations

import torch

__all__ = ["get_device", "describe_device", "exact_float32"]


def exact_float32() -> None:
    """Make CUDA compute float32 as float32, and the same way on every call.

    On Ampere and later GPUs PyTorch lets cuDNN run float32 convolutions in TensorFloat-32, which
    keeps 10 bits of mantissa (errors near 1e-3), and lets it pick a different algorithm for each
    batch size. The course checks its from-scratch methods against captum and torchattacks to 1e-4
    and less, and an iterative method (PGD, feature visualization) amplifies such differences step
    by step; so it turns TF32 off and asks cuDNN for deterministic algorithms. The models of the
    course are small: this costs little time. Called by :func:`get_device` when it picks CUDA; call
    ``torch.backends.cudnn.allow_tf32 = True`` afterwards to trade the exactness back for speed.
    """
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic = True


def get_device() -> torch.device:
    """The best device here: CUDA, then Apple's MPS, then the CPU.

    On CUDA it also calls :func:`exact_float32`, so that numbers on a GPU match the CPU's to float32
    precision.

    >>> model = load_model().to(get_device())
    """
    if torch.cuda.is_available():
        exact_float32()
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: torch.device | str | None = None) -> str:
    """One line that says what ``device`` is (the GPU's name, or the CPU's thread count).

    >>> print(describe_device())
    cpu (2 threads)
    """
    device = torch.device(device) if device is not None else get_device()
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"cuda:{index} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"
