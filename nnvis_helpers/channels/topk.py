"""The dataset examples of a channel: the images that excite it most (Zeiler & Fergus 2014; Olah et al. 2017).

* :func:`top_examples` — one streaming pass over a dataset keeps, for many channels of a layer at
  once, the k images with the highest maximum and the k with the highest mean activation, the
  position of each image's strongest unit, and each image's maximum and mean (the distribution of
  the channel over the dataset). It keeps indices and numbers, never the images: the pictures are
  read again from the dataset when they are drawn.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..datasets.activations import _expected_images, _Rows, _VectorKeeper, stream_layer
from ..layers import get_layer, preserve_model_state
from ..datasets.photos import _check_int

__all__ = ["TopExamples", "top_examples", "rank"]

RANKINGS = ("max", "mean")


def rank(scores: torch.Tensor, index: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of each row: scores (K, M) with their image indices (K, M) -> both (K, min(k, M)).

    Highest score first; equal scores in the order of the image index, so the answer does not
    depend on how the data was cut into batches (a dead channel scores 0 on every image).
    """
    order = torch.argsort(index, dim=1, stable=True)
    scores, index = scores.gather(1, order), index.gather(1, order)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]
    return scores.gather(1, order), index.gather(1, order)


@dataclass
class TopExamples:
    """The top dataset examples of some channels of one layer (see :func:`top_examples`).

    ``channels`` (K,); ``max_scores``, ``max_index`` (K, k): per channel the k images whose
    strongest unit is highest, with their index in the dataset, and ``max_positions`` (K, k, 2)
    the (row, column) of that unit in the layer's map; ``mean_scores``, ``mean_index`` (K, k) the
    same ranked by the spatial mean (both over the map without its outer ``ignore_border``
    rows and columns). ``image_max`` and ``image_mean`` (num_images, K): every
    image's maximum and mean per channel, the distribution a card draws; ``image_argmax``
    (num_images, K) the flat position of every image's maximum.
    """

    layer: str
    channels: torch.Tensor
    max_scores: torch.Tensor
    max_index: torch.Tensor
    max_positions: torch.Tensor
    mean_scores: torch.Tensor
    mean_index: torch.Tensor
    image_max: torch.Tensor
    image_mean: torch.Tensor
    image_argmax: torch.Tensor
    map_size: tuple[int, int]
    image_size: tuple[int, int]
    num_images: int
    ignore_border: int = 0

    @property
    def k(self) -> int:
        return self.max_index.shape[1]

    def row(self, channel: int) -> int:
        """The row of ``channel`` in the tables; a channel that was not collected is an error."""
        found = (self.channels == int(channel)).nonzero()
        if len(found) == 0:
            shown = self.channels[:12].tolist()
            raise ValueError(
                f"channel {channel} of {self.layer!r} was not collected (collected: {shown}"
                f"{' ...' if len(self.channels) > 12 else ''}); pass channels=[..., {channel}] to top_examples."
            )
        return int(found[0, 0])

    def of(self, channel: int, by: str = "max") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(scores (k,), image indices (k,), positions (k, 2)) of one channel, ranked ``by`` "max" or "mean".

        With "mean" the position is still that image's strongest unit, the one a crop shows.
        """
        by = _check_by(by)
        row = self.row(channel)
        if by == "max":
            return self.max_scores[row], self.max_index[row], self.max_positions[row]
        index = self.mean_index[row]
        flat = self.image_argmax[index, row]
        width = self.map_size[1]
        return self.mean_scores[row], index, torch.stack([flat // width, flat % width], dim=1)


def _check_by(by) -> str:
    if by not in RANKINGS:
        raise ValueError(f"by={by!r}: rank the examples by 'max' (the strongest unit) or 'mean' (the whole map).")
    return by


class _TopKeeper(_VectorKeeper):
    """The forward hook of :func:`top_examples`: folds every batch into the running top k of each channel."""

    def __init__(self, layer: str, channels: torch.Tensor | None, k: int, ignore_border: int, total_images: int | None):
        super().__init__(layer, 1, False, stop_early=True, seed=0)
        self.channels, self.k, self.ignore_border = channels, k, ignore_border
        self.best: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        # One buffer each, not a tensor per batch: see datasets.activations._Rows.
        self.image_max, self.image_mean, self.image_argmax = _Rows(total_images), _Rows(total_images), _Rows(total_images)

    def keep(self, tensor) -> None:
        batch = self.batch
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4 or tensor.shape[0] != batch:
            got = f"a tensor of shape {tuple(tensor.shape)}" if isinstance(tensor, torch.Tensor) else "no tensor"
            raise ValueError(
                f"layer {self.layer!r} gives {got} for a batch of {batch} images; dataset examples need feature maps "
                "(N, C, H, W). Pick a convolution layer or block (layer_names(model) lists them)."
            )
        if self.channels is None:
            self.channels = torch.arange(tensor.shape[1])
        elif int(self.channels.max()) >= tensor.shape[1]:
            raise ValueError(
                f"channel {int(self.channels.max())} is out of range: layer {self.layer!r} has {tensor.shape[1]} "
                f"channels (0 to {tensor.shape[1] - 1})."
            )
        self.map_size = tuple(tensor.shape[2:])
        maps = tensor[:, self.channels.to(tensor.device)].float()
        border = self.ignore_border
        if border:
            if min(self.map_size) <= 2 * border:
                raise ValueError(
                    f"ignore_border={border} leaves nothing of layer {self.layer!r}'s {self.map_size[0]}x{self.map_size[1]} "
                    f"map; use at most {(min(self.map_size) - 1) // 2}, or 0."
                )
            inner = torch.full_like(maps, float("-inf"))
            inner[..., border:-border, border:-border] = maps[..., border:-border, border:-border]
            peak, where = inner.flatten(2).max(dim=2)
            mean = maps[..., border:-border, border:-border].mean(dim=(2, 3))
        else:
            peak, where = maps.flatten(2).max(dim=2)
            mean = maps.mean(dim=(2, 3))
        index = torch.arange(self.images_done, self.images_done + batch)
        for name, scores in (("max", peak), ("mean", mean)):
            scores = scores.t().cpu()  # (K, B)
            batch_index = index.expand(len(self.channels), -1)
            if name in self.best:
                kept_scores, kept_index = self.best[name]
                scores, batch_index = torch.cat([kept_scores, scores], 1), torch.cat([kept_index, batch_index], 1)
            self.best[name] = rank(scores, batch_index, self.k)
        self.image_max.append(peak)
        self.image_mean.append(mean)
        self.image_argmax.append(where)


def top_examples(
    model: nn.Module,
    layer: str,
    data,
    channels=None,
    k: int = 9,
    batch_size: int = 32,
    num_workers: int = 0,
    max_images: int | None = None,
    ignore_border: int = 0,
    progress: bool = True,
) -> TopExamples:
    """The k images of ``data`` that excite each channel of ``layer`` most, by max and by mean, in one pass.

    ``data``: a Dataset of (image, label) items, a tensor (N, 3, H, W) in [0, 1], or anything
    :func:`~nnvis_helpers.datasets.collect_activations` takes; images of one size. ``channels``:
    None for all, or a list of channel numbers. Every forward pass stops right after ``layer``;
    only scores, indices and positions are kept (memory grows with images x channels, never with
    pixels). ``ignore_border=b`` leaves out the outer b rows and columns of the map (units there
    see the zero padding, an "edge" some channels love). The model runs in eval mode without
    gradients and is given back unchanged.

    >>> top = top_examples(model, "blocks.3", dataset("offline", length=512), channels=[0, 5], k=6)
    >>> scores, index, positions = top.of(5)            # by the strongest unit
    >>> scores, index, positions = top.of(5, by="mean")  # by the whole map
    """
    module = get_layer(model, layer)  # an unknown name lists the closest ones
    k = _check_int(k, "k (examples per channel)", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    num_workers = _check_int(num_workers, "num_workers", 0)
    if max_images is not None:
        _check_int(max_images, "max_images", 1)
    ignore_border = _check_int(ignore_border, "ignore_border (map rows and columns left out at each edge)", 0)
    if channels is not None:
        channels = _channel_list(channels)
    keeper = _TopKeeper(layer, channels, k, ignore_border, _expected_images(data, max_images))
    with preserve_model_state(model):
        for _ in stream_layer(model, module, keeper, data, batch_size, num_workers, max_images, progress, f"top examples {layer}"):
            pass
    (max_scores, max_index), (mean_scores, mean_index) = keeper.best["max"], keeper.best["mean"]
    image_argmax = keeper.image_argmax.result(dtype=torch.long)
    rows = torch.arange(len(keeper.channels))[:, None]
    flat = image_argmax[max_index, rows]
    width = keeper.map_size[1]
    return TopExamples(
        layer=layer,
        channels=keeper.channels.clone(),
        max_scores=max_scores,
        max_index=max_index,
        max_positions=torch.stack([flat // width, flat % width], dim=2),
        mean_scores=mean_scores,
        mean_index=mean_index,
        image_max=keeper.image_max.result(),
        image_mean=keeper.image_mean.result(),
        image_argmax=image_argmax,
        map_size=keeper.map_size,
        image_size=keeper.image_size,
        num_images=keeper.images_done,
        ignore_border=ignore_border,
    )


def _channel_list(channels) -> torch.Tensor:
    """Channel numbers as a long tensor (K,), checked: non-negative ints, no repeats."""
    if isinstance(channels, bool) or (isinstance(channels, int)):
        channels = [channels]
    try:
        values = [int(c) for c in channels]
        exact = all(not isinstance(c, bool) and float(c) == int(c) for c in channels)
    except (TypeError, ValueError):
        raise TypeError(f"channels must be None (all) or a list of channel numbers such as [0, 5, 17], got {channels!r}.") from None
    if not values or not exact or min(values) < 0 or len(set(values)) != len(values):
        raise ValueError(f"channels must be distinct non-negative channel numbers such as [0, 5, 17], got {channels!r}.")
    return torch.tensor(values, dtype=torch.long)
