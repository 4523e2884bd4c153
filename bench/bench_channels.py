"""Speed of the dataset examples (notebook 07): one pass for all channels against a bare forward pass and a hook.

    .venv/bin/python bench/bench_channels.py [--length 128] [--size 112] [--rounds 3] [--layers blocks.1 blocks.3 blocks.5]

EfficientNet-Lite0 (offline weights); ``--length`` offline photos of ``--size`` px, decoded once
into a tensor before any timing, so no side pays for reading images. For every layer:

1. Ours against the limit: ``top_examples(model, layer, images, k=9)`` (every channel, one pass,
   each forward stops after the layer) against a bare full forward pass ``model(batch)`` over the
   same images in the same batches of 32. Target (issue 13): at most 1.2x the bare pass.
2. Ours against the peer: zennit-crp, the peer library with top-k reference images, cannot be
   installed offline, so the peer is what a user without our helper writes: a forward hook
   (``capture_activations``), the full model per batch, every image's whole map of the layer kept
   on the CPU, ``torch.topk`` of the per-image maxima at the end. Reported: its time over the bare
   pass, ours over it, and the bytes each keeps (the hook: every map, N x C x H x W floats; ours:
   image max, mean and argmax per image and channel plus the top-k tables). The script asserts
   that both find the same top images with the same scores for a few channels.
   Parts 1 and 2 run in the same rounds (``timing.rounds_against_limit``: ours, the hook and the
   bare pass in a new order every round), so both ratios see the same load.
3. One pass per channel: a loop of ``top_examples(..., channels=[c])`` over 4 channels, against
   the one pass for all channels, interleaved (``timing.interleaved_rounds``). The loop's cost per
   channel times the layer's channel count is an extrapolation (not timed) of what all channels
   would cost one at a time.

Ratios are medians over rounds. The results go to ``--out`` (default bench/results/channels.json;
``--out ''`` writes nothing).
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
sys.path.insert(0, str(ROOT / "bench"))

from nnvis_helpers import dataset, load_model  # noqa: E402
from nnvis_helpers.channels import top_examples  # noqa: E402
from nnvis_helpers.layers import capture_activations  # noqa: E402
from timing import interleaved_rounds, limit_summary, rounds_against_limit  # noqa: E402

K = 9
BATCH = 32  # top_examples' default batch size; the bare pass and the hook use the same batches
LOOP_CHANNELS = 4


def load_images(length: int, size: int) -> torch.Tensor:
    """The offline photos as one tensor (length, 3, size, size), decoded before any timing."""
    data = dataset("offline", size=size, length=length, verbose=False)
    return torch.stack([data[index][0] for index in range(len(data))])


def bare_forward(model, images: torch.Tensor, device) -> None:
    """The limit: the full network over the images, batch by batch, no gradients, nothing kept."""
    with torch.no_grad():
        for batch in images.split(BATCH):
            model(batch.to(device))


def hook_topk(model, layer: str, images: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The peer: keep every image's whole map of ``layer`` on the CPU, then torch.topk of the per-image maxima.

    Returns (scores (k + 1, C), image indices (k + 1, C), bytes of the kept maps); one more than k
    so the agreement check can see ties at the k-th place.
    """
    kept = []
    with torch.no_grad(), capture_activations(model, layer) as activations:
        for batch in images.split(BATCH):
            model(batch.to(device))
            kept.append(activations[layer].cpu())
    maps = torch.cat(kept)  # (N, C, H, W)
    scores, index = torch.topk(maps.flatten(2).amax(dim=2), min(K + 1, len(maps)), dim=0)
    return scores, index, maps.numel() * maps.element_size()


def ours_bytes(top) -> int:
    """What top_examples keeps: per image and channel max, mean and argmax, and the top-k tables."""
    tensors = [top.image_max, top.image_mean, top.image_argmax, top.max_scores, top.max_index,
               top.max_positions, top.mean_scores, top.mean_index]
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def check_agreement(top, peer_scores: torch.Tensor, peer_index: torch.Tensor) -> list[int]:
    """Assert that ours and the hook find the same top-k images (same scores) for a few channels."""
    channels = top.channels.tolist()
    checked = sorted({channels[round(i * (len(channels) - 1) / 4)] for i in range(5)})
    k = top.k
    for channel in checked:
        scores, index, _ = top.of(channel)
        theirs_scores, theirs_index = peer_scores[:k, channel], peer_index[:k, channel]
        assert torch.allclose(scores, theirs_scores.to(scores.dtype), rtol=1e-5, atol=1e-6), (
            f"{top.layer} channel {channel}: top scores differ: ours {scores.tolist()}, hook {theirs_scores.tolist()}")
        # torch.topk orders equal scores as it likes, ours by image index: compare the sets, where the
        # k-th score is not tied with the next one (with ties, either image is a right answer)
        tied = len(peer_scores) > k and bool(peer_scores[k - 1, channel] == peer_scores[k, channel])
        if not tied:
            assert set(index.tolist()) == set(theirs_index.tolist()), (
                f"{top.layer} channel {channel}: top images differ: ours {index.tolist()}, hook {theirs_index.tolist()}")
    return checked


def bench_layer(model, layer: str, images: torch.Tensor, rounds: int, device) -> dict:
    count = len(images)
    print(f"{layer}: {count} images of {images.shape[-1]} px, batches of {BATCH}, k={K}, {rounds} rounds")
    top = top_examples(model, layer, images, k=K, progress=False)  # warm-up, and the agreement check
    peer_scores, peer_index, hook_bytes = hook_topk(model, layer, images, device)
    checked = check_agreement(top, peer_scores, peer_index)
    channels = len(top.channels)
    print(f"  same top {K} images as the hook for channels {checked}; {channels} channels, map {top.map_size}")

    times = rounds_against_limit(
        {"ours": lambda: top_examples(model, layer, images, k=K, progress=False),
         "peer": lambda: hook_topk(model, layer, images, device),
         "limit": lambda: bare_forward(model, images, device)},
        device, rounds, log=True)
    summary = limit_summary(times)
    print(f"  ours / bare {summary['ours_over_limit']:.3f} (target <= 1.2), hook + topk / bare "
          f"{summary['peer_over_limit']:.3f}, ours / hook {summary['ours_over_peer']:.3f}; images/s: ours "
          f"{count / (summary['ours_ms'] / 1000):.0f}, bare {count / (summary['limit_ms'] / 1000):.0f}; kept: hook "
          f"{hook_bytes / 2**20:.1f} MiB, ours {ours_bytes(top) / 2**20:.2f} MiB")

    loop = [top.channels[round(i * (channels - 1) / (LOOP_CHANNELS - 1))].item() for i in range(LOOP_CHANNELS)]
    loop_times, loop_ratios = interleaved_rounds(
        lambda: top_examples(model, layer, images, k=K, progress=False),
        lambda: [top_examples(model, layer, images, channels=[c], k=K, progress=False) for c in loop],
        f"one pass per channel x{len(loop)}", rounds, device)
    # ours / loop of 4 per round -> (loop per channel) / (one pass for all), median over rounds
    per_channel_over_all = statistics.median(1 / (ratio * len(loop)) for ratio in loop_ratios)
    print(f"  one pass per channel: each channel costs {per_channel_over_all:.2f}x the one pass for all {channels}; "
          f"all channels one at a time would cost ~{per_channel_over_all * channels:.0f}x (extrapolated)")
    return {
        "layer": layer,
        "channels": channels,
        "map_size": list(top.map_size),
        "bare_ms": summary["limit_ms"],
        "ours_ms": summary["ours_ms"],
        "hook_topk_ms": summary["peer_ms"],
        "ours_over_bare": summary["ours_over_limit"],
        "hook_topk_over_bare": summary["peer_over_limit"],
        "ours_over_hook_topk": summary["ours_over_peer"],
        "ours_images_per_s": round(count / (summary["ours_ms"] / 1000), 1),
        "bare_images_per_s": round(count / (summary["limit_ms"] / 1000), 1),
        "hook_kept_bytes": hook_bytes,
        "ours_kept_bytes": ours_bytes(top),
        "agreement_channels": checked,
        "loop_channels": loop,
        "loop_ms_per_channel": round(statistics.median(loop_times[f"one pass per channel x{len(loop)}"]) / len(loop) * 1000, 2),
        "one_pass_ms": round(statistics.median(loop_times["ours"]) * 1000, 2),
        "per_channel_over_one_pass": round(per_channel_over_all, 3),
        "all_channels_one_at_a_time_over_one_pass_extrapolated": round(per_channel_over_all * channels, 1),
        "rounds": summary["rounds"],
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| layer | channels | bare pass (ms) | ours / bare | hook + topk / bare | ours / hook | kept: hook | kept: ours "
        "| one channel / one pass for all | all, one at a time (extrapolated) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['layer']} | {row['channels']} | {row['bare_ms']:.0f} | {row['ours_over_bare']:.2f} | "
            f"{row['hook_topk_over_bare']:.2f} | {row['ours_over_hook_topk']:.2f} | {row['hook_kept_bytes'] / 2**20:.1f} MiB | "
            f"{row['ours_kept_bytes'] / 2**20:.2f} MiB | {row['per_channel_over_one_pass']:.2f} | "
            f"{row['all_channels_one_at_a_time_over_one_pass_extrapolated']:.0f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=128, help="number of images")
    parser.add_argument("--size", type=int, default=112, help="image size in pixels")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", nargs="+", default=["blocks.1", "blocks.3", "blocks.5"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (0: torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "channels.json"),
                        help="where the JSON results go ('' writes nothing)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = load_model("efficientnet_lite0", device=device, verbose=False).eval()
    images = load_images(args.length, args.size)
    rows = [bench_layer(model, layer, images, args.rounds, device) for layer in args.layers]
    print(table(rows))
    results = {"date": date.today().isoformat(), "torch": torch.__version__, "device": str(device),
               "threads": torch.get_num_threads(), "model": "efficientnet_lite0", "images": len(images),
               "size": args.size, "batch_size": BATCH, "k": K, "target_ours_over_bare": 1.2, "layers": rows}
    print(json.dumps(results))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
