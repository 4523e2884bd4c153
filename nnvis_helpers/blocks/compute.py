"""The computations of the building blocks (Olah et al., Distill 2018): one photo, seen through one layer.

The paper combines three pieces, activations, attribution and grouping, into interfaces. The
computations, one function each (the drawings live in the notebook and the plotting helpers):

* :func:`layer_view`: the activations (C, H, W) of one layer for one photo.
* :func:`semantic_dictionary`: at each position, the k most active channels, with an icon each
  (channel icons rendered once per channel and kept in an :class:`IconCache`).
* :func:`activation_grid`: one icon per position (or pooled cell), rendered with the direction
  objective of that position's own activation vector, all icons in one batched render;
  :func:`grid_alignment` checks each icon really produces its own cell's vector.
* :func:`spatial_attribution`: integrated gradients (Sundararajan et al. 2017) on the units of a
  layer, from the zero activation, towards a class logit or a later layer's scalar
  (:class:`LayerTarget`): how much each unit contributes.
* :func:`neuron_groups`: non-negative matrix factorization of the activations into k groups of
  channels with a spatial map each; :func:`group_attribution` splits an attribution among them.
* :func:`information_flow`: how the groups of one layer feed the groups of a later layer and
  the classes.

Every helper that takes a model runs it in eval mode and gives it back as it found it.

>>> view = layer_view(model, load_image("chelsea"), "blocks.4")
>>> groups = neuron_groups(layer_view(model, load_image("chelsea"), "blocks.4.0.bn1"), k=6)
"""
from __future__ import annotations

import numbers
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..atlas import activations_at, icon_settings, render_icons
from ..atlas.build import _map_size, _positive_int
from ..attribution import (
    _check_batch_size,
    _check_method,
    _check_steps,
    _progress,
    _replace_output,
    integration_points,
)
from ..channels.crops import layer_maps
from ..featurevis.redirect import redirected_relu6
from ..checks import check_images, check_model, check_number, check_target, class_scores, known_num_classes
from ..layers import _first_tensor, _StopForward, capture_activations, get_layer, preserve_model_state

__all__ = [
    "LayerView",
    "layer_view",
    "IconCache",
    "SemanticDictionary",
    "semantic_dictionary",
    "ActivationGrid",
    "activation_grid",
    "grid_alignment",
    "LayerTarget",
    "spatial_attribution",
    "NeuronGroups",
    "neuron_groups",
    "group_attribution",
    "Flow",
    "information_flow",
]


# ----------------------------------------------------------------------------- one photo, one layer


def _one_image(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """``image`` (3, S, S) or (1, 3, S, S) in [0, 1] -> (1, 3, S, S), detached, on the model's device and dtype."""
    device, dtype = check_model(model)
    if isinstance(image, torch.Tensor) and image.dim() == 3:
        image = image.unsqueeze(0)
    check_images(image, name="image")
    if len(image) != 1:
        raise ValueError(
            f"this helper looks at one photo, got a batch of {len(image)} images (shape {tuple(image.shape)}); "
            "pass image[i] or image[i:i + 1]."
        )
    return image.detach().to(device=device, dtype=dtype)


@dataclass
class LayerView:
    """One layer's activations on one photo: ``activations`` (C, H, W) float32 and ``image`` (3, S, S), both on the CPU."""

    layer: str
    activations: torch.Tensor
    image: torch.Tensor

    @property
    def map_size(self) -> tuple[int, int]:
        return tuple(self.activations.shape[1:])


def layer_view(model: nn.Module, image: torch.Tensor, layer: str) -> LayerView:
    """The activations (C, H, W) of ``layer`` (a name from ``print(model)``) for one photo (3, S, S) in [0, 1].

    One forward pass in eval mode, stopped right after the layer; the model is given back as it was.

    >>> view = layer_view(model, load_image("chelsea"), "blocks.4")
    >>> view.activations.shape
    torch.Size([112, 14, 14])
    """
    x = _one_image(model, image)
    get_layer(model, layer)  # an unknown name lists the closest ones, before any work
    with preserve_model_state(model), torch.no_grad():
        try:
            maps = layer_maps(model, layer, x)
        except KeyError:
            raise ValueError(f"layer {layer!r} was not reached in the forward pass; pick a layer the model runs.") from None
    return LayerView(layer=layer, activations=maps[0].float().cpu(), image=x[0].float().cpu())


# ----------------------------------------------------------------------------- channel icons


def _channel_list(channels, count: int, layer: str) -> list[int]:
    """Channel indices as a list of ints, each checked to be in [0, count)."""
    if isinstance(channels, torch.Tensor):
        channels = channels.flatten().tolist()
    elif isinstance(channels, numbers.Integral) and not isinstance(channels, bool):
        channels = [channels]
    channels = list(channels)
    for channel in channels:
        if isinstance(channel, bool) or not isinstance(channel, numbers.Integral) or not 0 <= channel < count:
            raise ValueError(f"channel {channel!r} does not exist: layer {layer!r} has {count} channels (0 to {count - 1}).")
    return [int(channel) for channel in channels]


class IconCache:
    """Channel icons (feature visualizations of single channels at the centre neuron), rendered once per (layer, channel).

    ``icon_size`` and ``steps`` default to the course preset (:func:`atlas.icon_settings`);
    ``cosine_power=0`` maximizes the channel's activation itself. Every call of :meth:`icons`
    renders the channels it has not seen yet, all of them in one batched optimization.
    ``rendered`` counts the icons rendered so far. ``redirect``: optimize through
    :func:`featurevis.redirected_relu6`, so that a channel behind a clamped ReLU6 at the grey
    start still gets a gradient (the icons of such channels otherwise stay grey).

    >>> cache = IconCache(model)
    >>> icons = cache.icons("blocks.4", [3, 17, 42])   # (3, 3, 40, 40) with the fast preset
    """

    def __init__(self, model: nn.Module, icon_size: int | None = None, steps: int | None = None,
                 cosine_power: float = 0.0, seed: int = 0, progress: bool = True, redirect: bool = True):
        check_model(model)
        self.redirect = bool(redirect)
        default_size, default_steps = icon_settings()
        self.model = model
        self.icon_size = default_size if icon_size is None else _positive_int(icon_size, "icon_size", 8)
        self.steps = default_steps if steps is None else _positive_int(steps, "steps")
        self.cosine_power = check_number(cosine_power, "cosine_power", low=0)
        self.seed = seed
        self.progress = progress
        self.rendered = 0
        self._icons: dict[tuple[str, int], torch.Tensor] = {}
        self._channel_counts: dict[str, int] = {}

    def channel_count(self, layer: str) -> int:
        """How many channels ``layer`` has (one probe pass at icon size, remembered)."""
        if layer not in self._channel_counts:
            get_layer(self.model, layer)
            self._channel_counts[layer] = _map_size(self.model, layer, self.icon_size)[0]
        return self._channel_counts[layer]

    def icons(self, layer: str, channels) -> torch.Tensor:
        """The icons (K, 3, s, s) in [0, 1] of ``channels`` of ``layer``, on the CPU, in the order asked."""
        count = self.channel_count(layer)
        wanted = _channel_list(channels, count, layer)
        missing = sorted({channel for channel in wanted if (layer, channel) not in self._icons})
        if missing:
            directions = torch.eye(count)[missing]
            with redirected_relu6(self.model) if self.redirect else nullcontext():
                new = render_icons(self.model, layer, directions, icon_size=self.icon_size, steps=self.steps,
                                   cosine_power=self.cosine_power, seed=self.seed, progress=self.progress)
            self._icons.update({(layer, channel): icon for channel, icon in zip(missing, new)})
            self.rendered += len(missing)
        if not wanted:
            return torch.zeros(0, 3, self.icon_size, self.icon_size)
        return torch.stack([self._icons[(layer, channel)] for channel in wanted])

    def __len__(self) -> int:
        return len(self._icons)

    def __contains__(self, key) -> bool:
        return key in self._icons

    def __repr__(self) -> str:
        return f"IconCache({len(self)} icons, {self.icon_size} px, {self.steps} steps)"


# ----------------------------------------------------------------------------- semantic dictionary


@dataclass
class SemanticDictionary:
    """At every position of ``layer``'s map (H, W), the k most active channels, most active first.

    ``channels`` (H, W, k) long, ``values`` (H, W, k) their activations, ``icons`` channel ->
    (3, s, s) for every channel that appears in ``channels``.
    """

    layer: str
    map_size: tuple[int, int]
    channels: torch.Tensor
    values: torch.Tensor
    icons: dict[int, torch.Tensor]


def semantic_dictionary(model: nn.Module, image: torch.Tensor, layer: str, k: int = 4,
                        cache: IconCache | None = None, icon_layer: str | None = None) -> SemanticDictionary:
    """The semantic dictionary of one photo: the top-``k`` channels at each position of ``layer``, with their icons.

    The icons come from ``cache`` (a new :class:`IconCache` of ``model`` when None): the
    channels not rendered yet are rendered together, once each, whatever the number of positions.
    ``icon_layer``: render the icons of the same channels at another layer with as many channels,
    typically the values just before a clamping activation. A ReLU6 unit at its ceiling of 6 has
    no gradient, so its icon would never leave the grey start; in timm's ``BatchNormAct2d`` the
    output of ``<layer>.drop`` is the value before the ReLU6.

    >>> dictionary = semantic_dictionary(model, load_image("chelsea"), "blocks.4", k=4)
    >>> dictionary.channels[7, 7]   # the 4 strongest channels at the centre
    """
    if cache is None:
        cache = IconCache(model)
    elif not isinstance(cache, IconCache) or cache.model is not model:
        raise ValueError("cache must be an IconCache made for this same model: IconCache(model).")
    view = layer_view(model, image, layer)
    k = check_number(k, "k", low=1, high=view.activations.shape[0], integer=True,
                     hint=f"layer {layer!r} has {view.activations.shape[0]} channels.")
    if icon_layer is not None and cache.channel_count(icon_layer) != view.activations.shape[0]:
        raise ValueError(f"icon_layer {icon_layer!r} has {cache.channel_count(icon_layer)} channels but layer {layer!r} has "
                         f"{view.activations.shape[0]}: give the same layer's values before its activation function.")
    values, channels = view.activations.permute(1, 2, 0).topk(k, dim=2)
    unique = channels.unique().tolist()
    icons = dict(zip(unique, cache.icons(icon_layer or layer, unique)))
    return SemanticDictionary(layer=layer, map_size=view.map_size, channels=channels, values=values, icons=icons)


# ----------------------------------------------------------------------------- activation grid


@dataclass
class ActivationGrid:
    """One icon per cell of ``layer``'s map: ``vectors`` (rows, cols, C) and ``icons`` (rows, cols, 3, s, s).

    ``seconds_per_icon``: the wall time of the batched render divided by the number of icons.
    """

    layer: str
    cells: tuple[int, int]
    vectors: torch.Tensor
    icons: torch.Tensor
    seconds_per_icon: float


def activation_grid(model: nn.Module, image: torch.Tensor, layer: str, cells: int | None = None,
                    icon_size: int | None = None, steps: int | None = None, cosine_power: float = 1.0,
                    batch_size: int | None = None, progress: bool = True, seed: int = 0) -> ActivationGrid:
    """The activation grid of one photo: every cell's activation vector, and an icon that produces it.

    ``cells``: average-pool the (H, W) map to ``cells`` x ``cells`` first (None keeps every
    position). Each icon maximizes dot x cosine^``cosine_power`` with its own vector at the
    centre neuron (:func:`atlas.render_icons`), all icons in one batch unless ``batch_size`` is given.

    >>> grid = activation_grid(model, load_image("chelsea"), "blocks.4", cells=7)
    >>> grid.icons.shape   # (7, 7, 3, 40, 40) with the fast preset
    """
    view = layer_view(model, image, layer)
    maps = view.activations
    if cells is not None:
        cells = check_number(cells, "cells", low=1, high=min(view.map_size), integer=True,
                             hint=f"layer {layer!r} has a {view.map_size[0]}x{view.map_size[1]} map; cells pools it.")
        maps = F.adaptive_avg_pool2d(maps, cells)
    vectors = maps.permute(1, 2, 0).contiguous()
    rows, columns = vectors.shape[:2]
    start = time.perf_counter()
    icons = render_icons(model, layer, vectors.flatten(0, 1), icon_size=icon_size, steps=steps,
                         cosine_power=cosine_power, batch_size=batch_size, seed=seed, progress=progress)
    seconds = time.perf_counter() - start
    return ActivationGrid(layer=layer, cells=(rows, columns), vectors=vectors,
                          icons=icons.view(rows, columns, *icons.shape[1:]), seconds_per_icon=seconds / len(icons))


def grid_alignment(model: nn.Module, grid: ActivationGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """Does each icon produce its own cell's vector? Cosine similarities (rows, cols): (to its own vector, to the mean).

    Every icon goes back through the model; its activation vector at the centre neuron (the one
    the render optimized) is compared with its own cell's vector and with the photo's mean
    vector (the mean of all cells). A faithful grid has own > mean almost everywhere.

    >>> own, mean = grid_alignment(model, grid)
    >>> (own > mean).float().mean()
    """
    if not isinstance(grid, ActivationGrid):
        raise TypeError(f"grid must be what activation_grid() returned, got {type(grid).__name__}.")
    icon_vectors = activations_at(model, grid.layer, grid.icons.flatten(0, 1), "centre")
    vectors = grid.vectors.flatten(0, 1).float()
    own = F.cosine_similarity(icon_vectors, vectors, dim=1)
    mean = F.cosine_similarity(icon_vectors, vectors.mean(0, keepdim=True), dim=1)
    return own.view(grid.cells), mean.view(grid.cells)


# ----------------------------------------------------------------------------- spatial attribution


@dataclass
class LayerTarget:
    """A scalar read off a later layer: the sum over positions of <activation, ``direction``> (``direction`` (C,)).

    >>> target = LayerTarget.channel("blocks.5", 12, channels=192)   # channel 12 of blocks.5, summed over positions
    """

    layer: str
    direction: torch.Tensor

    def __post_init__(self):
        if not isinstance(self.layer, str):
            raise TypeError(f"a LayerTarget's layer is a layer name such as 'blocks.5', got {type(self.layer).__name__}.")
        direction = torch.as_tensor(self.direction).detach()
        if direction.dim() != 1 or not direction.is_floating_point() or not torch.isfinite(direction).all():
            raise ValueError(f"a LayerTarget's direction must be a finite float vector (C,), got shape {tuple(direction.shape)}.")
        self.direction = direction

    @classmethod
    def channel(cls, layer: str, index: int, channels: int) -> "LayerTarget":
        """One channel of ``layer`` (which has ``channels`` channels), summed over positions: a one-hot direction."""
        channels = check_number(channels, "channels", low=1, integer=True)
        index = check_number(index, "index", low=0, high=channels - 1, integer=True,
                             hint=f"layer {layer!r} has {channels} channels.")
        return cls(layer, torch.eye(channels)[index])


def _check_targets(model: nn.Module, targets: list) -> None:
    """Types and class ranges of every target, before any forward pass."""
    classes = known_num_classes(model)
    for target in targets:
        if isinstance(target, LayerTarget):
            get_layer(model, target.layer)
        elif isinstance(target, numbers.Integral) and not isinstance(target, bool):
            check_target(int(target), 1, classes)
        else:
            raise TypeError(f"a target is a class index (int) or a LayerTarget, got {type(target).__name__} {target!r}.")


def _probe_targets(model: nn.Module, x: torch.Tensor, layer: str, targets: list) -> torch.Tensor:
    """One plain forward pass: the layer's activation (1, C, H, W), every target checked against what the model does."""
    watched = [layer] + [target.layer for target in targets if isinstance(target, LayerTarget)]
    with torch.no_grad(), capture_activations(model, watched) as captured:
        output = model(x)
    order = list(captured)  # a dict fills in the order the layers ran
    if layer not in captured:
        raise ValueError(f"layer {layer!r} was not reached in the forward pass; pick a layer the model runs.")
    activation = captured[layer]
    if not isinstance(activation, torch.Tensor) or activation.dim() != 4:
        shape = tuple(activation.shape) if isinstance(activation, torch.Tensor) else "no tensor"
        raise ValueError(f"layer {layer!r} gives {shape}; spatial attribution needs feature maps (N, C, H, W): "
                         "choose a convolutional layer or block.")
    for target in targets:
        if isinstance(target, LayerTarget):
            if target.layer not in captured:
                raise ValueError(f"target layer {target.layer!r} was not reached in the forward pass; pick a layer the model runs.")
            if order.index(target.layer) < order.index(layer):
                raise ValueError(f"target layer {target.layer!r} runs before {layer!r}, so it cannot depend on it; "
                                 f"choose a target layer after {layer!r}.")
            shape = captured[target.layer].shape
            if captured[target.layer].dim() not in (2, 4) or shape[1] != len(target.direction):
                raise ValueError(f"the target direction has {len(target.direction)} entries but layer {target.layer!r} "
                                 f"gives {tuple(shape)}; give one entry per channel.")
        else:
            check_target(int(target), 1, class_scores(output).shape[1])  # a model without class scores is told what to do
    return activation


def _row_scores(model: nn.Module, x: torch.Tensor, module: nn.Module, units: torch.Tensor, row_target: torch.Tensor,
                targets: list) -> torch.Tensor:
    """Each row's score (B,) under its own target, with the layer's output replaced by ``units`` (B, C, H, W)."""
    watched = {target.layer for target in targets if isinstance(target, LayerTarget)}
    needs_output = any(not isinstance(target, LayerTarget) for target in targets)
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_module, _inputs, output):
            captured[name] = _first_tensor(output).clone()  # a later in-place ReLU must not change it
            if not needs_output and watched.issubset(captured):
                raise _StopForward  # nothing after the last target layer is needed

        return hook

    handles = []
    with _replace_output(module, {"value": units}):
        try:
            handles = [get_layer(model, name).register_forward_hook(keep(name)) for name in watched]
            output = model(x.expand(len(units), -1, -1, -1))
        except _StopForward:
            output = None
        finally:
            for handle in handles:
                handle.remove()
    scores = units.new_zeros(len(units))
    for index in row_target.unique().tolist():
        rows = (row_target == index).nonzero().flatten()
        target = targets[index]
        if isinstance(target, LayerTarget):
            values = captured[target.layer][rows]
            direction = target.direction.to(values).view(1, -1, *([1] * (values.dim() - 2)))
            value = (values * direction).flatten(1).sum(1)
        else:
            value = output[rows, int(target)]
        if units.requires_grad and not value.requires_grad:
            what = f"target layer {target.layer!r}" if isinstance(target, LayerTarget) else f"class {int(target)}"
            raise ValueError(f"the {what} does not depend on the layer whose units are attributed: "
                             "choose a layer upstream of it (one the model's output is computed from).")
        scores = scores.index_put((rows,), value)
    return scores


def _path_attributions(model: nn.Module, x: torch.Tensor, layer: str, targets: list, n_steps: int, method: str,
                       batch_size: int, with_delta: bool, progress: bool):
    """Integrated gradients from the zero activation of ``layer`` for several targets: (T, C, H, W) and deltas (T,) or None.

    The rows of all targets (one per quadrature point) go through the model ``batch_size`` at a
    time; the caller holds :func:`preserve_model_state`.
    """
    _check_method(method)
    _check_steps(n_steps, method)
    batch_size = _check_batch_size(batch_size)
    module = get_layer(model, layer)
    _check_targets(model, targets)
    activation = _probe_targets(model, x, layer, targets)
    device, dtype = activation.device, activation.dtype
    alphas, weights = integration_points(method, n_steps)
    row_target = torch.arange(len(targets), device=device).repeat_interleave(n_steps)
    row_alpha = alphas.to(device=device, dtype=dtype).repeat(len(targets)).view(-1, 1, 1, 1)
    row_weight = weights.to(device=device, dtype=dtype).repeat(len(targets)).view(-1, 1, 1, 1)
    sums = torch.zeros(len(targets), *activation.shape[1:], device=device, dtype=dtype)
    chunks = list(zip(row_target.split(batch_size), row_alpha.split(batch_size), row_weight.split(batch_size)))
    with _progress(len(chunks), progress, "spatial attribution") as bar:
        for chunk_target, chunk_alpha, chunk_weight in chunks:
            # Each row's score depends on its own units only (eval mode), so one backward pass gives every row's gradient.
            units = (chunk_alpha * activation).requires_grad_(True)
            with torch.enable_grad():
                total = _row_scores(model, x, module, units, chunk_target, targets).sum()
                (gradient,) = torch.autograd.grad(total, units, allow_unused=True)
            if gradient is None:  # parameters that require grad put the scores in a graph that misses the units
                raise ValueError(f"the targets do not depend on layer {layer!r}: choose a layer upstream of them.")
            sums.index_add_(0, chunk_target, gradient * chunk_weight)
            bar.update()
    attributions = sums * activation
    if not with_delta:
        return attributions, None
    # f(A) - f(0): both ends of the path, two rows per target, through the same replacement.
    ends = torch.tensor([0.0, 1.0], device=device, dtype=dtype).repeat(len(targets)).view(-1, 1, 1, 1)
    with torch.no_grad():
        values = _row_scores(model, x, module, ends * activation,
                             torch.arange(len(targets), device=device).repeat_interleave(2), targets).view(-1, 2)
    return attributions, attributions.flatten(1).sum(1) - (values[:, 1] - values[:, 0])


def spatial_attribution(model: nn.Module, image: torch.Tensor, layer: str, target, n_steps: int = 128,
                        method: str = "gausslegendre", batch_size: int = 32, return_delta: bool = False,
                        progress: bool = False):
    """Integrated gradients on the units (C, H, W) of ``layer`` for one photo, from the zero activation.

    The path scales the photo's activation A to alpha * A (alpha from 0 to 1, the quadrature of
    :func:`attribution.integration_points`), with a forward hook replacing the layer's output.
    ``target``: a class index (the logit) or a :class:`LayerTarget` (a later layer's scalar).
    Completeness: the attributions sum to f(A) - f(0); ``return_delta=True`` also returns the
    error ``attributions.sum() - (f(A) - f(0))`` as a float. From the zero activation most of the
    change happens early on the path, so it takes many steps: on EfficientNet-Lite0's
    ``blocks.4.0.bn2`` the relative error is 10 % with 32, 2.7 % with 64 and 1.1 % with 128 (the default). Choose a whole block as the layer:
    the rest of the network must depend on the input only through it.

    >>> attributions = spatial_attribution(model, load_image("chelsea"), "blocks.4", 281)
    >>> heatmap = attributions.sum(0)   # (14, 14): one value per position
    """
    x = _one_image(model, image)
    with preserve_model_state(model):
        attributions, delta = _path_attributions(model, x, layer, [target], n_steps, method, batch_size,
                                                 return_delta, progress)
    if return_delta:
        return attributions[0].float().cpu(), float(delta[0])
    return attributions[0].float().cpu()


# ----------------------------------------------------------------------------- neuron groups


@dataclass
class NeuronGroups:
    """A layer's activations factored into k groups: ``maps`` (k, H, W) >= 0 times ``directions`` (k, C) >= 0.

    ``reconstruction`` (C, H, W) = sum over groups of maps[g] (outer) directions[g];
    ``relative_error`` = |A - reconstruction|_F / |A|_F. Groups are sorted by their share of the
    total activation, largest first; each direction has unit length (its scale is in the map).
    With ``signs="split"`` the factored matrix is [relu(A), relu(-A)]: directions, and the
    reconstruction, have 2C channels, the first C for the positive part, the last C for the negative one.
    """

    layer: str
    maps: torch.Tensor
    directions: torch.Tensor
    reconstruction: torch.Tensor
    relative_error: float
    signs: str = "nonnegative"

    @property
    def k(self) -> int:
        return len(self.maps)


def neuron_groups(view: LayerView | torch.Tensor, k: int, seed: int = 0, max_iter: int = 500,
                  signs: str = "nonnegative", layer: str | None = None) -> NeuronGroups:
    """Group the channels of one layer view into ``k`` groups with non-negative matrix factorization.

    scikit-learn's NMF (init "nndsvda") on the (H*W, C) matrix of positions by channels: each
    group has a spatial map (where it is active) and a channel direction (which channels). The
    activations must be non-negative (a layer after a ReLU); ``signs="split"`` factors the
    positive and negative parts side by side instead. ``view``: a :class:`LayerView` or (C, H, W).

    >>> groups = neuron_groups(layer_view(model, load_image("chelsea"), "blocks.4.0.bn1"), k=6)
    >>> groups.maps.shape, groups.relative_error
    """
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    if isinstance(view, LayerView):
        layer, activations = view.layer, view.activations
    elif isinstance(view, torch.Tensor):
        activations = view[0] if view.dim() == 4 and len(view) == 1 else view
        layer = "" if layer is None else layer
    else:
        raise TypeError(f"neuron_groups takes a LayerView (from layer_view) or activations (C, H, W), got {type(view).__name__}.")
    if activations.dim() != 3:
        raise ValueError(f"activations must be one layer's maps (C, H, W), got shape {tuple(activations.shape)}.")
    activations = activations.detach().double().cpu()
    if not torch.isfinite(activations).all():
        raise ValueError("the activations contain NaN or infinite values.")
    if signs not in ("nonnegative", "split"):
        raise ValueError(f"signs must be 'nonnegative' or 'split', got {signs!r}.")
    if signs == "split":
        activations = torch.cat([activations.clamp(min=0), (-activations).clamp(min=0)])
    elif activations.min() < 0:
        name = f"layer {layer!r}" if layer else "these activations"
        raise ValueError(
            f"{name} has negative activations (minimum {float(activations.min()):.3g}); NMF needs non-negative ones. "
            "EfficientNet block outputs are linear bottlenecks: choose a layer after a ReLU/ReLU6, e.g. "
            "'blocks.4.0.bn1' whose output is non-negative, or pass signs='split'."
        )
    channels, height, width = activations.shape
    k = check_number(k, "k", low=1, high=min(height * width, channels), integer=True,
                     hint=f"at most min(positions, channels) = min({height * width}, {channels}) groups.")
    max_iter = check_number(max_iter, "max_iter", low=1, integer=True)
    matrix = activations.reshape(channels, height * width).T.numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # relative_error says how good the fit is
        factor = NMF(n_components=k, init="nndsvda", random_state=seed, max_iter=max_iter)
        maps = torch.from_numpy(factor.fit_transform(matrix)).T  # (k, H*W)
    directions = torch.from_numpy(factor.components_)  # (k, C)
    scale = directions.norm(dim=1).clamp(min=1e-12)
    directions, maps = directions / scale[:, None], maps * scale[:, None]
    order = (maps.sum(1) * directions.sum(1)).argsort(descending=True)
    maps, directions = maps[order], directions[order]
    reconstruction = (directions.T @ maps).view(channels, height, width)
    error = float((activations - reconstruction).norm() / activations.norm().clamp(min=1e-12))
    return NeuronGroups(layer=layer, maps=maps.view(k, height, width).float(), directions=directions.float(),
                        reconstruction=reconstruction.float(), relative_error=error, signs=signs)


def _unit_shares(groups: NeuronGroups) -> torch.Tensor:
    """(k, C, H, W): each group's share of each unit's reconstruction (0 where it is 0); the two halves of
    ``signs="split"`` are added, so a unit is explained by its positive and negative parts together."""
    directions = groups.directions.double()
    if groups.signs == "split":
        directions = directions.view(len(directions), 2, -1).sum(1)
    parts = directions[:, :, None, None] * groups.maps.double()[:, None]
    total = parts.sum(0)
    return torch.where(total > 0, parts / total.clamp(min=1e-300), torch.zeros_like(parts))


def group_attribution(groups: NeuronGroups, attributions: torch.Tensor) -> torch.Tensor:
    """Each group's part (k,) of an attribution (C, H, W) of the same layer.

    Unit (c, y, x)'s attribution is split among the groups by the share each has of that unit's
    reconstruction, maps[g, y, x] * directions[g, c] / reconstruction[c, y, x]; units the
    groups do not reconstruct (0) count for none. The parts sum to the attribution of the others.

    >>> parts = group_attribution(groups, spatial_attribution(model, image, groups.layer, 281))
    """
    if not isinstance(groups, NeuronGroups):
        raise TypeError(f"groups must be what neuron_groups() returned, got {type(groups).__name__}.")
    shares = _unit_shares(groups)
    if not isinstance(attributions, torch.Tensor) or tuple(attributions.shape) != tuple(shares.shape[1:]):
        shape = tuple(attributions.shape) if isinstance(attributions, torch.Tensor) else type(attributions).__name__
        raise ValueError(f"attributions must have the layer's shape (C, H, W) = {tuple(shares.shape[1:])}, got {shape}; "
                         f"attribute the same layer the groups come from ({groups.layer!r}).")
    return (shares * attributions.detach().double().cpu()).flatten(1).sum(1).float()


# ----------------------------------------------------------------------------- information flow


@dataclass
class Flow:
    """How attribution flows from layer-A groups to layer-B groups and to the classes.

    ``a_to_b`` (k_a, k_b), ``b_to_class`` (k_b, n_classes), ``a_to_class`` (k_a, n_classes).
    """

    layers: tuple[str, str]
    classes: list[int]
    a_to_b: torch.Tensor
    b_to_class: torch.Tensor
    a_to_class: torch.Tensor


def _group_target(groups: NeuronGroups, index: int) -> LayerTarget:
    """Group ``index``'s scalar: its channel direction (positive half minus negative half when split), unit length."""
    direction = groups.directions[index].double()
    if groups.signs == "split":
        direction = direction.view(2, -1)[0] - direction.view(2, -1)[1]
    return LayerTarget(groups.layer, (direction / direction.norm().clamp(min=1e-12)).float())


def information_flow(model: nn.Module, image: torch.Tensor, groups_a: NeuronGroups, groups_b: NeuronGroups, classes,
                     n_steps: int = 128, batch_size: int = 32, progress: bool = False) -> Flow:
    """Attribution between the neuron groups of two layers (A before B) and the classes, for one photo.

    Layer-B group h's scalar is its unit-length direction summed over positions
    (:class:`LayerTarget`); ``a_to_b[:, h]`` splits the spatial attribution of layer A towards it
    among A's groups (:func:`group_attribution`); ``b_to_class`` and ``a_to_class`` do the same
    for each class logit. All the targets of a layer go through the model together.

    >>> flow = information_flow(model, image, groups_a, groups_b, classes=[281, 282])
    >>> flow.a_to_b   # (k_a, k_b)
    """
    for name, groups in (("groups_a", groups_a), ("groups_b", groups_b)):
        if not isinstance(groups, NeuronGroups) or not groups.layer:
            raise TypeError(f"{name} must be neuron_groups() of a layer_view (it knows its layer).")
    classes = [classes] if isinstance(classes, numbers.Integral) else list(classes)
    if not classes:
        raise ValueError("classes is empty: give at least one class index, e.g. classes=[281].")
    classes = check_target(classes, len(classes), known_num_classes(model), name="classes").tolist()
    x = _one_image(model, image)
    b_targets = [_group_target(groups_b, index) for index in range(groups_b.k)]
    with preserve_model_state(model):
        from_a, _ = _path_attributions(model, x, groups_a.layer, b_targets + classes, n_steps, "gausslegendre",
                                       batch_size, False, progress)
        from_b, _ = _path_attributions(model, x, groups_b.layer, classes, n_steps, "gausslegendre", batch_size,
                                       False, progress)
    from_a, from_b = from_a.float().cpu(), from_b.float().cpu()
    a_parts = torch.stack([group_attribution(groups_a, attributions) for attributions in from_a], 1)
    b_parts = torch.stack([group_attribution(groups_b, attributions) for attributions in from_b], 1)
    return Flow(layers=(groups_a.layer, groups_b.layer), classes=classes, a_to_b=a_parts[:, :groups_b.k],
                b_to_class=b_parts, a_to_class=a_parts[:, groups_b.k:])
