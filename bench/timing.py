"""Timing shared by the benchmarks: one call timed on any device, interleaved rounds, and the limit.

Rounds alternate the order (ours, theirs, theirs, ours, ...) and report per-round ratios, so a
busy machine, a warm cache or a clock change slows both sides alike; the median ratio is the result.
:func:`rounds_against_limit` does the same for three sides (ours, the peer, and the limit: the raw
forward + backward passes the method needs, in plain torch) and :func:`limit_table` prints them.
"""
from __future__ import annotations

import statistics
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


# ----------------------------------------------------------------------------- against the limit
#
# The limit is the raw forward + backward work a method cannot avoid, written with plain torch on
# the same model object (eval mode, frozen weights) and the same batch: one pass for a gradient,
# k passes for PGD-k, ceil(n * N / b) passes of b points for IG with n steps. Timed in the same
# rounds as ours and the peer, it says how far both are from what the hardware must do anyway.


def input_gradient_pass(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The limit of one gradient: forward, the target logits summed, backward down to the input."""
    x = images.detach().requires_grad_(True)
    score = model(x).gather(1, targets[:, None]).sum()
    (gradient,) = torch.autograd.grad(score, x)
    return gradient


def rounds_against_limit(
    functions: dict[str, Callable[[], object]],
    device: torch.device,
    rounds: int,
    min_seconds: float = 0.0,
    max_rounds: int = 50,
    log: bool = False,
) -> dict[str, list[float]]:
    """Time every function once per round; return the seconds per name, round by round.

    ``functions`` holds "ours", "peer" and "limit" (and any extra reference). Round i runs them
    rotated by i // 2 and reversed on odd rounds: with three functions, six rounds run all six
    orders, so no side always goes first, after a warm cache or after the other's garbage. At
    least ``rounds`` rounds, and more until ``min_seconds`` have passed (quick methods, whose
    timings are the noisiest), never more than ``max_rounds``.
    """
    names = list(functions)
    times: dict[str, list[float]] = {name: [] for name in names}
    started = time.perf_counter()
    round_index = 0
    while round_index < rounds or (time.perf_counter() - started < min_seconds and round_index < max_rounds):
        shift = (round_index // 2) % len(names)
        order = names[shift:] + names[:shift]
        for name in order[::-1] if round_index % 2 else order:
            seconds, _ = timed(functions[name], device)
            times[name].append(seconds)
        if log:
            print(f"  round {round_index + 1}: " + ", ".join(f"{name} {times[name][-1]:.3f} s" for name in names))
        round_index += 1
    return times


def median_ratio(times: dict[str, list[float]], top: str, bottom: str) -> float:
    """The median over rounds of ``top`` / ``bottom``: each round's pair ran back to back."""
    return statistics.median(a / b for a, b in zip(times[top], times[bottom]))


def limit_summary(times: dict[str, list[float]]) -> dict[str, float]:
    """Median milliseconds per side, and the median ratios ours / limit, peer / limit, ours / peer."""
    summary = {f"{name}_ms": round(statistics.median(seconds) * 1000, 2) for name, seconds in times.items()}
    summary["ours_over_limit"] = round(median_ratio(times, "ours", "limit"), 3)
    summary["peer_over_limit"] = round(median_ratio(times, "peer", "limit"), 3)
    summary["ours_over_peer"] = round(median_ratio(times, "ours", "peer"), 3)
    for name in times:
        if name not in ("ours", "peer", "limit"):
            summary[f"{name}_over_limit"] = round(median_ratio(times, name, "limit"), 3)
    summary["rounds"] = len(times["ours"])
    return summary


def limit_table(rows: list[dict]) -> str:
    """A Markdown table of rows made of ``method``, ``peer`` and a :func:`limit_summary`."""
    lines = [
        "| method | peer | limit (ms) | ours / limit | peer / limit | ours / peer |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['peer']} | {row['limit_ms']:.1f} | {row['ours_over_limit']:.3f} | "
            f"{row['peer_over_limit']:.3f} | {row['ours_over_peer']:.3f} |"
        )
    return "\n".join(lines)
