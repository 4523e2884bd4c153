"""Activation atlas (Carter, Armstrong, Schubert, Johnson & Olah, Distill 2019): how one layer sees a whole dataset.

The method, one step per function:

1. collect activation vectors of one layer over many images (``datasets.collect_activations``);
2. lay them out in 2-D (:func:`layout`: UMAP with the paper's settings, t-SNE or PCA as fallback);
3. cut the plane into a grid and average the vectors of each cell (:func:`grid_cells`);
4. render a feature visualization of every cell's mean, all icons in one batched
   optimization (:func:`render_icons`, :func:`activation_atlas` does 2-4 in one call);
5. draw it (:func:`draw_atlas`), label cells as the paper does, by the mean attribution of their vectors
   to each class (:func:`vector_attributions`, :func:`attribution_labels`), or with the class their mean
   pushes up (:func:`layer_to_logits`), focus on two classes (:func:`class_focused_vectors`), and place
   new photos on it (:func:`project`) — an adversarial attack's path across the atlas, say;
6. read where two classes meet and paste what the target class's cell shows into photos of the
   other class (:func:`cell_crops`, :func:`choose_patch`, :func:`paste_patch`,
   :func:`patch_flip_rate` against :func:`control_patches`): the paper's patch attack.

:func:`icon_faithfulness` checks that each icon, fed back through the network, produces the
activation of its own cell (or a neighbour's) rather than any other.

>>> activations = collect_activations(model, "blocks.5", dataset("offline", length=2000))
>>> atlas = activation_atlas(model, activations)
>>> fig = draw_atlas(atlas)
"""
from .build import (
    Atlas,
    AtlasGrid,
    IconCheck,
    activation_atlas,
    activations_at,
    class_focused_vectors,
    grid_cells,
    icon_faithfulness,
    icon_settings,
    icon_transforms,
    layer_to_logits,
    project,
    render_icons,
)
from .attribution import (
    attribution_focused_vectors,
    attribution_labels,
    cell_attribution,
    label_agreement,
    vector_attributions,
)
from .patch import (
    PLACES,
    PatchResult,
    cell_crops,
    choose_patch,
    control_patches,
    draw_patch_attack,
    paste_patch,
    patch_flip_rate,
)
from .layout import LAYOUT_METHODS, Layout, layout, whitening_matrix
from .views import atlas_explorer, atlas_icon_mask, atlas_image, class_names, draw_atlas, draw_grid, draw_layout, draw_path, show_cell

__all__ = [
    "attribution_focused_vectors",
    "attribution_labels",
    "cell_attribution",
    "label_agreement",
    "vector_attributions",
    "PLACES",
    "PatchResult",
    "cell_crops",
    "choose_patch",
    "control_patches",
    "draw_patch_attack",
    "paste_patch",
    "patch_flip_rate",
    "Atlas",
    "AtlasGrid",
    "IconCheck",
    "Layout",
    "LAYOUT_METHODS",
    "activation_atlas",
    "activations_at",
    "atlas_explorer",
    "atlas_icon_mask",
    "atlas_image",
    "class_focused_vectors",
    "class_names",
    "draw_atlas",
    "draw_grid",
    "draw_layout",
    "draw_path",
    "grid_cells",
    "icon_faithfulness",
    "icon_settings",
    "icon_transforms",
    "layer_to_logits",
    "layout",
    "project",
    "render_icons",
    "show_cell",
    "whitening_matrix",
]
