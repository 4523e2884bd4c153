"""nnvis_helpers: the small helpers of the nnvis course on seeing inside image classifiers.

The modules read like the course's table of contents:

* foundation: ``device``, ``config``, ``checks``, ``claims`` (a measured figure against its bound), ``images``,
  ``models``, ``layers``, ``plotting``, ``datasets`` (pictures in quantity and ``collect_activations``)
* 01 ``architecture``: layer tables, receptive fields, the layer map, TensorBoard and torchviz
* 02 ``saliency``: gradients, guided backprop, SmoothGrad, Grad-CAM, occlusion, sanity checks
* 03 ``attribution``: integrated gradients (fixed and adaptive quadrature), baselines, layer integrated gradients
* 04 ``featurevis``: objectives, parameterizations, transforms, ``render``, ``deepdream``
* 05 ``adversarial``: FGSM, BIM, PGD, DeepFool, Carlini–Wagner, evaluation helpers
* 06 ``atlas``: activation atlas — layout, grid, batched icons, class view, paths across it
* 07 ``channels``: what a filter responds to — dataset examples, receptive-field crops, cards, dissection, a browser
* 08 ``blocks``: the building blocks of interpretability — semantic dictionary, activation grid, spatial attribution,
  neuron groups, information flow
* 09 ``featurevis.inversion`` and ``featurevis.style``: feature inversion, caricatures, style transfer
* 10 ``faithfulness``: deletion and insertion curves, infidelity, max-sensitivity

Everything below is re-exported here, so ``from nnvis_helpers import grad_cam`` works; the
feature-visualization building blocks (``channel``, ``fourier``, ``jitter``, ...) are used as
``featurevis.channel(...)`` because their short names would be ambiguous at the top level. The
atlas's steps likewise: ``atlas.layout``, ``atlas.grid_cells``, ``atlas.render_icons``, ...
"""
from . import atlas, blocks, channels, featurevis
from .adversarial import (
    AttackInfo,
    JPEGCompression,
    accuracy_vs_epsilon,
    amplify_perturbation,
    bim,
    carlini_wagner,
    deepfool,
    evaluation_set,
    fgsm,
    pgd,
)
from .architecture import (
    LayerPicker,
    LayerRow,
    LayerTable,
    ReceptiveField,
    crop_receptive_field,
    describe_layer,
    draw_layer_map,
    layer_picker,
    layer_table,
    read_tensorboard_graph,
    receptive_field,
    receptive_field_box,
    torchviz_graph,
    write_tensorboard_graph,
)
from .atlas import activation_atlas, draw_atlas
from .blocks import activation_grid, neuron_groups, semantic_dictionary, spatial_attribution
from .channels import channel_cards, export_browser, top_examples
from .attribution import (
    ADAPTIVE,
    BASELINES,
    METHODS,
    AdaptiveRule,
    PathProfile,
    adaptive_rule,
    completeness_delta,
    expected_gradients,
    integrated_gradients,
    integration_points,
    layer_integrated_gradients,
    make_baseline,
    noise_baselines,
    path_profile,
)
from .checks import check_images, check_target
from .faithfulness import (
    Curve,
    deletion_curve,
    infidelity,
    infidelity_noise,
    insertion_curve,
    perturbation_curve,
    sensitivity_max,
    sensitivity_perturbations,
)
from .claims import claim
from .config import course_seed, is_fast, pick, quality, seed_everything
from .datasets import (
    ActivationSet,
    ImageFolderImages,
    ImagenetteImages,
    OfflinePhotos,
    collect_activations,
    dataset,
    default_data_root,
)
from .device import describe_device, get_device
from .featurevis import deepdream, render
from .images import colourfulness, describe_sample, load_image, load_images, sample_images, to_numpy, to_pil
from .layers import (
    LayerInfo,
    LayerNotFoundError,
    capture_activations,
    capture_gradients,
    count_hooks,
    format_layer_table,
    get_layer,
    layer_names,
    list_layers,
    preserve_model_state,
)
from .models import OFFLINE_MODEL, ModelInfo, imagenet_labels, load_model, model_info, predict, top_predictions
from .plotting import (
    normalize_heatmap,
    overlay_heatmap,
    plot_predictions,
    save_gallery_figure,
    show_heatmap,
    show_images,
)
from .saliency import (
    SanityCheckResult,
    deconvnet,
    grad_cam,
    gradient_x_input,
    guided_backprop,
    guided_grad_cam,
    last_conv_layer,
    occlusion,
    relative_error,
    relu6_as_relu,
    sanity_check_randomization,
    smoothgrad,
    vanilla_gradient,
)

__version__ = "0.3.0"

__all__ = [
    # foundation
    "check_images", "check_target", "claim",
    "course_seed", "is_fast", "pick", "quality", "seed_everything",
    "describe_device", "get_device",
    "colourfulness", "describe_sample", "load_image", "load_images", "sample_images", "to_numpy", "to_pil",
    "LayerInfo", "LayerNotFoundError", "capture_activations", "capture_gradients", "count_hooks",
    "format_layer_table", "get_layer", "layer_names", "list_layers", "preserve_model_state",
    "OFFLINE_MODEL", "ModelInfo", "imagenet_labels", "load_model", "model_info", "predict", "top_predictions",
    "normalize_heatmap", "overlay_heatmap", "plot_predictions", "save_gallery_figure", "show_heatmap", "show_images",
    "ActivationSet", "ImageFolderImages", "ImagenetteImages", "OfflinePhotos", "collect_activations", "dataset",
    "default_data_root",
    # 01 architecture
    "LayerPicker", "LayerRow", "LayerTable", "ReceptiveField", "crop_receptive_field", "describe_layer",
    "draw_layer_map", "layer_picker", "layer_table", "read_tensorboard_graph", "receptive_field",
    "receptive_field_box", "torchviz_graph", "write_tensorboard_graph",
    # 02 saliency
    "SanityCheckResult", "deconvnet", "grad_cam", "gradient_x_input", "guided_backprop", "guided_grad_cam",
    "last_conv_layer", "occlusion", "relative_error", "relu6_as_relu", "sanity_check_randomization",
    "smoothgrad", "vanilla_gradient",
    # 03 attribution
    "ADAPTIVE", "BASELINES", "METHODS", "AdaptiveRule", "PathProfile", "adaptive_rule", "completeness_delta", "expected_gradients", "integrated_gradients",
    "integration_points", "layer_integrated_gradients", "make_baseline", "noise_baselines", "path_profile",
    # 04 feature visualization
    "featurevis", "render", "deepdream",
    # 05 adversarial
    "AttackInfo", "JPEGCompression", "accuracy_vs_epsilon", "amplify_perturbation", "bim", "carlini_wagner",
    "deepfool", "evaluation_set", "fgsm", "pgd",
    # 06 activation atlas
    "atlas", "activation_atlas", "draw_atlas",
    # 07 what a filter responds to
    "channels", "channel_cards", "export_browser", "top_examples",
    # 08 building blocks
    "blocks", "activation_grid", "neuron_groups", "semantic_dictionary", "spatial_attribution",
    # 10 faithfulness
    "Curve", "deletion_curve", "infidelity", "infidelity_noise", "insertion_curve", "perturbation_curve", "sensitivity_max",
    "sensitivity_perturbations",
]
