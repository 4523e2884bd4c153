"""What an atlas cell means, by attribution: the labelling of Carter et al. (Activation Atlas, Distill 2019).

Every collected vector h is one position p of the layer's map z in one image, *with the image
around it*. The paper attributes it to every class c by gradient x activation at that position,
the rest of the image's activations held as they are:

    a_c(h) = (d logit_c / d z_p) . h_p        (a dot product over the channels)

A cell of the atlas gets the mean attribution of its vectors, and its label is the class with the
largest mean. The course's first labelling, :func:`~nnvis_helpers.atlas.layer_to_logits` of the
cell's mean vector, puts that mean at every position of a grey image instead, so the image around
it is lost; :func:`label_agreement` compares the two.

* :func:`vector_attributions`: a (M, K) for every vector of an ``ActivationSet`` and every class,
  all classes at once with one Jacobian-vector product per vector (not one backward per class).
* :func:`cell_attribution`: the mean attribution of the vectors of each drawn cell.
* :func:`attribution_labels`: each drawn cell's class (or its ``top`` classes).
* :func:`label_agreement`: how often a cell's label is the top-1 class of one of its own images.
* :func:`attribution_focused_vectors`: the vectors with the highest attribution to two classes,
  the paper's class-filtered atlas ("snorkel vs scuba diver").

A spatial mean h (collected with ``positions_per_image="mean"``) is attributed as if it sat at every
position, scaled by 1 / (H W): a_c = (mean over p of d logit_c / d z_p) . h. When the rest of the network
is linear this is the mean of the attributions of all positions, so means and positions share one
scale. A layer without a map (N, C) gets gradient . vector.

>>> activations = collect_activations(model, "blocks.5", images, positions_per_image=4)
>>> attributions = vector_attributions(model, activations, images)   # (M, 1000)
>>> grid = atlas.grid
>>> labels = attribution_labels(grid, attributions)                   # one class per drawn cell
>>> label_agreement(grid, labels, activations.predicted_class)
0.83
"""
from __future__ import annotations

import numbers

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..checks import check_images, check_model, class_scores, known_num_classes
from ..datasets.activations import ActivationSet, _batches, _stream_length
from ..layers import get_layer, preserve_model_state
from .build import AtlasGrid, _positive_int

__all__ = [
    "vector_attributions",
    "cell_attribution",
    "attribution_labels",
    "label_agreement",
    "attribution_focused_vectors",
]

# How far a re-streamed vector may lie from the stored one, as a fraction of the largest stored value of the
# batch. Wide enough for another batch size, another convolution algorithm or TF32 on a GPU; other images
# miss it by far (their vectors differ by about as much as the vectors are large).
_SAME_DATA_TOLERANCE = 1e-2


class _LeafOutput:
    """Forward hook: the layer's output becomes a fresh leaf that requires grad; a clone of it goes on.

    A leaf, so the gradient stops there: what comes before the layer is held as it is. The clone is
    what the next layers see, so an in-place op after the layer (``ReLU(inplace=True)``) changes the
    clone, not the leaf. A layer that runs several times keeps its last call, as ``collect_activations``.
    """

    def __init__(self, layer: str):
        self.layer, self.leaf = layer, None

    def __call__(self, _module, _inputs, output):
        if not isinstance(output, torch.Tensor) or output.dim() not in (2, 4):
            got = f"a tensor of shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(
                f"layer {self.layer!r} gives {got}; vector_attributions needs (N, C, H, W) maps or (N, C) vectors, "
                "as collect_activations does."
            )
        self.leaf = output.detach().requires_grad_(True)
        return self.leaf.clone()


def _class_indices(classes, num_classes: int | None) -> torch.Tensor | None:
    """``classes`` (None, an int, or a list / tensor of ints) as a long tensor (K,), checked against ``num_classes``."""
    if classes is None:
        return None
    if isinstance(classes, numbers.Integral) and not isinstance(classes, bool):
        classes = [int(classes)]
    try:
        tensor = torch.as_tensor(classes)
    except (TypeError, ValueError, RuntimeError):
        tensor = None
    if tensor is None or tensor.dim() != 1 or len(tensor) == 0 or tensor.is_floating_point() or tensor.dtype == torch.bool:
        raise ValueError(
            f"classes must be None (every class), a class index or a list of class indices, got {classes!r}. "
            "imagenet_labels().index('tabby') finds an index by name."
        )
    tensor = tensor.long().cpu()
    _check_classes_exist(tensor, num_classes)
    return tensor


def _check_classes_exist(classes: torch.Tensor | None, num_classes: int | None) -> None:
    if classes is None:
        return
    bad = (classes < 0) if num_classes is None else (classes < 0) | (classes >= num_classes)
    if bool(bad.any()):
        known = "" if num_classes is None else f": this model has {num_classes} classes, indices 0 to {num_classes - 1}"
        raise ValueError(f"class {int(classes[bad][0])} does not exist{known}. Pass class indices in that range.")


def _ranks(image_index: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """For every vector, how many vectors of the same image come before it (0, 1, 2 ...)."""
    _, counts = torch.unique_consecutive(image_index[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(len(order)) - torch.repeat_interleave(starts, counts)
    return ranks


def _vectors_at(maps: torch.Tensor, image: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The vectors (R, C) at ``positions`` (R, 2) of the maps (B, C, H, W) of ``image`` (R,); (-1, -1): the spatial mean."""
    if maps.dim() == 2:
        return maps[image].float()
    vectors = torch.empty(len(image), maps.shape[1], device=maps.device)
    mean = positions[:, 0] < 0
    vectors[mean] = maps[image[mean]].float().mean(dim=(2, 3))
    at = ~mean
    vectors[at] = maps[image[at], :, positions[at, 0], positions[at, 1]].float()
    return vectors


def _tangent(maps: torch.Tensor, image: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The direction of a Jacobian-vector product: each vector where it came from, zero elsewhere.

    At most one vector per image. A spatial mean h goes to every position as h / (H W), so its
    product is (mean over p of d logit / d z_p) . h; a layer without a map takes the vector as it is.
    """
    tangent = torch.zeros_like(maps)
    if maps.dim() == 2:
        tangent[image] = maps[image]
        return tangent
    mean = positions[:, 0] < 0
    means = maps[image[mean]].mean(dim=(2, 3), keepdim=True)
    tangent[image[mean]] = (means / (maps.shape[2] * maps.shape[3])).expand(-1, -1, *maps.shape[2:])
    at = ~mean
    rows, columns = positions[at, 0], positions[at, 1]
    tangent[image[at], :, rows, columns] = maps[image[at], :, rows, columns]
    return tangent


def _batch_attributions(
    model: nn.Module, hook: _LeafOutput, images: torch.Tensor, activations: ActivationSet, rows: torch.Tensor,
    first_image: int, ranks: torch.Tensor, classes: torch.Tensor | None,
) -> torch.Tensor:
    """Attributions (R, K) of the vectors ``rows`` of ``activations``, whose images are this batch."""
    image = activations.image_index[rows] - first_image
    positions = activations.positions[rows]
    hook.leaf = None
    with torch.enable_grad():
        logits = class_scores(model(images))
        maps = hook.leaf
        if maps is None:
            raise ValueError(
                f"layer {hook.layer!r} never ran during the forward pass: model.forward does not use it. "
                "Give the model the activations were collected from."
            )
        map_size = tuple(maps.shape[2:]) if maps.dim() == 4 else (1, 1)
        if map_size != tuple(activations.map_size):
            raise ValueError(
                f"layer {hook.layer!r} gives a {map_size} map on these images but the activations come from a "
                f"{tuple(activations.map_size)} map: the data is not the data these activations were collected from. "
                "Pass the same dataset, at the same image size, that collect_activations got."
            )
        _check_classes_exist(classes, logits.shape[1])
        if classes is not None:
            logits = logits[:, classes.to(logits.device)]
        stored = activations.vectors[rows].to(maps.device)
        difference = float((_vectors_at(maps.detach(), image.to(maps.device), positions.to(maps.device)) - stored).abs().max())
        if not difference <= _SAME_DATA_TOLERANCE * float(stored.abs().max()) + 1e-5:
            raise ValueError(
                f"the data is not the data these activations were collected from: images {first_image} to "
                f"{first_image + len(images) - 1} give vectors that differ from the stored ones by up to {difference:.3g}. "
                "Pass the same dataset, in the same order and without shuffling or random augmentation, that "
                "collect_activations got (the same model and layer too)."
            )
        # The double-backward trick: g(u) = J^T u is linear in u, so the gradient of <g(u), t> with respect
        # to u is J t, the products (d logit_c / d z) . t of every class c at once. One backward builds g;
        # then each tangent costs one more backward through g's graph, whatever the number of classes.
        probe = torch.zeros_like(logits, requires_grad=True)
        (pullback,) = torch.autograd.grad(logits, hook.leaf, probe, create_graph=True, allow_unused=True)
        if pullback is None or not pullback.requires_grad:
            raise ValueError(
                f"the class scores do not depend on layer {hook.layer!r} (no gradient flows back to it); "
                "pick a layer on the path from the image to the output."
            )
        rank = ranks[rows]
        result = torch.empty(len(rows), logits.shape[1])
        slots = int(rank.max()) + 1
        try:
            for slot in range(slots):  # one vector per image and slot, so one tangent holds a whole batch's slot
                pick = rank == slot
                picked_image = image[pick].to(maps.device)
                tangent = _tangent(maps.detach(), picked_image, positions[pick].to(maps.device))
                (products,) = torch.autograd.grad(pullback, probe, tangent, retain_graph=slot < slots - 1)
                result[pick] = products[picked_image].float().cpu()
        except RuntimeError as error:
            if "not implemented" not in str(error):
                raise
            # PyTorch has no second derivative for a few ops ("derivative for aten::hardsigmoid_backward is not
            # implemented": MobileNet-V3's squeeze-excitation blocks), so the trick above fails there.
            del pullback, probe, logits
            result = _per_class_attributions(model, hook, images, image, positions, classes)
    return result


def _per_class_attributions(
    model: nn.Module, hook: _LeafOutput, images: torch.Tensor, image: torch.Tensor, positions: torch.Tensor,
    classes: torch.Tensor | None,
) -> torch.Tensor:
    """The same attributions (R, K) with one backward pass per class and no second derivative (slower for many classes).

    The gradient g = d logit_c / d z, taken where each vector sat (at its position, or its spatial mean for a
    mean vector), dotted with the vector: what the Jacobian-vector product of ``_tangent`` gives.
    """
    hook.leaf = None
    logits = class_scores(model(images))  # a fresh graph: the failed second backward may have freed the first one
    if classes is not None:
        logits = logits[:, classes.to(logits.device)]
    maps = hook.leaf
    image, positions = image.to(maps.device), positions.to(maps.device)
    vectors = _vectors_at(maps.detach(), image, positions)
    result = torch.empty(len(image), logits.shape[1])
    for column in range(logits.shape[1]):
        # eval mode: image i's logit depends on image i alone, so the gradient of the batch's sum is each image's own
        (gradient,) = torch.autograd.grad(logits[:, column].sum(), maps, retain_graph=column < logits.shape[1] - 1)
        result[:, column] = (_vectors_at(gradient, image, positions) * vectors).sum(dim=1).float().cpu()
    return result


def vector_attributions(
    model: nn.Module,
    activations: ActivationSet,
    data,
    batch_size: int = 32,
    classes=None,
    progress: bool = True,
) -> torch.Tensor:
    """Attribution (M, K) of every vector of ``activations`` to every class: gradient x activation at its position.

    a[i, c] = (d logit_c / d z_p) . h_i, where h_i sat at position p of image x in the layer's map
    z and the rest of z is held as it is (Carter et al. 2019). ``data`` must be what
    :func:`collect_activations` streamed (its item i is image i; items (image, label) or image):
    its images go through the model again in batches, and a vector that does not come back as it
    was stored raises an error. ``classes``: None for every class (K = all of them), or a list of
    K class indices, the columns in that order. All classes come from one Jacobian-vector product
    per vector, not one backward pass per class. Eval mode; the model is given back as it was;
    runs on the model's device; returns float32 on the CPU.

    >>> activations = collect_activations(model, "blocks.5", images, positions_per_image=4)
    >>> attributions = vector_attributions(model, activations, images)
    >>> attributions.shape  # (vectors, 1000 classes)
    torch.Size([2048, 1000])
    """
    from tqdm.auto import tqdm

    if not isinstance(activations, ActivationSet):
        raise TypeError(
            f"activations must be the ActivationSet that collect_activations() returned, got {type(activations).__name__}."
        )
    module = get_layer(model, activations.layer)  # an unknown name lists the closest ones
    device, dtype = check_model(model)
    batch_size = _positive_int(batch_size, "batch_size")
    classes = _class_indices(classes, known_num_classes(model))
    count, num_images = len(activations), activations.num_images
    if count == 0:
        raise ValueError("the ActivationSet holds no vectors: collect some first (collect_activations).")
    if int(activations.image_index.min()) < 0 or int(activations.image_index.max()) >= num_images:
        raise ValueError(
            f"the ActivationSet's image_index runs from {int(activations.image_index.min())} to "
            f"{int(activations.image_index.max())} but it says it holds {num_images} images: it was not made by "
            "collect_activations (or its num_images was changed)."
        )
    length = _stream_length(data)
    if length is not None and length < num_images:
        raise ValueError(
            f"the data holds {length} images but the activations were collected from {num_images}: pass the same "
            "dataset that collect_activations got."
        )
    if isinstance(data, Dataset) and length is not None and length > num_images:
        data = Subset(data, range(num_images))  # the rest was never collected: do not load it
    order = torch.argsort(activations.image_index, stable=True)
    sorted_images = activations.image_index[order]
    ranks = _ranks(activations.image_index, order)
    result, done = None, 0
    hook = _LeafOutput(activations.layer)
    with preserve_model_state(model):
        for parameter in model.parameters():
            # Only the layer's output needs a gradient: the layers before it record no graph, no weight gradient is made.
            parameter.requires_grad_(False)
        handle = module.register_forward_hook(hook)
        bar = tqdm(total=num_images, desc=f"attribute {activations.layer}", unit="image", disable=not progress)
        try:
            for images, _labels in _batches(data, batch_size, 0, pin_memory=False):
                images = check_images(images[: num_images - done], "a batch of the data")
                if tuple(images.shape[2:]) != tuple(activations.image_size):
                    raise ValueError(
                        f"the data has images of {tuple(images.shape[2:])} pixels, the activations were collected on "
                        f"{tuple(activations.image_size)}: the data is not the data these activations were collected from."
                    )
                first, last = torch.searchsorted(sorted_images, torch.tensor([done, done + len(images)])).tolist()
                if last > first:  # a batch without kept vectors (a subset) needs no pass at all
                    rows = order[first:last]
                    values = _batch_attributions(model, hook, images.to(device=device, dtype=dtype), activations, rows,
                                                 done, ranks, classes)
                    if result is None:
                        result = torch.zeros(count, values.shape[1])
                    result[rows] = values
                done += len(images)
                bar.update(len(images))
                if done >= num_images:
                    break
        finally:
            handle.remove()
            hook.leaf = None
            bar.close()
    if done < num_images:
        raise ValueError(
            f"the data gave {done} images but the activations were collected from {num_images}: pass the same "
            "dataset that collect_activations got."
        )
    return result


def _check_attributions(grid: AtlasGrid, attributions) -> torch.Tensor:
    if not isinstance(grid, AtlasGrid):
        raise TypeError(f"grid must be an AtlasGrid (grid_cells() or atlas.grid), got {type(grid).__name__}.")
    if not isinstance(attributions, torch.Tensor) or attributions.dim() != 2 or len(attributions) != len(grid.cell_of):
        shape = tuple(attributions.shape) if isinstance(attributions, torch.Tensor) else type(attributions).__name__
        raise ValueError(
            f"attributions must be (vectors, classes) with one row per vector of the grid ({len(grid.cell_of)}), "
            f"got {shape}: pass what vector_attributions() returned for the vectors the grid was made from."
        )
    if not bool(torch.isfinite(attributions).all()):
        raise ValueError("attributions hold NaN or infinite values; check the model's outputs for NaN.")
    return attributions.detach().cpu()


def _drawn_cell_index(grid: AtlasGrid) -> torch.Tensor:
    """For every vector (M,), the index of its cell in ``grid.cells``, or -1 where the cell is not drawn."""
    cells = grid.cells
    lookup = torch.full((grid.grid_size * grid.grid_size,), -1, dtype=torch.long)
    lookup[cells[:, 0] * grid.grid_size + cells[:, 1]] = torch.arange(len(cells))
    return lookup[grid.cell_of[:, 0] * grid.grid_size + grid.cell_of[:, 1]]


def cell_attribution(grid: AtlasGrid, attributions: torch.Tensor) -> torch.Tensor:
    """Mean attribution (K_cells, classes) of the vectors in each drawn cell, in ``grid.cells`` order.

    ``attributions`` (M, classes): what :func:`vector_attributions` returned for the vectors the grid
    was made from.

    >>> per_cell = cell_attribution(atlas.grid, attributions)  # row k belongs to atlas.cells[k]
    """
    attributions = _check_attributions(grid, attributions)
    index = _drawn_cell_index(grid)
    drawn = index >= 0
    cells = len(grid.cells)
    sums = torch.zeros(cells, attributions.shape[1], dtype=torch.float64)
    sums.index_add_(0, index[drawn], attributions[drawn].double())
    counts = torch.bincount(index[drawn], minlength=cells).clamp(min=1)
    return (sums / counts[:, None]).float()


def attribution_labels(grid: AtlasGrid, attributions: torch.Tensor, top: int = 1) -> torch.Tensor:
    """The class of each drawn cell, the largest mean attribution: (K_cells,), or (K_cells, top) best first.

    The labels index the columns of ``attributions``: when :func:`vector_attributions` got
    ``classes=``, ``classes[label]`` is the model's class.

    >>> labels = attribution_labels(atlas.grid, attributions)
    >>> [imagenet_labels()[k] for k in labels[:3]]
    """
    per_cell = cell_attribution(grid, attributions)
    if isinstance(top, bool) or not isinstance(top, numbers.Integral) or not 1 <= top <= per_cell.shape[1]:
        raise ValueError(f"top must be an int from 1 to the number of classes ({per_cell.shape[1]}), got {top!r}.")
    return per_cell.argmax(dim=1) if top == 1 else per_cell.topk(int(top), dim=1).indices


def label_agreement(grid: AtlasGrid, labels_per_cell, predicted_class) -> float:
    """Fraction of drawn cells whose label is the network's top-1 class of at least one of the cell's own images.

    ``labels_per_cell`` (K_cells,) classes in ``grid.cells`` order (from :func:`attribution_labels`
    or ``layer_to_logits(...).argmax(1)``); (K_cells, top) counts a cell when any of its labels
    matches. ``predicted_class`` (M,): ``activations.predicted_class`` (an ActivationSet works too).

    >>> label_agreement(grid, attribution_labels(grid, attributions), activations.predicted_class)
    0.83
    """
    if not isinstance(grid, AtlasGrid):
        raise TypeError(f"grid must be an AtlasGrid (grid_cells() or atlas.grid), got {type(grid).__name__}.")
    if isinstance(predicted_class, ActivationSet):
        predicted_class = predicted_class.predicted_class
        if predicted_class is None:
            raise ValueError("these activations were collected with predictions=False; collect them with predictions=True.")
    cells = len(grid.cells)
    if cells == 0:
        raise ValueError("the grid draws no cell: lower min_count or collect more vectors.")
    labels = torch.as_tensor(labels_per_cell).cpu()
    predicted = torch.as_tensor(predicted_class).cpu()
    if labels.is_floating_point() or labels.dim() not in (1, 2) or len(labels) != cells:
        raise ValueError(
            f"labels_per_cell must be class indices (K_cells,) or (K_cells, top) for the {cells} drawn cells, "
            f"got {labels.dtype} {tuple(labels.shape)}."
        )
    if predicted.is_floating_point() or predicted.shape != (len(grid.cell_of),):
        raise ValueError(
            f"predicted_class must be one class index per vector ({len(grid.cell_of)},), got {predicted.dtype} "
            f"{tuple(predicted.shape)}: pass activations.predicted_class."
        )
    index = _drawn_cell_index(grid)
    drawn = index >= 0
    cell_labels = labels.long().reshape(cells, -1)[index[drawn]]  # (vectors in drawn cells, top)
    matches = (cell_labels == predicted.long()[drawn, None]).any(dim=1)
    agrees = torch.zeros(cells, dtype=torch.bool)
    agrees[index[drawn][matches]] = True
    return float(agrees.float().mean())


def attribution_focused_vectors(
    attributions: torch.Tensor, classes: tuple[int, int], keep: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The vectors most attributed to two classes: indices (K,) and attribution(a) - attribution(b) (K,).

    The ``keep`` vectors with the highest attribution to class a and the ``keep`` ones for class b
    (their union, each once, sorted), as the paper filters its class atlases ("snorkel vs scuba
    diver"); default keep: a tenth of the vectors, at least 5. The difference says which class a
    kept vector leans to. Classes index the columns of ``attributions``. Lay the kept vectors out
    and draw their atlas to compare the two classes.

    >>> kept, lean = attribution_focused_vectors(attributions, (tabby, tiger_cat), keep=300)
    """
    if not isinstance(attributions, torch.Tensor) or attributions.dim() != 2 or len(attributions) == 0:
        shape = tuple(attributions.shape) if isinstance(attributions, torch.Tensor) else type(attributions).__name__
        raise ValueError(f"attributions must be (vectors, classes), as vector_attributions() returns, got {shape}.")
    if not isinstance(classes, (tuple, list)) or len(classes) != 2:
        raise ValueError(f"classes must be a pair of class indices (a, b), got {classes!r}.")
    for index in classes:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= index < attributions.shape[1]:
            raise ValueError(
                f"class {index!r} does not exist: the attributions have {attributions.shape[1]} classes (columns)."
            )
    first, second = (int(index) for index in classes)
    attributions = attributions.detach().cpu()
    keep = max(5, len(attributions) // 10) if keep is None else _positive_int(keep, "keep", 5)
    keep = min(keep, len(attributions))
    chosen = torch.cat([attributions[:, first].topk(keep).indices, attributions[:, second].topk(keep).indices]).unique()
    return chosen, attributions[chosen, first] - attributions[chosen, second]
