"""Pictures on disk, and the switch that picks a dataset by name.

* :class:`ImageFolderImages` — any folder of pictures (class subfolders, as torchvision's
  ``ImageFolder`` reads them, or one flat folder).
* :class:`ImagenetteImages` — Imagenette (Howard 2019), ten easy ImageNet classes, through torchvision.
* :func:`dataset` — one of those, or :class:`~.photos.OfflinePhotos`, by name; ``"auto"`` picks
  Imagenette when it is here or can be downloaded, else the offline photos, and says which in
  one line. ``NNVIS_DATASET`` overrides.
"""
from __future__ import annotations

import os
import warnings
from functools import partial
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..images import _decode, _resize_and_crop, _to_rgb_array
from .photos import OfflinePhotos, _check_int

__all__ = ["ImageFolderImages", "ImagenetteImages", "dataset", "default_data_root"]

PICTURE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_PROBE_TIMEOUT_S = 3.0
_IMAGENETTE_DOWNLOAD = {"160px": "roughly 100 MB", "320px": "roughly 330 MB", "full": "roughly 1.5 GB"}


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
    """Where downloaded datasets go by default: ``$NNVIS_DATA_ROOT`` if set, else ``~/.cache/nnvis`` (never the repository)."""
    return Path(os.environ.get("NNVIS_DATA_ROOT", "").strip() or "~/.cache/nnvis").expanduser()


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

    ``split``: ``"val"`` (3,925 pictures), ``"train"`` (9,469) or ``"all"`` (val, then train).
    ``length``: keep that many pictures, drawn at random from ``seed`` in a shuffled order (every class
    comes early); None keeps them all in torchvision's order. ``.classes`` are readable names
    ("tench", "English springer", ...). ``download=True`` fetches the archive into ``root`` (default
    :func:`default_data_root`): roughly 100 MB for the 160-pixel version, chosen when ``size`` <= 160,
    else roughly 330 MB for the 320-pixel one.

    >>> images = ImagenetteImages(size=224, download=True)
    >>> len(images), images.classes[0]
    (3925, 'tench')
    """

    def __init__(self, root: str | os.PathLike | None = None, split: str = "val", size: int = 224, download: bool = False,
                 length: int | None = None, seed: int = 0):
        from torchvision.datasets import Imagenette

        self.root = Path(root).expanduser() if root is not None else default_data_root()
        self.size = _check_int(size, "size (pixels per side)", 8)
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'val', 'train' or 'all' (val, then train), got {split!r}.")
        if length is not None:
            length = _check_int(length, "length (the number of pictures)", 1)
        self.split, self.seed = split, _check_int(seed, "seed", 0)
        self.resolution = _imagenette_resolution(self.root, self.size)
        if not download and not _imagenette_folder(self.root, self.resolution).exists():
            raise FileNotFoundError(
                f"Imagenette is not in {self.root}. Download it with ImagenetteImages(download=True) or "
                "dataset('imagenette'), point root= at the folder that holds imagenette2-320, or use dataset('offline')."
            )
        parts = []
        for part in ("val", "train") if split == "all" else (split,):
            try:
                parts.append(Imagenette(str(self.root), split=part, size=self.resolution, download=download,
                                        loader=partial(_load_square, size=self.size)))
            except OSError as error:  # URLError and socket errors are OSErrors
                raise ConnectionError(
                    f"could not download Imagenette into {self.root}: {error}. Check the connection and the free disk "
                    "space, or use dataset('offline'), which needs no download."
                ) from error
        if any(part.wnids != parts[0].wnids for part in parts):
            raise ValueError(f"the train and val folders of Imagenette in {self.root} hold different classes; download it again.")
        self._parts = parts
        self._sizes = [len(part) for part in parts]
        self.available = sum(self._sizes)
        if length is None:
            self._order = None
        else:
            generator = torch.Generator().manual_seed(self.seed)
            self._order = torch.randperm(self.available, generator=generator)[: min(length, self.available)].tolist()
        self.classes = [names[0] for names in parts[0].classes]

    def __len__(self) -> int:
        return self.available if self._order is None else len(self._order)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if isinstance(index, torch.Tensor):
            index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"picture {index} does not exist: this dataset has {len(self)}.")
        index %= len(self)
        if self._order is not None:
            index = self._order[index]
        for part, size in zip(self._parts, self._sizes):
            if index < size:
                return part[index]
            index -= size
        raise IndexError(index)  # unreachable: the sizes add up to self.available

    def __repr__(self) -> str:
        which = {"val": "val", "train": "train", "all": "val + train"}[self.split]
        chosen = f"{len(self)} of its {self.available} {which} pictures (seed {self.seed})" if self._order is not None else \
            f"all {self.available} {which} pictures"
        return f"ImagenetteImages({str(self.root)!r}, size={self.size}, {chosen}, {self.resolution}, {len(self.classes)} classes)"


def _resolve_auto(root: Path, size: int, verbose: bool) -> str:
    from ..models import _can_reach

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
    ``"imagenette"`` (:class:`ImagenetteImages`, downloaded into ``root`` if needed: ``length``
    pictures drawn from ``seed``, from val and, when val has fewer, from train too), the path
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
        # val holds 3,925 pictures: a preset that wants more gets train as well, and fewer are drawn from ``seed``
        images = ImagenetteImages(root_path, split="val", size=size, download=True, length=length, seed=seed)
        if length > images.available:
            images = ImagenetteImages(root_path, split="all", size=size, download=True, length=length, seed=seed)
        if verbose and len(images) < length:
            print(f"dataset('imagenette'): {length} pictures asked for, Imagenette has {len(images)}: using them all.")
        return images
    if not Path(key).expanduser().exists() and os.sep not in key and "/" not in key:
        raise ValueError(f"no dataset {key!r}: use 'auto', 'offline', 'imagenette' or the path of a folder of pictures.")
    return ImageFolderImages(key, size=size)
