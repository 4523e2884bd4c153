"""Speed of notebook 09's recipes: feature inversion, caricature and style transfer, per step, against the limit.

    .venv/bin/python bench/bench_style.py [--steps 8] [--warmup 2] [--rounds 6] [--size 160] [--threads 1]
                                          [--device cpu|cuda] [--out bench/results/style.json]

EfficientNet-Lite0 (offline weights), the photo "chelsea" at ``--size`` px, the style picture "ihc"
at the same size. Three recipes of ``nnvis_helpers.featurevis``, each one ``render`` (one Adam loop):

1. ``invert(model, photo, ["blocks.1", "blocks.3", "blocks.5", MODEL_OUTPUT])``: a batch of 4, no
   transforms, Fourier parameterization; the logits are needed, so every step runs the full network.
2. ``caricature(model, photo, ["blocks.3", "blocks.5"])``: a batch of 2, Lucid's standard transforms
   (pad 12, jitter, scale, rotate: the network sees images of about 170-190 px), Fourier; the
   forward pass stops after ``blocks.5``.
3. ``style_transfer(model, photo, style_image, style_weight=3, param="fourier", init="noise")``: a
   batch of 1, the default layers (style: ``bn1``, ``blocks.0``-``blocks.3``; content: ``blocks.3``), no
   transforms; the forward pass stops after ``blocks.3``.

What is timed, per step. A recipe call also does one-off work before its loop: ``photo_activations``
(one forward pass without gradients for the photo's targets, two for style transfer: content and
style), the parameterization's set-up and ``render``'s check pass (one full forward without
gradients). To leave it out, every round times the recipe with ``--steps + --warmup`` steps
("ours_long") and with ``--warmup`` steps ("ours_short"); ours per step is (long - short) / steps.
The set-up is reported apart: short - warmup x (ours per step).

The limit, per recipe, in plain torch on the same model object (eval mode, frozen weights): the same
number of steps on a leaf pixel tensor of the recipe's batch and size (``--size``, no transforms):
forward through the model stopped right after the last layer the recipe uses (a forward hook raising
an exception; for the logits the full pass), a scalar from those activations (their mean),
``.backward()``, an Adam step: the raw forward + backward of the layers it uses.
For the caricature a reference side is added, not part of the target: the same limit at the size
the standard transforms make on average (pad 12, jitter 8, scale 0.9-1.1, jitter 4: about 172 px
for 160), to tell the transforms' larger images from overhead.

The peer, for style transfer only: a Gatys loop written the way pytorch.org's neural-style tutorial
writes one (our own code, not the tutorial's): the style targets' Gram matrices and the content
target computed once, before the timer; per step, forward hooks on the same layers compute each
layer's Gram matrix (F F^T / (C H W)) and its MSE against the target, and the content MSE at
``blocks.3``; the pass stops after ``blocks.3`` (the tutorial cuts the network after its last loss);
style weight 1e6, content weight 1; pixels optimized with Adam lr 0.05 and clamped to [0, 1] after
each step.

Every round runs all sides of a recipe back to back (``timing.rounds_against_limit``: the order
rotates and reverses from round to round), so a busy machine slows them alike; a few warm-up calls
of every side run before the first round. Each ratio is the median over rounds of that round's
ratio. Target: every recipe's step at most 1.3x its limit (exit code 1 otherwise). ``--out`` names
the JSON file (bench/results/style.json unless given; an empty string writes none).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from nnvis_helpers import load_image, load_model  # noqa: E402
from nnvis_helpers.featurevis import MODEL_OUTPUT  # noqa: E402
from nnvis_helpers.featurevis.inversion import caricature, invert  # noqa: E402
from nnvis_helpers.featurevis.style import default_style_layers, style_transfer  # noqa: E402
from timing import rounds_against_limit  # noqa: E402

TARGET = 1.3
INVERT_LAYERS = ["blocks.1", "blocks.3", "blocks.5", MODEL_OUTPUT]
CARICATURE_LAYERS = ["blocks.3", "blocks.5"]
STYLE_WEIGHT = 3.0


class _Reached(BaseException):
    """Raised by a forward hook to stop the pass after the last layer needed."""


def forward_until(model, images: torch.Tensor, layers: list[str], stop: str | None) -> dict[str, torch.Tensor]:
    """The activations at ``layers`` (and the logits under MODEL_OUTPUT when ``stop`` is None); the pass
    stops right after ``stop``. Plain forward hooks, registered and removed around the one pass."""
    captured: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(_module, _inputs, output):
            captured[name] = output
            if name == stop:
                raise _Reached

        return hook

    handles = [model.get_submodule(name).register_forward_hook(keep(name)) for name in layers]
    try:
        captured[MODEL_OUTPUT] = model(images)
    except _Reached:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured


def limit_steps(model, batch: int, size: int, stop: str | None, steps: int, device) -> torch.Tensor:
    """``steps`` raw optimization steps: forward to ``stop`` (None: the logits), mean, backward, Adam."""
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05)
    layers = [stop] if stop is not None else []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        acts = forward_until(model, x, layers, stop)
        acts[stop if stop is not None else MODEL_OUTPUT].mean().backward()
        opt.step()
    return x.detach()


# ----------------------------------------------------------------------------- the peer: a tutorial-style Gatys loop


def tutorial_gram(features: torch.Tensor) -> torch.Tensor:
    """The tutorial's Gram matrix: (B C, H W) times its transpose, divided by the number of elements."""
    b, c, h, w = features.shape
    flat = features.reshape(b * c, h * w)
    return flat @ flat.t() / (b * c * h * w)


class TutorialStyleTransfer:
    """Gatys et al. the pytorch.org way: hooks act as loss modules; targets fixed once; Adam on pixels."""

    def __init__(self, model, content: torch.Tensor, style_image: torch.Tensor, style_layers, content_layer: str,
                 style_weight: float = 1e6, content_weight: float = 1.0):
        self.model, self.style_layers, self.content_layer = model, list(style_layers), content_layer
        self.layers = list(dict.fromkeys(self.style_layers + [content_layer]))
        self.stop = self.layers[-1]
        self.style_weight, self.content_weight = style_weight, content_weight
        with torch.no_grad():
            style_acts = forward_until(model, style_image, self.layers, self.stop)
            self.style_targets = {name: tutorial_gram(style_acts[name]).detach() for name in self.style_layers}
            self.content_target = forward_until(model, content, self.layers, self.stop)[content_layer].detach()
        self.content = content

    def __call__(self, steps: int) -> torch.Tensor:
        image = self.content.clone().requires_grad_(True)
        opt = torch.optim.Adam([image], lr=0.05)
        losses: dict[str, torch.Tensor] = {}

        def loss_hook(name):
            def hook(_module, _inputs, output):
                # the loss modules' work, done as the pass goes (a clone: later layers may work in place)
                features = output.clone()
                if name in self.style_targets:
                    losses["style " + name] = F.mse_loss(tutorial_gram(features), self.style_targets[name])
                if name == self.content_layer:
                    losses["content"] = F.mse_loss(features, self.content_target)
                if name == self.stop:
                    raise _Reached

            return hook

        handles = [self.model.get_submodule(name).register_forward_hook(loss_hook(name)) for name in self.layers]
        try:
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                losses.clear()
                try:
                    self.model(image)
                except _Reached:
                    pass
                style_loss = sum(value for key, value in losses.items() if key.startswith("style"))
                loss = self.style_weight * style_loss + self.content_weight * losses["content"]
                loss.backward()
                opt.step()
                with torch.no_grad():
                    image.clamp_(0, 1)
        finally:
            for handle in handles:
                handle.remove()
        return image.detach()


# ----------------------------------------------------------------------------- one recipe against its limit


def clocked(function, record: list[float], clock):
    """``function`` that also appends its duration on ``clock`` to ``record``."""

    def inner():
        start = clock()
        result = function()
        record.append(clock() - start)
        return result

    return inner


def bench_recipe(name: str, recipe, limit, peer, steps: int, warmup: int, rounds: int, device,
                 reference=None) -> dict:
    """Time recipe(steps + warmup), recipe(warmup), limit(steps) (and peer(steps), reference(steps)) in the same rounds."""
    sides = {"ours_long": lambda: recipe(steps + warmup), "ours_short": lambda: recipe(warmup),
             "limit": lambda: limit(steps)}
    if peer is not None:
        sides["peer"] = lambda: peer(steps)
    if reference is not None:
        sides["reference"] = lambda: reference(steps)
    # On a CPU the clock is this process's CPU time (other programs on a shared machine disturb it much
    # less than wall time); rounds_against_limit's order and its wall times are kept, wall times reported.
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    cpu_times: dict[str, list[float]] = {key: [] for key in sides}
    functions = {key: clocked(function, cpu_times[key], clock) for key, function in sides.items()}
    for function in ([lambda: recipe(warmup), lambda: limit(warmup)] + ([lambda: peer(warmup)] if peer else [])):
        function()  # warm-up: allocator, kernels, the first call's one-off costs
    print(f"{name}: {steps} steps (+{warmup} for the set-up difference), {rounds} rounds")
    wall_times = rounds_against_limit(functions, device, rounds, log=True)
    times = cpu_times if device.type == "cpu" else wall_times
    per_step = [(long - short) / steps for long, short in zip(times["ours_long"], times["ours_short"])]
    limit_step = [seconds / steps for seconds in times["limit"]]
    setup = [short - warmup * step for short, step in zip(times["ours_short"], per_step)]
    ratios = [a / b for a, b in zip(per_step, limit_step)]
    print(f"  ours / limit per round ({'CPU' if device.type == 'cpu' else 'wall'} time): "
          + ", ".join(f"{ratio:.3f}" for ratio in ratios))
    result = {
        "method": name, "steps": steps, "warmup": warmup, "rounds": len(ratios),
        "ours_ms_per_step": round(statistics.median(per_step) * 1000, 2),
        "limit_ms_per_step": round(statistics.median(limit_step) * 1000, 2),
        "ours_over_limit": round(statistics.median(ratios), 3),
        "ours_over_limit_per_round": [round(r, 3) for r in ratios],
        "setup_ms": round(statistics.median(setup) * 1000, 1),
        "setup_in_limit_steps": round(statistics.median(s / b for s, b in zip(setup, limit_step)), 2),
        "seconds": {key: [round(v, 4) for v in value] for key, value in times.items()},
        "wall_seconds": {key: [round(v, 4) for v in value] for key, value in wall_times.items()},
    }
    if peer is not None:
        peer_step = [seconds / steps for seconds in times["peer"]]
        result["peer_ms_per_step"] = round(statistics.median(peer_step) * 1000, 2)
        result["peer_over_limit"] = round(statistics.median(a / b for a, b in zip(peer_step, limit_step)), 3)
        result["ours_over_peer"] = round(statistics.median(a / b for a, b in zip(per_step, peer_step)), 3)
    if reference is not None:
        reference_step = [seconds / steps for seconds in times["reference"]]
        result["limit_at_transformed_size_ms_per_step"] = round(statistics.median(reference_step) * 1000, 2)
        result["ours_over_limit_at_transformed_size"] = round(
            statistics.median(a / b for a, b in zip(per_step, reference_step)), 3)
        result["limit_at_transformed_size_over_limit"] = round(
            statistics.median(a / b for a, b in zip(reference_step, limit_step)), 3)
    return result


def table(rows: list[dict]) -> str:
    lines = ["| recipe | limit (ms / step) | ours (ms / step) | ours / limit | set-up (ms) | peer / limit | ours / peer |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        peer = (f"{row['peer_over_limit']:.3f} | {row['ours_over_peer']:.3f}" if "peer_over_limit" in row else "– | –")
        lines.append(f"| {row['method']} | {row['limit_ms_per_step']:.1f} | {row['ours_ms_per_step']:.1f} | "
                     f"{row['ours_over_limit']:.3f} | {row['setup_ms']:.0f} | {peer} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed optimization steps per call")
    parser.add_argument("--warmup", type=int, default=2, help="steps of the short call subtracted (set-up removed)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds (6: every order of 3 sides)")
    parser.add_argument("--size", type=int, default=160, help="photo, style picture and limit size (px)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on the CPU (default 1: CPU time is then the work itself; 0: torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", default="", help="comma-separated subset of invert,caricature,style")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "style.json"), help="the JSON file ('' for none)")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 1 or args.rounds < 1:
        parser.error("--steps, --warmup and --rounds must be >= 1")
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model("efficientnet_lite0", device=device, verbose=False).eval().requires_grad_(False)
    photo = load_image("chelsea", args.size).to(device)
    style_image = load_image("ihc", args.size).to(device)
    style_layers, content_layer = default_style_layers(model)
    size, steps, warmup, rounds = args.size, args.steps, args.warmup, args.rounds
    only = set(filter(None, args.only.split(","))) or {"invert", "caricature", "style"}
    print(f"EfficientNet-Lite0 on {device} ({torch.get_num_threads()} threads), {size} px, torch {torch.__version__}; "
          f"clock: {'CPU time of this process' if device.type == 'cpu' else 'wall time'} (wall times also logged)")

    rows = []
    if "invert" in only:
        rows.append(bench_recipe(
            f"invert, {len(INVERT_LAYERS)} layers incl. logits (batch 4, full pass)",
            lambda n: invert(model, photo, INVERT_LAYERS, steps=n, progress=False),
            lambda n: limit_steps(model, len(INVERT_LAYERS), size, None, n, device), None,
            steps, warmup, rounds, device) | {"key": "invert", "batch": 4, "stop": "logits (full pass)"})
    if "caricature" in only:
        # Lucid's standard transforms: pad 12, jitter 8, scale s in 0.9..1.1, jitter 4: about (size + 16) s - 4 px,
        # whose mean area is that of a square of side `transformed` (172 px for 160)
        transformed = round(statistics.mean(((size + 16) * (1 + (i - 5) / 50) - 4) ** 2 for i in range(11)) ** 0.5)
        rows.append(bench_recipe(
            "caricature, blocks.3 + blocks.5 (batch 2, standard transforms, stops after blocks.5)",
            lambda n: caricature(model, photo, CARICATURE_LAYERS, steps=n, progress=False),
            lambda n: limit_steps(model, len(CARICATURE_LAYERS), size, CARICATURE_LAYERS[-1], n, device), None,
            steps, warmup, rounds, device,
            reference=lambda n: limit_steps(model, len(CARICATURE_LAYERS), transformed, CARICATURE_LAYERS[-1], n, device),
        ) | {"key": "caricature", "batch": 2, "stop": CARICATURE_LAYERS[-1], "transformed_size": transformed})
    if "style" in only:
        tutorial = TutorialStyleTransfer(model, photo, style_image, style_layers, content_layer)
        last = list(dict.fromkeys(list(style_layers) + [content_layer]))[-1]
        rows.append(bench_recipe(
            f"style_transfer, Fourier from noise (batch 1, stops after {last})",
            lambda n: style_transfer(model, photo, style_image, style_weight=STYLE_WEIGHT, param="fourier",
                                     init="noise", steps=n, progress=False),
            lambda n: limit_steps(model, 1, size, last, n, device), tutorial,
            steps, warmup, rounds, device) | {"key": "style_transfer", "batch": 1, "stop": last,
                                              "style_layers": list(style_layers), "content_layer": content_layer,
                                              "peer": "tutorial-style Gatys loop, Adam lr 0.05 on pixels"})

    print()
    print(table(rows))
    for row in rows:
        if "ours_over_limit_at_transformed_size" in row:
            print(f"{row['key']}: the network sees images of about {row['transformed_size']} px (standard transforms); "
                  f"the same limit at that size is {row['limit_at_transformed_size_over_limit']:.3f}x the limit at "
                  f"{size} px, ours / it = {row['ours_over_limit_at_transformed_size']:.3f}")
    failed = [row["method"] for row in rows if row["ours_over_limit"] > TARGET]
    results = {
        "what": "bench/bench_style.py: per optimization step, (recipe(steps + warmup) - recipe(warmup)) / steps "
                "against the raw forward + backward + Adam step of the layers the recipe uses (plain torch, same "
                "batch and size); median over interleaved rounds",
        "date": date.today().isoformat(), "torch": torch.__version__, "python": platform.python_version(),
        "device": str(device), "threads": torch.get_num_threads(),
        "clock": "CPU time of the process" if device.type == "cpu" else "wall time", "model": "efficientnet_lite0",
        "photo": "chelsea", "style_image": "ihc", "size": size, "steps": steps, "warmup": warmup, "rounds": rounds,
        "target_ours_over_limit": TARGET, "passed": not failed, "recipes": rows,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
        print(f"written to {args.out}")
    for method in failed:
        print(f"MISSED: {method}: a step costs more than {TARGET}x its limit")
    print("target: every recipe's step <= 1.3x its limit -> " + ("OK" if not failed else "MISSED"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
