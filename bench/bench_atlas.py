"""Speed of the activation atlas: batched icons against one icon at a time, and a whole atlas per preset.

    .venv/bin/python bench/bench_atlas.py [--icons 16] [--steps 32] [--size 48] [--rounds 3] [--presets fast cpu]

1. Icons, EfficientNet-Lite0 (offline weights), layer blocks.4: ``render_icons`` of K directions
   (real cell means of a small atlas) in one batch, against the same K icons rendered one at a
   time (``batch_size=1``): same steps, size, transforms and objective. Rounds are interleaved
   (batched, single, single, batched, ...); the median per-icon ratio is the result.
   Target on this 2-core CPU: batched at least 2x faster per icon.
2. A whole atlas for each preset (the notebook's settings): collect the activations of the
   offline photos, lay them out with UMAP, render every icon; seconds per stage.

No peer library has an activation atlas for PyTorch (Lucid's is TensorFlow 1, Lucent has none),
so the baseline of part 1 is the one-icon-at-a-time loop a Lucent user would write;
bench_featurevis.py compares one render with Lucent's ``render_vis``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from nnvis_helpers import collect_activations, dataset, load_model, pick  # noqa: E402
from nnvis_helpers.atlas import grid_cells, icon_settings, layout, render_icons, whitening_matrix  # noqa: E402
from timing import interleaved_rounds  # noqa: E402

LAYER = "blocks.4"


def bench_icons(model, icons: int, steps: int, size: int, rounds: int, device) -> dict:
    data = dataset("offline", size=128, length=max(200, 8 * icons), verbose=False)
    activations = collect_activations(model, LAYER, data, progress=False)
    fitted = layout(activations.vectors, method="pca", verbose=False)  # quick: the layout does not matter here
    grid = grid_cells(fitted, activations.vectors, grid_size=8, min_count=1)
    directions = grid.directions[:icons]
    whitening = whitening_matrix(activations.vectors)
    count = len(directions)
    options = dict(icon_size=size, steps=steps, whitening=whitening, progress=False, seed=0)
    print(f"icons: {count} directions of {LAYER}, {size} px, {steps} steps, {rounds} rounds")
    times, ratios = interleaved_rounds(
        lambda: render_icons(model, LAYER, directions, **options),
        lambda: render_icons(model, LAYER, directions, batch_size=1, **options),
        "one at a time", rounds, device)
    batched = statistics.median(times["ours"]) / count
    single = statistics.median(times["one at a time"]) / count
    speedup = 1 / statistics.median(ratios)
    print(f"per icon: batched {batched * 1000:.0f} ms, one at a time {single * 1000:.0f} ms -> batched is {speedup:.2f}x faster")
    return {"icons": count, "size": size, "steps": steps, "batched_ms_per_icon": batched * 1000,
            "single_ms_per_icon": single * 1000, "speedup": speedup}


def bench_preset(model, preset: str) -> dict:
    os.environ.pop("NNVIS_FAST", None)
    os.environ["NNVIS_QUALITY"] = preset
    images = pick(fast=400, cpu=1600, full=20000)
    size = pick(fast=128, cpu=160, full=224)
    grid_size, min_count = pick(fast=8, cpu=12, full=20), pick(fast=2, cpu=3, full=5)
    stages = {}
    start = time.perf_counter()
    activations = collect_activations(model, LAYER, dataset("offline", size=size, length=images, verbose=False), progress=False)
    stages["collect"] = time.perf_counter() - start
    start = time.perf_counter()
    fitted = layout(activations.vectors, verbose=False)
    stages["layout"] = time.perf_counter() - start
    grid = grid_cells(fitted, activations.vectors, grid_size, min_count)
    start = time.perf_counter()
    icons = render_icons(model, LAYER, grid.directions, whitening=whitening_matrix(activations.vectors),
                         progress=False)  # the preset's icon size and steps, as in notebook 06
    stages["icons"] = time.perf_counter() - start
    total = sum(stages.values())
    print(f"preset {preset}: {images} images at {size} px, {len(grid.cells)} icons of {icons.shape[-1]} px x "
          f"{icon_settings()[1]} steps: "
          + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in stages.items()) + f", total {total:.1f} s")
    return {"preset": preset, "images": images, "cells": len(grid.cells), **{k: round(v, 2) for k, v in stages.items()},
            "total": round(total, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--icons", type=int, default=16)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--presets", nargs="*", default=["fast", "cpu"], choices=["fast", "cpu", "full"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (0: torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = load_model("efficientnet_lite0", device=device, verbose=False)
    results = {"device": str(device), "threads": torch.get_num_threads(),
               "icons": bench_icons(model, args.icons, args.steps, args.size, args.rounds, device),
               "presets": [bench_preset(model, preset) for preset in args.presets]}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
