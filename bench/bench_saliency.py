"""Speed of our saliency methods against captum's (and Grad-CAM against pytorch-grad-cam), and against the limit.

    .venv/bin/python bench/bench_saliency.py [--size 224] [--images 2] [--rounds 7] [--threads N] [--device cpu|cuda]

EfficientNet-Lite0 (offline weights), the same photos and target classes for every method.
Each library does the same work as ours:

* captum's GuidedBackprop / Deconvolution / GuidedGradCam get ``relu6_as_relu(model)``, a copy
  whose ReLU6 modules they recognise (on the plain model they skip them and do less work);
* SmoothGrad: the same number of noisy samples and the same internal batch;
* Grad-CAM: the same layer (``bn2``), ReLU and bilinear upsampling to the image; pytorch-grad-cam
  also normalizes each map and returns NumPy, as it always does;
* occlusion: the same window, stride and number of occluded images per forward pass.

The limit is the raw work each method needs, in plain torch on the same model object and batch
(``timing.input_gradient_pass``: ``model(x).gather(...).sum()`` and ``autograd.grad`` to x):

* the gradient methods: one forward + backward to the input (guided backprop and deconvnet
  included: their changed ReLU rule is extra work the limit does not have);
* SmoothGrad: one forward + backward of the ``samples`` x N noisy copies (one internal batch);
* Grad-CAM: one forward + backward down to the layer only (a forward hook keeps its output);
  the backward to the input, its upper bound, is timed too (``full_pass_over_limit``);
* guided Grad-CAM: Grad-CAM's limit plus one forward + backward to the input;
* occlusion: the forwards (no grad) of the images and of the occluded batches, built beforehand.

Library objects are built once, outside the timing (in their favour); our functions are timed
whole, checks and hook set-up included. Each round runs ours, the library and the limit in a
new order (all six orders every six rounds; at least ``--rounds``, more for quick methods until
``--min-seconds`` have passed); each ratio reported is the median of the per-round ratios, so a
busy machine slows all alike. Targets on the CPU: ours / library at most 1.1, and ours / limit
at most 1.05 for the gradient methods, SmoothGrad and Grad-CAM. The table and a JSON line with
every row (milliseconds, ours / limit, library / limit, ours / library) end the output.

On a machine with more busy processes than cores, ``--threads 1`` gives steadier numbers:
with several threads every small parallel operation (even ``images.min()``) can wait for a
descheduled worker thread, and that noise then dominates the timings.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import input_gradient_pass, limit_summary, limit_table, rounds_against_limit  # noqa: E402

from nnvis_helpers import load_images, load_model  # noqa: E402
from nnvis_helpers import saliency  # noqa: E402

TARGET_RATIO = 1.1  # ours / library
LIMIT_TARGET = 1.05  # ours / limit, for the gradient methods and Grad-CAM


def layer_gradient_pass(model, layer, images, targets):
    """Grad-CAM's limit: forward, then backward only down to the layer's output (plain torch).

    A plain forward hook keeps the output; the weights are frozen and the input needs no grad,
    so the output is a leaf and ``requires_grad_`` starts the graph there. The hook is set for
    this call only, so it never runs inside ours or the peer's calls.
    """
    kept = {}

    def keep(module, inputs, output):
        kept["output"] = output.requires_grad_(True)

    handle = layer.register_forward_hook(keep)
    try:
        score = model(images).gather(1, targets[:, None]).sum()
    finally:
        handle.remove()
    (gradient,) = torch.autograd.grad(score, kept["output"])
    return gradient


def occluded_batches(images, window: int, stride: int, per_pass: int) -> list:
    """The occluded images, per_pass patches (times N images) per batch, in the order ours and captum use."""
    height, width = images.shape[-2:]
    patches = [(top, left) for top in range(0, height - window + stride, stride)
               for left in range(0, width - window + stride, stride)]
    batches = []
    for start in range(0, len(patches), per_pass):
        chunk = patches[start : start + per_pass]
        occluded = images.repeat(len(chunk), 1, 1, 1)
        for index, (top, left) in enumerate(chunk):
            occluded[index * len(images) : (index + 1) * len(images), :, top : top + window, left : left + window] = 0
        batches.append(occluded)
    return batches


def cases(model, images, targets, samples: int, window: int, stride: int):
    """name -> case: ``ours``, ``peers`` [(library, theirs)], ``limit``, ``needs`` (the limit in words),
    ``target`` (whether the 1.05x limit target applies), ``extra`` {name: function} timed too.
    Every function takes no arguments."""
    import captum.attr as ca
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    seen = saliency.relu6_as_relu(model)  # captum then changes the ReLU6 backward pass, as we do
    layer = saliency.last_conv_layer(model)
    layer_module = model.get_submodule(layer)
    size = images.shape[-2:]
    per_pass = max(1, 64 // len(images))  # occluded copies per forward pass, ours and captum's
    grad_cam_library = GradCAM(model=model, target_layers=[layer_module])
    cam_targets = [ClassifierOutputTarget(int(t)) for t in targets]
    cam_input = images.clone().requires_grad_(True)  # it needs an input that requires grad when the weights are frozen
    noise_tunnel = ca.NoiseTunnel(ca.Saliency(model))
    layer_grad_cam = ca.LayerGradCam(model, layer_module)
    # SmoothGrad's limit: the gradient of all noisy copies at once (batch_size = samples: one pass).
    noisy = images.repeat_interleave(samples, dim=0)
    noisy = (noisy + 0.15 * torch.randn_like(noisy)).detach()
    noisy_targets = targets.repeat_interleave(samples)
    batches = occluded_batches(images, window, stride, per_pass)

    def one_pass():
        return input_gradient_pass(model, images, targets)

    def layer_pass():
        return layer_gradient_pass(model, layer_module, images, targets)

    def occlusion_limit():
        with torch.no_grad():
            return [model(images)] + [model(batch) for batch in batches]

    gradient = dict(limit=one_pass, needs="1 forward + backward to the input", target=True, extra={})
    return {
        "vanilla gradient": dict(
            gradient,
            ours=lambda: saliency.vanilla_gradient(model, images, targets, reduce=None),
            peers=[("captum Saliency", lambda: ca.Saliency(model).attribute(images, targets))],
        ),
        "gradient x input": dict(
            gradient,
            ours=lambda: saliency.gradient_x_input(model, images, targets),
            peers=[("captum InputXGradient", lambda: ca.InputXGradient(model).attribute(images, targets))],
        ),
        "guided backprop": dict(
            gradient,
            ours=lambda: saliency.guided_backprop(model, images, targets),
            peers=[("captum GuidedBackprop", lambda: ca.GuidedBackprop(seen).attribute(images, targets))],
        ),
        "deconvnet": dict(
            gradient,
            ours=lambda: saliency.deconvnet(model, images, targets),
            peers=[("captum Deconvolution", lambda: ca.Deconvolution(seen).attribute(images, targets))],
        ),
        f"smoothgrad ({samples} samples)": dict(
            ours=lambda: saliency.smoothgrad(model, images, targets, n_samples=samples, batch_size=samples, reduce=None),
            peers=[("captum NoiseTunnel", lambda: noise_tunnel.attribute(
                images, target=targets, nt_samples=samples, nt_samples_batch_size=samples, stdevs=0.15))],
            limit=lambda: input_gradient_pass(model, noisy, noisy_targets),
            needs=f"1 forward + backward of {samples} x N noisy images", target=True, extra={},
        ),
        "grad-cam": dict(
            ours=lambda: saliency.grad_cam(model, images, targets, layer=layer),
            peers=[
                ("captum LayerGradCam", lambda: F.interpolate(
                    layer_grad_cam.attribute(images, targets, relu_attributions=True), size, mode="bilinear")),
                ("pytorch-grad-cam", lambda: grad_cam_library(input_tensor=cam_input, targets=cam_targets)),
            ],
            limit=layer_pass, needs=f"1 forward + backward down to {layer}", target=True,
            # the upper bound: a backward all the way down to the input
            extra={"full_pass": one_pass},
        ),
        "guided grad-cam": dict(
            ours=lambda: saliency.guided_grad_cam(model, images, targets, layer=layer),
            peers=[("captum GuidedGradCam", lambda: ca.GuidedGradCam(seen, seen.get_submodule(layer)).attribute(
                images, targets, interpolate_mode="bilinear"))],
            limit=lambda: (layer_pass(), one_pass()),
            needs="Grad-CAM's limit + 1 forward + backward to the input", target=False, extra={},
        ),
        f"occlusion ({window}px, stride {stride})": dict(
            ours=lambda: saliency.occlusion(model, images, targets, window=window, stride=stride, batch_size=64, progress=False),
            peers=[("captum Occlusion", lambda: ca.Occlusion(model).attribute(
                images, target=targets, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                baselines=0.0, perturbations_per_eval=per_pass))],
            limit=occlusion_limit,
            needs=f"{1 + len(batches)} forwards without grad (the images, then {len(batches)} occluded batch(es))",
            target=False, extra={},
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--min-seconds", type=float, default=6.0, help="keep adding rounds for this long (at most 50)")
    parser.add_argument("--samples", type=int, default=6, help="SmoothGrad samples")
    parser.add_argument("--window", type=int, default=56)
    parser.add_argument("--stride", type=int, default=56)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # captum warns on every call that it sets hooks

    device = torch.device(args.device)
    model = load_model("efficientnet_lite0", device=device, verbose=False)
    names = ["chelsea", "coffee", "astronaut", "rocket", "motorcycle", "china", "flower", "camera"]
    images = load_images((names * 4)[: args.images], size=args.size).to(device)
    with torch.no_grad():
        targets = model(images).argmax(dim=1)
    print(f"EfficientNet-Lite0 on {device}, {torch.get_num_threads()} threads, {args.images} images "
          f"{args.size}x{args.size}, at least {args.rounds} interleaved rounds "
          f"(more within {args.min_seconds:.0f} s for quick methods)\n")

    rows, started = [], time.time()
    for method, case in cases(model, images, targets, args.samples, args.window, args.stride).items():
        for library, theirs in case["peers"]:
            functions = {"ours": case["ours"], "peer": theirs, "limit": case["limit"], **case["extra"]}
            for function in functions.values():
                function()  # warm-up: first calls pay for allocations and kernel selection
            times = rounds_against_limit(functions, device, args.rounds, args.min_seconds)
            row = {"method": method, "peer": library, "limit_needs": case["needs"],
                   "limit_target_applies": case["target"], **limit_summary(times)}
            rows.append(row)
            extra = "".join(f"   {name} / limit {row[name + '_over_limit']:.2f}" for name in case["extra"])
            print(f"  {method:<28} {library:<22} ours {row['ours_ms']:8.1f} ms   library {row['peer_ms']:8.1f} ms   "
                  f"limit {row['limit_ms']:8.1f} ms   ours / limit {row['ours_over_limit']:5.2f}   "
                  f"library / limit {row['peer_over_limit']:5.2f}   ours / library {row['ours_over_peer']:5.2f}{extra}",
                  flush=True)

    print("\nlimit: the raw passes each method needs, in plain torch on the same model and batch")
    for method, needs in dict((row["method"], row["limit_needs"]) for row in rows).items():
        print(f"  {method}: {needs}")
    print()
    print(limit_table(rows))
    slow_peer = [row for row in rows if row["ours_over_peer"] > TARGET_RATIO]
    slow_limit = [row for row in rows if row["limit_target_applies"] and row["ours_over_limit"] > LIMIT_TARGET]
    print(f"\n{len(rows)} comparisons in {time.time() - started:.0f} s; "
          + (f"{len(slow_peer)} above {TARGET_RATIO}x the library: "
             + ", ".join(f"{row['method']} vs {row['peer']}" for row in slow_peer) if slow_peer
             else f"every ratio to the library at most {TARGET_RATIO}x")
          + "; "
          + (f"{len(slow_limit)} above {LIMIT_TARGET}x the limit: "
             + ", ".join(sorted({row["method"] for row in slow_limit})) if slow_limit
             else f"every gradient method and Grad-CAM at most {LIMIT_TARGET}x the limit."))
    print(json.dumps({
        "device": str(device), "threads": torch.get_num_threads(), "images": args.images, "size": args.size,
        "samples": args.samples, "target_ratio": TARGET_RATIO, "limit_target": LIMIT_TARGET, "rows": rows,
    }))
    return 1 if (slow_peer or slow_limit) and device.type == "cpu" else 0

if __name__ == "__main__":
    sys.exit(main())
