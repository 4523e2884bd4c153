"""Loading pictures as tensors, and turning tensors back into pictures.

Every technique in the course takes float images in [0, 1] of shape (N, 3, H, W).
``load_image`` makes one from a named sample photo, a file or a URL; ``to_pil`` and
``to_numpy`` go back. ``colourfulness`` measures how vivid a picture is (Hasler & Süsstrunk 2003).
"""
from __future__ import annotations

import io
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .checks import check_images

__all__ = ["sample_images", "describe_sample", "load_image", "load_images", "to_pil", "to_numpy", "colourfulness"]


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        picture = getattr(data, name)()
        return picture[0] if isinstance(picture, tuple) else picture  # stereo pairs: left view

    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)

    return load


def _matplotlib(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from matplotlib import cbook

        with Image.open(cbook.get_sample_data(name, asfileobj=False)) as picture:
            return np.asarray(picture.convert("RGB"))

    return load


# Real photos that ship inside scikit-image and scikit-learn, so the course runs offline.
# name -> (loader, what it shows)
_SAMPLES: dict[str, tuple[Callable[[], np.ndarray], str]] = {
    "chelsea": (_skimage("chelsea"), "Chelsea the cat (scikit-image)"),
    "coffee": (_skimage("coffee"), "a cup of espresso (scikit-image)"),
    "astronaut": (_skimage("astronaut"), "astronaut Eileen Collins (scikit-image)"),
    "rocket": (_skimage("rocket"), "a rocket on its launch pad (scikit-image)"),
    "motorcycle": (_skimage("stereo_motorcycle"), "a motorcycle, left stereo view (scikit-image)"),
    "camera": (_skimage("camera"), "a cameraman with a tripod, grayscale (scikit-image)"),
    "china": (_sklearn("china.jpg"), "a Chinese temple (scikit-learn)"),
    "flower": (_sklearn("flower.jpg"), "a flower (scikit-learn)"),
}

# More pictures that ship offline. With the samples above they make every photo of
# ``datasets.OfflinePhotos`` (one list: ``_OFFLINE_PHOTOS``); ``load_image`` reads them by name too.
_MORE_PHOTOS: dict[str, tuple[Callable[[], np.ndarray], str]] = {
    "grace_hopper": (_matplotlib("grace_hopper.jpg"), "Rear Admiral Grace Hopper, a portrait (matplotlib)"),
    "brick": (_skimage("brick"), "a brick wall, grayscale texture (scikit-image)"),
    "grass": (_skimage("grass"), "grass, grayscale texture (scikit-image)"),
    "gravel": (_skimage("gravel"), "gravel, grayscale texture (scikit-image)"),
}
_OFFLINE_PHOTOS = {**_SAMPLES, **_MORE_PHOTOS}

# Colourful pictures with strong textures, the styles of notebook 09's style transfer. Not photos of
# objects, so not part of the offline photo stream; ``load_image`` reads them by name.
_STYLE_PICTURES: dict[str, tuple[Callable[[], np.ndarray], str]] = {
    "hubble": (_skimage("hubble_deep_field"), "the Hubble deep field, galaxies on black (scikit-image)"),
    "ihc": (_skimage("immunohistochemistry"), "immunohistochemical staining of colon tissue (scikit-image)"),
}
_NAMED_PICTURES = {**_OFFLINE_PHOTOS, **_STYLE_PICTURES}


def sample_images() -> list[str]:
    """The names of the sample photos that ship offline, for ``load_image(name)``.

    >>> sample_images()[:3]
    ['chelsea', 'coffee', 'astronaut']
    """
    return list(_SAMPLES)


def describe_sample(name: str) -> str:
    """What the offline photo ``name`` shows, and where it comes from."""
    return _NAMED_PICTURES[name][1]


def _to_rgb_array(picture: np.ndarray | Image.Image) -> np.ndarray:
    """Any PIL image or array (gray, RGBA, palette, 16-bit, float) -> float32 RGB in [0, 1], HWC."""
    if isinstance(picture, Image.Image):
        if picture.mode == "P" or picture.mode == "PA":
            picture = picture.convert("RGBA")
        if picture.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            array = np.asarray(picture).astype(np.float32)
            array /= 65535.0 if array.max() > 255 or picture.mode.startswith("I;16") else 255.0
            picture = np.clip(array, 0, 1)
        elif picture.mode == "F":
            picture = np.asarray(picture, dtype=np.float32)
        elif picture.mode not in ("RGB", "RGBA", "L", "LA"):
            picture = picture.convert("RGB")
    array = np.asarray(picture)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) / 65535.0
    elif array.dtype == bool:
        array = array.astype(np.float32)
    else:
        array = array.astype(np.float32)
        if array.max(initial=0) > 1.0:
            array = array / (255.0 if array.max() <= 255 else 65535.0)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 2:  # gray + alpha
        array = _over_white(np.repeat(array[:, :, :1], 3, axis=2), array[:, :, 1:])
    elif array.ndim == 3 and array.shape[2] == 4:
        array = _over_white(array[:, :, :3], array[:, :, 3:])
    elif array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"cannot read a picture of shape {array.shape}; expected H x W (x 1, 3 or 4).")
    return np.clip(array, 0.0, 1.0)


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    # Transparent pixels become white, as a browser shows them, not black.
    return rgb * alpha + (1.0 - alpha)


def _open_source(source: str | os.PathLike) -> Image.Image | np.ndarray:
    text = str(source)
    if text in _NAMED_PICTURES:
        return _NAMED_PICTURES[text][0]()
    if text.startswith(("http://", "https://")):
        try:
            request = urllib.request.Request(text, headers={"User-Agent": "nnvis-course"})
            with urllib.request.urlopen(request, timeout=10) as response:
                payload = response.read()
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise ConnectionError(
                f"could not download {text}: {error}. Check the address and your connection, or use "
                f"an offline sample photo: {', '.join(sample_images())}."
            ) from error
        return _decode(io.BytesIO(payload), text)
    path = Path(text).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"no file {text!r} and no sample photo of that name. Give a path, a URL, or one of "
            f"the offline samples: {', '.join(sample_images())}."
        )
    if path.is_dir():
        raise IsADirectoryError(f"{text!r} is a folder; give the path of one picture inside it.")
    return _decode(path, text)


def _decode(file, label: str) -> Image.Image:
    try:
        picture = Image.open(file)
        picture.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(
            f"{label!r} is not an image that Pillow can read (PNG, JPEG, ...): {error}"
        ) from error
    return picture


def _resize_and_crop(picture: np.ndarray, size: int | tuple[int, int] | None) -> torch.Tensor:
    # (3, H, W), contiguous: an antialiased resize of a permuted (H, W, 3) view is many times slower
    tensor = torch.from_numpy(np.ascontiguousarray(picture)).permute(2, 0, 1).contiguous()
    return _resize_tensor(tensor, size)


def _resize_tensor(tensor: torch.Tensor, size: int | tuple[int, int] | None) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> shorter side to an int ``size`` and the centre square, or exactly (height, width)."""
    if size is None:
        return tensor
    from torchvision.transforms.functional import center_crop, resize

    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        # Shorter side to `size`, then the central square: what ImageNet evaluation does.
        tensor = resize(tensor, size, antialias=True)
        return center_crop(tensor, [size, size]).clamp(0, 1)
    height, width = size
    return resize(tensor, [height, width], antialias=True).clamp(0, 1)


def load_image(
    source: str | os.PathLike | Image.Image | np.ndarray,
    size: int | tuple[int, int] | None = 224,
) -> torch.Tensor:
    """Load one picture as a float tensor (1, 3, size, size) in [0, 1].

    ``source`` is a sample name (see :func:`sample_images`), a file path, a URL, a PIL image
    or a NumPy array. Grayscale, RGBA, palette and 16-bit pictures become RGB. With an int
    ``size`` the shorter side is resized to it and the centre square is cut out; a pair
    ``(height, width)`` resizes to exactly that; ``None`` keeps the original size.

    >>> load_image("chelsea").shape
    torch.Size([1, 3, 224, 224])
    """
    if isinstance(source, (Image.Image, np.ndarray)):
        picture = source
    elif isinstance(source, (str, os.PathLike)):
        picture = _open_source(source)
    else:
        raise TypeError(
            f"load_image takes a sample name, a path, a URL, a PIL image or an array, got "
            f"{type(source).__name__}."
        )
    return _resize_and_crop(_to_rgb_array(picture), size).unsqueeze(0).float()


def load_images(sources: Iterable[str | os.PathLike] | None = None, size: int = 224) -> torch.Tensor:
    """Load several pictures as one batch (N, 3, size, size); all sample photos by default.

    >>> load_images(["chelsea", "coffee"]).shape
    torch.Size([2, 3, 224, 224])
    """
    sources = sample_images() if sources is None else list(sources)
    if not sources:
        raise ValueError("load_images needs at least one picture.")
    return torch.cat([load_image(source, size) for source in sources])


def to_numpy(images: torch.Tensor) -> np.ndarray:
    """Images (N, 3, H, W) or one image (3, H, W) -> float array (N, H, W, 3) or (H, W, 3)."""
    tensor = images.detach().float().cpu()
    if tensor.dim() == 4:
        return tensor.permute(0, 2, 3, 1).numpy()
    if tensor.dim() == 3:
        return tensor.permute(1, 2, 0).numpy()
    raise ValueError(f"to_numpy expects (N, 3, H, W) or (3, H, W), got {tuple(tensor.shape)}")


def to_pil(images: torch.Tensor) -> Image.Image | list[Image.Image]:
    """An image (3, H, W) or (1, 3, H, W) -> a PIL image; a batch -> a list of PIL images."""
    tensor = images.detach()
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(0)
    check_images(tensor)
    pictures = [Image.fromarray((array * 255).round().astype(np.uint8)) for array in to_numpy(tensor)]
    return pictures[0] if len(pictures) == 1 else pictures


def colourfulness(images: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """How vivid pictures are: the colourfulness M of Hasler & Süsstrunk (2003), on the 0-255 scale.

    From the opponent channels rg = R - G and yb = (R + G) / 2 - B over all pixels (of every image, or
    those where ``mask`` (H, W) or (N, H, W) is True): M = sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2
    + mean_yb^2). Grey pictures score 0; the authors call about 33 "moderately", 45 "quite" and 59
    "highly" colourful. Images (N, 3, H, W) or (3, H, W) in [0, 1].

    >>> colourfulness(load_image("chelsea"))
    """
    tensor = images.detach().float().cpu()
    tensor = tensor.unsqueeze(0) if tensor.dim() == 3 else tensor
    check_images(tensor, "images")
    red, green, blue = (tensor[:, channel] * 255 for channel in range(3))
    rg, yb = red - green, (red + green) / 2 - blue
    if mask is not None:
        mask = torch.as_tensor(mask, dtype=torch.bool).cpu()
        mask = mask.expand(tensor.shape[0], -1, -1) if mask.dim() == 2 else mask
        if mask.shape != rg.shape:
            raise ValueError(f"mask must be (H, W) or (N, H, W) like the images {tuple(rg.shape)}, got {tuple(mask.shape)}.")
        if not mask.any():
            raise ValueError("the mask selects no pixel: nothing to measure.")
        rg, yb = rg[mask], yb[mask]
    spread = (rg.var(unbiased=False) + yb.var(unbiased=False)).sqrt()
    mean = (rg.mean() ** 2 + yb.mean() ** 2).sqrt()
    return float(spread + 0.3 * mean)
