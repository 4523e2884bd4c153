"""Which device the course runs on.

This is the only module that asks ``torch.cuda.is_available()``: every other helper follows
the device of the model or of the images it is given.
"""
from __future__ import annotations

import torch

__all__ = ["get_device", "describe_device"]


def get_device() -> torch.device:
    """The best device here: CUDA, then Apple's MPS, then the CPU.

    >>> model = load_model().to(get_device())
    """
    if torch.cuda.is_available():
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
