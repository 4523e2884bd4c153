"""Pictures of an atlas: the scatter, the grid, the atlas itself, the class view, a path, one cell.

Every function takes ``ax=None`` (or draws its own figure) and returns the figure; none calls
``plt.show()``. :func:`atlas_explorer` is the interactive view (ipywidgets); :func:`show_cell`
is its static twin, for pages where widgets do not render.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..images import to_numpy
from ..plotting import _new_axes
from .build import Atlas, AtlasGrid
from .layout import Layout

__all__ = [
    "atlas_image",
    "atlas_icon_mask",
    "draw_layout",
    "draw_grid",
    "draw_atlas",
    "draw_path",
    "show_cell",
    "atlas_explorer",
    "class_names",
]


def class_names(model=None) -> tuple[str, ...]:
    """The class names of a model from ``load_model`` (ImageNet's otherwise)."""
    info = getattr(model, "info", None)
    if info is not None and hasattr(info, "labels"):
        return tuple(info.labels)
    from ..models import imagenet_labels

    return imagenet_labels()


def atlas_image(atlas: Atlas, fade: bool = False, background: float = 0.12) -> torch.Tensor:
    """The atlas as one image (3, G*S, G*S): every icon in its cell at full colour, empty cells in ``background``.

    The page is dark (0.12) so that the icons keep their colour; :func:`draw_atlas` shows how many
    vectors each cell rests on with a bar instead. ``fade=True`` is the older drawing: icons of sparse
    cells blended towards the background (opacity from 0.4 by the log of the count), which on a white
    page halved the atlas's colourfulness.
    """
    grid, icons = atlas.grid, atlas.icons
    size = icons.shape[-1]
    canvas = torch.full((3, grid.grid_size * size, grid.grid_size * size), float(background))
    counts = grid.counts[grid.cells[:, 0], grid.cells[:, 1]].float()
    if fade and counts.max() > counts.min():
        opacity = 0.4 + 0.6 * (counts.log() - counts.log().min()) / (counts.log().max() - counts.log().min())
    else:
        opacity = torch.ones_like(counts)
    for k, (row, column) in enumerate(grid.cells.tolist()):
        icon = icons[k] * opacity[k] + background * (1 - opacity[k])
        canvas[:, row * size:(row + 1) * size, column * size:(column + 1) * size] = icon
    return canvas


def atlas_icon_mask(atlas: Atlas) -> torch.Tensor:
    """Which pixels of :func:`atlas_image` hold an icon: a boolean (G*S, G*S), to measure the icons as drawn.

    >>> colourfulness(atlas_image(atlas), mask=atlas_icon_mask(atlas))
    """
    size = atlas.icons.shape[-1]
    mask = torch.zeros(atlas.grid.grid_size, atlas.grid.grid_size, dtype=torch.bool)
    mask[atlas.cells[:, 0], atlas.cells[:, 1]] = True
    return mask.repeat_interleave(size, 0).repeat_interleave(size, 1)


def _label_colours(labels: Sequence[str], top: int):
    names, counts = np.unique(np.asarray(labels), return_counts=True)
    order = names[np.argsort(-counts)][:top]
    palette = plt.get_cmap("tab10" if top <= 10 else "tab20")
    return {name: palette(i % palette.N) for i, name in enumerate(order)}


def draw_layout(
    coords,
    labels: Sequence[str] | None = None,
    ax=None,
    top: int = 8,
    grid_size: int | None = None,
    title: str | None = None,
    point_size: float = 6,
):
    """The 2-D layout as a scatter, coloured by ``labels`` (the ``top`` most frequent; the rest grey).

    ``grid_size`` draws the grid lines of the atlas over it. y grows downwards, as in the atlas
    image, so the scatter and the atlas line up.
    """
    points = (coords.coords if isinstance(coords, Layout) else torch.as_tensor(coords)).numpy()
    fig, ax = _new_axes(ax, (6, 6))
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=point_size, c="0.3", linewidths=0)
    else:
        if len(labels) != len(points):
            raise ValueError(f"got {len(labels)} labels for {len(points)} points; give one label per point.")
        colours = _label_colours(labels, top)
        labels = np.asarray(labels)
        rest = ~np.isin(labels, list(colours))
        ax.scatter(points[rest, 0], points[rest, 1], s=point_size, c="0.8", linewidths=0, label="other")
        for name, colour in colours.items():
            chosen = labels == name
            ax.scatter(points[chosen, 0], points[chosen, 1], s=point_size, color=colour, linewidths=0, label=name)
        ax.legend(fontsize=7, markerscale=2, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    if grid_size:
        for edge in np.linspace(0, 1, grid_size + 1):
            ax.axhline(edge, color="0.85", lw=0.5, zorder=0)
            ax.axvline(edge, color="0.85", lw=0.5, zorder=0)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(1.02, -0.02)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def draw_grid(grid: AtlasGrid, ax=None, title: str | None = None):
    """The count of vectors in every cell as a heat map with numbers; cells below ``min_count`` hatched out."""
    fig, ax = _new_axes(ax, (5, 5))
    counts = grid.counts.numpy()
    shown = np.ma.masked_where(counts < grid.min_count, counts)
    image = ax.imshow(shown, cmap="Blues", extent=(0, 1, 1, 0))
    step = 1 / grid.grid_size
    if grid.grid_size <= 24:
        for (row, column), count in np.ndenumerate(counts):
            if count:
                ax.text((column + 0.5) * step, (row + 0.5) * step, str(count), ha="center", va="center", fontsize=6,
                        color="white" if count > counts.max() / 2 else "black")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"{grid.grid_size}x{grid.grid_size} grid: {len(grid.cells)} cells with >= {grid.min_count} vectors",
                 fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="vectors per cell")
    return fig


def draw_atlas(
    atlas: Atlas,
    ax=None,
    density: str | None = "bar",
    cell_labels: Sequence[str] | None = None,
    cell_colours: Sequence | None = None,
    title: str | None = None,
    figsize: float = 9,
):
    """The atlas: icons at full colour on a dark page; how many vectors each cell rests on; optional labels and frames.

    ``density``: ``"bar"`` (default) draws a white bar along the top of each cell, as long as the
    log of its count against the busiest cell's (a cell of a handful of images gets a stub);
    ``"fade"`` blends sparse cells' icons into the page instead (paler pictures); None shows nothing.
    ``cell_labels[k]`` / ``cell_colours[k]`` belong to ``atlas.cells[k]`` (the class view puts
    each cell's top class there; the class-focused atlas colours cells by the class they lean to).

    >>> fig = draw_atlas(atlas, cell_labels=[labels[i] for i in layer_to_logits(...).argmax(1)])
    """
    if density not in ("bar", "fade", None):
        raise ValueError(f"density={density!r}: use 'bar' (a bar per cell), 'fade' (pale sparse icons) or None.")
    fig, ax = _new_axes(ax, (figsize, figsize))
    ax.imshow(to_numpy(atlas_image(atlas, fade=density == "fade")).clip(0, 1), extent=(0, 1, 1, 0), interpolation="lanczos")
    step = 1 / atlas.grid.grid_size
    cells = atlas.cells.tolist()
    for items, name in ((cell_labels, "cell_labels"), (cell_colours, "cell_colours")):
        if items is not None and len(items) != len(cells):
            raise ValueError(f"{name} has {len(items)} entries for {len(cells)} drawn cells; give one per cell.")
    counts = atlas.grid.counts[atlas.cells[:, 0], atlas.cells[:, 1]].float() if cells else torch.zeros(0)
    share = (counts.log1p() / counts.max().log1p()).tolist() if cells else []
    for k, (row, column) in enumerate(cells):
        if density == "bar":
            ax.add_patch(plt.Rectangle(((column + 0.06) * step, (row + 0.04) * step), 0.88 * step * share[k], 0.07 * step,
                                       facecolor="white", edgecolor="black", lw=0.4, zorder=3))
        if cell_colours is not None:
            ax.add_patch(plt.Rectangle((column * step, row * step), step, step, fill=False, lw=1.5,
                                       edgecolor=cell_colours[k]))
        if cell_labels is not None:
            ax.text((column + 0.5) * step, (row + 0.97) * step, str(cell_labels[k])[:14], ha="center", va="bottom",
                    fontsize=max(4.0, 60 / atlas.grid.grid_size), color="white",
                    bbox=dict(boxstyle="square,pad=0.1", fc=(0, 0, 0, 0.55), lw=0))
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)
    ax.axis("off")
    note = f"\nbars: vectors per cell, log scale, up to {int(counts.max())}" if density == "bar" and cells else ""
    ax.set_title((title or f"activation atlas of {atlas.layer}: {len(cells)} cells") + note, fontsize=11)
    return fig


def draw_path(
    base,
    coords,
    labels: Sequence[str] | None = None,
    ax=None,
    colour: str = "red",
    point_labels: Sequence[str] | None = None,
    title: str | None = None,
):
    """A path of positions (T, 2) over an atlas or a layout (an attack's steps, say), start and end labelled.

    ``base``: an :class:`Atlas` (the icons are drawn under the path) or a :class:`Layout` (its
    scatter, coloured by ``point_labels`` as in :func:`draw_layout`).
    """
    if isinstance(base, Atlas):
        fig = draw_atlas(base, ax=ax, title=title)
    elif isinstance(base, Layout):
        fig = draw_layout(base, point_labels, ax=ax, title=title)
    else:
        raise TypeError(f"draw_path draws over an Atlas or a Layout, got {type(base).__name__}.")
    ax = fig.axes[0] if ax is None else ax
    points = torch.as_tensor(coords).numpy()
    ax.plot(points[:, 0], points[:, 1], "-", color=colour, lw=2, alpha=0.9)
    ax.scatter(points[:, 0], points[:, 1], s=18, color=colour, zorder=3, edgecolors="white", linewidths=0.6)
    ax.scatter(points[:1, 0], points[:1, 1], s=90, marker="o", facecolors="none", edgecolors=colour, lw=2, zorder=4)
    ax.scatter(points[-1:, 0], points[-1:, 1], s=140, marker="*", color=colour, edgecolors="white", zorder=4)
    if labels is not None:
        for point, text in ((points[0], labels[0]), (points[-1], labels[-1])):
            ax.annotate(text, point, xytext=(6, -6), textcoords="offset points", fontsize=9, color="white",
                        bbox=dict(boxstyle="round,pad=0.2", fc=colour, lw=0, alpha=0.85))
    return fig


def _cell_images(atlas: Atlas, row: int, column: int, dataset, count: int):
    members = atlas.grid.members(row, column)
    activations = atlas.activations
    if dataset is None or activations is None or len(members) == 0:
        return [], members
    chosen = members[:count]
    pictures = []
    for index in chosen.tolist():
        item = dataset[int(activations.image_index[index])]
        image = item[0] if isinstance(item, (tuple, list)) else item
        pictures.append((image, tuple(int(v) for v in activations.positions[index])))
    return pictures, members


def show_cell(atlas: Atlas, row: int, column: int, dataset=None, model=None, count: int = 6):
    """One cell in detail: its icon large, its count, the top predicted classes of its images, and the images.

    Each dataset image gets a box around the map position its vector came from (the position's
    share of the image; its receptive field is larger). The static twin of :func:`atlas_explorer`.
    """
    index = atlas.index_of(row, column)
    if index is None:
        occupied = ", ".join(f"({r}, {c})" for r, c in atlas.cells[:6].tolist())
        raise ValueError(f"cell ({row}, {column}) has fewer than {atlas.grid.min_count} vectors and no icon; "
                         f"drawn cells include {occupied}, ...")
    pictures, members = _cell_images(atlas, row, column, dataset, count)
    fig = plt.figure(figsize=(2.6 + 1.6 * max(1, len(pictures)), 3.2))
    grid = fig.add_gridspec(2, 1 + max(1, len(pictures)), width_ratios=[1.8] + [1] * max(1, len(pictures)))
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(to_numpy(atlas.icons[index]).clip(0, 1), interpolation="lanczos")
    ax.axis("off")
    lines = [f"cell ({row}, {column}): {len(members)} vectors"]
    activations = atlas.activations
    predicted = getattr(activations, "predicted_class", None) if activations is not None else None
    if predicted is not None and len(members):
        names = class_names(model)
        values, frequency = torch.unique(predicted[members], return_counts=True)
        order = frequency.argsort(descending=True)[:3]
        lines += [f"{names[int(values[i])][:18]} {int(frequency[i])}" for i in order]
    ax.set_title("\n".join(lines), fontsize=8, loc="left")
    map_size = getattr(activations, "map_size", None)
    for k, (image, (map_row, map_column)) in enumerate(pictures):
        sub = fig.add_subplot(grid[:, 1 + k])
        sub.imshow(to_numpy(image).clip(0, 1))
        if map_size and map_row >= 0:
            height, width = image.shape[-2:]
            cell_h, cell_w = height / map_size[0], width / map_size[1]
            sub.add_patch(plt.Rectangle((map_column * cell_w, map_row * cell_h), cell_w, cell_h, fill=False,
                                        edgecolor="yellow", lw=1.5))
        sub.axis("off")
    fig.tight_layout()
    return fig


def atlas_explorer(atlas: Atlas, dataset=None, model=None, count: int = 6):
    """An interactive view (ipywidgets): pick a cell, see its icon large, its count, classes and images.

    Needs ipywidgets in a live Jupyter or Colab kernel; where widgets do not render, call
    :func:`show_cell` for a static view of one cell. The picture is a PNG in an ``Image``
    widget, redrawn when the choice changes.
    """
    import io

    import ipywidgets as widgets

    cells = atlas.cells.tolist()
    options = [(f"({r}, {c}): {int(atlas.grid.counts[r, c])} vectors", (r, c)) for r, c in cells]
    busiest = max(cells, key=lambda rc: int(atlas.grid.counts[rc[0], rc[1]]))
    picker = widgets.Dropdown(options=options, value=tuple(busiest), description="cell")
    picture = widgets.Image(format="png")

    def redraw(change=None):
        figure = show_cell(atlas, *picker.value, dataset=dataset, model=model, count=count)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
        plt.close(figure)
        picture.value = buffer.getvalue()

    picker.observe(redraw, names="value")
    redraw()
    return widgets.VBox([picker, picture])
