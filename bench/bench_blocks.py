"""Speed of the building blocks (notebook 08): spatial attribution, the activation grid and the icon cache.

    .venv/bin/python bench/bench_blocks.py [--ig-steps 64] [--ig-batch 32] [--steps 32] [--rounds 3]

EfficientNet-Lite0 (offline weights), the photo "chelsea" at 160 px, its top class as the target.

1. Spatial attribution, layer ``blocks.4.0.bn2`` (480 channels after a ReLU6, a cut of the network
   with no skip connection around it): ``blocks.spatial_attribution`` (integrated gradients on the
   layer's units from the zero activation, ``--ig-steps`` points, ``--ig-batch`` rows per pass)
   against captum's ``LayerIntegratedGradients`` with the same steps and ``internal_batch_size``, so
   the same number of gradient evaluations. Captum's path is not ours (it runs from the layer's
   activation for a black photo, not from zero), so only the cost is compared. The limit: the
   ceil(steps / batch) forward + backward passes of the whole network on ``--ig-batch`` copies of the
   photo, a forward hook replacing the layer's output by a leaf tensor that requires grad: the least
   any integrated gradients on a layer must do. All three run in the same rounds
   (``timing.rounds_against_limit``). Checked here, not timed: with one right Riemann point ours is
   gradient x activation and must equal captum's ``LayerGradientXActivation`` (asserted, to 1e-4 of
   the largest value); completeness, |delta| / |f(A) - f(0)|, for 32, 64 and 128 steps.
2. The activation grid, layer ``blocks.4``: ``blocks.activation_grid`` with 5 x 5 cells (25 icons of
   48 px, ``--steps`` steps, one batched render) against the same directions rendered one at a time
   with ``atlas.render_icons`` (only 3 of them are timed; their cost per icon, times 25, is an
   extrapolation), and against the limit: ``--steps`` forward + backward passes of the whole network
   on a (25, 3, 48, 48) batch, plain torch (``timing.input_gradient_pass``). The render stops its
   forward pass after the layer, so a fourth side, the same passes stopped after ``blocks.4``, says
   how close a step comes to the pass it really needs (the course's rule: one forward + backward).
3. ``blocks.IconCache`` icons of 16 channels of ``blocks.4.0.bn2.drop`` (the values before the
   ReLU6) with ``redirect=True`` (``featurevis.redirected_relu6``: every ReLU6 runs a custom backward
   that lets a stuck image's gradient through) against ``redirect=False``, interleaved (``timing.interleaved_rounds``): the
   cost of the redirect, and how many icons stay flat (std < 0.01) with and without it.

Every ratio is the median over rounds, each round's sides run back to back. ``--out`` names the JSON
file (bench/results/blocks.json unless given; an empty string writes none).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from datetime import date
from pathlib import Path

import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from nnvis_helpers import blocks, load_images, load_model  # noqa: E402
from nnvis_helpers.atlas import render_icons  # noqa: E402
from timing import (  # noqa: E402
    input_gradient_pass,
    interleaved_rounds,
    limit_summary,
    limit_table,
    median_ratio,
    rounds_against_limit,
)

MIDDLE = "blocks.4.0.bn2"  # 480 channels after ReLU6; nothing skips around it
GRID_LAYER = "blocks.4"
ICON_LAYER = "blocks.4.0.bn2.drop"  # MIDDLE's values before its ReLU6
CELLS, ICON_SIZE = 5, 48
SINGLE_ICONS = 3  # icons timed one at a time; the rest is extrapolated
CACHE_CHANNELS = 16
FLAT_STD = 0.01
COMPLETENESS_STEPS = (32, 64, 128)


# ----------------------------------------------------------------------------- 1. spatial attribution


def layer_path_limit(model, photo: torch.Tensor, layer: str, activation: torch.Tensor, target: int, n_steps: int,
                     batch_size: int) -> torch.Tensor:
    """The limit of IG on a layer: ceil(n_steps / batch_size) passes of batch_size photos, the layer's output a leaf."""
    replacement = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda _module, _inputs, _output: replacement["units"])
    photos = photo[None].expand(batch_size, -1, -1, -1)
    try:
        for _ in range(math.ceil(n_steps / batch_size)):
            replacement["units"] = activation.expand(batch_size, -1, -1, -1).clone().requires_grad_(True)
            score = model(photos)[:, target].sum()
            (gradient,) = torch.autograd.grad(score, replacement["units"])
    finally:
        handle.remove()
    return gradient


def bench_spatial_attribution(model, photo: torch.Tensor, target: int, n_steps: int, batch_size: int, rounds: int,
                              device) -> dict:
    module = model.get_submodule(MIDDLE)
    # One right Riemann point: alpha = 1, weight 1, so ours is the gradient x activation at the layer.
    ours_gxa = blocks.spatial_attribution(model, photo, MIDDLE, target, n_steps=1, method="riemann_right")
    captum_gxa = LayerGradientXActivation(model, module).attribute(photo[None], target=target)[0].detach().float().cpu()
    largest = captum_gxa.abs().max()
    gxa_error = float((ours_gxa - captum_gxa).abs().max() / largest)
    assert gxa_error <= 1e-4, f"ours (1 right Riemann point) and captum's gradient x activation differ by {gxa_error:.2e} of the max"
    print(f"{MIDDLE}: n_steps=1 riemann_right equals captum LayerGradientXActivation, max |difference| = "
          f"{gxa_error:.1e} of max |attribution|")

    completeness = {}
    for steps in COMPLETENESS_STEPS:
        attributions, delta = blocks.spatial_attribution(model, photo, MIDDLE, target, n_steps=steps, batch_size=batch_size,
                                                         return_delta=True)
        completeness[str(steps)] = abs(delta) / abs(float(attributions.sum()) - delta)
    print("  completeness |delta| / |f(A) - f(0)|: " + ", ".join(f"{steps} steps {value:.2%}"
                                                                  for steps, value in completeness.items()))

    activation = blocks.layer_view(model, photo, MIDDLE).activations.to(device)
    lig = LayerIntegratedGradients(model, module)
    print(f"  timing: {n_steps} steps, batches of {batch_size}, {rounds} rounds")
    times = rounds_against_limit(
        {"ours": lambda: blocks.spatial_attribution(model, photo, MIDDLE, target, n_steps=n_steps, batch_size=batch_size),
         "peer": lambda: lig.attribute(photo[None], target=target, n_steps=n_steps, internal_batch_size=batch_size),
         "limit": lambda: layer_path_limit(model, photo, MIDDLE, activation, target, n_steps, batch_size)},
        device, rounds, log=True)
    summary = limit_summary(times)
    return {"method": f"spatial_attribution ({MIDDLE}, {n_steps} steps)", "peer": "captum LayerIntegratedGradients",
            "layer": MIDDLE, "n_steps": n_steps, "batch_size": batch_size, "passes": math.ceil(n_steps / batch_size),
            **summary, "gradient_x_activation_max_error": gxa_error,
            "completeness_relative_delta": {steps: round(value, 5) for steps, value in completeness.items()}}


# ----------------------------------------------------------------------------- 2. activation grid


def layer_gradient_pass(model, images: torch.Tensor, layer: str) -> torch.Tensor:
    """A forward pass stopped after ``layer`` (what render runs), then the centre activations' gradient to the images."""

    class Reached(BaseException):
        pass

    def stop(_module, _inputs, output):
        raise Reached(output)

    x = images.detach().requires_grad_(True)
    handle = model.get_submodule(layer).register_forward_hook(stop)
    try:
        model(x)
    except Reached as reached:
        maps = reached.args[0]
    finally:
        handle.remove()
    (gradient,) = torch.autograd.grad(maps[:, :, maps.shape[2] // 2, maps.shape[3] // 2].sum(), x)
    return gradient


def bench_activation_grid(model, photo: torch.Tensor, steps: int, rounds: int, device) -> dict:
    grid = blocks.activation_grid(model, photo, GRID_LAYER, cells=CELLS, icon_size=ICON_SIZE, steps=steps, progress=False)
    vectors = grid.vectors.flatten(0, 1)
    count = len(vectors)
    single = vectors[torch.linspace(0, count - 1, SINGLE_ICONS).round().long()]
    batch = torch.rand(count, 3, ICON_SIZE, ICON_SIZE, generator=torch.Generator().manual_seed(0)).to(device)
    classes = torch.zeros(count, dtype=torch.long, device=device)
    print(f"{GRID_LAYER}: {count} icons of {ICON_SIZE} px, {steps} steps; {SINGLE_ICONS} rendered one at a time; "
          f"{rounds} rounds")
    times = rounds_against_limit(
        {"ours": lambda: blocks.activation_grid(model, photo, GRID_LAYER, cells=CELLS, icon_size=ICON_SIZE, steps=steps,
                                                progress=False),
         "peer": lambda: [render_icons(model, GRID_LAYER, vector[None], icon_size=ICON_SIZE, steps=steps, progress=False)
                          for vector in single],
         "limit": lambda: [input_gradient_pass(model, batch, classes) for _ in range(steps)],
         "to_layer": lambda: [layer_gradient_pass(model, batch, GRID_LAYER) for _ in range(steps)]},
        device, rounds, log=True)
    summary = limit_summary(times)
    # per round: (one icon alone) / (one icon of the batch) = (peer / SINGLE_ICONS) / (ours / count)
    single_over_batched = median_ratio(times, "peer", "ours") * count / SINGLE_ICONS
    return {"layer": GRID_LAYER, "icons": count, "icon_size": ICON_SIZE, "steps": steps, "single_icons_timed": SINGLE_ICONS,
            "batched_ms_per_icon": round(summary["ours_ms"] / count, 2),
            "single_ms_per_icon_extrapolated": round(summary["peer_ms"] / SINGLE_ICONS, 2),
            "single_over_batched_per_icon": round(single_over_batched, 3),
            "all_one_at_a_time_ms_extrapolated": round(summary["peer_ms"] / SINGLE_ICONS * count, 1),
            "batched_ms": summary["ours_ms"], "limit_ms": summary["limit_ms"], "to_layer_ms": summary["to_layer_ms"],
            "batched_over_limit": summary["ours_over_limit"],
            "batched_over_to_layer": round(median_ratio(times, "ours", "to_layer"), 3),
            "to_layer_over_limit": summary["to_layer_over_limit"], "rounds": summary["rounds"]}


# ----------------------------------------------------------------------------- 3. icon cache, redirected or not


def cache_icons(model, steps: int, channels: list[int], redirect: bool) -> torch.Tensor:
    """A new cache, so every call renders: the icons (K, 3, s, s) of ``channels`` of ICON_LAYER."""
    cache = blocks.IconCache(model, icon_size=ICON_SIZE, steps=steps, progress=False, redirect=redirect)
    return cache.icons(ICON_LAYER, channels)


def bench_icon_cache(model, steps: int, rounds: int, device) -> dict:
    count = blocks.IconCache(model, icon_size=ICON_SIZE).channel_count(ICON_LAYER)
    channels = torch.linspace(0, count - 1, CACHE_CHANNELS).round().long().tolist()
    flat = {}
    for redirect in (True, False):
        icons = cache_icons(model, steps, channels, redirect)
        stds = icons.flatten(1).std(dim=1)
        flat[redirect] = [channel for channel, std in zip(channels, stds.tolist()) if std < FLAT_STD]
    print(f"{ICON_LAYER}: {len(channels)} channel icons of {ICON_SIZE} px, {steps} steps; flat (std < {FLAT_STD}): "
          f"{len(flat[True])} with redirect, {len(flat[False])} without {flat[False]}; {rounds} rounds")
    times, ratios = interleaved_rounds(lambda: cache_icons(model, steps, channels, True),
                                       lambda: cache_icons(model, steps, channels, False), "no redirect", rounds, device)
    return {"layer": ICON_LAYER, "channels": channels, "icon_size": ICON_SIZE, "steps": steps,
            "redirect_ms": round(statistics.median(times["ours"]) * 1000, 2),
            "no_redirect_ms": round(statistics.median(times["no redirect"]) * 1000, 2),
            "redirect_over_no_redirect": round(statistics.median(ratios), 3),
            "flat_with_redirect": flat[True], "flat_without_redirect": flat[False], "rounds": len(ratios)}


# ----------------------------------------------------------------------------- the tables


def tables(attribution: dict, grid: dict, cache: dict) -> str:
    lines = [limit_table([attribution]), "",
             "| activation grid | batched (ms / icon) | one at a time (ms / icon, extrapolated) | one at a time / batched "
             "| batched / limit | batched / passes to the layer |",
             "|---|---:|---:|---:|---:|---:|",
             f"| {grid['layer']}, {grid['icons']} icons of {grid['icon_size']} px, {grid['steps']} steps | "
             f"{grid['batched_ms_per_icon']:.0f} | {grid['single_ms_per_icon_extrapolated']:.0f} | "
             f"{grid['single_over_batched_per_icon']:.2f} | {grid['batched_over_limit']:.2f} | "
             f"{grid['batched_over_to_layer']:.2f} |", "",
             "| icon cache | redirect (ms) | no redirect (ms) | redirect / no redirect | flat with redirect "
             "| flat without |",
             "|---|---:|---:|---:|---:|---:|",
             f"| {cache['layer']}, {len(cache['channels'])} channels | {cache['redirect_ms']:.0f} | "
             f"{cache['no_redirect_ms']:.0f} | {cache['redirect_over_no_redirect']:.2f} | "
             f"{len(cache['flat_with_redirect'])} | {len(cache['flat_without_redirect'])} |"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds of parts 1 and 2 (6: every order of 3 sides)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (0: torch's default)")
    parser.add_argument("--ig-steps", type=int, default=64, help="integration points of the spatial attribution")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ig-batch", type=int, default=32, help="rows per forward + backward pass")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "blocks.json"), help="the JSON file ('' for none)")
    parser.add_argument("--steps", type=int, default=32, help="optimization steps of every icon")
    parser.add_argument("--cache-rounds", type=int, default=4, help="rounds of the icon cache comparison (part 3)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model("efficientnet_lite0", device=device, verbose=False).eval()
    photo = load_images(["chelsea"], size=160)[0].to(device)
    with torch.no_grad():
        target = int(model(photo[None]).argmax())
    attribution = bench_spatial_attribution(model, photo, target, args.ig_steps, args.ig_batch, args.rounds, device)
    grid = bench_activation_grid(model, photo, args.steps, args.rounds, device)
    cache = bench_icon_cache(model, args.steps, args.cache_rounds, device)
    print(tables(attribution, grid, cache))
    results = {"date": date.today().isoformat(), "torch": torch.__version__, "device": str(device),
               "threads": torch.get_num_threads(), "model": "efficientnet_lite0", "photo": "chelsea", "size": 160,
               "target": target, "spatial_attribution": attribution, "activation_grid": grid, "icon_cache": cache}
    print(json.dumps(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
