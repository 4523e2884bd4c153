"""Building an activation atlas: the grid of cells, one icon per cell, and what a cell means.

* :func:`grid_cells`: cut the 2-D layout into ``grid_size`` x ``grid_size`` cells and average the
  activation vectors that fall into each (their mean and count).
* :func:`render_icons`: a feature visualization of every cell's mean, **all in one batched
  optimization** (``featurevis.direction`` with a matrix: image b is pulled towards row b).
* :func:`activation_atlas`: layout + grid + icons in one call, returning an :class:`Atlas`.
* :func:`layer_to_logits`: what the rest of the network makes of a vector, by putting it at
  every position of the layer and running the layers after it (the class view of the atlas).
* :func:`project`: place photos (a photo and its adversarial versions, say) on the atlas.
* :func:`icon_faithfulness`: do the icons really produce the activation of their cell?
* :func:`class_focused_vectors`: the vectors that push two classes most (the "snorkel vs scuba"
  view of the paper).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
from torch import nn

from ..config import pick
from ..layers import _first_tensor, _model_device, capture_activations, get_layer, preserve_model_state
from .layout import Layout, _as_matrix, layout, whitening_matrix

__all__ = [
    "AtlasGrid",
    "Atlas",
    "IconCheck",
    "grid_cells",
    "render_icons",
    "activation_atlas",
    "layer_to_logits",
    "activations_at",
    "project",
    "icon_faithfulness",
    "class_focused_vectors",
    "icon_settings",
    "icon_transforms",
]


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


@dataclass
class AtlasGrid:
    """The layout cut into ``grid_size`` x ``grid_size`` cells.

    ``means`` (G, G, C): mean activation vector of each cell (zeros where empty);
    ``counts`` (G, G): how many vectors fell into it; ``cell_of`` (M, 2): the (row, column) of
    every vector; ``cells`` (K, 2): the cells with at least ``min_count`` vectors, the ones an
    atlas draws, row by row. Row 0 is the top of the map (small y), as in an image.
    """

    grid_size: int
    means: torch.Tensor
    counts: torch.Tensor
    cell_of: torch.Tensor
    min_count: int

    @property
    def cells(self) -> torch.Tensor:
        return (self.counts >= self.min_count).nonzero()

    @property
    def directions(self) -> torch.Tensor:
        """The mean vectors (K, C) of :attr:`cells`, in the same order."""
        cells = self.cells
        return self.means[cells[:, 0], cells[:, 1]]

    def members(self, row: int, column: int) -> torch.Tensor:
        """Indices of the vectors that fell into cell (row, column)."""
        return ((self.cell_of[:, 0] == row) & (self.cell_of[:, 1] == column)).nonzero().flatten()


def grid_cells(coords, vectors, grid_size: int = 20, min_count: int = 3) -> AtlasGrid:
    """Cut 2-D positions (M, 2) in [0, 1] into a grid; mean and count of the vectors (M, C) per cell.

    A point at x = 1 belongs to the last column, not outside. Cells with fewer than
    ``min_count`` vectors stay empty in the atlas (their mean is too noisy to draw).

    >>> grid = grid_cells(atlas_layout.coords, activations.vectors, grid_size=20)
    >>> grid.counts.sum() == len(activations.vectors)
    """
    grid_size = _positive_int(grid_size, "grid_size")
    min_count = _positive_int(min_count, "min_count")
    coords = coords.coords if isinstance(coords, Layout) else coords
    coords = torch.as_tensor(coords, dtype=torch.float64)
    matrix = torch.from_numpy(_as_matrix(vectors))
    if coords.dim() != 2 or coords.shape[1] != 2 or len(coords) != len(matrix):
        raise ValueError(
            f"need one 2-D position per vector: got positions {tuple(coords.shape)} for {len(matrix)} vectors."
        )
    if coords.min() < 0 or coords.max() > 1:
        raise ValueError("positions must lie in the unit square [0, 1]^2, as layout() returns them.")
    column = (coords[:, 0] * grid_size).long().clamp(max=grid_size - 1)
    row = (coords[:, 1] * grid_size).long().clamp(max=grid_size - 1)
    flat = row * grid_size + column
    channels = matrix.shape[1]
    sums = torch.zeros(grid_size * grid_size, channels, dtype=torch.float64).index_add_(0, flat, matrix.double())
    counts = torch.bincount(flat, minlength=grid_size * grid_size)
    means = (sums / counts.clamp(min=1).unsqueeze(1)).float()
    return AtlasGrid(grid_size=grid_size, means=means.view(grid_size, grid_size, channels),
                     counts=counts.view(grid_size, grid_size), cell_of=torch.stack([row, column], 1),
                     min_count=min_count)


def icon_transforms(icon_size: int):
    """Light robustness transforms for small icons: Lucid's standard set, scaled to the icon's size.

    The result is resized back to ``icon_size``: networks built for one input size (a ViT, a
    classifier with a Flatten + Linear head) see the size they expect, and the centre neuron
    stays the centre.
    """
    from ..featurevis import compose, jitter, pad, random_rotate, random_scale, resize

    shift = max(1, icon_size // 16)
    return compose(pad(shift), jitter(shift), random_scale([0.95, 1.0, 1.05]), random_rotate(range(-5, 6)),
                   jitter(max(1, shift // 2)), resize(icon_size))


def _layer_output(model: nn.Module, layer: str, images: torch.Tensor) -> torch.Tensor:
    """The output of ``layer`` for ``images``, in eval mode and without gradients; the model given back as it was."""
    with preserve_model_state(model), torch.no_grad():
        with capture_activations(model, layer) as acts:
            model(images.to(_model_device(model)))
    tensor = acts.get(layer)
    if tensor is None or tensor.dim() not in (2, 4):
        raise ValueError(f"layer {layer!r} gave no (N, C, H, W) or (N, C) tensor in a forward pass; pick another layer.")
    return tensor


def _map_size(model: nn.Module, layer: str, image_size: int) -> tuple[int, ...]:
    return tuple(_layer_output(model, layer, torch.full((1, 3, image_size, image_size), 0.5)).shape[1:])


def icon_settings() -> tuple[int, int]:
    """The preset's icon size in pixels and optimization steps: (40, 64) fast, (56, 256) cpu, (80, 512) full."""
    return pick(fast=(40, 64), cpu=(56, 256), full=(80, 512))


def render_icons(
    model: nn.Module,
    layer: str,
    directions: torch.Tensor,
    icon_size: int | None = None,
    steps: int | None = None,
    cosine_power: float = 1.0,
    whitening: torch.Tensor | None = None,
    batch_size: int | None = None,
    transforms="auto",
    lr: float = 0.05,
    seed: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """One feature visualization per direction (K, C) of ``layer``: icons (K, 3, S, S) in [0, 1].

    The model runs in eval mode and is given back as it was. Each icon maximizes dot x cosine^p with its own direction at the centre neuron of the layer
    (Carter et al. 2019), all icons of a batch in one optimization. ``whitening`` (a (C, C)
    matrix from :func:`whitening_matrix`) renders ``direction @ whitening``, as the paper does.
    ``batch_size=None`` renders all K icons in one batch. Defaults follow the course preset
    (fast 40 px / 64 steps, cpu 56 px / 256 steps, full 80 px / 512 steps: the
    settings of notebook 06).

    >>> icons = render_icons(model, "blocks.5", grid.directions)
    """
    from ..featurevis import direction, render

    default_size, default_steps = icon_settings()
    icon_size = default_size if icon_size is None else _positive_int(icon_size, "icon_size", 8)
    steps = default_steps if steps is None else _positive_int(steps, "steps")
    matrix = torch.from_numpy(_as_matrix(directions, "directions"))
    if len(matrix) == 0:
        raise ValueError("no directions to render: the grid has no cell with enough vectors; lower min_count.")
    if whitening is not None:
        whitening = torch.as_tensor(whitening, dtype=torch.float32)
        if whitening.shape != (matrix.shape[1], matrix.shape[1]):
            raise ValueError(f"whitening must be ({matrix.shape[1]}, {matrix.shape[1]}), got {tuple(whitening.shape)}.")
        matrix = matrix @ whitening
    batch_size = len(matrix) if batch_size is None else _positive_int(batch_size, "batch_size")
    shape = _map_size(model, layer, icon_size)
    if len(shape) == 3:
        if shape[0] != matrix.shape[1]:
            raise ValueError(f"the directions have {matrix.shape[1]} entries but layer {layer!r} has {shape[0]} channels.")
        centre = {"x": shape[2] // 2, "y": shape[1] // 2}
    else:
        centre = {}
    transform = icon_transforms(icon_size) if transforms == "auto" else transforms
    icons = []
    with preserve_model_state(model):
        for chunk in matrix.split(batch_size):
            objective = direction(layer, chunk, cosine_power=cosine_power, **centre)
            icons.append(render(model, objective, steps=steps, image_size=icon_size, batch_size=len(chunk),
                                transforms=transform, lr=lr, seed=seed, progress=progress))
    return torch.cat(icons).cpu()


@dataclass
class Atlas:
    """An activation atlas of one layer: layout, grid, one icon per drawn cell.

    ``icons[k]`` belongs to cell ``grid.cells[k]``; ``activations`` is what it was made from
    (an ``ActivationSet``: re-read a cell's dataset images from it).
    """

    layer: str
    layout: Layout
    grid: AtlasGrid
    icons: torch.Tensor
    activations: object = None
    image_size: int = 224

    @property
    def cells(self) -> torch.Tensor:
        return self.grid.cells

    def index_of(self, row: int, column: int) -> int | None:
        """The icon index of cell (row, column), or None if that cell is empty."""
        match = ((self.cells[:, 0] == row) & (self.cells[:, 1] == column)).nonzero().flatten()
        return int(match[0]) if len(match) else None


def _image_size(activations) -> int:
    size = getattr(activations, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def activation_atlas(
    model: nn.Module,
    activations,
    grid_size: int | None = None,
    min_count: int = 3,
    atlas_layout: Layout | str = "auto",
    whiten: bool = True,
    icon_size: int | None = None,
    steps: int | None = None,
    cosine_power: float = 1.0,
    batch_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
    verbose: bool = True,
) -> Atlas:
    """An activation atlas (Carter et al. 2019) from collected activations: layout, grid and icons.

    ``activations``: what ``collect_activations`` returned (an ``ActivationSet``).
    ``atlas_layout``: a :class:`Layout` already made, or a method name for :func:`layout`.
    ``whiten``: render each cell's mean times the inverse correlation of all vectors (the
    paper's choice; the grid and the class view use the plain means).
    Grid size defaults to the preset (fast 8, cpu 12, full 20).

    >>> activations = collect_activations(model, "blocks.5", dataset("offline", length=2000))
    >>> atlas = activation_atlas(model, activations)
    >>> fig = draw_atlas(atlas)
    """
    layer = getattr(activations, "layer", None)
    if not isinstance(layer, str):
        raise TypeError("activations must be what collect_activations() returned (it knows its layer).")
    get_layer(model, layer)  # a clear error now, before minutes of work, if it is another model's layer
    grid_size = pick(fast=8, cpu=12, full=20) if grid_size is None else grid_size
    if not isinstance(atlas_layout, Layout):
        atlas_layout = layout(activations.vectors, method=atlas_layout, seed=seed, verbose=verbose)
    if len(atlas_layout) != len(activations.vectors):
        raise ValueError(f"the layout has {len(atlas_layout)} points but there are {len(activations.vectors)} vectors.")
    grid = grid_cells(atlas_layout.coords, activations.vectors, grid_size, min_count)
    whitening = whitening_matrix(activations.vectors) if whiten else None
    icons = render_icons(model, layer, grid.directions, icon_size=icon_size, steps=steps, cosine_power=cosine_power,
                         whitening=whitening, batch_size=batch_size, seed=seed, progress=progress)
    return Atlas(layer=layer, layout=atlas_layout, grid=grid, icons=icons, activations=activations,
                 image_size=_image_size(activations))


def layer_to_logits(
    model: nn.Module,
    layer: str,
    vectors: torch.Tensor,
    image_size: int = 224,
    batch_size: int = 32,
) -> torch.Tensor:
    """Logits (K, classes) the network gives when every position of ``layer`` holds vector k.

    The rest of the network runs exactly as it is (a forward hook replaces the layer's output
    with the vector repeated over the whole map; the layers before it see a grey image and
    their result is thrown away). In eval mode, without gradients; the model is given back as
    it was. This is how the atlas labels a cell with the class its mean pushes up most.

    >>> logits = layer_to_logits(model, "blocks.5", grid.directions)
    """
    module = get_layer(model, layer)
    matrix = torch.from_numpy(_as_matrix(vectors))
    batch_size = _positive_int(batch_size, "batch_size")
    device = _model_device(model)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    chunk_holder: dict[str, torch.Tensor] = {}

    def replace(_module, _inputs, output):
        tensor = _first_tensor(output)
        if not isinstance(output, torch.Tensor) or tensor.dim() not in (2, 4):
            raise ValueError(
                f"layer {layer!r} outputs {type(output).__name__} of shape "
                f"{None if tensor is None else tuple(tensor.shape)}; layer_to_logits needs an (N, C, H, W) or "
                "(N, C) tensor."
            )
        chunk = chunk_holder["chunk"].to(device=tensor.device, dtype=tensor.dtype)
        if chunk.shape[1] != tensor.shape[1]:
            raise ValueError(f"the vectors have {chunk.shape[1]} entries but layer {layer!r} has {tensor.shape[1]} channels.")
        return chunk[:, :, None, None].expand_as(tensor).contiguous() if tensor.dim() == 4 else chunk

    outputs = []
    with preserve_model_state(model), torch.no_grad():
        handle = module.register_forward_hook(replace)
        try:
            for chunk in matrix.split(batch_size):
                chunk_holder["chunk"] = chunk
                grey = torch.full((len(chunk), 3, image_size, image_size), 0.5, device=device, dtype=dtype)
                output = _first_tensor(model(grey))
                outputs.append(output.float().cpu())
        finally:
            handle.remove()
    return torch.cat(outputs)


def activations_at(model: nn.Module, layer: str, images: torch.Tensor, position="centre") -> torch.Tensor:
    """Activation vectors (N, C) of ``layer`` for images (N, 3, H, W): at the centre, a (row, column), or the mean.

    >>> vectors = activations_at(model, "blocks.5", load_image("chelsea"))
    """
    from ..checks import check_images

    tensor = _layer_output(model, layer, check_images(images))
    if tensor.dim() == 2:
        return tensor.float().cpu()
    if position in ("centre", "center"):
        return tensor[:, :, tensor.shape[2] // 2, tensor.shape[3] // 2].float().cpu()
    if position == "mean":
        return tensor.mean((2, 3)).float().cpu()
    row, column = position
    if not (0 <= row < tensor.shape[2] and 0 <= column < tensor.shape[3]):
        raise ValueError(f"position {position} is outside the {tensor.shape[2]}x{tensor.shape[3]} map of {layer!r}.")
    return tensor[:, :, row, column].float().cpu()


def project(base, model: nn.Module, images: torch.Tensor, position="centre", layer: str | None = None) -> torch.Tensor:
    """Where images (N, 3, H, W) land on an atlas or a layout: positions (N, 2) in the unit square.

    The activation of each image at the layer (centre position by default; ``"mean"`` for the
    spatial mean, as the vectors were collected) is placed with the layout's ``transform``.
    ``base`` is an :class:`Atlas`, or a :class:`Layout` together with ``layer=``. Give the images
    at the size the vectors were collected at.

    >>> path = project(atlas, model, torch.cat([photo, *adversarial_steps]))
    """
    if isinstance(base, Atlas):
        fitted, layer = base.layout, base.layer
    elif isinstance(base, Layout):
        if not isinstance(layer, str):
            raise TypeError("project onto a Layout needs the layer its vectors came from: layer='conv_head', say.")
        fitted = base
    else:
        raise TypeError(f"project places images on an Atlas or a Layout, got {type(base).__name__}.")
    return fitted.transform(activations_at(model, layer, images, position))


@dataclass
class IconCheck:
    """How faithful the icons are: fed back through the model, which cell does each icon's activation match best?

    ``best_cell`` (K, 2): the cell whose mean has the highest cosine similarity with icon k's
    activation (centre neuron); ``own_rate``: fraction of icons whose best cell is their own;
    ``neighbour_rate``: their own or one of its eight neighbours.
    """

    own_rate: float
    neighbour_rate: float
    best_cell: torch.Tensor
    similarity: torch.Tensor


def icon_faithfulness(model: nn.Module, atlas: Atlas) -> IconCheck:
    """Feed every icon back through ``model`` and rank all cells by cosine similarity with its activation.

    >>> check = icon_faithfulness(model, atlas); check.neighbour_rate
    0.96
    """
    icon_vectors = activations_at(model, atlas.layer, atlas.icons, "centre")
    means = atlas.grid.directions
    similarity = torch.nn.functional.normalize(icon_vectors, dim=1) @ torch.nn.functional.normalize(means, dim=1).T
    cells = atlas.cells
    best_cell = cells[similarity.argmax(1)]
    distance = (best_cell - cells).abs().max(1).values
    return IconCheck(own_rate=float((distance == 0).float().mean()), neighbour_rate=float((distance <= 1).float().mean()),
                     best_cell=best_cell, similarity=similarity)


def class_focused_vectors(
    model: nn.Module,
    activations,
    classes: tuple[int, int],
    keep: int | None = None,
    batch_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The vectors that push two classes most: indices (K,) and their logit difference (K,).

    Every vector goes through the rest of the network (:func:`layer_to_logits`); the ``keep``
    vectors with the highest logit for each class are kept (the paper filters by attribution to
    the class in the same spirit). The difference logit(a) - logit(b) says which class a vector
    leans to. Lay the kept vectors out and draw their atlas to compare the two classes.

    >>> kept, lean = class_focused_vectors(model, activations, (tabby, tiger_cat), keep=300)
    """
    first, second = classes
    logits = layer_to_logits(model, activations.layer, activations.vectors, _image_size(activations), batch_size)
    for index in classes:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= index < logits.shape[1]:
            raise ValueError(f"class {index!r} does not exist: the model has {logits.shape[1]} classes.")
    keep = max(5, len(logits) // 10) if keep is None else _positive_int(keep, "keep", 5)
    keep = min(keep, len(logits))
    chosen = torch.cat([logits[:, first].topk(keep).indices, logits[:, second].topk(keep).indices]).unique()
    return chosen, (logits[chosen, first] - logits[chosen, second])
