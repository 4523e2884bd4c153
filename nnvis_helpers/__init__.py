"""nnvis_helpers: the small helpers of the nnvis course on seeing inside image classifiers."""
from .checks import check_images, check_target
from .config import is_fast, pick, quality, seed_everything
from .device import describe_device, get_device
from .images import describe_sample, load_image, load_images, sample_images, to_numpy, to_pil
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
from .plotting import normalize_heatmap, overlay_heatmap, plot_predictions, save_gallery_figure, show_heatmap, show_images
from .models import OFFLINE_MODEL, ModelInfo, imagenet_labels, load_model, model_info, predict, top_predictions

__version__ = "0.1.0"

__all__ = [
    "check_images",
    "check_target",
    "is_fast",
    "pick",
    "quality",
    "seed_everything",
    "describe_device",
    "get_device",
    "describe_sample",
    "load_image",
    "load_images",
    "sample_images",
    "to_numpy",
    "to_pil",
    "LayerInfo",
    "LayerNotFoundError",
    "capture_activations",
    "capture_gradients",
    "count_hooks",
    "format_layer_table",
    "get_layer",
    "layer_names",
    "list_layers",
    "preserve_model_state",
    "OFFLINE_MODEL",
    "ModelInfo",
    "imagenet_labels",
    "load_model",
    "model_info",
    "predict",
    "top_predictions",
    "normalize_heatmap",
    "overlay_heatmap",
    "plot_predictions",
    "save_gallery_figure",
    "show_heatmap",
    "show_images",
]
