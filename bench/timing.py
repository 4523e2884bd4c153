"""Timing shared by the benchmarks: one call timed on any device, and interleaved rounds.

Rounds alternate the order (ours, theirs, theirs, ours, ...) and report per-round ratios, so a
busy machine, a warm cache or a clock change slows both sides alike; the median ratio is the result.
"""
from __future__ import annotations

import time
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the GPU to finish, so a timer measures the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], torch.Tensor], device: torch.device) -> tuple[float, torch.Tensor]:
    """(seconds, result) of one call of ``function``."""
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return time.perf_counter() - start, result


def interleaved_rounds(
    ours: Callable[[], torch.Tensor],
    theirs: Callable[[], torch.Tensor],
    peer: str,
    rounds: int,
    device: torch.device,
) -> tuple[dict[str, list[float]], list[float]]:
    """Time ``ours`` and ``theirs`` in alternating order; return the seconds per side and the ratios ours / theirs."""
    times: dict[str, list[float]] = {"ours": [], peer: []}
    ratios = []
    for round_index in range(rounds):
        order = [("ours", ours), (peer, theirs)]
        if round_index % 2:
            order.reverse()
        seconds = {}
        for name, function in order:
            seconds[name], _ = timed(function, device)
            times[name].append(seconds[name])
        ratios.append(seconds["ours"] / seconds[peer])
        print(f"  round {round_index + 1}: ours {seconds['ours']:.3f} s, {peer} {seconds[peer]:.3f} s, "
              f"ratio {ratios[-1]:.3f}")
    return times, ratios
