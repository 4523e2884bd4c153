"""Speed and memory of our integrated gradients against captum's and against the limit, in one run.

    .venv/bin/python bench/bench_attribution.py [--size 160] [--images 2] [--steps 32] [--batch 16] [--rounds 6]
                                                [--device cpu|cuda] [--threads N]

The same attribution on both sides: EfficientNet-Lite0 (offline weights), sample photos, a black
baseline, ``gausslegendre`` with the same ``n_steps``, and the same number of path points per
forward pass (our ``batch_size`` = captum's ``internal_batch_size``). That the two results agree
is checked first.

The limit: the forward + backward passes IG needs, in plain torch on the same model: the
``steps`` x N path points, ``batch`` at a time (ceil(steps * N / batch) passes, the last one
smaller when it does not divide), built beforehand; each pass is ``model(x).gather(...).sum()``
and ``autograd.grad`` to x. Each round runs ours, captum and the limit in a new order (all six
orders every six rounds) after one warm-up call of each; every ratio is the median of the
per-round ratios, so a busy machine slows all alike. Targets: ours / captum and ours / limit at
most 1.05x.

Memory peak of one call of each, measured apart from the timing: on a GPU with
``torch.cuda.max_memory_allocated``; on the CPU from the allocation events of the torch profiler
(every tensor allocated and freed during the call, in time order), which counts what torch
allocates, not what the C library keeps cached.

Defaults: on a GPU 8 images at 224 x 224 and batches of 64 points; on the CPU 2 images at
160 x 160, 32 steps and batches of 16 (two to three minutes on two cores).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import input_gradient_pass, limit_summary, limit_table, rounds_against_limit, synchronize, timed  # noqa: E402

from nnvis_helpers import describe_device, get_device, load_images, load_model  # noqa: E402
from nnvis_helpers.attribution import integrated_gradients  # noqa: E402

TARGET = 1.05


def peak_memory(function, device: torch.device) -> int:
    """Bytes allocated by torch at the worst moment of one call, above what was allocated before it."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        function()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        function()
    events = sorted(
        (event.start_ns(), event.nbytes())
        for event in profiler.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU
    )
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best here)")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--batch", type=int, default=None, help="path points per forward pass, both sides")
    parser.add_argument("--rounds", type=int, default=6, help="at least 6: every order of the three sides once")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)  # on a shared machine, 1 thread times far more steadily

    import captum
    from captum.attr import IntegratedGradients

    device = torch.device(args.device) if args.device else get_device()
    on_gpu = device.type != "cpu"
    size = args.size or (224 if on_gpu else 160)
    count = args.images or (8 if on_gpu else 2)
    batch = args.batch or (64 if on_gpu else 16)
    if batch % count:
        print(f"error: --batch {batch} must be a multiple of --images {count}: captum splits its batches by whole steps.")
        return 2
    model = load_model("efficientnet_lite0", device=device, verbose=False)
    photos = load_images(size=size)
    images = photos.repeat((count + len(photos) - 1) // len(photos), 1, 1, 1)[:count].to(device)
    with torch.no_grad():
        target = model(images).argmax(dim=1)
    captum_ig = IntegratedGradients(model)

    def ours():
        return integrated_gradients(model, images, target, n_steps=args.steps, batch_size=batch, progress=False)

    def theirs():
        return captum_ig.attribute(images, target=target, n_steps=args.steps, internal_batch_size=batch)

    # The limit's points: step-major (every image at alpha 1, then at alpha 2, ...), as captum
    # orders them; where they lie on the path does not change the cost of a pass.
    alphas = torch.linspace(0, 1, args.steps, device=device).view(-1, 1, 1, 1, 1)
    points = (alphas * images).reshape(-1, *images.shape[1:])
    point_targets = target.repeat(args.steps)
    passes = [(points[first:first + batch], point_targets[first:first + batch]) for first in range(0, len(points), batch)]

    def limit():
        return [input_gradient_pass(model, x, classes) for x, classes in passes]

    print(f"integrated gradients, gausslegendre, {args.steps} steps, {batch} points per pass, "
          f"{count} images of {size} x {size}, EfficientNet-Lite0, {describe_device(device)}, "
          f"torch {torch.__version__}, captum {captum.__version__}; limit: {len(passes)} forward + backward passes "
          f"of {batch} points")
    _, a = timed(ours, device)  # warm-up: allocator, kernels, lazy imports
    _, b = timed(theirs, device)
    timed(limit, device)
    agreement = ((a - b).norm() / b.norm()).item()
    print(f"same attributions: |ours - captum| / |captum| = {agreement:.2e}")

    times = rounds_against_limit({"ours": ours, "peer": theirs, "limit": limit}, device, args.rounds, log=True)
    row = {"method": f"integrated gradients ({args.steps} steps)", "peer": "captum IntegratedGradients",
           **limit_summary(times)}
    ratio = row["ours_over_peer"]
    memory = {"ours": peak_memory(ours, device), "captum": peak_memory(theirs, device)}
    print(f"memory peak of one call: ours {memory['ours'] / 2**20:.1f} MiB, captum {memory['captum'] / 2**20:.1f} MiB "
          f"({'CUDA allocator' if on_gpu else 'torch profiler, CPU allocations'})")
    summary = {
        "device": str(device),
        "images": count,
        "size": size,
        "steps": args.steps,
        "batch": batch,
        "ours_median_s": round(statistics.median(times["ours"]), 4),
        "captum_median_s": round(statistics.median(times["peer"]), 4),
        "ratio_median": round(ratio, 3),
        "limit_passes": len(passes),
        "limit_median_s": round(statistics.median(times["limit"]), 4),
        "ours_over_limit": row["ours_over_limit"],
        "captum_over_limit": row["peer_over_limit"],
        "ours_over_captum": row["ours_over_peer"],
        "ours_peak_mib": round(memory["ours"] / 2**20, 1),
        "captum_peak_mib": round(memory["captum"] / 2**20, 1),
        "relative_difference": agreement,
        "target": TARGET,
    }
    print("\n" + limit_table([row]) + "\n")
    print(json.dumps(summary))
    for name, value in (("ours / captum", ratio), ("ours / limit", row["ours_over_limit"])):
        verdict = "OK" if value <= TARGET else "SLOWER THAN TARGET"
        print(f"{name} = {value:.3f}x (target <= {TARGET}x): {verdict}")
    if agreement > 1e-4:
        print("error: the two attributions disagree; the comparison is not like for like.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
