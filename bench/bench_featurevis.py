"""Speed of featurevis.render: steps per second against the raw pass of the model, and against lucent.

    .venv/bin/python bench/bench_featurevis.py [--size 224] [--steps 64] [--rounds 3] [--device cpu|cuda]

Three things, on EfficientNet-Lite0 (offline weights), image size x size, batch 1:

1. raw: ``model(x)[:, k].sum().backward()`` on a fixed input that requires grad (frozen weights):
   the least one optimization step can cost.
2. ours: ``render(...)`` with Fourier + decorrelated colours + Lucid's standard transforms and
   Adam, the whole call timed (setup included), for a channel objective (the forward stops after
   the layer) and a class objective (full pass). Target: a step at most 1.3x the raw pass.
3. lucent: ``lucent.optvis.render.render_vis`` with the same objective, parameterization,
   transforms, size, steps and learning rate. It runs in its own environment,
   bench/.venv-lucent (lucent needs kornia 0.4.1, which we do not want in the course's env)::

       python3 -m venv bench/.venv-lucent
       bench/.venv-lucent/bin/pip install timm decorator ipython tqdm pillow numpy
       bench/.venv-lucent/bin/pip install --no-deps torch-lucent==0.1.8 kornia==0.4.1
       # torch and torchvision: borrow the course's (same versions, no second download) ...
       echo "$PWD/.venv/lib/python3.11/site-packages" > bench/.venv-lucent/lib/python3.11/site-packages/zz_course_torch.pth
       # ... or install them: bench/.venv-lucent/bin/pip install torch torchvision

   The ``.pth`` line is read after the environment's own packages, so kornia 0.4.1 wins there
   while torch comes from the course. Without the environment, lucent is skipped with a
   message. Both report the objective reached: the channel's mean activation on the final
   image, untransformed.

``--save bench/results/featurevis_lucent.json`` writes the figures (date, device, versions, ms
per step, objective reached) and the two pictures next to it (``featurevis_ours.png``,
``featurevis_lucent.png``): notebook 04 shows them where lucent is not installed. The stored
figures were made with::

    .venv/bin/python bench/bench_featurevis.py --layer blocks.4 --channel 3 --size 160 --steps 256 \
        --rounds 2 --threads 1 --save bench/results/featurevis_lucent.json

Rounds are interleaved (raw, ours, lucent, raw, ...) and the median is reported. On a CPU the
clock is each process's own CPU time (``time.process_time``), which other programs on a busy
machine disturb much less than wall time; on a GPU it is wall time after synchronizing.
``--threads 1`` gives the steadiest CPU figures.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nnvis_helpers import load_model  # noqa: E402
from nnvis_helpers.featurevis import channel, class_logit, evaluate, render  # noqa: E402

LUCENT_PYTHON = ROOT / "bench" / ".venv-lucent" / "bin" / "python"
LAYER, CHANNEL, CLASS = "blocks.3", 5, 1

# Runs inside bench/.venv-lucent: the same network from timm with our weights, lucent's render_vis.
LUCENT_WORKER = r'''
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import torch, timm
from lucent.optvis import render, param, transform
weights, size, steps, layer, channel_index, device, threads, picture = sys.argv[1:9]
size, steps, channel_index = int(size), int(steps), int(channel_index)
if int(threads) > 0:
    torch.set_num_threads(int(threads))
model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
model.load_state_dict(torch.load(weights, map_location="cpu"))
model = model.to(device).eval().requires_grad_(False)
normalize = lambda x: (x - 0.5) / 0.5  # EfficientNet-Lite0's input normalization
transforms = transform.standard_transforms + [normalize]
param_f = lambda: param.image(size, fft=True, decorrelate=True)
objective = layer.replace(".", "_") + ":" + str(channel_index)
now = time.perf_counter if str(device).startswith("cuda") else time.process_time
start = now()
images = render.render_vis(model, objective, param_f, transforms=transforms, thresholds=(steps,),
                           preprocess=False, progress=False, show_image=False)
if str(device).startswith("cuda"):
    torch.cuda.synchronize()
seconds = now() - start
image = torch.from_numpy(images[-1]).permute(0, 3, 1, 2).to(device)
captured = {}
handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: captured.update(a=o))
with torch.no_grad():
    model(normalize(image))
handle.remove()
if picture:
    from PIL import Image
    Image.fromarray((images[-1][0] * 255).round().astype("uint8")).save(picture)
import lucent, kornia
print(json.dumps({"seconds": seconds, "objective": captured["a"][:, channel_index].mean().item(),
                  "device": str(device), "lucent": getattr(lucent, "__version__", "0.1.8"),
                  "kornia": kornia.__version__}))
'''


def clock(device):
    """CPU time of this process on a CPU (a busy machine slows it less than wall time); wall time on a GPU."""
    return time.perf_counter if torch.device(device).type != "cpu" else time.process_time


def raw_pass(model, size: int, steps: int, device) -> float:
    """Seconds for ``steps`` forward + backward passes of the model on one image."""
    x = torch.rand(1, 3, size, size, device=device, requires_grad=True)
    model(x)[:, CLASS].sum().backward()  # warm-up
    _sync(device)
    now = clock(device)
    start = now()
    for _ in range(steps):
        x.grad = None
        model(x)[:, CLASS].sum().backward()
    _sync(device)
    return now() - start


def ours(model, objective, size: int, steps: int, device, picture: str = "") -> tuple[float, float]:
    _sync(device)
    now = clock(device)
    start = now()
    images = render(model, objective, steps=steps, image_size=size, lr=0.05, progress=False)
    _sync(device)
    seconds = now() - start
    if picture:
        from PIL import Image

        Image.fromarray((images[0].permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8")).save(picture)
    return seconds, float(evaluate(model, images, channel(LAYER, CHANNEL))[0])


def lucent(weights: str, size: int, steps: int, device, threads: int, picture: str = "") -> dict | None:
    worker = Path(tempfile.gettempdir()) / "nnvis_lucent_worker.py"
    worker.write_text(LUCENT_WORKER)
    command = [str(LUCENT_PYTHON), str(worker), weights, str(size), str(steps), LAYER, str(CHANNEL), str(device),
               str(threads), picture]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print("lucent failed:\n" + result.stderr[-2000:])
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main() -> int:
    global LAYER, CHANNEL
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default=None, help="default: the best device here")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--layer", default=LAYER)
    parser.add_argument("--channel", type=int, default=CHANNEL)
    parser.add_argument("--no-lucent", action="store_true")
    parser.add_argument("--save", default="", help="write the figures to this JSON file (and the pictures beside it)")
    args = parser.parse_args()
    LAYER, CHANNEL = args.layer, args.channel
    pictures = {}
    if args.save:
        folder = Path(args.save).parent
        folder.mkdir(parents=True, exist_ok=True)
        pictures = {"ours": str(folder / "featurevis_ours.png"), "lucent": str(folder / "featurevis_lucent.png")}
    if args.threads:
        torch.set_num_threads(args.threads)
    from nnvis_helpers import describe_device, get_device

    device = torch.device(args.device) if args.device else get_device()
    model = load_model("efficientnet_lite0", device=device, verbose=False)
    print(f"EfficientNet-Lite0 on {describe_device(device)}, {args.size}x{args.size}, {args.steps} steps, "
          f"{args.rounds} rounds (median), torch {torch.__version__}; clock: "
          f"{'CPU time of each process' if device.type == 'cpu' else 'wall time'}")

    use_lucent = not args.no_lucent and LUCENT_PYTHON.exists()
    if not use_lucent and not args.no_lucent:
        print(f"lucent: skipped, {LUCENT_PYTHON.relative_to(ROOT)} is missing (see this script's docstring to make it).")
    weights = None
    if use_lucent:
        weights = str(Path(tempfile.gettempdir()) / "nnvis_lite0_weights.pt")
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, weights)

    times: dict[str, list[float]] = {"raw": [], "channel": [], "class": [], "lucent": []}
    reached: dict[str, list[float]] = {"channel": [], "lucent": []}
    versions = {"torch": torch.__version__, "python": platform.python_version()}
    for round_index in range(args.rounds):
        last = round_index == args.rounds - 1
        times["raw"].append(raw_pass(model, args.size, args.steps, device))
        seconds, value = ours(model, channel(LAYER, CHANNEL), args.size, args.steps, device,
                              pictures.get("ours", "") if last else "")
        times["channel"].append(seconds)
        reached["channel"].append(value)
        times["class"].append(ours(model, class_logit(CLASS), args.size, args.steps, device)[0])
        if use_lucent:
            result = lucent(weights, args.size, args.steps, device, args.threads, pictures.get("lucent", "") if last else "")
            if result is not None:
                times["lucent"].append(result["seconds"])
                reached["lucent"].append(result["objective"])
                versions.update(lucent=result["lucent"], kornia=result["kornia"])
        print(f"  round {round_index + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items() if v))

    raw = statistics.median(times["raw"]) / args.steps
    print()
    print(f"{'':34s}{'ms/step':>9s}{'steps/s':>9s}{'x raw':>8s}{'objective':>11s}")
    print(f"{'raw forward+backward (full net)':34s}{raw * 1e3:9.1f}{1 / raw:9.1f}{1.0:8.2f}{'':>11s}")
    rows = [("render, channel " + f"{LAYER}:{CHANNEL}", "channel"), ("render, class logit (full pass)", "class"),
            ("lucent render_vis, same channel", "lucent")]
    for label, key in rows:
        if not times[key]:
            continue
        step = statistics.median(times[key]) / args.steps
        value = f"{statistics.median(reached[key]):11.2f}" if reached.get(key) else f"{'':>11s}"
        print(f"{label:34s}{step * 1e3:9.1f}{1 / step:9.1f}{step / raw:8.2f}{value}")
    class_ratio = statistics.median(times["class"]) / statistics.median(times["raw"])
    print(f"\ntarget: render step <= 1.3x raw pass: class objective {class_ratio:.2f}x -> "
          f"{'OK' if class_ratio <= 1.3 else 'MISSED'}")
    if times["lucent"]:
        speedup = statistics.median(times["lucent"]) / statistics.median(times["channel"])
        better = statistics.median(reached["channel"]) >= statistics.median(reached["lucent"])
        print(f"target: faster than lucent with at least its objective: {speedup:.2f}x faster, objective "
              f"{'>=' if better else '<'} lucent's -> {'OK' if speedup > 1 and better else 'MISSED'}")
    if args.save:
        from nnvis_helpers import describe_device

        figures = {
            "what": "bench/bench_featurevis.py: render vs lucent render_vis, same channel, Fourier + decorrelated "
                    "colours, Lucid's standard transforms, Adam lr 0.05; objective = the channel's mean activation "
                    "on the final image; ms per step from the median over rounds",
            "date": datetime.date.today().isoformat(),
            "device": describe_device(device),
            "clock": "CPU time of each process" if device.type == "cpu" else "wall time",
            "threads": args.threads or torch.get_num_threads(),
            "versions": versions,
            "layer": LAYER, "channel": CHANNEL, "size": args.size, "steps": args.steps, "rounds": args.rounds,
            "ms_per_step": {key: 1e3 * statistics.median(value) / args.steps for key, value in times.items() if value},
            "objective": {key: statistics.median(value) for key, value in reached.items() if value},
            "pictures": {key: Path(value).name for key, value in pictures.items()},
        }
        Path(args.save).write_text(json.dumps(figures, indent=1) + "\n")
        print(f"figures written to {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
