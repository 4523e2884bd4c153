"""Where vanilla_gradient and grad_cam spend time beyond the limit: each candidate timed on its own.

    .venv/bin/python bench/saliency_overhead.py [--size 224] [--images 2] [--threads 1] [--rounds 12]

For EfficientNet-Lite0 (offline weights, 273 modules) and a torchvision ResNet-18 (no weights,
68 modules), both in eval mode with frozen weights, it times

* the limits: one forward + backward to the input, and Grad-CAM's forward + backward down to
  the layer (the same plain-torch functions as ``bench_saliency.py``), and our two methods;
* every step our methods add around those passes, each repeated until it takes a few hundred
  milliseconds: the input check (and its parts), the target check, the model-state guard (and
  its parts: the walks over modules and parameters, the buffer copies, the flag writes), the
  layer lookup, the clone in Grad-CAM's hook, the Grad-CAM arithmetic;
* the garbage collections one call of each triggers (``gc.callbacks``): Python objects made per
  call (a guard that builds a set per module and hook dict) start collections that the limit
  never pays for, and now and then a full one over every object the process holds.

``--rounds`` interleaved rounds time the whole calls (wall clock, as the benches do).

Each cost is printed in milliseconds and as a percentage of the limit it sits on. Microsecond
steps are timed in tight loops, so they are steadier than the differences of whole calls.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_saliency import layer_gradient_pass  # noqa: E402
from timing import input_gradient_pass, median_ratio, rounds_against_limit  # noqa: E402

from nnvis_helpers import load_images, load_model, saliency  # noqa: E402
from nnvis_helpers.checks import check_images, check_target  # noqa: E402
from nnvis_helpers.layers import get_layer, preserve_model_state  # noqa: E402


def milliseconds_per_call(function, budget: float = 0.3) -> float:
    """Median over 5 batches of calls, each batch about ``budget`` seconds long."""
    function()
    start = time.perf_counter()
    function()
    once = max(time.perf_counter() - start, 1e-6)
    repeats = max(1, int(budget / once))
    batches = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            function()
        batches.append((time.perf_counter() - start) / repeats)
    return statistics.median(batches) * 1000


def collections_per_call(function, calls: int = 10) -> float:
    """How many garbage collections (any generation) ``calls`` calls start, per call."""
    count = [0]

    def callback(phase, info):
        count[0] += phase == "start"

    function()
    gc.callbacks.append(callback)
    try:
        for _ in range(calls):
            function()
    finally:
        gc.callbacks.remove(callback)
    return count[0] / calls


def measure(name: str, model, layer: str, images, rounds: int) -> dict:
    with torch.no_grad():
        targets = model(images).argmax(dim=1)
    module = model.get_submodule(layer)
    kept = {}
    handle = module.register_forward_hook(lambda m, i, output: kept.update(output=output))
    with torch.no_grad():
        model(images)
    handle.remove()
    activation = kept["output"]
    gradient = torch.randn_like(activation)
    classes = model(images[:1]).shape[1] if not hasattr(model, "info") else model.info.num_classes
    logits = torch.randn(len(images), classes, requires_grad=True)

    def guard():
        with preserve_model_state(model):
            pass

    def cam_arithmetic():
        weights = gradient.mean(dim=(2, 3), keepdim=True)
        cam = (weights * activation).sum(dim=1, keepdim=True).clamp(min=0)
        return F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)

    whole = {
        "vanilla gradient": lambda: saliency.vanilla_gradient(model, images, targets, reduce=None),
        "limit: forward + backward to the input": lambda: input_gradient_pass(model, images, targets),
        "grad-cam": lambda: saliency.grad_cam(model, images, targets, layer=layer),
        "limit: forward + backward to the layer": lambda: layer_gradient_pass(model, module, images, targets),
    }
    for function in whole.values():
        function()
    times = rounds_against_limit(whole, images.device, rounds)
    medians = {key: statistics.median(values) * 1000 for key, values in times.items()}
    full, partial = medians["limit: forward + backward to the input"], medians["limit: forward + backward to the layer"]
    ratios = {
        "vanilla gradient / limit": median_ratio(times, "vanilla gradient", "limit: forward + backward to the input"),
        "grad-cam / limit": median_ratio(times, "grad-cam", "limit: forward + backward to the layer"),
    }
    # (what, function, which limit it adds to: "both", "vanilla" or "grad-cam")
    steps = [
        ("check_images (whole)", lambda: check_images(images), "both"),
        ("  torch.isfinite(images).all()", lambda: bool(torch.isfinite(images).all()), "both"),
        ("  images.min().item(), images.max().item()", lambda: (images.min().item(), images.max().item()), "both"),
        ("  proposed: torch.aminmax(images), one sync", lambda: torch.stack(torch.aminmax(images)).tolist(), "both"),
        ("check_target (x2 per call)", lambda: (check_target(targets, len(images), classes, targets.device),
                                                check_target(targets, len(images), classes)), "both"),
        ("preserve_model_state (enter + exit)", guard, "both"),
        ("  list(model.modules())", lambda: list(model.modules()), "both"),
        ("  list(model.parameters())", lambda: list(model.parameters()), "both"),
        ("  every buffer cloned", lambda: [buffer.detach().clone() for buffer in model.buffers()], "both"),
        ("  module.training = False on every module", lambda: [setattr(m, "training", False) for m in model.modules()],
         "both"),
        ("get_layer", lambda: get_layer(model, layer), "grad-cam"),
        ("last_conv_layer(model, images) (cached)", lambda: saliency.last_conv_layer(model, images), "grad-cam"),
        ("clone of the layer output (hook)", lambda: activation.clone(), "grad-cam"),
        ("gather + sum + its backward", lambda: torch.autograd.grad(
            logits.gather(1, targets[:, None]).sum(), logits), "both"),
        ("gradient.abs() (the method itself)", lambda: images.abs(), "vanilla"),
        ("CAM arithmetic + upsampling (the method itself)", cam_arithmetic, "grad-cam"),
    ]
    rows = []
    for what, function, applies in steps:
        cost = milliseconds_per_call(function)
        rows.append({"step": what, "ms": round(cost, 4), "applies_to": applies,
                     "percent_of_full_pass": round(100 * cost / full, 2),
                     "percent_of_layer_pass": round(100 * cost / partial, 2)})
    collections = {key: collections_per_call(function) for key, function in whole.items()}

    print(f"\n## {name}: {sum(1 for _ in model.modules())} modules, {sum(1 for _ in model.parameters())} parameter "
          f"tensors, layer {layer}\n")
    for key, value in medians.items():
        print(f"  {key:44s} {value:9.2f} ms   gc collections per call {collections[key]:.1f}")
    for key, value in ratios.items():
        print(f"  {key:44s} {value:9.3f}")
    print("\n| step | ms | % of full pass | % of layer pass | in |\n|---|---:|---:|---:|---|")
    for row in rows:
        print(f"| {row['step'].strip()} | {row['ms']:.3f} | {row['percent_of_full_pass']:.2f} | "
              f"{row['percent_of_layer_pass']:.2f} | {row['applies_to']} |")
    return {"model": name, "layer": layer, "whole_ms": {k: round(v, 2) for k, v in medians.items()},
            "ratios": {k: round(v, 3) for k, v in ratios.items()}, "gc_collections_per_call": collections,
            "steps": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=12, help="interleaved rounds of the whole calls")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    import torchvision

    images = load_images((["chelsea", "coffee", "astronaut", "rocket"] * 8)[: args.images], size=args.size)
    print(f"{args.images} images {args.size}x{args.size}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    results = [
        measure("EfficientNet-Lite0", load_model("efficientnet_lite0", verbose=False), "bn2", images, args.rounds),
        measure("ResNet-18 (no weights)", torchvision.models.resnet18(weights=None).eval().requires_grad_(False),
                "layer4", images, args.rounds),
    ]
    print(json.dumps({"size": args.size, "images": args.images, "threads": torch.get_num_threads(), "models": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
