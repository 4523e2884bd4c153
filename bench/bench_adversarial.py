"""Speed of our PGD against torchattacks' PGD and against the limit: the same attack, model and batch, in one run.

    .venv/bin/python bench/bench_adversarial.py [--size 160] [--batch 4] [--steps 10] [--rounds 6]
                                                [--device cpu|cuda] [--threads N]

PGD-10 with an L-infinity ball (epsilon 2/255, alpha 0.5/255, no random start, so both compute
exactly the same images, which is checked) on EfficientNet-Lite0 (offline weights) and the sample
photos. The limit: the ``steps`` forward + backward passes PGD needs, in plain torch on the same
model and batch (cross-entropy of ``model(x)`` and ``autograd.grad`` to x, ``steps`` times; the
few element-wise operations of each step are left out). Each round runs ours, torchattacks and
the limit in a new order (all six orders every six rounds) after one warm-up call of each; every
ratio is the median of the per-round ratios, so that a busy machine slows all alike. Targets:
ours / torchattacks and ours / limit at most 1.05x.

Defaults: on a GPU a batch of 64 at 224 x 224; on the CPU a batch of 4 at 160 x 160 (under two
minutes on two cores).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import limit_summary, limit_table, rounds_against_limit, timed  # noqa: E402

from nnvis_helpers import describe_device, get_device, load_images, load_model  # noqa: E402
from nnvis_helpers.adversarial import pgd  # noqa: E402

TARGET = 1.05
EPSILON, ALPHA = 2 / 255, 0.5 / 255


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best here)")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=6, help="at least 6: every order of the three sides once")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)  # on a shared machine, 1 thread times far more steadily

    import torchattacks

    device = torch.device(args.device) if args.device else get_device()
    on_gpu = device.type != "cpu"
    size = args.size or (224 if on_gpu else 160)
    batch = args.batch or (64 if on_gpu else 4)
    model = load_model("efficientnet_lite0", device=device, verbose=False)
    photos = load_images(size=size)
    images = photos.repeat((batch + len(photos) - 1) // len(photos), 1, 1, 1)[:batch].to(device)
    with torch.no_grad():
        labels = model(images).argmax(dim=1)

    def ours():
        return pgd(model, images, labels, EPSILON, alpha=ALPHA, steps=args.steps, random_start=False)

    theirs_attack = torchattacks.PGD(model, eps=EPSILON, alpha=ALPHA, steps=args.steps, random_start=False)

    def theirs():
        return theirs_attack(images, labels)

    def limit():
        for _ in range(args.steps):
            x = images.detach().requires_grad_(True)
            loss = F.cross_entropy(model(x), labels)
            (gradient,) = torch.autograd.grad(loss, x)
        return gradient

    print(f"PGD-{args.steps} (Linf, eps 2/255) on EfficientNet-Lite0, batch {batch} x 3 x {size} x {size}, "
          f"{describe_device(device)}, torch {torch.__version__}, torchattacks {torchattacks.__version__}")
    _, a = timed(ours, device)  # warm-up: allocator, kernels, lazy imports
    _, b = timed(theirs, device)
    timed(limit, device)
    difference = (a - b).abs().max().item()
    print(f"same images: max |ours - torchattacks| = {difference:.2e}")

    times = rounds_against_limit({"ours": ours, "peer": theirs, "limit": limit}, device, args.rounds, log=True)
    row = {"method": f"PGD-{args.steps}", "peer": "torchattacks PGD", **limit_summary(times)}
    ratio = row["ours_over_peer"]
    summary = {
        "device": str(device),
        "batch": batch,
        "size": size,
        "steps": args.steps,
        "ours_median_s": round(statistics.median(times["ours"]), 4),
        "torchattacks_median_s": round(statistics.median(times["peer"]), 4),
        "ratio_median": round(ratio, 3),
        "limit_passes": args.steps,
        "limit_median_s": round(statistics.median(times["limit"]), 4),
        "ours_over_limit": row["ours_over_limit"],
        "torchattacks_over_limit": row["peer_over_limit"],
        "ours_over_torchattacks": row["ours_over_peer"],
        "max_abs_difference": difference,
        "target": TARGET,
    }
    print("\n" + limit_table([row]) + "\n")
    print(json.dumps(summary))
    for name, value in (("ours / torchattacks", ratio), ("ours / limit", row["ours_over_limit"])):
        verdict = "OK" if value <= TARGET else "SLOWER THAN TARGET"
        print(f"{name} = {value:.3f}x (target <= {TARGET}x): {verdict}")
    if difference > 1e-6:
        print("error: the two attacks disagree; the comparison is not like for like.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
