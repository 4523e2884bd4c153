"""Pictures: a grid of images, a heat map over an image, top-k predictions as bars.

Every function takes ``ax=None`` (or draws its own figure) and returns the figure; none
calls ``plt.show()``, so notebooks, tests and scripts decide what to do with it.
"""
from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .images import to_numpy

__all__ = ["show_images", "show_heatmap", "overlay_heatmap", "plot_predictions", "normalize_heatmap", "save_gallery_figure"]


def _as_image_array(image: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        tensor = image.detach()
        if tensor.dim() == 4:
            if tensor.shape[0] != 1:
                raise ValueError(f"expected one image, got a batch of {tensor.shape[0]}; index it first.")
            tensor = tensor[0]
        if tensor.dim() == 3 and tensor.shape[0] in (1, 3):
            array = to_numpy(tensor)
            return array[:, :, 0] if array.shape[2] == 1 else array
        return tensor.float().cpu().numpy()
    return np.asarray(image)


def normalize_heatmap(heatmap: torch.Tensor | np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """A 2-D map scaled to [0, 1] for display; values above ``percentile`` are clipped to 1.

    Channels, if present as (3, H, W) or (1, H, W), are reduced by the max of absolute values.
    """
    array = _as_image_array(heatmap).astype(np.float32)
    if array.ndim == 3:
        array = np.abs(array).max(axis=2 if array.shape[2] in (1, 3) else 0)
    if array.ndim != 2:
        raise ValueError(f"a heat map must be 2-D (H, W), got shape {array.shape}")
    array = array - array.min()
    top = np.percentile(array, percentile) if percentile < 100 else array.max()
    return np.clip(array / top, 0, 1) if top > 0 else np.zeros_like(array)


def _new_axes(ax, figsize=(4, 4)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def show_images(
    images: torch.Tensor | Sequence[torch.Tensor | np.ndarray],
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    size: float = 2.6,
    cmap: str | None = None,
    suptitle: str | None = None,
):
    """A grid of images (N, 3, H, W) or a list of images / 2-D maps, with optional titles.

    >>> fig = show_images(load_images(["chelsea", "coffee"]), titles=["cat", "coffee"])
    """
    items = list(images) if not isinstance(images, torch.Tensor) or images.dim() == 4 else [images]
    if not items:
        raise ValueError("show_images needs at least one image.")
    if titles is not None and len(titles) != len(items):
        raise ValueError(f"got {len(titles)} titles for {len(items)} images; give one title per image.")
    ncols = ncols or min(len(items), 6)
    nrows = math.ceil(len(items) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= len(items):
            continue
        array = _as_image_array(items[index])
        ax.imshow(np.clip(array, 0, 1) if array.ndim == 3 else array, cmap=cmap if array.ndim == 2 else None)
        if titles is not None:
            ax.set_title(titles[index], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_heatmap(heatmap, ax=None, cmap: str = "inferno", title: str | None = None, percentile: float = 99.0):
    """A heat map alone, scaled to [0, 1] (see :func:`normalize_heatmap`)."""
    fig, ax = _new_axes(ax)
    ax.imshow(normalize_heatmap(heatmap, percentile), cmap=cmap, vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def overlay_heatmap(
    image,
    heatmap,
    ax=None,
    alpha: float = 0.5,
    cmap: str = "jet",
    title: str | None = None,
    percentile: float = 99.0,
):
    """A heat map drawn over the image it explains; the map is resized to the image if needed.

    >>> fig = overlay_heatmap(load_image("chelsea"), saliency_map)
    """
    picture = _as_image_array(image)
    if picture.ndim == 2:
        picture = np.repeat(picture[:, :, None], 3, axis=2)
    heat = normalize_heatmap(heatmap, percentile)
    if heat.shape != picture.shape[:2]:
        resized = torch.nn.functional.interpolate(
            torch.from_numpy(heat)[None, None], size=picture.shape[:2], mode="bilinear", align_corners=False
        )
        heat = resized[0, 0].numpy()
    fig, ax = _new_axes(ax)
    ax.imshow(np.clip(picture, 0, 1))
    ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def plot_predictions(predictions: Sequence[tuple[str, float]], ax=None, title: str | None = None):
    """Horizontal bars of (label, probability) pairs, most probable on top.

    >>> fig = plot_predictions(top_predictions(model, load_image("coffee"))[0])
    """
    if not predictions:
        raise ValueError("no predictions to plot; pass top_predictions(model, images)[i].")
    labels = [label for label, _ in predictions][::-1]
    values = [float(value) for _, value in predictions][::-1]
    fig, ax = _new_axes(ax, figsize=(4, 0.45 * len(labels) + 0.8))
    bars = ax.barh(range(len(labels)), values, color="#4c72b0")
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    ax.set_xlim(0, 1)
    ax.bar_label(bars, labels=[f"{v:.0%}" for v in values], padding=2, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_xlabel("probability")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def save_gallery_figure(fig, name: str) -> str | None:
    """Save ``fig`` as ``name.png`` in ``$NNVIS_GALLERY_DIR`` when that is set (``make course``).

    The README's gallery is made this way, by the course itself; otherwise nothing is written.
    """
    import os
    from pathlib import Path

    folder = os.environ.get("NNVIS_GALLERY_DIR")
    if not folder:
        return None
    import io

    from PIL import Image

    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    # A 256-colour palette keeps the README's pictures small (a few hundred KB at most);
    # dithering keeps photos free of colour bands.
    picture = Image.open(buffer).convert("RGB")
    palette = picture.quantize(colors=256)
    picture.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)
    return str(path)
