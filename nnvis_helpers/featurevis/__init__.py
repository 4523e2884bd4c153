"""Feature visualization: find the input that excites a unit the most (Olah et al. 2017).

Four parts, as in Lucid: :mod:`.objectives` (what to maximize), :mod:`.param` (how the
image is made), :mod:`.transforms` (random jitter, scale, rotation) and :mod:`.render`
(the optimization loop, plus DeepDream). Objectives that compare with a photo, for notebook 09:
:mod:`.inversion` (feature inversion, caricatures) and :mod:`.style` (Gram matrices, style transfer).

>>> from nnvis_helpers.featurevis import render, channel
>>> images = render(model, channel("blocks.3", 5))
"""
from .objectives import (
    INPUT,
    MODEL_OUTPUT,
    Objective,
    as_objective,
    blur,
    channel,
    class_logit,
    class_probability,
    direction,
    diversity,
    l1,
    l2,
    layer,
    neuron,
    total_variation,
)
from .inversion import activation_dot, activation_match, caricature, invert, photo_activations
from .param import COLOR_CORRELATION, ImageParam, as_param, fourier, pixels
from .redirect import redirected_relu6
from .render import ActivationRunner, deepdream, evaluate, render
from .style import STYLE_LAYERS, default_style_layers, gram_matrix, style, style_transfer
from .transforms import as_transform, compose, jitter, pad, random_rotate, random_scale, resize, standard_transforms

__all__ = [
    "redirected_relu6",
    "INPUT",
    "MODEL_OUTPUT",
    "Objective",
    "as_objective",
    "neuron",
    "channel",
    "layer",
    "class_logit",
    "class_probability",
    "direction",
    "diversity",
    "l1",
    "l2",
    "total_variation",
    "blur",
    "photo_activations",
    "activation_match",
    "activation_dot",
    "invert",
    "caricature",
    "gram_matrix",
    "style",
    "STYLE_LAYERS",
    "default_style_layers",
    "style_transfer",
    "COLOR_CORRELATION",
    "ImageParam",
    "as_param",
    "pixels",
    "fourier",
    "ActivationRunner",
    "render",
    "evaluate",
    "deepdream",
    "as_transform",
    "compose",
    "pad",
    "jitter",
    "random_scale",
    "random_rotate",
    "resize",
    "standard_transforms",
]
