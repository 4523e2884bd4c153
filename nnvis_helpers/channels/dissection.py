"""Network dissection on concepts the course makes itself: which channels detect which colour, grating or texture?

Network Dissection (Bau et al. 2017, "Network Dissection: Quantifying Interpretability of Deep
Visual Representations") labels a channel with the concept whose pixels its strongest
activations cover best. Per channel k, a threshold T_k is the top quantile (0.995: the top
0.5 %) of all its activations over the dataset; each activation map is upsampled (bilinear) to
the image size and thresholded into a mask M_k(x); against the concept's pixel mask L_c(x)

    IoU_{k,c} = sum_x |M_k(x) ∩ L_c(x)| / sum_x |M_k(x) ∪ L_c(x)|,

summed, as in the paper, over the images that carry labels of c's category (here: c's group).

* :func:`dissect` — one streaming forward pass over a :class:`~.concepts.ConceptSet` (made by
  :func:`~.concepts.concept_images`): the thresholds, the IoU of every channel with every
  concept, and a simpler selectivity measure (mean activation inside vs outside the mask), in a
  :class:`Dissection` (``top_channels``, ``best_concept``, ``detectors``, ``summary``).
* :func:`draw_dissection` — best IoU per concept with its top channels, or a heat map.

How this differs from full Network Dissection: Bau et al. use Broden, about 63 000 real photos
with hand-labelled segmentations of about 1 200 concepts in six categories (colours, textures,
materials, parts, objects, scenes), so they can find, say, a "dog face" or "airplane" unit in a
late layer. The course has no labelled segmentations, so it makes its own images: 12 colours,
12 gratings and a few textures, pasted on backgrounds. Only low-level concepts, on synthetic
pictures; the method (quantile threshold, upsampling, IoU) is the paper's, the concepts are not.
Expect clear detectors in early layers; a late layer's object units will find no concept here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_model
from ..datasets.activations import _VectorKeeper, stream_layer
from ..layers import get_layer, preserve_model_state
from .concepts import _COLOURS, ConceptSet, _concept_index

__all__ = ["Dissection", "dissect", "draw_dissection"]


@dataclass
class Dissection:
    """What :func:`dissect` measured for every channel of one layer and every concept.

    ``iou`` (C, K): IoU of channel k's thresholded map with concept c's masks; ``thresholds`` (C,)
    the T_k; ``mean_inside`` / ``mean_outside`` (C, K): the channel's mean (upsampled) activation
    on the concept's pixels and on the rest of those images. Per image i the counts behind the IoU:
    ``active_pixels`` (N, C) = |M_k(x_i)|, ``overlap_pixels`` (N, C) = |M_k(x_i) ∩ L(x_i)|,
    ``mask_pixels`` (N,) = |L(x_i)|, with ``concept`` (N,) the image's concept; pixels are counted at
    the ``resolution`` that :func:`dissect` compared at.

    >>> result = dissect(model, "blocks.1", concept_images())
    >>> result.top_channels("red", 3)  # [(channel, IoU), ...]
    >>> print(result.summary(10))
    """

    layer: str
    names: list[str]
    groups: list[str]
    iou: torch.Tensor
    thresholds: torch.Tensor
    mean_inside: torch.Tensor
    mean_outside: torch.Tensor
    active_pixels: torch.Tensor
    overlap_pixels: torch.Tensor
    mask_pixels: torch.Tensor
    concept: torch.Tensor
    quantile: float
    over: str

    @property
    def num_channels(self) -> int:
        return self.iou.shape[0]

    def top_channels(self, concept: str | int, n: int = 5) -> list[tuple[int, float]]:
        """The ``n`` channels with the highest IoU for ``concept`` (a name or index): [(channel, IoU), ...]."""
        column = self.iou[:, _concept_index(concept, self.names)]
        values, channels = column.sort(descending=True)
        return [(int(channel), float(value)) for channel, value in zip(channels[:n], values[:n])]

    def best_concept(self, channel: int | None = None):
        """The concept with the highest IoU for ``channel``: (name, IoU); for every channel a list of them when None."""
        values, indices = self.iou.max(dim=1)
        if channel is None:
            return [(self.names[int(index)], float(value)) for value, index in zip(values, indices)]
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= channel < self.num_channels:
            raise ValueError(f"channel must be an int from 0 to {self.num_channels - 1} ({self.layer} has {self.num_channels}), got {channel!r}.")
        return self.names[int(indices[channel])], float(values[channel])

    def detectors(self, min_iou: float = 0.04) -> list[tuple[int, str, float]]:
        """Channels whose best IoU exceeds ``min_iou`` (Bau et al. count a unit as a detector above 0.04),
        best first: [(channel, concept, IoU), ...]."""
        rows = [(channel, name, value) for channel, (name, value) in enumerate(self.best_concept()) if value > min_iou]
        return sorted(rows, key=lambda row: -row[2])

    def selectivity(self) -> torch.Tensor:
        """(C, K): mean activation inside the concept's mask minus outside, in units of the channel's threshold T_k."""
        scale = self.thresholds.abs().clamp_min(1e-8)[:, None]
        return (self.mean_inside - self.mean_outside) / scale

    def summary(self, n: int = 10) -> str:
        """A text table of the ``n`` channels with the highest IoU: channel, best concept, group, IoU, selectivity."""
        best = self.best_concept()
        order = sorted(range(self.num_channels), key=lambda k: -best[k][1])[:n]
        selectivity = self.selectivity()
        lines = [
            f"Dissection of {self.layer!r}: {self.num_channels} channels x {len(self.names)} concepts "
            f"(threshold: top {100 * (1 - self.quantile):.2g}% of each channel; IoU summed over the images of the concept's {self.over})",
            f"{'channel':>7}  {'best concept':<22} {'group':<8} {'IoU':>6}  {'inside-outside':>14}",
        ]
        for k in order:
            name, value = best[k]
            c = self.names.index(name)
            lines.append(f"{k:>7}  {name:<22} {self.groups[c]:<8} {value:>6.3f}  {float(selectivity[k, c]):>14.2f}")
        lines.append(f"{len(self.detectors())} of {self.num_channels} channels have a best IoU above 0.04 (Bau et al.'s detector threshold).")
        return "\n".join(lines)

    def concept_table(self, n: int = 3) -> str:
        """A text table with one row per concept: its ``n`` best channels and their IoU."""
        lines = [f"{'concept':<22} {'group':<8} top channels (IoU)"]
        for c, name in enumerate(self.names):
            best = ", ".join(f"{k} ({value:.3f})" for k, value in self.top_channels(c, n))
            lines.append(f"{name:<22} {self.groups[c]:<8} {best}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Dissection(layer={self.layer!r}, {self.num_channels} channels x {len(self.names)} concepts, quantile={self.quantile})"


def _iou_from_counts(active, overlap, mask_pixels, concept, groups: Sequence[str], over: str) -> torch.Tensor:
    """IoU (C, K) from the per-image counts; ``over`` says which images each concept's sums run over."""
    num_concepts = len(groups)
    one_hot = F.one_hot(concept, num_concepts).double()  # (N, K): image i shows concept c
    intersection = one_hot.T @ overlap.double()  # (K, C): sum over the images of c of |M ∩ L|
    label_area = one_hot.T @ mask_pixels.double()  # (K,)
    if over == "concept":
        counted = one_hot
    elif over == "group":
        group_of_image = [groups[int(c)] for c in concept]
        counted = torch.tensor([[groups[c] == g for c in range(num_concepts)] for g in group_of_image], dtype=torch.float64)
    else:  # "all"
        counted = torch.ones_like(one_hot)
    active_sum = counted.T @ active.double()  # (K, C): sum of |M_k| over the counted images
    union = active_sum + label_area[:, None] - intersection
    return (intersection / union.clamp_min(1)).T.float()


class _MapKeeper(_VectorKeeper):
    """The forward hook of :func:`dissect`: keeps each batch's whole map of the layer, on the CPU.

    The stream (``datasets.stream_layer``) counts the layer's calls first and then stops every pass
    after the last one, as for ``collect_activations``.
    """

    def __init__(self, layer: str):
        super().__init__(layer, 1, False, stop_early=True, seed=0)
        self.maps: list[torch.Tensor] = []

    def keep(self, tensor) -> None:
        if (not isinstance(tensor, torch.Tensor) or tensor.dim() != 4 or tensor.shape[0] != self.batch
                or tensor.shape[2] * tensor.shape[3] < 2):
            got = f"output of shape {tuple(tensor.shape)}" if isinstance(tensor, torch.Tensor) else "no tensor"
            raise ValueError(
                f"layer {self.layer!r} gives {got}; dissection needs spatial maps (N, C, h, w) with more than one "
                "position, to compare with the concept masks. Pick a convolution block before the global pooling "
                "(layer_names(model) lists them)."
            )
        self.maps.append(tensor.detach().float().cpu())


def dissect(
    model: nn.Module,
    layer: str,
    concepts: ConceptSet,
    quantile: float = 0.995,
    over: str = "group",
    resolution: int | None = 112,
    batch_size: int = 32,
    progress: bool = True,
) -> Dissection:
    """Network Dissection of ``layer`` on a :class:`ConceptSet`: the IoU of every channel with every concept.

    One forward pass over the images (stopped right after ``layer``) keeps the layer's maps
    (N, C, h, w) on the CPU, never more images than the ConceptSet holds. Then, per channel k,
    T_k = the ``quantile`` of all its activations (Bau et al. 2017: 0.995, the top 0.5 %); each
    map is upsampled (bilinear) to the image size and M_k = map > T_k. IoU_{k,c} =
    sum |M_k ∩ L_c| / sum |M_k ∪ L_c| over the images of c's ``over``: ``"group"`` (the paper's
    rule: the images that carry labels of c's category, here colour / grating / texture),
    ``"concept"`` (only the images of c) or ``"all"``. Maps and masks are compared at
    ``resolution`` pixels a side (at most the image size; None: the image size): Broden's labels
    are 112 px, and a smaller side makes large layers much faster. Runs in eval mode, without gradients,
    on the model's device; the model comes back as it was.

    Returns a :class:`Dissection` with ``iou`` (C, K), ``thresholds`` (C,), mean activations inside /
    outside the masks (C, K) and the per-image pixel counts.

    >>> result = dissect(load_model(), "blocks.1", concept_images())
    >>> result.best_concept(5), result.top_channels("red", 3)
    """
    device, _ = check_model(model)  # the upsampling runs on the model's device
    module = get_layer(model, layer)  # an unknown name lists the closest ones
    layer_name = layer if isinstance(layer, str) else next(name for name, m in model.named_modules() if m is module)
    if not isinstance(concepts, ConceptSet):
        raise TypeError(f"concepts must be a ConceptSet, as concept_images() makes, got {type(concepts).__name__}.")
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 < quantile < 1:
        raise ValueError(f"quantile must be a number strictly between 0 and 1, e.g. 0.995 (Bau et al.: the top 0.5 %), got {quantile!r}.")
    if over not in ("group", "concept", "all"):
        raise ValueError(f"over must be 'group' (the paper's rule), 'concept' or 'all', got {over!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 2):
        raise ValueError(f"resolution must be an int of at least 2 (pixels a side where maps meet masks, e.g. 112) or None, got {resolution!r}.")
    keeper = _MapKeeper(layer_name)
    with preserve_model_state(model):
        for _ in stream_layer(model, module, keeper, concepts.images, batch_size, 0, None, progress, f"dissect {layer_name}"):
            pass
    maps_all = torch.cat(keeper.maps)  # (N, C, h, w)
    keeper.maps.clear()
    num_channels = maps_all.shape[1]
    thresholds = _channel_quantiles(maps_all, quantile)

    size = tuple(concepts.images.shape[-2:])
    if resolution is not None and resolution < max(size):
        size = (min(size[0], resolution), min(size[1], resolution))
        # A mask pixel at the coarser grid is concept where most of its image pixels are.
        masks = F.interpolate(concepts.masks.float(), size=size, mode="area") > 0.5
    else:
        masks = concepts.masks
    count = len(concepts)
    active = torch.zeros(count, num_channels, dtype=torch.long)
    overlap = torch.zeros(count, num_channels, dtype=torch.long)
    sum_inside = torch.zeros(count, num_channels, dtype=torch.float64)
    sum_all = torch.zeros(count, num_channels, dtype=torch.float64)
    # Upsampled maps are (images, channels, S, S): a chunk of images at a time keeps that near 2**24 values.
    step = max(1, 2**24 // (num_channels * size[0] * size[1]))
    with torch.no_grad():
        for start in range(0, count, step):
            chunk = maps_all[start : start + step].to(device)
            upsampled = F.interpolate(chunk, size=size, mode="bilinear", align_corners=False)
            label = masks[start : start + step].to(device)
            hot = upsampled > thresholds.to(device)[None, :, None, None]
            end = start + chunk.shape[0]
            active[start:end] = hot.sum(dim=(2, 3)).cpu()
            overlap[start:end] = (hot & label).sum(dim=(2, 3)).cpu()
            sum_inside[start:end] = (upsampled * label).sum(dim=(2, 3)).double().cpu()
            sum_all[start:end] = upsampled.sum(dim=(2, 3)).double().cpu()
    mask_pixels = masks.flatten(1).sum(dim=1)
    iou = _iou_from_counts(active, overlap, mask_pixels, concepts.concept, concepts.groups, over)

    one_hot = F.one_hot(concepts.concept, len(concepts.names)).double()  # (N, K)
    pixels = float(size[0] * size[1])
    inside_area = one_hot.T @ mask_pixels.double()
    outside_area = one_hot.sum(dim=0) * pixels - inside_area
    mean_inside = (one_hot.T @ sum_inside / inside_area.clamp_min(1)[:, None]).T.float()
    mean_outside = (one_hot.T @ (sum_all - sum_inside) / outside_area.clamp_min(1)[:, None]).T.float()
    return Dissection(
        layer=layer_name,
        names=list(concepts.names),
        groups=list(concepts.groups),
        iou=iou,
        thresholds=thresholds,
        mean_inside=mean_inside,
        mean_outside=mean_outside,
        active_pixels=active,
        overlap_pixels=overlap,
        mask_pixels=mask_pixels,
        concept=concepts.concept.clone(),
        quantile=float(quantile),
        over=over,
    )


def _channel_quantiles(maps: torch.Tensor, quantile: float) -> torch.Tensor:
    """Per channel, the ``quantile`` of all its values in ``maps`` (N, C, h, w), as ``torch.quantile`` (linear) gives it.

    ``torch.quantile`` refuses more than 2**24 values, so the two order statistics around the
    position are taken with ``kthvalue`` instead, one channel at a time.
    """
    values = maps.transpose(0, 1).reshape(maps.shape[1], -1)
    count = values.shape[1]
    position = quantile * (count - 1)
    below = int(math.floor(position))
    fraction = position - below
    result = torch.empty(values.shape[0])
    for k in range(values.shape[0]):
        low = values[k].kthvalue(below + 1).values
        high = values[k].kthvalue(min(below + 2, count)).values
        result[k] = low + fraction * (high - low)
    return result


# ----------------------------------------------------------------------------- pictures


_GROUP_COLOURS = {"grating": "0.45", "texture": "#8c6d46"}


def draw_dissection(dissection: Dissection, ax=None, kind: str = "bars", top: int = 3, channels: int = 16):
    """Draw a :class:`Dissection` and return the figure.

    ``kind="bars"``: one horizontal bar per concept, its best IoU, labelled with its ``top`` best
    channels (colour bars in their own colour). ``kind="heatmap"``: IoU of concepts (rows) x the
    ``channels`` channels with the highest best IoU (columns).

    >>> fig = draw_dissection(dissect(model, "blocks.1", concept_images()))
    """
    import matplotlib.pyplot as plt

    if not isinstance(dissection, Dissection):
        raise TypeError(f"draw_dissection needs the Dissection that dissect() returns, got {type(dissection).__name__}.")
    if kind not in ("bars", "heatmap"):
        raise ValueError(f"kind must be 'bars' or 'heatmap', got {kind!r}.")
    names = dissection.names
    if kind == "bars":
        if ax is None:
            fig, ax = plt.subplots(figsize=(7, 0.26 * len(names) + 1.2))
        fig = ax.figure
        best = dissection.iou.max(dim=0).values.numpy()
        colours = [
            tuple(_COLOURS[name]) if group == "colour" else _GROUP_COLOURS[group]
            for name, group in zip(names, dissection.groups)
        ]
        rows = np.arange(len(names))
        ax.barh(rows, best, color=colours, edgecolor="0.2", linewidth=0.5)
        for row, c in enumerate(range(len(names))):
            label = " ".join(f"#{k}" for k, _ in dissection.top_channels(c, top))
            ax.text(best[row], row, " " + label, va="center", fontsize=7)
        ax.set_yticks(rows, names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, max(0.05, float(best.max()) * 1.35))
        ax.set_xlabel("best IoU of any channel (its top channels labelled)")
        ax.set_title(f"{dissection.layer}: which channels detect which concept", fontsize=9)
        fig.tight_layout()
        return fig
    order = dissection.iou.max(dim=1).values.argsort(descending=True)[:channels]
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.35 * len(order) + 3, 0.26 * len(names) + 1.2))
    fig = ax.figure
    image = ax.imshow(dissection.iou[order].T.numpy(), cmap="viridis", aspect="auto", vmin=0)
    ax.set_xticks(range(len(order)), [str(int(k)) for k in order], fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("channel (the highest best IoU first)")
    ax.set_title(f"{dissection.layer}: IoU of concepts x channels", fontsize=9)
    fig.colorbar(image, ax=ax, label="IoU", fraction=0.04)
    fig.tight_layout()
    return fig
