"""An explorer of channel cards in the notebook: pick a layer and a channel, see its card."""
from __future__ import annotations

import io

from torch import nn

from ..architecture import widget_or_text
from ..layers import get_layer
from .cards import ChannelCard, channel_cards, draw_card
from .topk import TopExamples, top_examples

__all__ = ["CardExplorer", "card_explorer"]


class CardExplorer:
    """Cards on demand: the top examples of a layer are collected once (one pass), a card when first shown.

    In Jupyter or Colab it shows as a layer dropdown, a channel box, previous / next buttons and
    the card; where widgets do not render (GitHub, nbconvert, CI) as a line of text. ``card(layer,
    channel)`` gives the card itself, for a static figure.
    """

    def __init__(self, model: nn.Module, data, layers: list[str], k: int, icons: bool, ignore_border: int, progress: bool):
        self.model, self.data, self.layers, self.k = model, data, layers, k
        self.icons, self.ignore_border, self.progress = icons, ignore_border, progress
        self._tops: dict[str, TopExamples] = {}
        self._cards: dict[tuple[str, int], ChannelCard] = {}
        self.widget = None

    def top(self, layer: str) -> TopExamples:
        if layer not in self._tops:
            self._tops[layer] = top_examples(self.model, layer, self.data, k=self.k, ignore_border=self.ignore_border,
                                             progress=self.progress)
        return self._tops[layer]

    def card(self, layer: str, channel: int) -> ChannelCard:
        key = (layer, int(channel))
        if key not in self._cards:
            (self._cards[key],) = channel_cards(self.model, layer, self.data, channels=[int(channel)], k=self.k,
                                                icons=self.icons, top=self.top(layer), progress=False)
        return self._cards[key]

    def _build_widget(self):
        import ipywidgets as widgets
        import matplotlib.pyplot as plt

        layer = widgets.Dropdown(options=self.layers, value=self.layers[0], description="layer")
        channel = widgets.BoundedIntText(value=0, min=0, max=len(self.top(self.layers[0]).channels) - 1, description="channel",
                                         layout=widgets.Layout(width="180px"))
        previous, following = widgets.Button(description="◀ previous"), widgets.Button(description="next ▶")
        picture = widgets.Image(format="png")
        status = widgets.HTML()

        def redraw(_change=None):
            status.value = f"computing the card of {layer.value} channel {channel.value} ..."
            figure = draw_card(self.card(layer.value, channel.value))
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
            plt.close(figure)
            picture.value = buffer.getvalue()
            status.value = f"{layer.value}: channel {channel.value} of {channel.max + 1}"

        def new_layer(_change=None):
            channel.max = len(self.top(layer.value).channels) - 1
            channel.value = min(channel.value, channel.max)
            redraw()

        def step(amount: int):
            channel.value = (channel.value + amount) % (channel.max + 1)

        layer.observe(new_layer, names="value")
        channel.observe(redraw, names="value")
        previous.on_click(lambda _button: step(-1))
        following.on_click(lambda _button: step(1))
        redraw()
        self.widget = widgets.VBox([widgets.HBox([layer, channel, previous, following]), status, picture])
        return self.widget

    def __repr__(self) -> str:
        return (f"CardExplorer of {', '.join(self.layers)} (static view: run the notebook in Jupyter or Colab to browse "
                "the cards; draw_cards shows a grid here)")

    def _repr_mimebundle_(self, include=None, exclude=None):
        return widget_or_text(repr(self), lambda: self.widget or self._build_widget())


def card_explorer(model: nn.Module, data, layers, k: int = 6, icons: bool = True, ignore_border: int = 0,
                  tops: dict[str, TopExamples] | None = None, progress: bool = True) -> CardExplorer:
    """Browse the channel cards of ``layers`` (a name or a list, e.g. from notebook 01's layer map) over ``data``.

    ``tops``: the :func:`top_examples` already collected for some layers (all their channels), reused
    instead of a new pass.

    >>> card_explorer(model, data, ["blocks.1", "blocks.3", "blocks.5"])
    """
    layers = [layers] if isinstance(layers, str) else list(layers)
    if not layers:
        raise ValueError("give at least one layer name, e.g. card_explorer(model, data, ['blocks.2']).")
    for name in layers:
        get_layer(model, name)  # an unknown name lists the closest ones
    explorer = CardExplorer(model, data, layers, k, icons, ignore_border, progress)
    for name, top in (tops or {}).items():
        if name not in layers or top.layer != name:
            raise ValueError(f"tops[{name!r}] must be the top_examples of layer {name!r}, one of {layers}.")
        explorer._tops[name] = top
    return explorer
