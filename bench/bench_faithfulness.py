"""Speed of the faithfulness metrics: deletion / insertion curves against bare forward passes, infidelity against captum.

    nice -n 19 .venv/bin/python bench/bench_faithfulness.py [--size 160] [--steps 32] [--batch 64] [--n-perturb 16]
                                                            [--rounds 6] [--threads N] [--device cpu|cuda] [--out PATH]

EfficientNet-Lite0 (offline weights), the sample photos (``load_images(size=160)``: all of them, 8),
their top classes as targets, gradient x input as the attribution.

1. Curves: ``deletion_curve`` and ``insertion_curve`` with ``--steps`` steps (default 32) and the default
   blurred baseline, ``batch_size=--batch``: (steps + 1) x N perturbed images each, built on the fly.
   The limit is a bare forward pass over the same number of images in the same batches (``torch.no_grad``,
   the batches built beforehand): the least any deletion curve must do. The three sides run in the same
   rounds (``timing.rounds_against_limit``: every order of the three every six rounds); the result is the
   median per-round ratio ours / bare, which is also the ratio of the time per image (images per second
   are reported too). Ours includes everything a call does: the checks, the blur of the baseline, the
   ranking of the pixels, the masks. Target: at most 1.2x the bare pass.
2. Infidelity: ``infidelity`` with ``--n-perturb`` draws per image and ``batch_size=--batch`` against
   ``captum.metrics.infidelity`` on the same perturbations (both sides draw them with ``infidelity_noise``;
   captum's ``perturb_func`` hands out its chunks of them in the order captum asks) with
   ``max_examples_per_batch=--batch``, so both run forward passes of ``--batch`` images. Interleaved rounds
   (``timing.interleaved_rounds``); the two results are compared first.

Also reported, from the warm-up calls: the mean deletion and insertion areas of gradient x input and of
random attributions. Writes ``--out`` (bench/results/faithfulness.json unless given; '' writes none).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import interleaved_rounds, median_ratio, rounds_against_limit, timed  # noqa: E402

from nnvis_helpers import describe_device, load_images, load_model  # noqa: E402
from nnvis_helpers.faithfulness import deletion_curve, infidelity, infidelity_noise, insertion_curve  # noqa: E402
from nnvis_helpers.saliency import gradient_x_input  # noqa: E402

TARGET = 1.2


def bench_curves(model, images, target, attributions, steps, batch, rounds, device) -> dict:
    count = len(images) * (steps + 1)
    stacked = images.repeat_interleave(steps + 1, dim=0)
    batches = [stacked[first:first + batch] for first in range(0, count, batch)]

    def bare():
        with torch.no_grad():
            return [model(chunk) for chunk in batches]

    def deletion():
        return deletion_curve(model, images, attributions, target, steps=steps, batch_size=batch, progress=False)

    def insertion():
        return insertion_curve(model, images, attributions, target, steps=steps, batch_size=batch, progress=False)

    _, deleted = timed(deletion, device)  # warm-up: allocator, kernels, lazy imports
    _, inserted = timed(insertion, device)
    timed(bare, device)
    noise = torch.randn(attributions.shape, generator=torch.Generator().manual_seed(0)).to(device)
    areas = {
        "gradient_x_input": {"deletion": round(float(deleted.auc.mean()), 4), "insertion": round(float(inserted.auc.mean()), 4)},
        "random": {
            "deletion": round(float(deletion_curve(model, images, noise, target, steps=steps, batch_size=batch,
                                                   progress=False).auc.mean()), 4),
            "insertion": round(float(insertion_curve(model, images, noise, target, steps=steps, batch_size=batch,
                                                     progress=False).auc.mean()), 4),
        },
    }
    times = rounds_against_limit({"deletion": deletion, "insertion": insertion, "bare": bare}, device, rounds, log=True)
    median = {name: statistics.median(seconds) for name, seconds in times.items()}
    return {
        "steps": steps,
        "batch_size": batch,
        "images_per_curve_call": count,
        "forward_passes": len(batches),
        "bare_ms": round(median["bare"] * 1000, 1),
        "deletion_ms": round(median["deletion"] * 1000, 1),
        "insertion_ms": round(median["insertion"] * 1000, 1),
        "bare_images_per_s": round(count / median["bare"], 1),
        "deletion_images_per_s": round(count / median["deletion"], 1),
        "insertion_images_per_s": round(count / median["insertion"], 1),
        "deletion_over_bare": round(median_ratio(times, "deletion", "bare"), 3),
        "insertion_over_bare": round(median_ratio(times, "insertion", "bare"), 3),
        "rounds": len(times["bare"]),
        "mean_auc": areas,
        "target": TARGET,
    }


def bench_infidelity(model, images, target, attributions, n_perturb, batch, rounds, device) -> dict:
    from captum.metrics import infidelity as captum_infidelity

    n = len(images)

    def ours():
        return infidelity(model, images, attributions, target, n_perturb=n_perturb, batch_size=batch, progress=False)

    def theirs():
        grid = infidelity_noise(images, n_perturb).view(n, n_perturb, *images.shape[1:])
        done = [0]

        def perturb(inputs):
            # captum asks for k draws of every image at a time, image-major within the chunk
            k = len(inputs) // n
            noise = grid[:, done[0]:done[0] + k].reshape(-1, *images.shape[1:])
            done[0] += k
            return noise, inputs - noise

        return captum_infidelity(model, perturb, images, attributions, target=target, n_perturb_samples=n_perturb,
                                 max_examples_per_batch=batch)

    _, a = timed(ours, device)
    _, b = timed(theirs, device)
    difference = float(((a - b).abs() / b.abs()).max())
    print(f"infidelity, ours vs captum: largest relative difference {difference:.2e}")
    times, ratios = interleaved_rounds(ours, theirs, "captum", rounds, device)
    return {
        "n_perturb": n_perturb,
        "batch_size": batch,
        "ours_ms": round(statistics.median(times["ours"]) * 1000, 1),
        "captum_ms": round(statistics.median(times["captum"]) * 1000, 1),
        "ours_over_captum": round(statistics.median(ratios), 3),
        "rounds": rounds,
        "largest_relative_difference": difference,
        "mean_infidelity": float(a.mean()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64, help="images per forward pass, every side")
    parser.add_argument("--n-perturb", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6, help="6: every order of the three curve sides once")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "faithfulness.json"), help="'' writes none")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import captum

    device = torch.device(args.device)
    model = load_model("efficientnet_lite0", device=device, verbose=False)
    images = load_images(size=args.size).to(device)
    with torch.no_grad():
        target = model(images).argmax(dim=1)
    attributions = gradient_x_input(model, images, target)
    print(f"{len(images)} photos of {args.size} x {args.size}, EfficientNet-Lite0, {describe_device(device)}, "
          f"torch {torch.__version__}, captum {captum.__version__}")
    curves = bench_curves(model, images, target, attributions, args.steps, args.batch, args.rounds, device)
    fidelity = bench_infidelity(model, images, target, attributions, args.n_perturb, args.batch, args.rounds, device)
    results = {"date": date.today().isoformat(), "torch": torch.__version__, "captum": captum.__version__,
               "device": str(device), "device_description": describe_device(device), "threads": torch.get_num_threads(),
               "model": "efficientnet_lite0", "images": len(images), "size": args.size, "attribution": "gradient_x_input",
               "curves": curves, "infidelity": fidelity}
    print("\n| side | ms per call | images / s | x bare pass |\n|---|---:|---:|---:|")
    print(f"| bare forward, {curves['images_per_curve_call']} images in batches of {args.batch} | {curves['bare_ms']} | "
          f"{curves['bare_images_per_s']} | 1.000 |")
    for mode in ("deletion", "insertion"):
        print(f"| `{mode}_curve`, {args.steps} steps | {curves[f'{mode}_ms']} | {curves[f'{mode}_images_per_s']} | "
              f"{curves[f'{mode}_over_bare']:.3f} |")
    print(f"\ninfidelity: ours {fidelity['ours_ms']} ms, captum {fidelity['captum_ms']} ms, "
          f"ours / captum {fidelity['ours_over_captum']:.3f}\n")
    print(json.dumps(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
        print(f"written to {args.out}")
    worst = max(curves["deletion_over_bare"], curves["insertion_over_bare"])
    print(f"curves / bare pass = {worst:.3f}x at worst (target <= {TARGET}x): {'OK' if worst <= TARGET else 'SLOWER THAN TARGET'}")
    if fidelity["largest_relative_difference"] > 1e-3:
        print("error: our infidelity and captum's disagree; the comparison is not like for like.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
