"""Speed of our saliency methods against captum's (and Grad-CAM against pytorch-grad-cam).

    .venv/bin/python bench/bench_saliency.py [--size 224] [--images 2] [--rounds 7] [--threads N] [--device cpu|cuda]

EfficientNet-Lite0 (offline weights), the same photos and target classes for every method.
Each library does the same work as ours:

* captum's GuidedBackprop / Deconvolution / GuidedGradCam get ``relu6_as_relu(model)``, a copy
  whose ReLU6 modules they recognise (on the plain model they skip them and do less work);
* SmoothGrad: the same number of noisy samples and the same internal batch;
* Grad-CAM: the same layer (``bn2``), ReLU and bilinear upsampling to the image; pytorch-grad-cam
  also normalizes each map and returns NumPy, as it always does;
* occlusion: the same window, stride and number of occluded images per forward pass.

Library objects are built once, outside the timing (in their favour); our functions are timed
whole, checks and hook set-up included. Rounds are interleaved (ours, theirs, ours, ...) with
the order swapped every round (at least ``--rounds``, more for quick methods until
``--min-seconds`` have passed); the ratio reported is the median of the per-round ratios, so a
busy machine slows both alike. Target on the CPU: every ratio ours / library at most 1.1.

On a machine with more busy processes than cores, ``--threads 1`` gives steadier numbers:
with several threads every small parallel operation (even ``images.min()``) can wait for a
descheduled worker thread, and that noise then dominates the timings.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nnvis_helpers import load_images, load_model  # noqa: E402
from nnvis_helpers import saliency  # noqa: E402

TARGET_RATIO = 1.1


def cases(model, images, targets, samples: int, window: int, stride: int):
    """name -> (ours, [(library name, theirs), ...]); each a function of no arguments."""
    import captum.attr as ca
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    seen = saliency.relu6_as_relu(model)  # captum then changes the ReLU6 backward pass, as we do
    layer = saliency.last_conv_layer(model)
    size = images.shape[-2:]
    per_pass = max(1, 64 // len(images))  # occluded copies per forward pass, ours and captum's
    grad_cam_library = GradCAM(model=model, target_layers=[model.get_submodule(layer)])
    cam_targets = [ClassifierOutputTarget(int(t)) for t in targets]
    cam_input = images.clone().requires_grad_(True)  # it needs an input that requires grad when the weights are frozen
    noise_tunnel = ca.NoiseTunnel(ca.Saliency(model))
    layer_grad_cam = ca.LayerGradCam(model, model.get_submodule(layer))
    return {
        "vanilla gradient": (
            lambda: saliency.vanilla_gradient(model, images, targets, reduce=None),
            [("captum Saliency", lambda: ca.Saliency(model).attribute(images, targets))],
        ),
        "gradient x input": (
            lambda: saliency.gradient_x_input(model, images, targets),
            [("captum InputXGradient", lambda: ca.InputXGradient(model).attribute(images, targets))],
        ),
        "guided backprop": (
            lambda: saliency.guided_backprop(model, images, targets),
            [("captum GuidedBackprop", lambda: ca.GuidedBackprop(seen).attribute(images, targets))],
        ),
        "deconvnet": (
            lambda: saliency.deconvnet(model, images, targets),
            [("captum Deconvolution", lambda: ca.Deconvolution(seen).attribute(images, targets))],
        ),
        f"smoothgrad ({samples} samples)": (
            lambda: saliency.smoothgrad(model, images, targets, n_samples=samples, batch_size=samples, reduce=None),
            [("captum NoiseTunnel", lambda: noise_tunnel.attribute(
                images, target=targets, nt_samples=samples, nt_samples_batch_size=samples, stdevs=0.15))],
        ),
        "grad-cam": (
            lambda: saliency.grad_cam(model, images, targets, layer=layer),
            [
                ("captum LayerGradCam", lambda: F.interpolate(
                    layer_grad_cam.attribute(images, targets, relu_attributions=True), size, mode="bilinear")),
                ("pytorch-grad-cam", lambda: grad_cam_library(input_tensor=cam_input, targets=cam_targets)),
            ],
        ),
        "guided grad-cam": (
            lambda: saliency.guided_grad_cam(model, images, targets, layer=layer),
            [("captum GuidedGradCam", lambda: ca.GuidedGradCam(seen, seen.get_submodule(layer)).attribute(
                images, targets, interpolate_mode="bilinear"))],
        ),
        f"occlusion ({window}px, stride {stride})": (
            lambda: saliency.occlusion(model, images, targets, window=window, stride=stride, batch_size=64, progress=False),
            [("captum Occlusion", lambda: ca.Occlusion(model).attribute(
                images, target=targets, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                baselines=0.0, perturbations_per_eval=per_pass))],
        ),
    }


def timed(function, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


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
    for method, (ours, libraries) in cases(model, images, targets, args.samples, args.window, args.stride).items():
        for library, theirs in libraries:
            ours(), theirs()  # warm-up: first calls pay for allocations and kernel selection
            our_times, their_times = [], []
            round_index, pair_started = 0, time.time()
            # At least --rounds rounds, and more for quick methods, whose timings are the noisiest.
            while round_index < args.rounds or (time.time() - pair_started < args.min_seconds and round_index < 50):
                pair = [(our_times, ours), (their_times, theirs)]
                for times, function in pair if round_index % 2 == 0 else pair[::-1]:
                    times.append(timed(function, device))
                round_index += 1
            ours_s, theirs_s = statistics.median(our_times), statistics.median(their_times)
            ratio = statistics.median(a / b for a, b in zip(our_times, their_times))
            rows.append((method, library, ours_s, theirs_s, ratio))
            print(f"  {method:<28} {library:<22} ours {ours_s * 1000:8.1f} ms   library {theirs_s * 1000:8.1f} ms   "
                  f"ratio {ratio:5.2f}", flush=True)

    print("\n| method | library | ours (ms) | library (ms) | ours / library |\n|---|---|---:|---:|---:|")
    for method, library, ours_s, theirs_s, ratio in rows:
        print(f"| {method} | {library} | {ours_s * 1000:.1f} | {theirs_s * 1000:.1f} | {ratio:.2f} |")
    slow = [row for row in rows if row[4] > TARGET_RATIO]
    print(f"\n{len(rows)} comparisons in {time.time() - started:.0f} s; "
          + (f"{len(slow)} above {TARGET_RATIO}x: " + ", ".join(f"{m} vs {l}" for m, l, *_ in slow) if slow
             else f"every ratio at most {TARGET_RATIO}x."))
    return 1 if slow and device.type == "cpu" else 0


if __name__ == "__main__":
    sys.exit(main())
