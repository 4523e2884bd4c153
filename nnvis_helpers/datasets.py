"""Images in quantity, offline and in Colab, and the activations a layer gives on them.

Later chapters look at thousands of activations at once: the activation atlas (Carter et al.
2019) lays out one vector per image position, dataset examples show the pictures a channel
likes most (Olah et al. 2017). This module gives them the pictures and the vectors.

* :class:`OfflinePhotos` — seeded random crops, mirror images and colour jitter of the photos
  that ship inside scikit-image, scikit-learn and matplotlib: thousands of items with no download.
* :class:`ImageFolderImages` — any folder of pictures (class subfolders, as torchvision's
  ``ImageFolder`` reads them, or one flat folder).
* :class:`ImagenetteImages` — Imagenette (Howard 2019), ten easy ImageNet classes, through torchvision.
* :func:`dataset` — one of those by name; ``"auto"`` picks Imagenette when it is here or can be
  downloaded, else the offline photos, and says which in one line. ``NNVIS_DATASET`` overrides.
* :func:`collect_activations` — streams images through a model and keeps a few activation
  vectors per image (an :class:`ActivationSet`), never the images themselves.

Every item is an (image, label) pair: a float tensor (3, size, size) in [0, 1] and an int.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .checks import check_images
from .images import _OFFLINE_PHOTOS, _decode, _resize_and_crop, _to_rgb_array
from .layers import _first_tensor, _model_device, _StopForward, get_layer, preserve_model_state

__all__ = [
    "OfflinePhotos",
    "ImageFolderImages",
    "ImagenetteImages",
    "dataset",
    "default_data_root",
    "ActivationSet",
    "collect_activations",
]

PICTURE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_PROBE_TIMEOUT_S = 3.0
_IMAGENETTE_DOWNLOAD = {"160px": "roughly 100 MB", "320px": "roughly 330 MB", "full": "roughly 1.5 GB"}


def _check_int(value, name: str, smallest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < smallest:
        raise ValueError(f"{name} must be an int of at least {smallest}, got {value!r}.")
    return int(value)


# --------------------------------------------------------------------------------------------
# Crops of photos: shared by OfflinePhotos and adversarial.evaluation_set


@lru_cache(maxsize=None)
def _photo_tensor(name: str) -> torch.Tensor:
    """The offline photo ``name`` at full resolution, (3, H, W) float in [0, 1]; decoded once per process."""
    # Contiguous (3, H, W): an antialiased resize of a permuted (H, W, 3) view is up to 50x slower.
    return torch.from_numpy(_to_rgb_array(_OFFLINE_PHOTOS[name][0]())).permute(2, 0, 1).contiguous()


def _random_square(height: int, width: int, scale: tuple[float, float], generator: torch.Generator) -> tuple[int, int, int]:
    """A square (top, left, side) covering a fraction in ``scale`` of the photo's largest square, at a random place."""
    area = float(torch.empty(1).uniform_(scale[0], scale[1], generator=generator)) * min(height, width) ** 2
    side = max(1, int(round(math.sqrt(area))))
    top = int(torch.randint(0, height - side + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - side + 1, (1,), generator=generator))
    return top, left, side


def _cut(photo: torch.Tensor, box: tuple[int, int, int], size: int, mirrored: bool) -> torch.Tensor:
    """The square ``box`` = (top, left, side) of ``photo`` (3, H, W), resized to (3, size, size), maybe mirrored."""
    from torchvision.transforms.functional import hflip, resized_crop

    top, left, side = box
    crop = resized_crop(photo, top, left, side, side, [size, size], antialias=True).clamp(0, 1)
    return hflip(crop) if mirrored else crop


class _View(NamedTuple):
    """How item i of OfflinePhotos is made from its photo."""

    photo: int
    box: tuple[int, int, int]
    mirrored: bool
    brightness: float
    contrast: float
    saturation: float


class OfflinePhotos(Dataset):
    """Thousands of different pictures without a download: random crops of the photos that ship offline.

    Item ``i`` is made on demand from a generator seeded with (``seed``, i), so it is the same
    in any order and with any number of DataLoader workers: a photo drawn at random, a square
    crop covering a fraction in ``scale`` of the photo's largest square (torchvision's
    RandomResizedCrop measures the whole photo instead), resized to ``size``, mirrored with
    probability 1/2 if ``flip``, brightness, contrast and saturation each scaled by a factor in
    [1 - color_jitter, 1 + color_jitter]. Returns (image (3, size, size) in [0, 1], label):
    the label indexes ``.classes``, the names of the photos. ``photos=`` keeps only some.

    >>> photos = OfflinePhotos(length=1000, size=224)
    >>> image, label = photos[0]; image.shape, photos.classes[label]
    (torch.Size([3, 224, 224]), 'gravel')
    """

    def __init__(
        self,
        length: int = 2000,
        size: int = 224,
        seed: int = 0,
        photos: Sequence[str] | None = None,
        scale: tuple[float, float] = (0.08, 1.0),
        flip: bool = True,
        color_jitter: float = 0.1,
    ):
        self.length = _check_int(length, "length (the number of items)", 1)
        self.size = _check_int(size, "size (pixels per side)", 8)
        self.seed = _check_int(seed, "seed", 0)
        valid = list(_OFFLINE_PHOTOS)
        names = valid if photos is None else [photos] if isinstance(photos, str) else list(photos)
        unknown = [name for name in names if name not in _OFFLINE_PHOTOS]
        if unknown or not names:
            problem = f"unknown photo {unknown[0]!r}" if unknown else "photos=[] names no photo"
            raise ValueError(f"{problem}; the offline photos are: {', '.join(valid)}.")
        self.classes = names
        try:
            low, high = (float(value) for value in scale)
        except (TypeError, ValueError):
            raise ValueError(f"scale must be a pair (smallest, largest) of area fractions such as (0.08, 1.0), got {scale!r}.") from None
        if not 0 < low <= high <= 1:
            raise ValueError(
                f"scale={scale!r}: the area fractions must satisfy 0 < smallest <= largest <= 1, "
                "e.g. (0.08, 1.0) for crops from small details to the whole square."
            )
        self.scale = (low, high)
        self.flip = bool(flip)
        if isinstance(color_jitter, bool) or not isinstance(color_jitter, (int, float)) or not 0 <= color_jitter < 1:
            raise ValueError(f"color_jitter must be a number in [0, 1) such as 0.1 (plus or minus 10%), got {color_jitter!r}.")
        self.color_jitter = float(color_jitter)

    def __len__(self) -> int:
        return self.length

    def _view(self, index: int) -> _View:
        if isinstance(index, torch.Tensor):
            index = int(index)
        if not -self.length <= index < self.length:
            raise IndexError(f"item {index} does not exist: this dataset has {self.length} items.")
        index %= self.length
        # One generator per item, seeded from (seed, index): no item depends on another one.
        state = np.random.SeedSequence([self.seed, index]).generate_state(2, dtype=np.uint32)
        generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        photo = int(torch.randint(len(self.classes), (1,), generator=generator))
        height, width = _photo_tensor(self.classes[photo]).shape[1:]
        box = _random_square(height, width, self.scale, generator)
        mirrored = bool(torch.rand(1, generator=generator) < 0.5) and self.flip
        factors = 1 + self.color_jitter * (2 * torch.rand(3, generator=generator) - 1)
        return _View(photo, box, mirrored, *(float(factor) for factor in factors))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from torchvision.transforms.functional import adjust_brightness, adjust_contrast, adjust_saturation

        view = self._view(index)
        image = _cut(_photo_tensor(self.classes[view.photo]), view.box, self.size, view.mirrored)
        if self.color_jitter > 0:
            image = adjust_saturation(adjust_contrast(adjust_brightness(image, view.brightness), view.contrast), view.saturation)
        return image.clamp(0, 1), view.photo

    def describe(self, index: int) -> str:
        """What item ``index`` is, in words: the photo, the crop box, the mirror, the jitter."""
        view = self._view(index)
        name = self.classes[view.photo]
        height, width = _photo_tensor(name).shape[1:]
        top, left, side = view.box
        return (
            f"item {index}: {name!r} ({_OFFLINE_PHOTOS[name][1]}), the {side}x{side} square at row {top}, "
            f"column {left} of the {height}x{width} photo, resized to {self.size}x{self.size}"
            f"{', mirrored' if view.mirrored else ''}; brightness x{view.brightness:.2f}, "
            f"contrast x{view.contrast:.2f}, saturation x{view.saturation:.2f}"
        )

    def __repr__(self) -> str:
        return f"OfflinePhotos(length={self.length}, size={self.size}, seed={self.seed}, {len(self.classes)} photos)"


# --------------------------------------------------------------------------------------------
# Pictures on disk: a folder of the user's, Imagenette


def _load_square(path: str, size: int) -> torch.Tensor:
    """A picture file -> (3, size, size) float in [0, 1]: shorter side to ``size``, centre square."""
    return _resize_and_crop(_to_rgb_array(_decode(path, str(path))), size).float()


def _is_picture_name(path: str | os.PathLike) -> bool:
    name = os.path.basename(path)
    return not name.startswith(".") and name.lower().endswith(PICTURE_EXTENSIONS)


def _readable(path: str | os.PathLike) -> bool:
    try:
        with Image.open(path):  # reads the header only
            return True
    except (UnidentifiedImageError, OSError, SyntaxError):
        return False


def _has_pictures(folder: str | os.PathLike) -> bool:
    return any(entry.is_file() and _is_picture_name(entry.name) for entry in os.scandir(folder))


class ImageFolderImages(Dataset):
    """Every picture in a folder, each as (image (3, size, size) in [0, 1], label).

    With class subfolders (``root/cat/1.jpg``, ``root/dog/2.png``: torchvision's ``ImageFolder``
    layout) the labels index the subfolder names in ``.classes``; a flat folder of pictures is
    one class named after the folder. Each picture: shorter side to ``size``, centre square.
    Files with a picture extension that are not pictures are skipped with a warning.

    >>> photos = ImageFolderImages("my_photos", size=224)
    >>> image, label = photos[0]; photos.classes[label]
    """

    def __init__(self, root: str | os.PathLike, size: int = 224):
        from torchvision.datasets import ImageFolder

        path = Path(root).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"no folder {str(root)!r}. Give the path of a folder of pictures ({', '.join(PICTURE_EXTENSIONS)}), "
                "or use dataset('offline') for the photos that ship with the course."
            )
        if not path.is_dir():
            raise NotADirectoryError(
                f"{str(root)!r} is a file, not a folder. For one picture use load_image({str(root)!r}); "
                "for many, put them in a folder and give the folder."
            )
        self.root = path
        self.size = _check_int(size, "size (pixels per side)", 8)
        skipped: list[str] = []

        def is_picture(file: str) -> bool:
            if not _is_picture_name(file):
                return False
            if _readable(file):
                return True
            skipped.append(file)
            return False

        loader = partial(_load_square, size=self.size)
        subfolders = sorted(
            entry.name for entry in os.scandir(path) if entry.is_dir() and not entry.name.startswith(".") and _has_pictures(entry.path)
        )
        if subfolders:

            class _ClassFolders(ImageFolder):
                def find_classes(self, directory):  # only subfolders with pictures (no .ipynb_checkpoints)
                    return subfolders, {name: index for index, name in enumerate(subfolders)}

            folder = _ClassFolders(str(path), loader=loader, is_valid_file=is_picture, allow_empty=True)
            self.samples: list[tuple[str, int]] = list(folder.samples)
            self.classes: list[str] = list(subfolders)
        else:
            files = sorted(str(file) for file in path.iterdir() if file.is_file() and is_picture(str(file)))
            self.samples = [(file, 0) for file in files]
            self.classes = [path.name]
        self._loader = loader
        if skipped:
            shown = ", ".join(os.path.relpath(file, path) for file in skipped[:3])
            warnings.warn(
                f"skipped {len(skipped)} file(s) in {path} that are named like pictures but Pillow cannot read: "
                f"{shown}{', ...' if len(skipped) > 3 else ''}. Delete or convert them to silence this warning.",
                stacklevel=2,
            )
        if not self.samples:
            raise ValueError(
                f"no pictures in {path}: looked for readable files ending in {', '.join(PICTURE_EXTENSIONS)} "
                "(in the folder itself, or one level down in class subfolders). Copy pictures there, "
                "or use dataset('offline')."
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        file, label = self.samples[index]
        return self._loader(file), label

    def __repr__(self) -> str:
        return f"ImageFolderImages({str(self.root)!r}, size={self.size}, {len(self)} pictures, {len(self.classes)} classes)"


def default_data_root() -> Path:
    """Where downloaded datasets go by default: ``~/.cache/nnvis`` (never inside the repository)."""
    return Path("~/.cache/nnvis").expanduser()


def _imagenette_url(resolution: str) -> str:
    from torchvision.datasets import Imagenette

    return Imagenette._ARCHIVES[resolution][0]


def _imagenette_folder(root: Path, resolution: str) -> Path:
    return root / Path(_imagenette_url(resolution)).stem  # where torchvision unpacks it: imagenette2-320


def _imagenette_resolution(root: Path, size: int) -> str:
    """The Imagenette download to use: one already under ``root`` if any, else the smallest that is big enough."""
    wanted = ["160px", "320px", "full"] if size <= 160 else ["320px", "full", "160px"]
    present = [resolution for resolution in wanted if _imagenette_folder(root, resolution).exists()]
    return present[0] if present else wanted[0]


class ImagenetteImages(Dataset):
    """Imagenette (Howard 2019): ten easy ImageNet classes, through torchvision, as (image (3, size, size), label).

    ``.classes`` are readable names ("tench", "English springer", ...). ``download=True`` fetches
    the archive into ``root`` (default :func:`default_data_root`): roughly 100 MB for the
    160-pixel version, chosen when ``size`` <= 160, else roughly 330 MB for the 320-pixel one.

    >>> images = ImagenetteImages(size=224, download=True)
    >>> len(images), images.classes[0]
    (3925, 'tench')
    """

    def __init__(self, root: str | os.PathLike | None = None, split: str = "val", size: int = 224, download: bool = False):
        from torchvision.datasets import Imagenette

        self.root = Path(root).expanduser() if root is not None else default_data_root()
        self.size = _check_int(size, "size (pixels per side)", 8)
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}.")
        self.resolution = _imagenette_resolution(self.root, self.size)
        if not download and not _imagenette_folder(self.root, self.resolution).exists():
            raise FileNotFoundError(
                f"Imagenette is not in {self.root}. Download it with ImagenetteImages(download=True) or "
                "dataset('imagenette'), point root= at the folder that holds imagenette2-320, or use dataset('offline')."
            )
        try:
            self._images = Imagenette(
                str(self.root), split=split, size=self.resolution, download=download, loader=partial(_load_square, size=self.size)
            )
        except OSError as error:  # URLError and socket errors are OSErrors
            raise ConnectionError(
                f"could not download Imagenette into {self.root}: {error}. Check the connection and the free disk "
                "space, or use dataset('offline'), which needs no download."
            ) from error
        self.classes = [names[0] for names in self._images.classes]

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._images[index]

    def __repr__(self) -> str:
        return f"ImagenetteImages({str(self.root)!r}, size={self.size}, {len(self)} pictures of {self.resolution})"


def _resolve_auto(root: Path, size: int, verbose: bool) -> str:
    from .models import _can_reach

    forced = os.environ.get("NNVIS_DATASET", "").strip()
    if forced:
        name, reason = forced, f"NNVIS_DATASET={forced} is set"
    else:
        resolution = _imagenette_resolution(root, size)
        url = _imagenette_url(resolution)
        host = url.split("/")[2]
        if _imagenette_folder(root, resolution).exists():
            name, reason = "imagenette", f"it is already downloaded in {root}"
        elif _can_reach(url, timeout=_PROBE_TIMEOUT_S):
            name, reason = "imagenette", f"{host} answers: downloading it ({_IMAGENETTE_DOWNLOAD[resolution]}) into {root}"
        else:
            name = "offline"
            reason = f"Imagenette is not in {root} and {host} cannot be reached: seeded crops of the photos that ship with pip"
    if verbose:
        print(f"dataset('auto'): using {name} ({reason}).")
    return name


def dataset(
    name: str | os.PathLike = "auto",
    size: int = 224,
    length: int = 2000,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    verbose: bool = True,
) -> Dataset:
    """Pictures in quantity as a Dataset of (image (3, size, size) in [0, 1], label) items.

    ``name``: ``"offline"`` (:class:`OfflinePhotos`, ``length`` items from ``seed``),
    ``"imagenette"`` (:class:`ImagenetteImages`, downloaded into ``root`` if needed), the path
    of a folder of pictures (:class:`ImageFolderImages`), or ``"auto"``: Imagenette when it is
    in ``root`` or can be downloaded, else the offline photos; it prints one line saying which
    and why. ``NNVIS_DATASET=<name or path>`` overrides ``"auto"``.

    >>> images = dataset("auto", size=224)
    dataset('auto'): using offline (Imagenette is not in ... and s3.amazonaws.com cannot be reached: ...).
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"the dataset name must be 'auto', 'offline', 'imagenette' or a folder path, got {type(name).__name__}.")
    root_path = Path(root).expanduser() if root is not None else default_data_root()
    key = str(name).strip()
    if key.lower() == "auto":
        key = _resolve_auto(root_path, size, verbose)
    if key.lower() == "offline":
        return OfflinePhotos(length=length, size=size, seed=seed)
    if key.lower() == "imagenette":
        return ImagenetteImages(root_path, split="val", size=size, download=True)
    if not Path(key).expanduser().exists() and os.sep not in key and "/" not in key:
        raise ValueError(f"no dataset {key!r}: use 'auto', 'offline', 'imagenette' or the path of a folder of pictures.")
    return ImageFolderImages(key, size=size)


# --------------------------------------------------------------------------------------------
# Activations of many images


@dataclass
class ActivationSet:
    """Activation vectors of one layer, kept at a few positions of many images (see :func:`collect_activations`).

    ``vectors`` (M, C) float32 on the CPU; ``image_index`` (M,) the item each came from, counted
    in stream order; ``positions`` (M, 2) its (row, column) in the layer's map, (-1, -1) for a
    spatial mean or a layer without a map; ``predictions`` and ``labels`` (num_images,) per
    image, or None; ``map_size`` the layer's (H, W); ``image_size`` the images' (H, W).

    >>> acts = collect_activations(model, "blocks.5", dataset("offline"))
    >>> acts.vectors.shape, acts.predicted_class[:3]
    """

    layer: str
    vectors: torch.Tensor
    image_index: torch.Tensor
    positions: torch.Tensor
    predictions: torch.Tensor | None
    map_size: tuple[int, int]
    image_size: tuple[int, int]
    num_images: int
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.vectors.shape[0]

    @property
    def predicted_class(self) -> torch.Tensor | None:
        """The model's top-1 class of the image each vector came from, (M,), or None."""
        return None if self.predictions is None else self.predictions[self.image_index]

    def subset(self, mask_or_indices) -> "ActivationSet":
        """The vectors picked by a boolean mask (M,) or by indices; per-image predictions and labels stay whole."""
        index = torch.as_tensor(mask_or_indices)
        if index.dtype == torch.bool:
            if index.shape != (len(self),):
                raise ValueError(f"a mask must have one entry per vector, shape ({len(self)},), got {tuple(index.shape)}.")
            index = index.nonzero().squeeze(1)
        elif index.is_floating_point():
            raise TypeError("subset takes a boolean mask or integer indices, not floats.")
        index = index.long().reshape(-1)
        return ActivationSet(
            self.layer, self.vectors[index], self.image_index[index], self.positions[index], self.predictions,
            self.map_size, self.image_size, self.num_images, self.labels,
        )


def _as_labels(labels, count: int) -> torch.Tensor | None:
    """Integer class labels as a long tensor (count,), or None when they are not integers."""
    if labels is None:
        return None
    try:
        tensor = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        return None
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool or tensor.numel() != count:
        return None
    return tensor.reshape(count).long().cpu()


def _split_item(item) -> tuple[torch.Tensor, object, bool]:
    """One element of the data -> (images, labels, is_batch)."""
    labels = None
    if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], torch.Tensor):
        item, labels = item
    if not isinstance(item, torch.Tensor) or item.dim() not in (3, 4):
        shape = f" of shape {tuple(item.shape)}" if isinstance(item, torch.Tensor) else ""
        raise TypeError(
            f"the data gave a {type(item).__name__}{shape}; expected image tensors (B, 3, H, W) or (3, H, W) in [0, 1], "
            "or (images, labels) pairs. load_image() or dataset() make such tensors."
        )
    return item, labels, item.dim() == 4


def _batches(data, batch_size: int, num_workers: int, pin_memory: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Any kind of data -> batches (images (B, 3, H, W), labels (B,) or None) of at most ``batch_size``."""
    if isinstance(data, torch.Tensor):
        if data.dim() != 4:
            check_images(data, "data")  # explains the shape that was expected
        items: Iterable = (data[start : start + batch_size] for start in range(0, len(data), batch_size))
    elif isinstance(data, Dataset):
        items = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=pin_memory)
    elif isinstance(data, (str, bytes, os.PathLike)):
        raise TypeError(f"data is a name or path ({str(data)!r}); load it first: collect_activations(model, layer, dataset({str(data)!r})).")
    else:
        try:
            items = iter(data)
        except TypeError:
            raise TypeError(
                f"data must be a Dataset, a DataLoader, a tensor (N, 3, H, W) or an iterable of images, got {type(data).__name__}."
            ) from None
    pending: list[tuple[torch.Tensor, object]] = []  # single images waiting to fill a batch

    def flush():
        sizes = sorted({tuple(image.shape) for image, _ in pending})
        if len(sizes) > 1:
            raise ValueError(f"the data gave single images of different shapes {sizes[:2]}: give images of one size.")
        images = torch.stack([image for image, _ in pending])
        labels = [label for _, label in pending]
        pending.clear()
        return images, None if any(label is None for label in labels) else _as_labels(labels, len(labels))

    for item in items:
        images, labels, is_batch = _split_item(item)
        if not is_batch:
            pending.append((images, labels))
            if len(pending) == batch_size:
                yield flush()
            continue
        if pending:
            yield flush()
        labels = _as_labels(labels, images.shape[0])
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size], None if labels is None else labels[start : start + batch_size]
    if pending:
        yield flush()


def _stream_length(data) -> int | None:
    """How many images ``data`` holds, when it says so (not for generators or iterable datasets)."""
    try:
        if isinstance(data, torch.Tensor):
            return data.shape[0] if data.dim() == 4 else None
        if isinstance(data, DataLoader):
            return len(data.dataset)
        return len(data) if isinstance(data, Dataset) else None
    except TypeError:
        return None


class _VectorKeeper:
    """The forward hook of :func:`collect_activations`: keeps the chosen vectors of each batch.

    The first batch gets a full pass that counts how often the layer runs (a module such as a
    shared ReLU may run several times); from then on the vectors are taken at the last call,
    as :func:`capture_activations` keeps, and with ``stop_early`` the pass ends right there.
    """

    def __init__(self, layer: str, count: int, mean: bool, stop_early: bool, seed: int):
        self.layer, self.count, self.mean, self.stop_early = layer, count, mean, stop_early
        self.generator = torch.Generator().manual_seed(seed)
        self.expected_calls: int | None = None
        self.map_size: tuple[int, int] | None = None
        self.vectors: list[torch.Tensor] = []
        self.positions: list[torch.Tensor] = []
        self.image_index: list[torch.Tensor] = []
        self.images_done = 0

    def __call__(self, _module, _inputs, output) -> None:
        self.calls += 1
        tensor = _first_tensor(output)
        if self.expected_calls is None:  # the counting pass; a later in-place op must not change our copy
            self.first_output = tensor.detach().clone() if isinstance(tensor, torch.Tensor) else output
        elif self.calls == self.expected_calls:
            self.keep(tensor)
            if self.stop_early:
                raise _StopForward

    def run(self, model: nn.Module, images: torch.Tensor):
        """``model(images)`` with the vectors kept; None when the pass stopped after the layer."""
        self.batch, self.calls = images.shape[0], 0
        try:
            output = model(images)
        except _StopForward:
            output = None
        if self.expected_calls is None:
            if self.calls == 0:
                raise ValueError(
                    f"layer {self.layer!r} never ran during the forward pass: model.forward does not use it. "
                    "Pick a layer on the path from the image to the output."
                )
            self.expected_calls = self.calls
            self.keep(self.first_output)
            self.first_output = None
        self.images_done += self.batch
        return output

    def keep(self, tensor) -> None:
        batch = self.batch
        if not isinstance(tensor, torch.Tensor) or tensor.dim() not in (2, 4) or tensor.shape[0] != batch:
            got = f"a tensor of shape {tuple(tensor.shape)}" if isinstance(tensor, torch.Tensor) else "no tensor"
            raise ValueError(
                f"layer {self.layer!r} gives {got} for a batch of {batch} images; collect_activations needs "
                "(N, C, H, W) maps or (N, C) vectors. Pick a convolution block, a pooling or a linear layer "
                "(layer_names(model) lists them)."
            )
        map_size = tuple(tensor.shape[2:]) if tensor.dim() == 4 else (1, 1)
        if self.map_size is not None and map_size != self.map_size:
            raise ValueError(f"layer {self.layer!r} gave a {map_size} map after {self.map_size}: give images of one size.")
        self.map_size = map_size
        height, width = map_size
        if tensor.dim() == 2 or self.mean:
            # A copy: an in-place op after the layer (ReLU(inplace=True)) would change the output we hold.
            vectors = tensor.clone() if tensor.dim() == 2 else tensor.float().mean(dim=(2, 3))
            positions = torch.full((batch, 2), -1, dtype=torch.long)
        else:
            if self.count > height * width:
                raise ValueError(
                    f"positions_per_image={self.count} but layer {self.layer!r} has a {height}x{width} map, "
                    f"{height * width} positions; ask for at most {height * width}, or 'mean'."
                )
            # Drawn image by image, so the positions do not depend on the batch size.
            flat = torch.stack([torch.randperm(height * width, generator=self.generator)[: self.count] for _ in range(batch)])
            index = flat.to(tensor.device)[:, None, :].expand(-1, tensor.shape[1], -1)
            vectors = tensor.flatten(2).gather(2, index).transpose(1, 2).reshape(-1, tensor.shape[1])
            positions = torch.stack([flat // width, flat % width], dim=2).reshape(-1, 2)
        self.vectors.append(vectors.float().cpu())
        self.positions.append(positions)
        per_image = vectors.shape[0] // batch
        self.image_index.append(torch.arange(self.images_done, self.images_done + batch).repeat_interleave(per_image))


def collect_activations(
    model: nn.Module,
    layer: str,
    data,
    positions_per_image: int | str = 1,
    batch_size: int = 32,
    seed: int = 0,
    predictions: bool = True,
    num_workers: int = 0,
    max_images: int | None = None,
    progress: bool = True,
) -> ActivationSet:
    """Stream ``data`` through ``model`` and keep ``positions_per_image`` activation vectors of ``layer`` per image.

    ``data``: a Dataset (items (image, label) or image), a DataLoader, a tensor (N, 3, H, W),
    or any iterable of batches (B, 3, H, W), (images, labels) pairs or single images (3, H, W),
    all in [0, 1] and of one size. For a map (N, C, H, W) each image gives ``positions_per_image``
    distinct positions drawn from ``seed`` (same seed, same positions), or its spatial mean with
    ``"mean"``; a layer with output (N, C) gives one vector per image. ``predictions=True``
    also keeps the model's top-1 class per image; ``False`` stops each forward pass right
    after the layer. Runs in eval mode without gradients, on the model's device, and keeps only
    the vectors (M, C), never the images. :func:`capture_activations` is the other tool: a hook
    that records the whole maps of the batches you run yourself.

    >>> acts = collect_activations(model, "blocks.5", dataset("offline", length=512), positions_per_image=4)
    >>> acts.vectors.shape  # 512 images x 4 positions, 192 channels
    torch.Size([2048, 192])
    """
    from tqdm.auto import tqdm

    device = _model_device(model)
    module = get_layer(model, layer)  # an unknown name lists the closest ones
    layer_name = layer if isinstance(layer, str) else next(name for name, m in model.named_modules() if m is module)
    mean = isinstance(positions_per_image, str) and positions_per_image.strip().lower() == "mean"
    if not mean and (
        isinstance(positions_per_image, bool) or not isinstance(positions_per_image, (int, np.integer)) or positions_per_image < 1
    ):
        raise ValueError(
            "positions_per_image must be a positive int (how many places of each image's map to keep) "
            f"or 'mean' (the spatial mean), got {positions_per_image!r}."
        )
    batch_size = _check_int(batch_size, "batch_size", 1)
    num_workers = _check_int(num_workers, "num_workers", 0)
    keeper = _VectorKeeper(layer_name, 1 if mean else int(positions_per_image), mean, not predictions, _check_int(seed, "seed", 0))
    if max_images is not None:
        max_images = _check_int(max_images, "max_images", 1)
        if isinstance(data, Dataset) and _stream_length(data) is not None:
            data = Subset(data, range(min(max_images, len(data))))  # the rest is never loaded
    total = _stream_length(data)
    total = max_images if total is None else total if max_images is None else min(total, max_images)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    predicted: list[torch.Tensor] = []
    labels_kept: list[torch.Tensor | None] = []
    image_size = None

    bar = tqdm(total=total, desc=f"collect {layer_name}", unit="image", disable=not progress)
    with preserve_model_state(model):
        handle = module.register_forward_hook(keeper)
        try:
            model.eval()  # BatchNorm statistics and Dropout stay as they are
            with torch.no_grad():
                for images, labels in _batches(data, batch_size, num_workers, pin_memory=device.type == "cuda"):
                    if max_images is not None:
                        images = images[: max_images - keeper.images_done]
                        labels = None if labels is None else labels[: len(images)]
                    check_images(images, "a batch of the data")
                    if image_size is not None and tuple(images.shape[2:]) != image_size:
                        raise ValueError(
                            f"the data has images of {tuple(images.shape[2:])} pixels after {image_size}: give images of "
                            "one size (dataset(..., size=224) or load_image(..., size=224) make them)."
                        )
                    image_size = tuple(images.shape[2:])
                    output = keeper.run(model, images.to(device=device, dtype=dtype, non_blocking=True))
                    if predictions:
                        logits = _first_tensor(output)
                        if logits is None or logits.dim() != 2:
                            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(output).__name__
                            raise ValueError(f"the model's output is {got}, not class scores (N, classes): pass predictions=False.")
                        predicted.append(logits.argmax(dim=1).cpu())
                    labels_kept.append(labels)
                    bar.update(images.shape[0])
                    if max_images is not None and keeper.images_done >= max_images:
                        break
        finally:
            handle.remove()
            bar.close()
    if keeper.images_done == 0:
        raise ValueError("the data gave no images; check that the dataset or generator is not empty.")
    return ActivationSet(
        layer=layer_name,
        vectors=torch.cat(keeper.vectors),
        image_index=torch.cat(keeper.image_index),
        positions=torch.cat(keeper.positions),
        predictions=torch.cat(predicted) if predictions else None,
        map_size=keeper.map_size,
        image_size=image_size,
        num_images=keeper.images_done,
        labels=None if any(labels is None for labels in labels_kept) else torch.cat(labels_kept),
    )
