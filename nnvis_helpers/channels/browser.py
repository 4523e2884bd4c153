"""The network browser: every channel's card as a static web site (Torchlurk's front end, done simply).

Torchlurk (EPFL) showed, for every filter of a network, its top dataset images, their
deconvolution, the receptive-field crops and the gradient-ascent image in a web front end. This
module writes the same thing as plain files that open from disk (``file://``) and from GitHub
Pages: HTML, one CSS file, a little vanilla JavaScript and small PNG pictures; no server, no CDN,
no external fonts, relative links only.

* :func:`write_browser` — the site from :class:`~.cards.ChannelCard` objects you already have.
* :func:`export_browser` — computes the cards of some layers (:func:`~.cards.channel_cards`) and
  writes the site.

The site::

    index.html                  the layers, a few pictures and the channel count of each; a filter box
    assets/browser.css, .js     the look and the filter box (shared by every page), copied from
                                this package's browser_assets/ folder (edit them there)
    <layer>/index.html          every channel's card as a thumbnail strip (icon + top crops); a filter box
    <layer>/channel-0017.html   one channel: icon, every crop with its deconvolution, scores, the histogram
    <layer>/img/*.png           the pictures
    browser.json                what was written (lets a second export into the same folder tidy up)

The same cards always give the same files, byte for byte.

>>> export_browser(model, ["blocks.1", "blocks.4"], dataset("offline", length=512), "build/browser")
PosixPath('build/browser/index.html')
"""
from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .cards import ChannelCard

__all__ = ["write_browser", "export_browser"]

#: Pictures on the channel page are stored between these sizes (px): small crops are blown up
#: with nearest neighbour so their pixels stay visible, big ones shrunk to keep the site small.
LARGE_MIN, LARGE_MAX = 96, 160
#: Side of one cell of a card's thumbnail strip (icon + top crops) on the layer page.
THUMB = 64
#: How many top crops a thumbnail strip shows.
STRIP_CROPS = 4
#: How many pictures the index shows per layer.
INDEX_PREVIEWS = 6
RULE_NAMES = {"guided": "guided backprop", "deconvnet": "deconvnet", "gradient": "gradient"}  # a card's backward rule, in words
MANIFEST = "browser.json"
GENERATOR = "nnvis_helpers.export_browser"


# ----------------------------------------------------------------------------- checking the input


def _check_out_dir(out_dir) -> Path:
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a folder path such as 'build/browser', got {type(out_dir).__name__}.")
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(
            f"out_dir {str(out)!r} is a file, not a folder; give the path of a folder (it is created if needed), "
            f"such as 'build/browser'."
        )
    if (out / "index.html").exists() and not (out / MANIFEST).exists():
        raise FileExistsError(
            f"{str(out)!r} already has an index.html that the browser export did not write; choose an empty or "
            f"new folder so that nothing of yours is overwritten."
        )
    return out


def _check_card(layer: str, position: int, card) -> None:
    where = f"cards_by_layer[{layer!r}][{position}]"
    if not isinstance(card, ChannelCard):
        raise TypeError(f"{where} is a {type(card).__name__}; expected a ChannelCard (from channel_cards).")
    if isinstance(card.channel, bool) or not isinstance(card.channel, (int, np.integer)) or card.channel < 0:
        raise ValueError(f"{where}.channel must be an int >= 0, got {card.channel!r}.")
    tensors = {name: getattr(card, name) for name in
               ("scores", "image_index", "positions", "crops", "inside", "deconvolutions", "activations")}
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{where}.{name} must be a torch.Tensor, got {type(value).__name__}.")
    k = card.scores.shape[0] if card.scores.dim() == 1 else -1
    if k < 1:
        raise ValueError(f"{where}.scores must have shape (k,) with k >= 1, got {tuple(card.scores.shape)}.")
    crops = card.crops
    if crops.dim() != 4 or crops.shape[0] != k or crops.shape[1] != 3 or crops.shape[2] != crops.shape[3]:
        raise ValueError(f"{where}.crops must have shape (k, 3, R, R) with k = {k}, got {tuple(crops.shape)}.")
    expected = {
        "image_index": (k,),
        "positions": (k, 2),
        "deconvolutions": tuple(crops.shape),
    }
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{where}.{name} must have shape {shape}, got {tuple(tensors[name].shape)}.")
    if card.activations.dim() != 1 or card.activations.numel() == 0:
        raise ValueError(f"{where}.activations must have shape (num_images,), got {tuple(card.activations.shape)}.")
    icon = card.icon
    if icon is not None and (not isinstance(icon, torch.Tensor) or icon.dim() != 3 or icon.shape[0] != 3):
        shape = tuple(icon.shape) if isinstance(icon, torch.Tensor) else type(icon).__name__
        raise ValueError(f"{where}.icon must be None or a tensor (3, S, S), got {shape}.")


def _check_cards(cards_by_layer) -> dict[str, list[ChannelCard]]:
    if not isinstance(cards_by_layer, Mapping):
        raise TypeError(
            f"cards_by_layer must be a dict {{layer name: [ChannelCard, ...]}}, got {type(cards_by_layer).__name__}."
        )
    if not cards_by_layer:
        raise ValueError("cards_by_layer is empty; give at least one layer with its cards.")
    checked: dict[str, list[ChannelCard]] = {}
    for layer, cards in cards_by_layer.items():
        if not isinstance(layer, str):
            raise TypeError(f"the keys of cards_by_layer are layer names (str), got {type(layer).__name__}.")
        if isinstance(cards, ChannelCard) or not isinstance(cards, Sequence) or len(cards) == 0:
            raise ValueError(f"cards_by_layer[{layer!r}] must be a non-empty list of ChannelCards.")
        seen: set[int] = set()
        for position, card in enumerate(cards):
            _check_card(layer, position, card)
            if int(card.channel) in seen:
                raise ValueError(f"cards_by_layer[{layer!r}] has channel {card.channel} twice; keep one card per channel.")
            seen.add(int(card.channel))
        checked[layer] = sorted(cards, key=lambda card: int(card.channel))
    return checked


def _check_class_names(class_names, layers: Sequence[str]) -> dict[str, Sequence[str]]:
    if class_names is None:
        return {}
    if isinstance(class_names, Mapping):
        unknown = [name for name in class_names if name not in layers]
        if unknown:
            raise ValueError(f"class_names names layers that have no cards: {unknown}; the layers are {list(layers)}.")
        named = dict(class_names)
    elif isinstance(class_names, Sequence) and not isinstance(class_names, str):
        named = {layer: class_names for layer in layers}
    else:
        raise TypeError("class_names must be None, a list of channel names, or a dict {layer: list of names}.")
    for layer, names in named.items():
        if isinstance(names, str) or not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"class_names for {layer!r} must be a list of strings.")
    return named


# ----------------------------------------------------------------------------- pictures


def _to_pil(picture: torch.Tensor) -> Image.Image:
    """(3, H, W) float [0, 1] -> an RGB PIL image (NaN shown black)."""
    array = torch.nan_to_num(picture.detach().float().cpu(), nan=0.0).clamp(0, 1)
    array = (array * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array))


def _large(picture: torch.Tensor) -> Image.Image:
    """The picture for the channel page: small ones blown up by a whole factor (nearest), big ones shrunk."""
    image = _to_pil(picture)
    side = max(image.size)
    if side < LARGE_MIN:
        factor = math.ceil(LARGE_MIN / side)
        return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    if side > LARGE_MAX:
        scale = LARGE_MAX / side
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return image.resize(size, Image.Resampling.LANCZOS)
    return image


def _thumb(picture: torch.Tensor) -> Image.Image:
    image = _to_pil(picture)
    method = Image.Resampling.NEAREST if max(image.size) <= THUMB else Image.Resampling.LANCZOS
    return image.resize((THUMB, THUMB), method)


def _strip(card: ChannelCard) -> Image.Image:
    """A card's thumbnail: the icon (if any), then the top crops, THUMB px each, 2 px apart."""
    pictures = ([card.icon] if card.icon is not None else []) + [card.crops[i] for i in range(min(STRIP_CROPS, len(card.crops)))]
    gap = 2
    strip = Image.new("RGB", (len(pictures) * (THUMB + gap) - gap, THUMB), (255, 255, 255))
    for i, picture in enumerate(pictures):
        strip.paste(_thumb(picture), (i * (THUMB + gap), 0))
    return strip


def _save_png(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=True)  # no timestamp or text chunks: same pixels, same bytes


# ----------------------------------------------------------------------------- text and numbers


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _number(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.3g}"


def _slug(layer: str, taken: set[str]) -> str:
    """A folder name for a layer: its print(model) name with anything but letters, digits, '.', '_', '-' as '_'."""
    base = "layer-" + (re.sub(r"[^A-Za-z0-9._-]", "_", layer) or "model")
    slug, number = base, 2
    while slug.lower() in taken:  # case-insensitive file systems (macOS, Windows)
        slug, number = f"{base}-{number}", number + 1
    taken.add(slug.lower())
    return slug


def _channel_file(channel: int) -> str:
    return f"channel-{channel:04d}.html"


def _channel_label(card: ChannelCard, names: Sequence[str] | None) -> str:
    label = f"channel {card.channel}"
    if names is not None and 0 <= card.channel < len(names):
        label += f" · {names[card.channel]}"
    return label


def _statistic(card: ChannelCard) -> str:
    """What ``activations`` and ``scores`` hold: each image's maximum or spatial mean."""
    return "mean" if card.by == "mean" else "maximum"


def _histogram_svg(card: ChannelCard, width: int = 560, height: int = 170, bins: int = 40) -> str:
    """The distribution of ``card.activations`` as an inline SVG, the top-k examples marked in red."""
    values = card.activations.detach().float().cpu().numpy()
    values = values[np.isfinite(values)]
    marks = [m for m in card.scores.detach().float().cpu().tolist() if math.isfinite(m)]
    if values.size == 0:
        return '<p class="note">No finite activation to draw.</p>'
    low = min([float(values.min())] + marks)
    high = max([float(values.max())] + marks)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    left, right, top, bottom = 40, 10, 10, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    tallest = max(int(counts.max()), 1)

    def x_of(value: float) -> float:
        return left + (value - low) / (high - low) * plot_w

    parts = [
        f'<svg class="histogram" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="histogram of the channel\'s activations">'
    ]
    bar_w = plot_w / bins
    for i, count in enumerate(counts.tolist()):
        if count:
            bar_h = count / tallest * plot_h
            parts.append(f'<rect class="bar" x="{left + i * bar_w:.2f}" y="{top + plot_h - bar_h:.2f}" '
                         f'width="{max(bar_w - 1, 0.5):.2f}" height="{bar_h:.2f}"><title>{count} images in '
                         f'[{_number(edges[i])}, {_number(edges[i + 1])})</title></rect>')
    parts.append(f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}"/>')
    for rank, mark in enumerate(marks, start=1):
        x = x_of(mark)
        parts.append(f'<line class="mark" x1="{x:.2f}" y1="{top}" x2="{x:.2f}" y2="{top + plot_h}">'
                     f'<title>top {rank}: {_number(mark)}</title></line>')
    parts.append(f'<text x="{left}" y="{height - 18}" text-anchor="start">{_e(_number(low))}</text>')
    parts.append(f'<text x="{left + plot_w}" y="{height - 18}" text-anchor="end">{_e(_number(high))}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 4}" text-anchor="middle">'
                 f'per-image {_e(_statistic(card))} activation ({values.size} images)</text>')
    parts.append(f'<text x="{left - 6}" y="{top + 10}" text-anchor="end">{tallest}</text>')
    parts.append(f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>')
    parts.append("</svg>")
    return "".join(parts)


# ----------------------------------------------------------------------------- pages


def _asset(name: str) -> str:
    """The text of a file in ``browser_assets/`` (shipped as package data), as written into the site."""
    return resources.files(__package__).joinpath("browser_assets").joinpath(name).read_text(encoding="utf-8")


def _page(title: str, body: str, depth: int) -> str:
    """A whole HTML page; ``depth`` is how many folders below the site's root it lives."""
    up = "../" * depth
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n"
        '<link rel="icon" href="data:,">\n'  # no favicon request: no 404 in the console
        f'<link rel="stylesheet" href="{up}assets/browser.css">\n'
        f"</head>\n<body>\n{body}\n"
        '<footer>A static site written by <code>nnvis_helpers.export_browser</code>: plain files, no server; '
        "opens from disk and from GitHub Pages. Keys: <kbd>/</kbd> filter, <kbd>&larr;</kbd> <kbd>&rarr;</kbd> "
        "previous / next channel.</footer>\n"
        f'<script src="{up}assets/browser.js"></script>\n'
        "</body>\n</html>\n"
    )


def _filter_box(noun: str, total: int, placeholder: str) -> str:
    return (
        '<div class="filter"><input type="search" data-filter-box autocomplete="off" '
        f'data-noun="{_e(noun)}" placeholder="{_e(placeholder)}" aria-label="filter">'
        f'<span class="count" data-filter-count aria-live="polite">{total} of {total} {_e(noun)} shown</span></div>'
    )


class _Layer:
    """What the pages need about one layer."""

    def __init__(self, name: str, slug: str, cards: list[ChannelCard], names: Sequence[str] | None):
        self.name, self.slug, self.cards, self.names = name, slug, cards, names
        self.title = next((card.layer_title for card in cards if card.layer_title), "") or name
        self.k = max(len(card.scores) for card in cards)
        self.by = cards[0].by


def _index_page(layers: list[_Layer], title: str, model_name: str) -> str:
    channels = sum(len(layer.cards) for layer in layers)
    intro = (f"{len(layers)} layer{'s' if len(layers) != 1 else ''}, {channels} channel{'s' if channels != 1 else ''}"
             + (f" of {_e(model_name)}" if model_name else "")
             + ". Each channel has a card: its feature visualization, the dataset crops that excite it most, "
               "what in each crop made the unit fire (guided backpropagation or the deconvnet from that unit) "
               "and the distribution of its activations.")
    items = []
    for layer in layers:
        previews = []
        for card in layer.cards[:INDEX_PREVIEWS]:
            picture = "icon" if card.icon is not None else "crop-1"
            label = _channel_label(card, layer.names)
            previews.append(f'<a href="{layer.slug}/{_channel_file(card.channel)}" title="{_e(label)}">'
                            f'<img src="{layer.slug}/img/{card.channel:04d}-{picture}.png" alt="{_e(label)}" '
                            f'width="64" height="64"></a>')
        # the layer's names, and its channels' class names when it has some (a number would match every layer)
        classes = [layer.names[card.channel] for card in layer.cards if layer.names and card.channel < len(layer.names)]
        search = " ".join([layer.name, layer.title] + classes)
        count = len(layer.cards)
        items.append(
            f'<li class="layer" data-filter-item data-search="{_e(search)}">'
            f'<h2><a href="{layer.slug}/index.html">{_e(layer.title)}</a></h2>'
            f'<p class="note">layer <code>{_e(layer.name)}</code> · {count} channel{"s" if count != 1 else ""} · '
            f'top {layer.k} examples by {_e(layer.by)} activation · '
            f'<a href="{layer.slug}/index.html">all {count} cards &rarr;</a></p>'
            f'<div class="previews">{"".join(previews)}</div></li>'
        )
    body = (
        f"<header><h1>{_e(title)}</h1><p class=\"note\">{intro}</p></header>\n<main>\n"
        + _filter_box("layers", len(layers), "filter layers: a name such as blocks.2, or a word")
        + f'\n<ul class="layers">{"".join(items)}</ul>\n</main>'
    )
    return _page(title, body, depth=0)


def _layer_page(layer: _Layer, title: str) -> str:
    items = []
    for card in layer.cards:
        label = _channel_label(card, layer.names)
        top = _number(float(card.scores.max()))
        strip_size = _strip_width(card)
        items.append(
            f'<li class="card" data-filter-item data-channel="{card.channel}" data-search="{_e(label)}">'
            f'<a href="{_channel_file(card.channel)}">'
            f'<span class="title">{_e(label)}</span><span class="score">top score {_e(top)}</span>'
            f'<img src="img/{card.channel:04d}-strip.png" width="{strip_size}" height="{THUMB}" loading="lazy" '
            f'alt="{_e(label)}: {"feature visualization and " if card.icon is not None else ""}top crops"></a></li>'
        )
    crumbs = f'<p class="crumbs"><a href="../index.html">{_e(title)}</a> &rsaquo;</p>'
    count = len(layer.cards)
    body = (
        f"<header>{crumbs}<h1>{_e(layer.title)}</h1>"
        f'<p class="note">Layer <code>{_e(layer.name)}</code>, {count} channel{"s" if count != 1 else ""}. '
        f'Each card: {"the feature visualization, then " if any(c.icon is not None for c in layer.cards) else ""}'
        f"the crops of the dataset images that excite the channel most (by {_e(layer.by)} activation). "
        "Click a card for the large pictures.</p></header>\n<main>\n"
        + _filter_box("channels", count, "filter: 17, 3 7 12, 10-20 or a word")
        + f'\n<ul class="cards">{"".join(items)}</ul>\n</main>'
    )
    return _page(f"{layer.title} · {title}", body, depth=1)


def _strip_width(card: ChannelCard) -> int:
    cells = (card.icon is not None) + min(STRIP_CROPS, len(card.crops))
    return cells * (THUMB + 2) - 2


def _channel_page(layer: _Layer, position: int, title: str, sizes: dict[str, tuple[int, int]]) -> str:
    card = layer.cards[position]
    label = _channel_label(card, layer.names)
    stem = f"img/{card.channel:04d}"

    def neighbour(offset: int, rel: str, text: str) -> str:
        other = position + offset
        if 0 <= other < len(layer.cards):
            target = layer.cards[other]
            return f'<a rel="{rel}" href="{_channel_file(target.channel)}">{text} {_e(_channel_label(target, layer.names))}</a>'
        return f'<span class="off">{text} none</span>'

    pager = (f'<nav class="pager">{neighbour(-1, "prev", "&larr;")}'
             f'<a href="index.html">all channels of {_e(layer.title)}</a>{neighbour(1, "next", "&rarr;")}</nav>')

    if card.icon is not None:
        icon = (f'<div class="icon"><img src="{stem}-icon.png" width="224" height="224" '
                f'alt="feature visualization of {_e(label)}"></div>')
    else:
        icon = '<p class="note">No feature visualization for this card (exported with icons=False).</p>'

    method = RULE_NAMES.get(card.rule, card.rule)
    examples = []
    for rank in range(1, len(card.scores) + 1):
        i = rank - 1
        row, col = (int(v) for v in card.positions[i].tolist())
        crop_w, crop_h = sizes[f"{stem}-crop-{rank}.png"]
        deconv_w, deconv_h = sizes[f"{stem}-deconvolution-{rank}.png"]
        examples.append(
            f'<li class="example"><div class="pair">'
            f'<figure><img src="{stem}-crop-{rank}.png" width="{crop_w}" height="{crop_h}" '
            f'alt="top {rank}: receptive-field crop"><figcaption>crop</figcaption></figure>'
            f'<figure><img src="{stem}-deconvolution-{rank}.png" width="{deconv_w}" height="{deconv_h}" '
            f'alt="top {rank}: {_e(method)}"><figcaption>{_e(method)}</figcaption></figure></div>'
            f'<p>#{rank} · score <strong>{_e(_number(float(card.scores[i])))}</strong> · '
            f'image {int(card.image_index[i])} · unit at ({row}, {col})</p></li>'
        )
    body = (
        f'<header><p class="crumbs"><a href="../index.html">{_e(title)}</a> &rsaquo; '
        f'<a href="index.html">{_e(layer.title)}</a> &rsaquo;</p>'
        f"<h1>{_e(layer.title)} · {_e(label)}</h1>{pager}</header>\n<main>\n"
        f"<h2>Feature visualization</h2>{icon}\n"
        f"<h2>Distribution of its activations</h2>{_histogram_svg(card)}"
        f'<p class="note">How strongly the channel fires on each of the {card.activations.numel()} dataset images '
        f"(its {_e(_statistic(card))} over positions); the red lines mark the top {len(card.scores)} examples.</p>\n"
        f"<h2>Top {len(card.scores)} dataset examples</h2>"
        '<p class="note">Left: the part of the image the strongest unit sees (its receptive field; the checkerboard '
        f"is outside the image). Right: {_e(method)} from that single unit, the same crop (grey: zero).</p>"
        f'<ul class="examples">{"".join(examples)}</ul>\n{pager}\n</main>'
    )
    return _page(f"{label} · {layer.title} · {title}", body, depth=1)


# ----------------------------------------------------------------------------- writing


def _remove_previous_export(out: Path) -> None:
    """Delete what an earlier export wrote into ``out`` (listed in its browser.json), nothing else."""
    try:
        previous = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(previous, dict) or previous.get("generator") != GENERATOR:
        return
    root = out.resolve()
    emptied: set[Path] = set()
    for name in previous.get("files", []):
        path = (out / str(name)).resolve()
        if root in path.parents and path.is_file():
            path.unlink()
            emptied.update(parent for parent in path.parents if root in parent.parents)
    for folder in sorted(emptied, key=lambda p: len(p.parts), reverse=True):  # deepest first
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def write_browser(
    cards_by_layer: Mapping[str, Sequence[ChannelCard]],
    out_dir: str | os.PathLike,
    title: str = "What each channel responds to",
    model_name: str = "",
    class_names: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Write the network browser for cards you already have; returns the path of its index.html.

    ``cards_by_layer``: {layer name: [ChannelCard, ...]} (in the order the index shows the layers);
    ``class_names``: names shown after the channel number (and found by the filter), either one
    list for every layer (for layers whose channels are classes) or {layer: list}. Pictures
    come from the cards: ``icon`` (3, S, S) or None, ``crops`` and ``deconvolutions`` (k, 3, R, R).

    >>> write_browser({"blocks.2": channel_cards(model, "blocks.2", data, channels=range(8))}, "build/browser")
    PosixPath('build/browser/index.html')
    """
    layers_cards = _check_cards(cards_by_layer)
    out = _check_out_dir(out_dir)
    for name, value in (("title", title), ("model_name", model_name)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {type(value).__name__}.")
    names_by_layer = _check_class_names(class_names, list(layers_cards))

    taken: set[str] = {"assets", "index.html", MANIFEST.lower()}
    layers = [_Layer(name, _slug(name, taken), cards, names_by_layer.get(name)) for name, cards in layers_cards.items()]

    out.mkdir(parents=True, exist_ok=True)
    _remove_previous_export(out)
    written: list[str] = []

    def write_text(relative: str, text: str) -> None:
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
        written.append(relative)

    write_text("assets/browser.css", _asset("browser.css"))
    write_text("assets/browser.js", _asset("browser.js"))
    for layer in layers:
        sizes: dict[str, tuple[int, int]] = {}
        for card in layer.cards:
            stem = f"img/{card.channel:04d}"
            pictures: dict[str, Image.Image] = {f"{stem}-strip.png": _strip(card)}
            if card.icon is not None:
                pictures[f"{stem}-icon.png"] = _large(card.icon)
            for i in range(len(card.scores)):
                pictures[f"{stem}-crop-{i + 1}.png"] = _large(card.crops[i])
                pictures[f"{stem}-deconvolution-{i + 1}.png"] = _large(card.deconvolutions[i])
            for relative, image in pictures.items():
                _save_png(image, out / layer.slug / relative)
                written.append(f"{layer.slug}/{relative}")
                sizes[relative] = image.size
        write_text(f"{layer.slug}/index.html", _layer_page(layer, title))
        for position, card in enumerate(layer.cards):
            write_text(f"{layer.slug}/{_channel_file(card.channel)}", _channel_page(layer, position, title, sizes))
    write_text("index.html", _index_page(layers, title, model_name))

    manifest = {
        "generator": GENERATOR,
        "title": title,
        "model": model_name,
        "layers": [
            {"name": layer.name, "folder": layer.slug, "title": layer.title,
             "channels": [int(card.channel) for card in layer.cards]}
            for layer in layers
        ],
        "files": sorted(written + [MANIFEST]),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return out / "index.html"


# ----------------------------------------------------------------------------- computing the cards too


def _layer_list(layers) -> list[str]:
    names = [layers] if isinstance(layers, str) else layers
    if not isinstance(names, Sequence) or isinstance(names, (bytes, bytearray)):
        raise TypeError(f"layers must be a layer name or a list of names such as ['blocks.2', 'blocks.5'], got {type(layers).__name__}.")
    names = list(names)
    if not names:
        raise ValueError("layers is empty; give at least one layer name, such as 'blocks.2' (print(model) shows them).")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"every layer must be a name (str) as print(model) shows it, got {type(name).__name__}.")
    if len(set(names)) != len(names):
        raise ValueError(f"layers names a layer twice: {names}; give each once.")
    return names


def _channel_list(channels, what: str) -> list[int] | None:
    if channels is None:
        return None
    if isinstance(channels, (int, np.integer)) and not isinstance(channels, bool):
        channels = [channels]
    if isinstance(channels, (torch.Tensor, np.ndarray)):
        channels = channels.tolist()
    if isinstance(channels, (str, bytes)) or not isinstance(channels, (Sequence, range)):
        raise TypeError(f"{what} must be None (all channels) or a list of channel numbers, got {type(channels).__name__}.")
    result = list(channels)
    if not result:
        raise ValueError(f"{what} is empty; give at least one channel number, or None for all channels.")
    for channel in result:
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or channel < 0:
            raise ValueError(f"{what} must hold channel numbers (ints >= 0), got {channel!r}.")
    if len(set(int(c) for c in result)) != len(result):
        raise ValueError(f"{what} names a channel twice: {result}.")
    return [int(c) for c in result]


def _channels_per_layer(channels, names: list[str]) -> dict[str, list[int] | None]:
    if isinstance(channels, Mapping):
        unknown = [name for name in channels if name not in names]
        if unknown:
            raise ValueError(f"channels names layers that are not exported: {unknown}; the layers are {names}.")
        return {name: _channel_list(channels.get(name), f"channels[{name!r}]") for name in names}
    same = _channel_list(channels, "channels")
    return {name: same for name in names}


def _check_range(module: torch.nn.Module, layer: str, channels: list[int] | None) -> None:
    """Catch a channel out of range before any work, where the layer says how many channels it has."""
    size = getattr(module, "out_channels", None) or getattr(module, "num_features", None)
    if channels is None or not isinstance(size, int):
        return
    bad = [c for c in channels if c >= size]
    if bad:
        raise ValueError(f"layer {layer!r} has {size} channels (0 to {size - 1}); channels {bad} do not exist.")


def export_browser(
    model: torch.nn.Module,
    layers: str | Sequence[str],
    data,
    out_dir: str | os.PathLike,
    channels: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    k: int = 6,
    icons: bool = True,
    progress: bool = True,
    title: str | None = None,
    ignore_border: int = 0,
) -> Path:
    """Compute the cards of ``layers`` on ``data`` and write the network browser; returns its index.html.

    ``layers``: a print(model) name or a list of names; ``data``: what :func:`channel_cards`
    takes (a Dataset of (image, label) or a tensor (N, 3, H, W) in [0, 1]); ``channels``: None
    (every channel), a list for every layer, or {layer: list}; ``k`` top examples per channel;
    ``icons``: also render each channel's feature visualization (slower); ``ignore_border``: leave
    out the outer rows and columns of each map when ranking (see :func:`top_examples`).

    >>> export_browser(model, ["blocks.1", "blocks.4"], dataset("offline", length=256), "build/browser", channels=range(16))
    PosixPath('build/browser/index.html')
    """
    from ..layers import get_layer, preserve_model_state
    from .cards import channel_cards

    names = _layer_list(layers)
    modules = {name: get_layer(model, name) for name in names}
    per_layer = _channels_per_layer(channels, names)
    for name in names:
        _check_range(modules[name], name, per_layer[name])
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k is how many top examples each card shows: an int >= 1, got {k!r}.")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a string or None, got {type(title).__name__}.")
    if isinstance(ignore_border, bool) or not isinstance(ignore_border, (int, np.integer)) or ignore_border < 0:
        raise ValueError(f"ignore_border is how many outer rows and columns of each map to leave out: an int >= 0, got {ignore_border!r}.")
    _check_out_dir(out_dir)

    info = getattr(model, "info", None)
    model_name = getattr(info, "name", None) or type(model).__name__
    with preserve_model_state(model, eval_mode=False):  # channel_cards sets eval mode itself
        cards = {
            name: channel_cards(model, name, data, channels=per_layer[name], k=int(k), icons=icons,
                                ignore_border=ignore_border, progress=progress)
            for name in names
        }
    return write_browser(cards, out_dir, title=title or f"{model_name}: what each channel responds to", model_name=model_name)
