"""An Imagenette stand-in made from the offline photos, laid out exactly as torchvision's ``Imagenette`` reads it.

Learners in Colab get Imagenette from ``dataset("auto")``; no machine of this project can download it. This script
writes a folder that torchvision cannot tell from the real 320-pixel download:

    <root>/imagenette2-320/{train,val}/<wnid>/<name>.JPEG

with the ten real WordNet ids, as many pictures per class and split as the real dataset (9,469 train, 3,925 val),
shorter side 320 pixels, most of them wider than tall, as JPEG. The pictures are seeded crops of the offline photos
without the cat and the espresso (Imagenette has neither), one photo per class, so a notebook that picks its
targets from the offline photos' classes meets the same surprise as in Colab.

    python scripts/imagenette_standin.py build/imagenette-standin          # about a minute on two cores
    NNVIS_DATA_ROOT=build/imagenette-standin NNVIS_RANDOM_WEIGHTS=1 ...    # dataset("auto") now finds "Imagenette"

A second call with the same arguments returns at once: a stamp file records what was written.
"""
from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

# The real Imagenette 2 (fastai), 320-pixel version: pictures per class in each split.
CLASSES = {  # wnid: (name, train, val)
    "n01440764": ("tench", 963, 387),
    "n02102040": ("English springer", 955, 395),
    "n02979186": ("cassette player", 993, 357),
    "n03000684": ("chain saw", 858, 386),
    "n03028079": ("church", 941, 409),
    "n03394916": ("French horn", 956, 394),
    "n03417042": ("garbage truck", 961, 389),
    "n03425413": ("gas pump", 931, 419),
    "n03445777": ("golf ball", 951, 399),
    "n03888257": ("parachute", 960, 390),
}
# One offline photo per class: neither the cat (chelsea) nor the espresso (coffee) is in Imagenette.
PHOTOS = ["astronaut", "grace_hopper", "camera", "motorcycle", "china", "brick", "rocket", "gravel", "flower", "grass"]
FOLDER = "imagenette2-320"
SHORTER_SIDE = 320
STAMP = ".nnvis-standin.json"
VERSION = 1


def _photo(name: str):
    from PIL import Image

    from nnvis_helpers.images import _OFFLINE_PHOTOS, _to_rgb_array

    array = (_to_rgb_array(_OFFLINE_PHOTOS[name][0]()) * 255).round().astype(np.uint8)
    return Image.fromarray(array)


def _write_class(job: tuple[str, str, int, int, str, int]) -> int:
    """Write ``count`` pictures of one class and split; returns how many were written."""
    from PIL import Image

    folder, photo_name, count, seed, prefix, offset = job
    photo = _photo(photo_name)
    width, height = photo.size
    generator = np.random.default_rng([seed, offset])
    Path(folder).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        aspect = generator.choice([1.0, 4 / 3, 3 / 2, 3 / 4], p=[0.2, 0.5, 0.2, 0.1])  # width / height, as photos are
        crop_h = generator.uniform(0.3, 1.0) * min(height, width / aspect)  # the largest crop of that shape, or less
        crop_w = aspect * crop_h
        left = generator.uniform(0, width - crop_w)
        top = generator.uniform(0, height - crop_h)
        crop = photo.crop((round(left), round(top), round(left + crop_w), round(top + crop_h)))
        scale = SHORTER_SIDE / min(crop.size)
        crop = crop.resize((max(SHORTER_SIDE, round(crop.size[0] * scale)), max(SHORTER_SIDE, round(crop.size[1] * scale))),
                           Image.BICUBIC)
        if generator.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crop.save(Path(folder) / f"{prefix}{offset + index:08d}.JPEG", quality=85)
    return count


def build(root: str | Path, seed: int = 0, workers: int = 2) -> Path:
    """Write the stand-in under ``root`` (if it is not there yet) and return ``root``."""
    root = Path(root)
    stamp = root / FOLDER / STAMP
    wanted = {"version": VERSION, "seed": seed, "classes": CLASSES, "photos": PHOTOS}
    if stamp.exists() and json.loads(stamp.read_text()) == json.loads(json.dumps(wanted)):
        return root
    jobs = []
    for split, column in (("train", 1), ("val", 2)):
        for number, (wnid, row) in enumerate(CLASSES.items()):
            folder = root / FOLDER / split / wnid
            for old in folder.glob("*.JPEG") if folder.exists() else []:
                old.unlink()
            prefix = "ILSVRC2012_val_" if split == "val" else f"{wnid}_"
            jobs.append((str(folder), PHOTOS[number], row[column], seed, prefix, number * 10_000 + column * 100_000))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        written = sum(pool.map(_write_class, jobs))
    stamp.write_text(json.dumps(wanted))
    print(f"Imagenette stand-in: {written} pictures under {root / FOLDER}")
    return root


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="the folder that will hold imagenette2-320/ (as dataset(root=...) or NNVIS_DATA_ROOT)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    build(args.root, args.seed, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
