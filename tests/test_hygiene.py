"""Hygiene: every public helper that takes a model gives it back exactly as it found it, whatever happens.

For each helper (the table HELPERS, one row per helper; a test below checks that no public helper
is missing from it) on a small network with BatchNorm, Dropout and in-place ReLUs, in eval mode and
in train mode, and for three outcomes:

* ``returns``: the helper succeeds;
* ``RuntimeError``: a module inside the network raises halfway through the helper's forward passes;
* ``KeyboardInterrupt``: the same, as when a learner presses Ctrl-C (not an ``Exception``: an
  ``except Exception`` clean-up does not run for it).

Afterwards nothing may differ: the model's hooks and torch's global module hooks, every module's
``training`` flag, every parameter's ``requires_grad``, ``.grad`` (None stays None; an existing
gradient keeps its values) and value, every buffer (BatchNorm's running statistics and counter), the
images' values, ``requires_grad`` and ``.grad``, and torch's grad mode, torch-function modes and
activation functions. In train mode a helper must compute what it computes in eval mode: the same
result, and twice the same despite Dropout.
"""
from __future__ import annotations

import functools
import inspect
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Callable

from matplotlib.text import Text
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nnvis_helpers
from nnvis_helpers import atlas, blocks, featurevis
from nnvis_helpers import (
    accuracy_vs_epsilon,
    adaptive_rule,
    activation_atlas,
    bim,
    capture_activations,
    capture_gradients,
    carlini_wagner,
    channel_cards,
    collect_activations,
    completeness_delta,
    count_hooks,
    crop_receptive_field,
    deconvnet,
    deepdream,
    deepfool,
    describe_layer,
    draw_layer_map,
    expected_gradients,
    export_browser,
    fgsm,
    grad_cam,
    gradient_x_input,
    guided_backprop,
    guided_grad_cam,
    integrated_gradients,
    last_conv_layer,
    layer_integrated_gradients,
    layer_picker,
    layer_table,
    list_layers,
    occlusion,
    path_profile,
    pgd,
    predict,
    preserve_model_state,
    read_tensorboard_graph,
    receptive_field,
    receptive_field_box,
    relu6_as_relu,
    render,
    sanity_check_randomization,
    smoothgrad,
    top_examples,
    top_predictions,
    torchviz_graph,
    vanilla_gradient,
    write_tensorboard_graph,
)
from nnvis_helpers.channels import concept_images, dissect, example_groups, field_crops, unit_deconvolution
from nnvis_helpers.faithfulness import deletion_curve, infidelity, insertion_curve, perturbation_curve

SIZE = 16
LAYER = "features.7"  # the last in-place ReLU: 16 channels, 8 x 8


# ----------------------------------------------------------------------------- the network and its tripwire


class Tripwire(nn.Module):
    """Passes its input through; while armed, raises ``error`` on its ``fire_at``-th call."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.fire_at: int | None = None
        self.error: BaseException | None = None

    def forward(self, x):
        self.calls += 1
        if self.fire_at is not None and self.calls == self.fire_at:
            raise self.error
        return x


class HygieneNet(nn.Module):
    """conv-BN-ReLU(in place), the tripwire, pool, conv-BN-ReLU(in place), pool, Dropout, Linear: 10 classes."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            Tripwire(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 10))

    def forward(self, x):
        return self.head(self.features(x))


MODES = ("eval", "train")


def make_model(mode: str) -> nn.Module:
    """A seeded HygieneNet with real BatchNorm statistics, a frozen bias and a gradient already there.

    ``train``: training mode, except the first BatchNorm (frozen, as in fine-tuning), so that a helper
    that restores the mode with one ``model.train()`` instead of flag by flag is caught.
    """
    torch.manual_seed(0)
    model = HygieneNet()
    with torch.no_grad():
        for _ in range(3):
            model.train()(torch.rand(4, 3, SIZE, SIZE))
    model.features[0].bias.requires_grad_(False)
    model.head[3].weight.grad = torch.full_like(model.head[3].weight, 0.5)
    if mode == "eval":
        model.eval()
    else:
        model.train()
        model.features[1].eval()
    return model


def make_images(mode: str) -> torch.Tensor:
    """Two images; in train mode they require grad, as in adversarial training: neither may change."""
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    return images.requires_grad_(mode == "train")


def _tripwire(model: nn.Module) -> Tripwire:
    return next(module for module in model.modules() if isinstance(module, Tripwire))


@contextmanager
def armed(model: nn.Module, fire_at: int | None = None, error: BaseException | None = None):
    """Count the tripwire's calls inside the block (``tripwire.calls``); with ``fire_at``, raise ``error`` then."""
    tripwire = _tripwire(model)
    tripwire.calls, tripwire.fire_at, tripwire.error = 0, fire_at, error
    try:
        yield tripwire
    finally:
        tripwire.fire_at, tripwire.error = None, None


# ----------------------------------------------------------------------------- shared data for the atlas rows


@functools.lru_cache(maxsize=None)
def _activations():
    """An ActivationSet of LAYER, collected from a separate copy of the network (data, not a model)."""
    images = torch.rand(12, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    return collect_activations(make_model("eval"), LAYER, images, positions_per_image=2, progress=False)


@functools.lru_cache(maxsize=None)
def _atlas():
    return activation_atlas(make_model("eval"), _activations(), grid_size=2, min_count=1, atlas_layout="pca",
                            icon_size=SIZE, steps=2, progress=False, verbose=False)


# ----------------------------------------------------------------------------- shared data for the channel rows


@functools.lru_cache(maxsize=None)
def _channel_images() -> torch.Tensor:
    """Six images: enough for four top examples per channel, which example_groups needs."""
    return torch.rand(6, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


@functools.lru_cache(maxsize=None)
def _top_examples():
    """The top 4 examples of channels 0 and 1 of LAYER, from a separate copy of the network (data, not a model)."""
    return top_examples(make_model("eval"), LAYER, _channel_images(), channels=[0, 1], k=4, progress=False)


@functools.lru_cache(maxsize=None)
def _concepts():
    """The 12 colour concepts, one 16 px image each."""
    return concept_images(size=SIZE, per_concept=1, groups=("colour",), background="plain")


def _under_redirect(model, images):
    with featurevis.redirected_relu6(model):
        return featurevis.evaluate(model, images, featurevis.channel(LAYER, 1))


# ----------------------------------------------------------------------------- shared data for the building-blocks rows


@functools.lru_cache(maxsize=None)
def _activation_grid():
    """A 2 x 2 activation grid of LAYER, made with a separate copy of the network (data, not a model)."""
    return blocks.activation_grid(make_model("eval"), _channel_images()[0], LAYER, cells=2, icon_size=SIZE, steps=2,
                                  progress=False)


def _grid_without_timing(model, images):
    """activation_grid's result but its wall time, which differs from call to call."""
    grid = blocks.activation_grid(model, images[:1], LAYER, cells=2, icon_size=SIZE, steps=2, progress=False)
    return grid.vectors, grid.icons


@functools.lru_cache(maxsize=None)
def _neuron_groups():
    """Neuron groups of two layers (the first ReLU, LAYER), from a separate copy of the network."""
    model, image = make_model("eval"), _channel_images()[0]
    return (blocks.neuron_groups(blocks.layer_view(model, image, "features.2"), k=2),
            blocks.neuron_groups(blocks.layer_view(model, image, LAYER), k=2))


def _browser_files(model, images) -> dict[str, bytes]:
    """export_browser into a temporary folder: every file it wrote, by relative path (a path would differ per call)."""
    with tempfile.TemporaryDirectory() as folder:
        export_browser(model, [LAYER], images, folder, channels=[0, 1], k=2, icons=False, progress=False)
        return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(Path(folder).rglob("*")) if path.is_file()}


def _figure_texts(figure) -> list[str]:
    import matplotlib.pyplot as plt

    texts = sorted(text.get_text() for text in figure.findobj(Text) if text.get_text())
    plt.close(figure)
    return texts


def _graph_labels(dot) -> list[str]:
    """torchviz names nodes by id(); the labels (operations, parameter names and shapes) are what can be compared."""
    return sorted(re.findall(r'label="?([^"\]]*)', "\n".join(dot.body)))


def _tensorboard(model, images) -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as folder:
        return read_tensorboard_graph(write_tensorboard_graph(model, images, log_dir=folder))


def _with_capture_activations(model, images):
    with capture_activations(model, [LAYER, "head.3"]) as activations:
        model(images)
    return activations


def _with_capture_gradients(model, images):
    inputs = images.detach().clone().requires_grad_(True)
    with capture_gradients(model, LAYER) as gradients:
        torch.autograd.grad(model(inputs)[:, 1].sum(), inputs)  # autograd.grad: no .grad written by the user either
    return gradients


def _with_preserve_model_state(model, images):
    with preserve_model_state(model):
        model.requires_grad_(False)
        model.register_forward_hook(lambda *args: None)
        with torch.no_grad():
            return model.eval()(images)


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Helper:
    call: Callable  # (model, images) -> something comparable
    runs_model: bool = True  # False: it never calls the model, so there is nothing to interrupt
    user_forward: bool = False  # a context manager around the user's own forward pass: eval mode only,
    # since a forward pass in train mode updates BatchNorm whatever the hooks do


T = [1, 2]  # one target class per image
HELPERS = {
    # 02 saliency
    "vanilla_gradient": Helper(lambda m, x: vanilla_gradient(m, x, T)),
    "gradient_x_input": Helper(lambda m, x: gradient_x_input(m, x, T)),
    "guided_backprop": Helper(lambda m, x: guided_backprop(m, x, T)),
    "deconvnet": Helper(lambda m, x: deconvnet(m, x, T)),
    "smoothgrad": Helper(lambda m, x: smoothgrad(m, x, T, n_samples=3, batch_size=2)),
    "grad_cam": Helper(lambda m, x: grad_cam(m, x, T)),
    "guided_grad_cam": Helper(lambda m, x: guided_grad_cam(m, x, T)),
    "occlusion": Helper(lambda m, x: occlusion(m, x, T, window=8, stride=4, batch_size=4, progress=False)),
    "last_conv_layer": Helper(lambda m, x: last_conv_layer(m, x)),
    "sanity_check_randomization": Helper(lambda m, x: sanity_check_randomization(
        m, x, T, methods={"gradient": vanilla_gradient, "Grad-CAM": functools.partial(grad_cam, layer=LAYER)},
        layers=["head.3", "features.5"], progress=False)),
    "relu6_as_relu": Helper(lambda m, x: relu6_as_relu(m).eval()(x.detach()), runs_model=False),
    # 03 attribution
    "integrated_gradients": Helper(lambda m, x: integrated_gradients(m, x, T, n_steps=3, batch_size=2,
                                                                     return_delta=True, progress=False)),
    "expected_gradients": Helper(lambda m, x: expected_gradients(m, x, T, x.flip(0), n_samples=3, batch_size=2,
                                                                 progress=False)),
    "layer_integrated_gradients": Helper(lambda m, x: layer_integrated_gradients(m, x, T, "features.5", n_steps=3,
                                                                                 batch_size=2, progress=False)),
    "integrated_gradients_adaptive": Helper(lambda m, x: integrated_gradients(m, x, T, n_steps=6, method="adaptive",
                                                                              scan_points=2, batch_size=3,
                                                                              return_delta=True, progress=False)),
    "adaptive_rule": Helper(lambda m, x: adaptive_rule(m, x[:1], 1, n_steps=6, scan_points=2, batch_size=3).midpoints),
    "completeness_delta": Helper(lambda m, x: completeness_delta(m, torch.zeros_like(x), x, T, batch_size=1)),
    "path_profile": Helper(lambda m, x: path_profile(m, x[:1], 1, n_points=4, batch_size=2, progress=False)),
    # faithfulness of attributions (sensitivity_max takes an explain function, not a model)
    "perturbation_curve": Helper(lambda m, x: perturbation_curve(m, x, x, T, steps=3, batch_size=3, progress=False)),
    "deletion_curve": Helper(lambda m, x: deletion_curve(m, x, x.sum(1), T, steps=3, baseline="grey", batch_size=3,
                                                         score="logit", progress=False)),
    "insertion_curve": Helper(lambda m, x: insertion_curve(m, x, x[:, :1, ::4, ::4], T, steps=3, baseline="black",
                                                           batch_size=3, progress=False)),
    "infidelity": Helper(lambda m, x: infidelity(m, x, x, T, n_perturb=3, batch_size=2, normalize=True, progress=False)),
    # 04 feature visualization
    "render": Helper(lambda m, x: render(m, featurevis.channel(LAYER, 1), steps=3, image_size=SIZE,
                                                 progress=False)),
    "render_class_logit": Helper(lambda m, x: render(m, featurevis.class_logit(1), steps=3, image_size=SIZE,
                                                     progress=False)),
    "evaluate": Helper(lambda m, x: featurevis.evaluate(m, x, featurevis.channel(LAYER, 1))),
    "redirected_relu6": Helper(lambda m, x: _under_redirect(m, x)),
    "deepdream": Helper(lambda m, x: deepdream(m, x, LAYER, octaves=2, steps=2, jitter=2, progress=False)),
    # 09 feature inversion, caricatures, style transfer (default_style_layers: in NOT_HELPERS)
    "photo_activations": Helper(lambda m, x: featurevis.photo_activations(m, x, [LAYER, "features.5",
                                                                              featurevis.MODEL_OUTPUT])),
    "invert": Helper(lambda m, x: featurevis.invert(m, x[:1], [LAYER, featurevis.MODEL_OUTPUT], tv_weight=0.1,
                                                    steps=2, progress=False, return_history=True)),
    "caricature": Helper(lambda m, x: featurevis.caricature(m, x[:1], LAYER, steps=2, progress=False)),
    "style_transfer": Helper(lambda m, x: featurevis.style_transfer(
        m, x[:1], x[1:], style_layers=["features.2", LAYER], content_layer=LAYER, steps=2, progress=False,
        return_losses=True)),
    "style_transfer_noise_pixels": Helper(lambda m, x: featurevis.style_transfer(
        m, x[:1], x[1:], style_layers=[LAYER], content_layer="features.5", param="pixels", init="noise", steps=2,
        progress=False, return_losses=True)),
    # 05 adversarial
    "fgsm": Helper(lambda m, x: fgsm(m, x, T, 4 / 255)),
    "bim": Helper(lambda m, x: bim(m, x, T, 4 / 255, steps=3)),
    "pgd": Helper(lambda m, x: pgd(m, x, T, 4 / 255, steps=3, seed=0, return_info=True)),
    "deepfool": Helper(lambda m, x: deepfool(m, x, T, max_steps=3, return_info=True)),
    "carlini_wagner": Helper(lambda m, x: carlini_wagner(m, x, T, steps=3, return_info=True)),
    "accuracy_vs_epsilon": Helper(lambda m, x: accuracy_vs_epsilon(m, x, attack=fgsm, epsilons=[0, 4 / 255],
                                                                   batch_size=1, progress=False)),
    # 06 activation atlas
    "collect_activations": Helper(lambda m, x: collect_activations(m, LAYER, x, positions_per_image=2, batch_size=1,
                                                                   progress=False)),
    "activation_atlas": Helper(lambda m, x: activation_atlas(m, _activations(), grid_size=2, min_count=1,
                                                             atlas_layout="pca", icon_size=SIZE, steps=2,
                                                             progress=False, verbose=False).icons),
    "atlas.render_icons": Helper(lambda m, x: atlas.render_icons(m, LAYER, torch.eye(2, 16) + 0.1, icon_size=SIZE,
                                                                 steps=2, progress=False)),
    "atlas.layer_to_logits": Helper(lambda m, x: atlas.layer_to_logits(m, LAYER, torch.eye(2, 16), image_size=SIZE)),
    "atlas.activations_at": Helper(lambda m, x: atlas.activations_at(m, LAYER, x)),
    "atlas.project": Helper(lambda m, x: atlas.project(_atlas(), m, x)),
    "atlas.icon_faithfulness": Helper(lambda m, x: atlas.icon_faithfulness(m, _atlas())),
    "atlas.class_focused_vectors": Helper(lambda m, x: atlas.class_focused_vectors(m, _activations(), (1, 2), keep=5)),
    "atlas.vector_attributions": Helper(lambda m, x: atlas.vector_attributions(
        m, _activations(), torch.rand(12, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2)), batch_size=4,
        progress=False)),
    "atlas.choose_patch": Helper(lambda m, x: atlas.choose_patch(m, x, 1, image_size=SIZE)),
    "atlas.patch_flip_rate": Helper(lambda m, x: atlas.patch_flip_rate(m, x, x[0], 1, sizes=(0.25,), places=("top left",),
                                                                       progress=False)),
    # 07 channels
    "top_examples": Helper(lambda m, x: top_examples(m, LAYER, x, channels=[0, 1], k=2, batch_size=1, progress=False)),
    "channel_cards": Helper(lambda m, x: channel_cards(m, LAYER, x, channels=[0, 1], k=2, icons=False, progress=False)),
    "unit_deconvolution": Helper(lambda m, x: unit_deconvolution(m, x, LAYER, 1, [(2, 3), (5, 1)])),
    "field_crops": Helper(lambda m, x: field_crops(m, LAYER, x, [(2, 3), (5, 1)])),
    "example_groups": Helper(lambda m, x: example_groups(m, _top_examples(), _channel_images(), count=4, batch_size=2)),
    "dissect": Helper(lambda m, x: dissect(m, LAYER, _concepts(), batch_size=4, progress=False)),
    "export_browser": Helper(_browser_files),
    # 08 building blocks
    "layer_view": Helper(lambda m, x: blocks.layer_view(m, x[:1], LAYER)),
    "IconCache": Helper(lambda m, x: blocks.IconCache(m, icon_size=SIZE, steps=2, progress=False).icons(LAYER, [0, 1])),
    "semantic_dictionary": Helper(lambda m, x: blocks.semantic_dictionary(
        m, x[:1], LAYER, k=2, cache=blocks.IconCache(m, icon_size=SIZE, steps=2, progress=False))),
    "activation_grid": Helper(_grid_without_timing),
    "grid_alignment": Helper(lambda m, x: blocks.grid_alignment(m, _activation_grid())),
    "spatial_attribution": Helper(lambda m, x: blocks.spatial_attribution(m, x[:1], "features.5", 1, n_steps=3,
                                                                          batch_size=2, return_delta=True)),
    "information_flow": Helper(lambda m, x: blocks.information_flow(m, x[:1], *_neuron_groups(), classes=[1, 2],
                                                                    n_steps=2, batch_size=3)),
    # foundation: models, layers
    "predict": Helper(lambda m, x: predict(m, x)),
    "top_predictions": Helper(lambda m, x: top_predictions(m, x, k=3)),
    "list_layers": Helper(lambda m, x: list_layers(m)),
    "capture_activations": Helper(_with_capture_activations, user_forward=True),
    "capture_gradients": Helper(_with_capture_gradients, user_forward=True),
    "preserve_model_state": Helper(_with_preserve_model_state, user_forward=True),
    # 01 architecture
    "layer_table": Helper(lambda m, x: layer_table(m, images=x)),
    "receptive_field": Helper(lambda m, x: receptive_field(m, LAYER)),
    "receptive_field_box": Helper(lambda m, x: receptive_field_box(m, LAYER, 2, 3, input_size=(1, 3, SIZE, SIZE))),
    "crop_receptive_field": Helper(lambda m, x: crop_receptive_field(x, m, LAYER, 2, 3)),
    "describe_layer": Helper(lambda m, x: describe_layer(m, LAYER)),
    "layer_picker": Helper(lambda m, x: layer_picker(m, interactive=False).value),
    "draw_layer_map": Helper(lambda m, x: _figure_texts(draw_layer_map(m))),
    "torchviz_graph": Helper(lambda m, x: _graph_labels(torchviz_graph(m, x))),
    "write_tensorboard_graph": Helper(lambda m, x: _tensorboard(m, x)),
}

#: Public callables with a ``model`` argument that are not in HELPERS, and why.
NOT_HELPERS = {
    "count_hooks": "reads the hook dicts, this file's own measuring tool",
    "claim": "reads model.info to decide whether a claim is hard, never runs the model",
    "get_layer": "looks a name up, never runs the model",
    "layer_names": "lists names, never runs the model",
    "model_info": "reads model.info of a load_model model",
    "LayerPicker": "the object layer_picker returns (tested through layer_picker)",
    "ActivationRunner": "the engine of render / evaluate / deepdream (tested through them)",
    "default_style_layers": "looks the model's name up in STYLE_LAYERS, never runs the model",
    "atlas.atlas_explorer": "a widget over an atlas already made (plotting)",
    "atlas.show_cell": "draws an atlas cell (plotting)",
    "atlas.draw_patch_attack": "draws photos before and after a patch (plotting)",
    "atlas.class_names": "reads the labels",
}


def _public_model_callables() -> set[str]:
    """Every callable of ``__all__`` (the package's, featurevis', atlas', blocks') with a ``model`` argument."""
    names = set()
    for module, prefix in ((nnvis_helpers, ""), (featurevis, ""), (atlas, "atlas."), (blocks, "")):
        for name in module.__all__:
            if prefix and name in nnvis_helpers.__all__:
                continue  # re-exported at the top level (activation_atlas): one row
            obj = getattr(module, name)
            try:
                parameters = inspect.signature(obj).parameters if callable(obj) else {}
            except (TypeError, ValueError):
                continue
            if "model" in parameters:
                names.add(prefix + name)
    return names


def test_every_public_helper_that_takes_a_model_is_in_the_table():
    public = _public_model_callables()
    missing = sorted(public - set(HELPERS) - set(NOT_HELPERS))
    assert not missing, f"public helpers that take a model but are not checked here: {missing}; add a row to HELPERS"
    assert len(public) > 40, "the enumeration of __all__ found too little to be trusted"


# ----------------------------------------------------------------------------- what must not change


def _hook_dicts(module: nn.Module) -> dict[str, list]:
    return {name: list(value) for name, value in vars(module).items() if "hook" in name and isinstance(value, dict)}


def _global_state() -> dict:
    module_globals = vars(torch.nn.modules.module)
    return {
        "global module hooks": {name: list(value) for name, value in module_globals.items()
                                if name.startswith("_global_") and isinstance(value, dict)},
        "global full-backward-hook flag": module_globals.get("_global_is_full_backward_hook"),
        "grad mode": torch.is_grad_enabled(),
        "inference mode": torch.is_inference_mode_enabled(),
        "torch-function modes": torch._C._len_torch_function_stack(),
        "activation functions": [F.relu, F.relu_, F.relu6, F.hardtanh, F.hardtanh_, F.gelu, torch.relu, torch.relu_,
                                 torch.Tensor.relu, torch.Tensor.relu_, nn.ReLU.forward, nn.Module.__call__],
    }


def snapshot(model: nn.Module, images: torch.Tensor) -> dict:
    return {
        "hooks (count_hooks)": count_hooks(model),
        "hook dicts of every module": [_hook_dicts(module) for module in model.modules()],
        "training flags": [module.training for module in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "parameter .grad": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "parameter values": [p.detach().clone() for p in model.parameters()],
        "buffers (BatchNorm statistics)": {name: b.clone() for name, b in model.named_buffers()},
        "image values": images.detach().clone(),
        "images.requires_grad": images.requires_grad,
        "images.grad": images.grad,
        **_global_state(),
    }


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a is b or a == b


def assert_unchanged(before: dict, after: dict) -> None:
    changed = [what for what in before if not _same(before[what], after[what])]
    assert not changed, f"changed: {', '.join(changed)}"


# ----------------------------------------------------------------------------- 1. after success, error, Ctrl-C


OUTCOMES = ("returns", "RuntimeError", "KeyboardInterrupt")
CASES = [
    pytest.param(name, mode, outcome, id=f"{name}-{mode}-{outcome}")
    for name, helper in HELPERS.items()
    for mode in MODES
    if mode == "eval" or not helper.user_forward
    for outcome in OUTCOMES
    if outcome == "returns" or helper.runs_model
]


@functools.lru_cache(maxsize=None)
def forward_calls(name: str, mode: str) -> int:
    """How many forward passes a successful call makes (on a fresh model): the error comes halfway."""
    model = make_model(mode)
    with armed(model) as tripwire:
        HELPERS[name].call(model, make_images(mode))
    return tripwire.calls


@pytest.mark.parametrize("name, mode, outcome", CASES)
def test_model_images_and_torch_state_unchanged(name, mode, outcome):
    model, images = make_model(mode), make_images(mode)
    before = snapshot(model, images)
    call = HELPERS[name].call
    if outcome == "returns":
        call(model, images)
    else:
        calls = forward_calls(name, mode)
        assert calls > 0, f"{name} never ran the model"
        fire_at = (calls + 1) // 2
        error = RuntimeError("tripwire: forced failure") if outcome == "RuntimeError" else KeyboardInterrupt()
        with pytest.raises(type(error)) as raised, armed(model, fire_at, error):
            call(model, images)
        if outcome == "RuntimeError":
            assert "tripwire" in str(raised.value), f"the error that reached the caller is another: {raised.value!r}"
    assert_unchanged(before, snapshot(model, images))


# ----------------------------------------------------------------------------- 2. train mode computes as eval mode


def _comparable(result):
    """The result as nested lists / dicts of tensors and plain values."""
    if isinstance(result, torch.Tensor):
        return result.detach().cpu()
    if isinstance(result, np.ndarray):
        return torch.from_numpy(result)
    if is_dataclass(result) and not isinstance(result, type):
        return {f.name: _comparable(getattr(result, f.name)) for f in fields(result)
                if not isinstance(getattr(result, f.name), nn.Module)}
    if isinstance(result, dict):
        return {key: _comparable(value) for key, value in result.items()}
    if isinstance(result, (list, tuple)):
        return [_comparable(item) for item in result]
    if hasattr(result, "__dict__") and not isinstance(result, (str, int, float, nn.Module)):
        return {key: _comparable(value) for key, value in vars(result).items() if not key.startswith("_")}
    return result


def _assert_equal(first, second, where: str, exact: bool) -> None:
    if isinstance(first, torch.Tensor):
        assert isinstance(second, torch.Tensor) and first.shape == second.shape, f"{where}: shapes differ"
        if exact or not first.is_floating_point():
            largest = (first.double() - second.double()).abs().max()
            assert torch.equal(first, second), f"{where}: values differ (largest difference {largest:.3g})"
        else:
            torch.testing.assert_close(first, second, rtol=1e-5, atol=1e-6, msg=lambda m: f"{where}: {m}")
    elif isinstance(first, dict):
        assert isinstance(second, dict) and first.keys() == second.keys(), f"{where}: keys differ"
        for key in first:
            _assert_equal(first[key], second[key], f"{where}.{key}", exact)
    elif isinstance(first, list):
        assert isinstance(second, list) and len(first) == len(second), f"{where}: lengths differ"
        for index, (a, b) in enumerate(zip(first, second)):
            _assert_equal(a, b, f"{where}[{index}]", exact)
    elif isinstance(first, float) and not exact:
        assert second == pytest.approx(first, rel=1e-5, abs=1e-6), f"{where}: {first} vs {second}"
    else:
        assert first == second, f"{where}: {first!r} vs {second!r}"


COMPARED = [name for name, helper in HELPERS.items() if not helper.user_forward]


@pytest.mark.parametrize("name", COMPARED)
def test_train_mode_gives_the_eval_result_every_time(name):
    call = HELPERS[name].call
    model, images = make_model("eval"), make_images("eval")
    expected = _comparable(call(model, images))
    model.train()
    first = _comparable(call(model, images))
    second = _comparable(call(model, images))
    _assert_equal(first, expected, f"{name} in train mode vs eval mode", exact=False)
    _assert_equal(second, first, f"{name}: two identical calls in train mode", exact=True)
