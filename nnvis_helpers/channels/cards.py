"""Channel cards: everything the course knows about one channel, on one card (Torchlurk's view, Olah et al. 2017).

* :class:`ChannelCard` — the top dataset examples of a channel, the receptive-field crop of each
  one's strongest unit, that unit's guided-backpropagation (or deconvnet) image, the channel's
  feature visualization and the distribution of its activations over the dataset.
* :func:`channel_cards` — the cards of many channels of a layer: one pass over the data.
* :func:`draw_card`, :func:`draw_cards` — one card large, or a grid of compact cards.
* :func:`card_explorer` — pick a layer and a channel in Jupyter/Colab; a grid of cards elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..architecture import layer_table
from ..config import pick
from ..layers import get_layer
from .crops import crop_fields, display_signed, effective_boxes, field_crops, unit_deconvolution
from .topk import TopExamples, _channel_list, _check_by, top_examples

__all__ = ["ChannelCard", "channel_cards", "channel_icons", "read_images", "card_settings", "draw_card", "draw_cards", "card_title"]


@dataclass
class ChannelCard:
    """What one channel responds to: its top dataset examples, their receptive-field crops and
    deconvolutions, its feature visualization and the distribution of its activations.

    ``scores`` (k,), ``image_index`` (k,), ``positions`` (k, 2) of the strongest unit;
    ``crops`` and ``deconvolutions`` (k, 3, R, R) in [0, 1] with ``inside`` (k, 1, R, R) False
    on the padding beyond the image border; ``activations`` (num_images,) the channel's
    per-image maximum over the dataset; ``icon`` (3, S, S) or None; ``rule`` the backward rule of
    the ``deconvolutions`` ("guided", "deconvnet" or "gradient", see :func:`unit_deconvolution`);
    ``effective`` (k, 4) the square in each crop that holds 90% of that signal (see :func:`effective_boxes`).
    """

    layer: str
    channel: int
    scores: torch.Tensor
    image_index: torch.Tensor
    positions: torch.Tensor
    crops: torch.Tensor
    inside: torch.Tensor
    deconvolutions: torch.Tensor
    activations: torch.Tensor
    icon: torch.Tensor | None = None
    by: str = "max"
    layer_title: str = ""
    rule: str = "guided"
    effective: torch.Tensor | None = None


def read_images(data, indices) -> torch.Tensor:
    """The images at ``indices`` of ``data`` (a Dataset or a tensor (N, 3, H, W)), stacked: (k, 3, H, W).

    Dataset examples keep indices, not pictures; this reads the pictures back for drawing.
    """
    if isinstance(data, torch.Tensor):
        return data[torch.as_tensor(indices).long().cpu()]
    if not hasattr(data, "__getitem__"):
        raise TypeError(
            f"the top examples are drawn by reading them again, so data must be indexable (a Dataset or a tensor), "
            f"not a {type(data).__name__}; wrap a generator's images in a tensor or use dataset(...)."
        )
    images = []
    for index in torch.as_tensor(indices).reshape(-1).tolist():
        item = data[int(index)]
        images.append(item[0] if isinstance(item, (tuple, list)) else item)
    return torch.stack(images)


def card_settings() -> dict:
    """The preset's icon size and steps for card icons: fast 48 px / 32 steps, cpu 96 px / 128, full 160 px / 512."""
    size, steps = pick(fast=(48, 32), cpu=(96, 128), full=(160, 512))
    return {"image_size": size, "steps": steps}


def channel_icons(model: nn.Module, layer: str, channels, image_size: int | None = None, steps: int | None = None,
                  seed: int = 0, progress: bool = True) -> torch.Tensor:
    """Feature visualizations (notebook 04) of several channels in one batched optimization: (K, 3, S, S)."""
    from ..featurevis import channel as channel_objective
    from ..featurevis import render

    settings = card_settings()
    channels = [int(c) for c in channels]
    objective = channel_objective(layer, channels[0], batch=0)
    for i, number in enumerate(channels[1:], start=1):
        objective = objective + channel_objective(layer, number, batch=i)
    return render(model, objective, batch_size=len(channels), seed=seed, progress=progress,
                  image_size=image_size or settings["image_size"], steps=steps or settings["steps"]).cpu()


def channel_cards(
    model: nn.Module,
    layer: str,
    data,
    channels=None,
    k: int = 6,
    by: str = "max",
    icons: bool = True,
    rule: str = "guided",
    top: TopExamples | None = None,
    layer_title: str = "",
    ignore_border: int = 0,
    progress: bool = True,
) -> list[ChannelCard]:
    """One :class:`ChannelCard` per channel of ``layer``: top-k examples over ``data``, crops, deconvolutions, icon.

    One streaming pass of :func:`top_examples` for all channels (or reuse ``top``); then, per
    channel, the k images are read back from ``data``, cropped to the strongest unit's receptive
    field, and backpropagated from that unit with ``rule`` ("guided" backpropagation, the default,
    or "deconvnet"); the icons of all channels are rendered in one batch (``icons=False`` skips
    them). ``ignore_border`` goes to :func:`top_examples`. The model is given back unchanged.

    >>> cards = channel_cards(model, "blocks.2", dataset("offline", length=512), channels=[3, 7], k=6)
    >>> draw_card(cards[0])
    """
    by = _check_by(by)
    get_layer(model, layer)  # unknown name: the closest ones, before any work
    if rule not in ("guided", "deconvnet", "gradient"):
        raise ValueError(f"rule={rule!r}: use 'guided' (guided backpropagation), 'deconvnet' or 'gradient'.")
    if top is None:
        top = top_examples(model, layer, data, channels=channels, k=k, ignore_border=ignore_border, progress=progress)
    elif top.layer != layer:
        raise ValueError(f"top was collected for layer {top.layer!r}, not {layer!r}.")
    wanted = top.channels.tolist() if channels is None else [int(c) for c in _channel_list(channels)]
    rows = [top.row(c) for c in wanted]  # a channel that top lacks: a clear error
    image_size = top.image_size
    table = layer_table(model, (1, 3, *image_size))
    pictures = channel_icons(model, layer, wanted, progress=progress) if icons else None
    cards = []
    for i, (channel, row) in enumerate(zip(wanted, rows)):
        scores, index, positions = top.of(channel, by=by)
        scores, index, positions = scores[:k], index[:k], positions[:k]
        images = read_images(data, index)
        crops, inside = field_crops(model, layer, images, positions, table=table)
        maps = unit_deconvolution(model, images, layer, channel, positions, rule=rule).cpu()
        signed, _ = crop_fields(model, layer, maps, positions, table=table)
        distribution = top.image_max[:, row] if by == "max" else top.image_mean[:, row]
        cards.append(ChannelCard(
            layer=layer, channel=channel, scores=scores.clone(), image_index=index.clone(), positions=positions.clone(),
            crops=crops.cpu(), inside=inside.cpu(), deconvolutions=display_signed(signed.cpu() * inside.cpu(), inside.cpu()),
            activations=distribution.clone(), icon=None if pictures is None else pictures[i], by=by,
            layer_title=layer_title, rule=rule, effective=effective_boxes(model, layer, maps, positions, table=table),
        ))
    return cards


def _picture(ax, image: torch.Tensor, title: str | None = None, fontsize: int = 7, box=None) -> None:
    import matplotlib.pyplot as plt

    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    if box is not None:  # the effective field: dashed, so the crop stays visible
        top, left, bottom, right = (int(v) for v in box)
        ax.add_patch(plt.Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, edgecolor="yellow",
                                   lw=1.0, ls="--"))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def _histogram(ax, card: ChannelCard, fontsize: int = 7) -> None:
    values = card.activations.float().numpy()
    ax.hist(values, bins=40, color="#888888")
    for score in card.scores.tolist():
        ax.axvline(score, color="#d62728", lw=0.8)
    ax.set_yscale("log")
    ax.tick_params(labelsize=fontsize - 1)
    word = "max" if card.by == "max" else "mean"
    ax.set_xlabel(f"per-image {word} activation over {len(values)} images (red: the top {len(card.scores)})", fontsize=fontsize)


def card_title(card: ChannelCard) -> str:
    """``"blocks.2 (early) · channel 7"``: the words above a card."""
    return f"{card.layer_title or card.layer} · channel {card.channel}"


def draw_card(card: ChannelCard, show_deconvolution: bool = True):
    """One card large: the icon, the top-k receptive-field crops with their scores, their
    guided-backprop images, and the distribution of the channel over the dataset. Returns the figure.

    A dashed square on each crop marks the effective field: where 90% of the unit's guided-backprop signal lies.
    """
    import matplotlib.pyplot as plt

    k = len(card.scores)
    rows = 3 if show_deconvolution else 2
    fig = plt.figure(figsize=(2.4 + 1.25 * k, 1.3 * rows + 0.9))
    grid = fig.add_gridspec(rows, k + 2, width_ratios=[1, 1] + [1] * k, height_ratios=[1] * (rows - 1) + [0.9])
    icon_ax = fig.add_subplot(grid[: rows - 1, :2])
    if card.icon is not None:
        _picture(icon_ax, card.icon, "feature visualization", 8)
    else:
        icon_ax.axis("off")
        icon_ax.text(0.5, 0.5, "no icon\n(icons=False)", ha="center", va="center", fontsize=8)
    for j in range(k):
        box = None if card.effective is None else card.effective[j]
        _picture(fig.add_subplot(grid[0, 2 + j]), card.crops[j], f"#{int(card.image_index[j])}: {float(card.scores[j]):.2f}", box=box)
        if show_deconvolution:
            _picture(fig.add_subplot(grid[1, 2 + j]), card.deconvolutions[j], box=box)
    fig.axes[1].set_ylabel("top crops", fontsize=7)
    if show_deconvolution:
        fig.axes[2].set_ylabel({"guided": "guided BP"}.get(card.rule, card.rule), fontsize=7)
    _histogram(fig.add_subplot(grid[rows - 1, :]), card)
    fig.suptitle(card_title(card), fontsize=10)
    fig.tight_layout()
    return fig


def draw_cards(cards: list[ChannelCard], columns: int = 1, max_examples: int = 5):
    """A grid of compact cards, one row each: icon, the top crops, their guided-backprop images. Returns the figure.

    The static twin of :func:`card_explorer`, for pages where widgets do not run.
    """
    import matplotlib.pyplot as plt

    if not cards:
        raise ValueError("no cards to draw: channel_cards(...) returns them.")
    k = min(max_examples, min(len(card.scores) for card in cards))
    per_card = 1 + 2 * k
    rows = -(-len(cards) // columns)
    fig, axes = plt.subplots(rows, per_card * columns, figsize=(0.95 * per_card * columns, 1.15 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, card in enumerate(cards):
        row, start = i // columns, (i % columns) * per_card
        if card.icon is not None:
            _picture(axes[row, start], card.icon)
            axes[row, start].axis("on")
        axes[row, start].set_title(card_title(card), fontsize=7, loc="left")
        for j in range(k):
            _picture(axes[row, start + 1 + j], card.crops[j], box=None if card.effective is None else card.effective[j])
            _picture(axes[row, start + 1 + k + j], card.deconvolutions[j])
    fig.tight_layout(pad=0.3, h_pad=0.6, w_pad=0.1)
    return fig
