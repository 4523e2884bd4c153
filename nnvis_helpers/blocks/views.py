"""Pictures and an explorer for the building blocks: the dictionary, the grid, the groups and the flow.

Computation lives in :mod:`blocks.compute`; everything here only draws what it returns (Captum's
split: visualization kept apart from computation). Plot functions return the figure.
"""
from __future__ import annotations

import io
from typing import Callable, Sequence

import numpy as np
import torch

from ..architecture import widget_or_text
from ..images import to_numpy
from .compute import ActivationGrid, Flow, NeuronGroups, SemanticDictionary

__all__ = ["group_colours", "draw_dictionary", "draw_activation_grid", "draw_attribution", "draw_group_map", "draw_groups", "draw_flow",
           "BlocksExplorer", "blocks_explorer"]


def group_colours(k: int) -> np.ndarray:
    """(k, 3) RGB colours in [0, 1], one per neuron group (matplotlib's tab10, then tab20)."""
    import matplotlib

    table = matplotlib.colormaps["tab10" if k <= 10 else "tab20"]
    return np.array([table(index % table.N)[:3] for index in range(k)])


def _picture(image: torch.Tensor) -> np.ndarray:
    return to_numpy(image[0] if image.dim() == 4 else image).clip(0, 1)


def _cell_box(map_size: tuple[int, int], image_size: tuple[int, int], row: int, column: int):
    """(x, y, width, height) in pixels of the part of the photo that map position (row, column) sits over.

    The stride grid: the map's positions tile the photo evenly. It is where a unit *looks from*, not its
    receptive field, which is larger (notebook 07).
    """
    height, width = image_size[0] / map_size[0], image_size[1] / map_size[1]
    return column * width, row * height, width, height


def _upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return torch.nn.functional.interpolate(maps[:, None].float(), size=size, mode="nearest")[:, 0]


def _icon_axis(ax, icon: torch.Tensor, title: str | None = None, colour=None):
    ax.imshow(_picture(icon))
    ax.set_xticks([])
    ax.set_yticks([])
    if colour is not None:
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(3)
    if title:
        ax.set_title(title, fontsize=8)


def draw_dictionary(image: torch.Tensor, dictionary: SemanticDictionary, positions: Sequence[tuple[int, int]],
                    title: str | None = None):
    """The photo with a few map positions marked, and for each its top channels as icons with their activations.

    ``positions``: (row, column) pairs of the layer's map, e.g. ``[(3, 4), (6, 1)]``.

    >>> draw_dictionary(photo, dictionary, [(3, 4), (6, 1)])
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows, columns = dictionary.map_size
    positions = [(int(row), int(column)) for row, column in positions]
    for row, column in positions:
        if not (0 <= row < rows and 0 <= column < columns):
            raise ValueError(f"position {(row, column)} is outside the {rows} x {columns} map of {dictionary.layer}.")
    k = dictionary.channels.shape[-1]
    colours = group_colours(len(positions))
    figure = plt.figure(figsize=(3.4 + 1.25 * k, max(3.4, 1.45 * len(positions))))
    grid = figure.add_gridspec(len(positions), 1 + k, width_ratios=[2.6 * max(1, len(positions) / 2)] + [1] * k)
    photo_ax = figure.add_subplot(grid[:, 0])
    picture = _picture(image)
    photo_ax.imshow(picture)
    photo_ax.axis("off")
    strongest = dictionary.values[..., 0].max().item()
    for index, (row, column) in enumerate(positions):
        x, y, width, height = _cell_box(dictionary.map_size, picture.shape[:2], row, column)
        photo_ax.add_patch(Rectangle((x, y), width, height, fill=False, edgecolor=colours[index], linewidth=2.5))
        photo_ax.text(x + width / 2, y - 2, str(index + 1), color=colours[index], ha="center", va="bottom",
                      fontsize=11, fontweight="bold")
        for rank in range(k):
            channel = int(dictionary.channels[row, column, rank])
            value = float(dictionary.values[row, column, rank])
            ax = figure.add_subplot(grid[index, 1 + rank])
            _icon_axis(ax, dictionary.icons[channel], f"ch {channel}: {value:.2f}", colours[index] if rank == 0 else None)
            bar = ax.inset_axes([0.0, -0.12, max(0.02, value / strongest), 0.07])
            bar.set_facecolor(colours[index])
            bar.set_xticks([])
            bar.set_yticks([])
    figure.suptitle(title or f"semantic dictionary of {dictionary.layer}: top {k} channels at {len(positions)} places", fontsize=10)
    figure.tight_layout()
    return figure


def _activation_strength(vectors: torch.Tensor) -> torch.Tensor:
    norms = vectors.norm(dim=-1)
    return norms / norms.max().clamp(min=1e-12)


def activation_grid_image(grid: ActivationGrid, fade: bool = False) -> torch.Tensor:
    """The icons of an activation grid as one picture (3, rows x s, columns x s) in [0, 1], as drawn.

    ``fade=False``: every icon at full colour (what :func:`draw_activation_grid` shows under its
    strength bars); ``fade=True``: each icon blended towards white by its cell's strength, as the
    paper's figure does. Measure it with ``colourfulness``.

    >>> colourfulness(activation_grid_image(grid))
    """
    if not isinstance(grid, ActivationGrid):
        raise TypeError(f"grid must be an ActivationGrid (what activation_grid() returns), got {type(grid).__name__}.")
    rows, columns = grid.cells
    icon_size = grid.icons.shape[-1]
    mosaic = grid.icons.permute(0, 3, 1, 4, 2).reshape(rows * icon_size, columns * icon_size, 3).float().cpu()
    if fade:
        strength = _activation_strength(grid.vectors).float().cpu()
        spread = strength.repeat_interleave(icon_size, 0).repeat_interleave(icon_size, 1)
        mosaic = mosaic * spread[..., None] + (1 - spread[..., None])
    return mosaic.clamp(0, 1).permute(2, 0, 1).contiguous()


def draw_activation_grid(image: torch.Tensor, grid: ActivationGrid, fade: bool = False, title: str | None = None):
    """The photo beside its activation grid: one icon per cell at full colour, a bar for how strongly the cell is active.

    The bar along the top of each cell is as long as the cell's activation vector against the strongest
    cell's, so quiet background cells are told apart without losing their colour. ``fade=True`` blends
    each icon towards white by that strength instead, as the paper's figure does (paler icons).

    >>> draw_activation_grid(photo, grid)
    """
    import matplotlib.pyplot as plt

    rows, columns = grid.cells
    icon_size = grid.icons.shape[-1]
    mosaic = activation_grid_image(grid, fade=fade).permute(1, 2, 0)
    strength = _activation_strength(grid.vectors)
    figure, axes = plt.subplots(1, 2, figsize=(11, 5.4))
    picture = _picture(image)
    axes[0].imshow(picture)
    for row in range(1, rows):
        axes[0].axhline(row * picture.shape[0] / rows - 0.5, color="white", linewidth=0.6, alpha=0.7)
    for column in range(1, columns):
        axes[0].axvline(column * picture.shape[1] / columns - 0.5, color="white", linewidth=0.6, alpha=0.7)
    axes[0].set_title(f"the photo, cut into the {rows} x {columns} cells", fontsize=10)
    axes[1].imshow(mosaic.numpy())
    if not fade:
        for (row, column), share in np.ndenumerate(strength.reshape(rows, columns).cpu().numpy()):
            axes[1].add_patch(plt.Rectangle(((column + 0.06) * icon_size - 0.5, (row + 0.04) * icon_size - 0.5),
                                            0.88 * icon_size * share, 0.07 * icon_size, facecolor="white",
                                            edgecolor="black", linewidth=0.4))
    axes[1].set_title(title or f"activation grid of {grid.layer}: one icon per cell, "
                      + ("faded by strength" if fade else "bars: strength (vector length)"), fontsize=10)
    for ax in axes:
        ax.axis("off")
    figure.tight_layout()
    return figure


def draw_attribution(image: torch.Tensor, attributions: torch.Tensor, ax=None, title: str | None = None,
                     alpha: float = 0.6):
    """The attribution of each map position (summed over channels) over the photo: red adds, blue takes away.

    ``attributions``: (C, H, W) from :func:`spatial_attribution`.

    >>> draw_attribution(photo, spatial_attribution(model, photo, "blocks.4", 281))
    """
    import matplotlib.pyplot as plt

    if ax is None:
        figure, ax = plt.subplots(figsize=(4, 4))
    else:
        figure = ax.figure
    picture = _picture(image)
    per_position = attributions.sum(0) if attributions.dim() == 3 else attributions
    limit = per_position.abs().max().clamp(min=1e-12).item()
    ax.imshow(picture)
    ax.imshow(per_position.cpu().numpy(), cmap="bwr", vmin=-limit, vmax=limit, alpha=alpha,
              extent=(-0.5, picture.shape[1] - 0.5, picture.shape[0] - 0.5, -0.5), interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    return figure


def _group_mosaic(image: torch.Tensor, groups: NeuronGroups) -> np.ndarray:
    """The photo coloured by its dominant group at every position, brighter where the groups are stronger."""
    picture = _picture(image)
    colours = torch.from_numpy(group_colours(len(groups.maps))).float()
    maps = _upsample(groups.maps, picture.shape[:2])
    dominant = maps.argmax(0)
    strength = (maps.max(0).values / maps.max().clamp(min=1e-12)).clamp(0, 1)[..., None]
    tint = colours[dominant]
    grey = torch.from_numpy(picture).float().mean(-1, keepdim=True).expand_as(tint)
    return (0.35 * grey + 0.65 * (strength * tint + (1 - strength) * grey)).clamp(0, 1).numpy()


def draw_group_map(image: torch.Tensor, groups: NeuronGroups, ax=None, title: str | None = None):
    """The photo coloured by its dominant neuron group at every position (brighter where the groups are stronger).

    >>> draw_group_map(photo, neuron_groups(view, 5))
    """
    import matplotlib.pyplot as plt

    if ax is None:
        figure, ax = plt.subplots(figsize=(4, 4))
    else:
        figure = ax.figure
    ax.imshow(_group_mosaic(image, groups))
    ax.axis("off")
    ax.set_title(title or f"{len(groups.maps)} groups of {groups.layer}", fontsize=10)
    return figure


def draw_groups(image: torch.Tensor, groups: NeuronGroups, icons: torch.Tensor | None = None,
                class_attribution: torch.Tensor | None = None, class_names: Sequence[str] | None = None,
                title: str | None = None):
    """Neuron groups of a layer on a photo: where each group is active, what it looks for, which classes it supports.

    Top-left, the photo coloured by the dominant group; then one column per group with its map over
    the photo (in the group's colour), its icon (``icons``, (k, 3, s, s), optional), and its attribution
    to a few classes (``class_attribution``, (k, n), with ``class_names``).

    >>> draw_groups(photo, groups, icons, flow.b_to_class, names)
    """
    import matplotlib.pyplot as plt

    k = len(groups.maps)
    colours = group_colours(k)
    has_icons, has_bars = icons is not None, class_attribution is not None
    if has_bars and class_names is None:
        raise ValueError("class_attribution needs class_names: one name per column of it.")
    rows = 1 + has_icons + has_bars
    figure, axes = plt.subplots(rows, k + 1, figsize=(2.1 * (k + 1), 2.2 * rows + 0.3 * has_bars), squeeze=False)
    picture = _picture(image)
    draw_group_map(image, groups, ax=axes[0, 0], title="dominant group")
    axes[0, 0].title.set_fontsize(9)
    maps = _upsample(groups.maps, picture.shape[:2])
    top = maps.max().clamp(min=1e-12)
    for group in range(k):
        ax = axes[0, group + 1]
        strength = (maps[group] / top).clamp(0, 1)[..., None].numpy()
        ax.imshow(picture * (0.2 + 0.8 * strength))      # dark where the group is silent
        ax.contour(maps[group].numpy(), levels=[0.5 * maps[group].max().item()], colors=[colours[group]], linewidths=2)
        ax.set_title(f"group {group + 1}", fontsize=9, color=colours[group], fontweight="bold")
    for row in range(rows):
        for column in range(k + 1):
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
    if has_icons:
        axes[1, 0].axis("off")
        axes[1, 0].text(0.5, 0.5, "what the group's\ndirection looks like\n(feature visualization)", ha="center",
                        va="center", fontsize=8, transform=axes[1, 0].transAxes)
        for group in range(k):
            _icon_axis(axes[1, group + 1], icons[group], None, colours[group])
    if has_bars:
        row = rows - 1
        axes[row, 0].axis("off")
        axes[row, 0].text(0.5, 0.5, "attribution to\nthe classes\n(logits)", ha="center", va="center", fontsize=8,
                          transform=axes[row, 0].transAxes)
        values = class_attribution.float().cpu()
        limit = values.abs().max().clamp(min=1e-12).item()
        for group in range(k):
            ax = axes[row, group + 1]
            ax.barh(range(len(class_names)), values[group].numpy(), color=[colours[group]])
            ax.axvline(0, color="black", linewidth=0.6)
            ax.set_xlim(-limit * 1.05, limit * 1.05)
            ax.set_yticks(range(len(class_names)))
            ax.set_yticklabels([name[:14] for name in class_names] if group == 0 else [], fontsize=7)
            ax.invert_yaxis()
            ax.tick_params(axis="x", labelsize=7)
    figure.suptitle(title or f"{k} neuron groups of {groups.layer} (NMF, relative error {groups.relative_error:.2f})",
                    fontsize=10)
    figure.tight_layout()
    return figure


def draw_flow(flow: Flow, icons_a: torch.Tensor, icons_b: torch.Tensor, class_names: Sequence[str],
              minimum: float = 0.05, title: str | None = None):
    """The paper's information flow: groups of layer A -> groups of layer B -> classes, edges by attribution.

    Edge width is the attribution's size relative to the largest edge of its stage; red edges add to
    the next node, blue ones take away; edges under ``minimum`` of the largest are left out.

    >>> draw_flow(flow, icons_a, icons_b, [labels[c] for c in flow.classes])
    """
    import matplotlib.pyplot as plt
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    k_a, k_b = flow.a_to_b.shape
    n = len(flow.classes)
    if len(class_names) != n:
        raise ValueError(f"give one name per class of the flow ({n}), got {len(class_names)}.")
    if len(icons_a) != k_a or len(icons_b) != k_b:
        raise ValueError(f"give one icon per group: {k_a} for {flow.layers[0]} and {k_b} for {flow.layers[1]}.")
    height = max(k_a, k_b, n)
    figure, ax = plt.subplots(figsize=(9, 1.15 * height + 1.0))

    def spread(count):
        return [height - 1 - (height - 1) * index / max(count - 1, 1) if count > 1 else (height - 1) / 2
                for index in range(count)]

    ys = {0: spread(k_a), 1: spread(k_b), 2: spread(n)}
    for stage, weights, left, right in ((0, flow.a_to_b, 0, 1), (1, flow.b_to_class, 1, 2)):
        weights = weights.float().cpu()
        largest = weights.abs().max().clamp(min=1e-12).item()
        for i in range(weights.shape[0]):
            for j in range(weights.shape[1]):
                share = weights[i, j].item() / largest
                if abs(share) < minimum:
                    continue
                ax.plot([left + 0.12, right - 0.12], [ys[left][i], ys[right][j]], color="#d62728" if share > 0 else "#1f77b4",
                        linewidth=0.5 + 7 * abs(share), alpha=0.35 + 0.5 * abs(share), solid_capstyle="round", zorder=1)
    colours_a, colours_b = group_colours(k_a), group_colours(k_b)
    zoom = 0.9 * 72 / icons_a.shape[-1]
    for column, icons, colours in ((0, icons_a, colours_a), (1, icons_b, colours_b)):
        for index, icon in enumerate(icons):
            box = AnnotationBbox(OffsetImage(_picture(icon), zoom=zoom), (column, ys[column][index]), frameon=True,
                                 bboxprops={"edgecolor": colours[index], "linewidth": 2.5}, zorder=2)
            ax.add_artist(box)
    for index, name in enumerate(class_names):
        ax.text(2 - 0.1, ys[2][index], name, va="center", ha="left", fontsize=10, zorder=3,
                bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "grey"})
    for column, label in enumerate((f"groups of {flow.layers[0]}", f"groups of {flow.layers[1]}", "classes")):
        ax.text(column, height - 0.3, label, ha="center", va="bottom", fontsize=10, fontweight="bold")
    ax.set_xlim(-0.5, 2.9)
    ax.set_ylim(-0.7, height + 0.2)
    ax.axis("off")
    ax.set_title(title or "information flow: edge width = attribution (red adds, blue takes away)", fontsize=10)
    figure.tight_layout()
    return figure


class BlocksExplorer:
    """Click a position of the photo's map to see its top channels; slide k to regroup the neurons.

    In Jupyter or Colab: a grid of buttons, one per map position, coloured by the dominant neuron
    group (NMF with k groups, recomputed when k changes), and a panel with the clicked position's
    icons and activations. Where widgets do not render (GitHub, nbconvert, CI), a line of text: the
    static figures of the notebook show the same.
    """

    def __init__(self, image: torch.Tensor, dictionary: SemanticDictionary, make_groups: Callable[[int], NeuronGroups],
                 ks: Sequence[int], k: int):
        self.image, self.dictionary, self.make_groups = image, dictionary, make_groups
        self.ks, self.k = list(ks), k
        self._groups: dict[int, NeuronGroups] = {}
        self.widget = None

    def groups(self, k: int) -> NeuronGroups:
        if k not in self._groups:
            self._groups[k] = self.make_groups(k)
        return self._groups[k]

    def position_figure(self, row: int, column: int):
        return draw_dictionary(self.image, self.dictionary, [(row, column)],
                               title=f"{self.dictionary.layer} at row {row}, column {column}")

    def _build_widget(self):
        import ipywidgets as widgets
        import matplotlib.pyplot as plt
        from matplotlib.colors import to_hex

        rows, columns = self.dictionary.map_size
        k_slider = widgets.SelectionSlider(options=self.ks, value=self.k, description="groups k")
        picture = widgets.Image(format="png")
        status = widgets.HTML()
        buttons = [[widgets.Button(layout=widgets.Layout(width="24px", height="24px", padding="0"),
                                   tooltip=f"row {row}, column {column}") for column in range(columns)]
                   for row in range(rows)]

        def recolour(_change=None):
            groups = self.groups(k_slider.value)
            colours = group_colours(len(groups.maps))
            strongest = groups.maps.max().clamp(min=1e-12)
            dominant = groups.maps.argmax(0)
            for row in range(rows):
                for column in range(columns):
                    strength = float(groups.maps[:, row, column].max() / strongest)
                    tint = 1 - (1 - colours[int(dominant[row, column])]) * (0.25 + 0.75 * strength)
                    buttons[row][column].style.button_color = to_hex(tint)
            status.value = (f"{len(groups.maps)} groups of {groups.layer}, NMF relative error {groups.relative_error:.2f}. "
                            "Click a cell.")

        def show(row, column):
            figure = self.position_figure(row, column)
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
            plt.close(figure)
            picture.value = buffer.getvalue()

        for row in range(rows):
            for column in range(columns):
                buttons[row][column].on_click(lambda _button, row=row, column=column: show(row, column))
        k_slider.observe(recolour, names="value")
        recolour()
        show(rows // 2, columns // 2)
        board = widgets.GridBox([button for line in buttons for button in line],
                                layout=widgets.Layout(grid_template_columns=f"repeat({columns}, 24px)", grid_gap="1px"))
        self.widget = widgets.VBox([widgets.HBox([k_slider, status]), widgets.HBox([board, picture])])
        return self.widget

    def __repr__(self) -> str:
        rows, columns = self.dictionary.map_size
        return (f"BlocksExplorer of {self.dictionary.layer} ({rows} x {columns} positions, k in {self.ks}; static view: run "
                "the notebook in Jupyter or Colab to click positions — the figures above show the same)")

    def _repr_mimebundle_(self, include=None, exclude=None):
        return widget_or_text(repr(self), lambda: self.widget or self._build_widget())


def blocks_explorer(image: torch.Tensor, dictionary: SemanticDictionary, make_groups: Callable[[int], NeuronGroups],
                    ks: Sequence[int] = (2, 3, 4, 5, 6, 8), k: int | None = None) -> BlocksExplorer:
    """An interactive view of one photo at one layer: click a position, see its dictionary entry; choose k groups.

    ``make_groups(k)`` returns the :class:`NeuronGroups` for k (e.g. ``lambda k: neuron_groups(view, k)``);
    it is called once per k, when first shown.

    >>> blocks_explorer(photo, dictionary, lambda k: neuron_groups(view, k))
    """
    ks = sorted({int(value) for value in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be group counts of at least 1, got {ks}.")
    k = ks[len(ks) // 2] if k is None else int(k)
    if k not in ks:
        raise ValueError(f"k={k} must be one of ks={ks}.")
    if not callable(make_groups):
        raise TypeError("make_groups must be a function k -> NeuronGroups, e.g. lambda k: neuron_groups(view, k).")
    return BlocksExplorer(image, dictionary, make_groups, ks, k)
