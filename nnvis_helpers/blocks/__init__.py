"""The building blocks of interpretability (Olah et al., Distill 2018): one photo, seen through one layer.

* ``compute``: the activations of a layer on a photo, the semantic dictionary with its icon cache,
  the activation grid, spatial attribution (integrated gradients on a layer's units), neuron groups
  (NMF) and the information flow between the groups of two layers and the classes.
* ``views``: the pictures of each and an explorer widget with a static fallback.

>>> from nnvis_helpers.blocks import layer_view, neuron_groups, draw_groups
"""
from .compute import (
    ActivationGrid,
    Flow,
    IconCache,
    LayerTarget,
    LayerView,
    NeuronGroups,
    SemanticDictionary,
    activation_grid,
    grid_alignment,
    group_attribution,
    information_flow,
    layer_view,
    neuron_groups,
    semantic_dictionary,
    spatial_attribution,
)
from .views import (
    BlocksExplorer,
    activation_grid_image,
    blocks_explorer,
    draw_activation_grid,
    draw_attribution,
    draw_dictionary,
    draw_flow,
    draw_group_map,
    draw_groups,
    group_colours,
)

__all__ = [
    "ActivationGrid", "Flow", "IconCache", "LayerTarget", "LayerView", "NeuronGroups", "SemanticDictionary",
    "activation_grid", "grid_alignment", "group_attribution", "information_flow", "layer_view", "neuron_groups",
    "semantic_dictionary", "spatial_attribution",
    "BlocksExplorer", "activation_grid_image", "blocks_explorer", "draw_activation_grid", "draw_attribution", "draw_dictionary", "draw_flow",
    "draw_group_map", "draw_groups", "group_colours",
]
