"""What a filter responds to (notebook 07): dataset examples, receptive-field crops, cards, a browser.

* :mod:`.topk` — :func:`top_examples`, the top-k dataset images of many channels in one pass.
* :mod:`.crops` — :func:`field_crops` and :func:`unit_deconvolution`: what one unit sees, and what in it made it fire.
* :mod:`.cards` — :class:`ChannelCard` and :func:`channel_cards`, :func:`draw_card`, :func:`draw_cards`.
* :mod:`.explorer` — :func:`card_explorer`, a layer and channel picker in Jupyter/Colab.
* :mod:`.facets` — :func:`example_groups`: does a channel fire for one kind of input or for two?
* :mod:`.concepts` — :func:`concept_images`: colour, grating and texture images with exact masks.
* :mod:`.dissection` — :func:`dissect`: a small Network Dissection on those concepts.
* :mod:`.browser` — :func:`export_browser`: a static web site of every channel's card, no server needed.
"""
from .cards import ChannelCard, card_settings, channel_cards, channel_icons, draw_card, draw_cards, read_images
from .browser import export_browser, write_browser
from .concepts import CONCEPT_GROUPS, ConceptSet, available_textures, concept_images, grating_name, show_concepts
from .dissection import Dissection, dissect, draw_dissection
from .explorer import CardExplorer, card_explorer
from .facets import ExampleGroups, example_groups, unit_vectors
from .crops import checkerboard, crop_fields, display_signed, effective_boxes, field_crops, unit_deconvolution
from .topk import TopExamples, top_examples

__all__ = [
    "TopExamples",
    "top_examples",
    "field_crops",
    "crop_fields",
    "effective_boxes",
    "unit_deconvolution",
    "display_signed",
    "checkerboard",
    "ChannelCard",
    "channel_cards",
    "channel_icons",
    "card_settings",
    "read_images",
    "draw_card",
    "draw_cards",
    "CardExplorer",
    "card_explorer",
    "ExampleGroups",
    "example_groups",
    "unit_vectors",
    "ConceptSet",
    "concept_images",
    "grating_name",
    "available_textures",
    "CONCEPT_GROUPS",
    "Dissection",
    "dissect",
    "draw_dissection",
    "show_concepts",
    "write_browser",
    "export_browser",
]
