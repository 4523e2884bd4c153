"""Quality of featurevis on the offline model, in full mode: do the pictures mean something?

    .venv/bin/python bench/featurevis_quality.py [--steps 512] [--size 224]

Two checks of issue 6, on EfficientNet-Lite0 (224 px, 512 steps, Fourier + decorrelated
colours + Lucid's standard transforms, unless told otherwise):

1. Class visualizations of 5 classes, rendered from noise as one batch, are each classified
   by the model as their own class (top-1) at least 4 times out of 5.
2. A channel visualization excites its channel (mean activation over the map) at least 3x
   more than every sample photo does, for one channel of an early, a middle and a late block.

Prints every number and exits 1 when a check fails. Takes a few minutes on a CPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nnvis_helpers import describe_device, get_device, load_images, load_model, sample_images, top_predictions  # noqa: E402
from nnvis_helpers.featurevis import channel, class_logit, evaluate, render  # noqa: E402

CLASSES = ["goldfinch", "flamingo", "monarch", "strawberry", "lemon"]
CHANNELS = [("blocks.2", 11), ("blocks.4", 3), ("blocks.5", 0)]  # from the gallery of notebook 04


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=512)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = get_device()
    model = load_model("efficientnet_lite0", device=device, verbose=False)
    print(f"EfficientNet-Lite0 on {describe_device(device)}, {args.size} px, {args.steps} steps, seed {args.seed}")
    failures = []

    start = time.time()
    objective = sum(class_logit(name, batch=i) for i, name in enumerate(CLASSES))
    images = render(model, objective, batch_size=len(CLASSES), steps=args.steps, image_size=args.size,
                    seed=args.seed, progress=False)
    hits = 0
    print(f"\n1. class visualizations ({time.time() - start:.0f} s)")
    for name, predictions in zip(CLASSES, top_predictions(model, images, k=3)):
        hit = predictions[0][0] == name
        hits += hit
        guesses = ", ".join(f"{label} {p:.0%}" for label, p in predictions)
        print(f"   {name:12s} -> {guesses}  {'OK' if hit else 'WRONG'}")
    print(f"   {hits}/{len(CLASSES)} classified as their own class (need >= 4)")
    if hits < 4:
        failures.append(f"class visualizations: {hits}/5 right")

    photos = load_images(size=args.size).to(device)
    print(f"\n2. channel visualizations vs the {len(photos)} sample photos ({', '.join(sample_images())})")
    for layer_name, index in CHANNELS:
        start = time.time()
        objective = channel(layer_name, index)
        picture = render(model, objective, steps=args.steps, image_size=args.size, seed=args.seed, progress=False)
        ours = float(evaluate(model, picture, objective)[0])
        theirs = evaluate(model, photos, objective)
        best = float(theirs.max())
        ratio = ours / best if best > 0 else float("inf")
        ok = ratio >= 3
        print(f"   {layer_name}:{index:<4d} visualization {ours:7.2f}; photos max {best:6.2f} "
              f"(mean {float(theirs.mean()):6.2f}) -> {ratio:5.1f}x  {'OK' if ok else 'BELOW 3x'}  ({time.time() - start:.0f} s)")
        if not ok:
            failures.append(f"{layer_name}:{index} only {ratio:.1f}x the best photo")

    print("\n" + ("all checks passed" if not failures else "FAILED: " + "; ".join(failures)))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
