"""Held-out classifiers: every helper equals captum / torchattacks on networks the course never uses.

The course's own tests run on TinyCNN and on EfficientNet-Lite0. Here the helpers meet ResNet-18,
MobileNet-V3-small, DenseNet-121, a ViT, VGG-16 (what Colab learners get) and a 32 px CIFAR-style
network with a Flatten + Linear head, all with random weights (nothing is downloaded) and with
BatchNorm statistics that are not the defaults. Each model is built once per module and shared.

What every test proves, per architecture:

* the saliency maps, integrated gradients and attacks equal the library's numbers (relative error
  below 1e-4; attacks to float precision), with the library run on the model in eval mode;
* guided backprop and deconvnet apply their rule to every rectifier, functional ones included
  (DenseNet's final ``F.relu``), and warn about the activations they cannot cover (GELU, Hardswish);
* the default Grad-CAM layer is found at the images' own size (the 32 px CIFAR network);
* a model in train mode gets the eval-mode answer, and comes back with its flags and buffers;
* the atlas's attribution labels (vector_attributions and the cell helpers) and its patch attack (cell_crops,
  choose_patch, patch_flip_rate, control_patches, draw_patch_attack) equal the same numbers written out with plain
  autograd and forward passes, in eval and in train mode; a ViT's tokens and pooled vectors, which have no map
  positions, get a clear error wherever a position is needed.
"""
from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from nnvis_helpers import count_hooks
from nnvis_helpers.adversarial import bim, deepfool, fgsm, pgd
from nnvis_helpers.atlas import (
    Atlas,
    activation_atlas,
    attribution_focused_vectors,
    attribution_labels,
    cell_attribution,
    cell_crops,
    choose_patch,
    control_patches,
    draw_patch_attack,
    label_agreement,
    paste_patch,
    patch_flip_rate,
    vector_attributions,
)
from nnvis_helpers.attribution import integrated_gradients, layer_integrated_gradients
from nnvis_helpers.datasets import ActivationSet, collect_activations
from nnvis_helpers.saliency import (
    deconvnet,
    grad_cam,
    gradient_x_input,
    guided_backprop,
    guided_grad_cam,
    last_conv_layer,
    occlusion,
    relative_error,
    relu6_as_relu,
    smoothgrad,
    vanilla_gradient,
)

captum_attr = pytest.importorskip("captum.attr")
torchattacks = pytest.importorskip("torchattacks")

TOLERANCE = 1e-4  # relative error allowed between our maps and the library's (the notebooks' tolerance)
ATTACK_TOLERANCE = 1e-6  # x + delta - x is not exactly delta in float32: a few units in the last place
NUM_CLASSES = 10  # DeepFool (torchattacks) takes one backward pass per class: keep the heads small


# ----------------------------------------------------------------------------- the held-out networks


class CifarNet(nn.Module):
    """A 32 px CIFAR-style network: conv-BN-ReLU blocks (one ReLU6), Dropout, a Flatten + Linear head.

    The Linear head accepts 32 px images only, so a helper that probes the model at 224 px fails.
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU6(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(32 * 8 * 8, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class DenseNetWithReLUModule(nn.Module):
    """DenseNet-121 whose final ``F.relu`` in ``forward`` is an ``nn.ReLU`` module, so that captum sees it.

    torchvision's ``DenseNet.forward`` ends with ``F.relu(features, inplace=True)``: captum's
    GuidedBackprop / Deconvolution hook modules only and pass that one with its plain gradient.
    This copy computes exactly the same numbers with a (not in-place) module instead.
    """

    def __init__(self, densenet: torchvision.models.DenseNet):
        super().__init__()
        self.features = densenet.features
        self.final_relu = nn.ReLU()
        self.classifier = densenet.classifier

    def forward(self, x):
        out = self.final_relu(self.features(x))
        out = F.adaptive_avg_pool2d(out, (1, 1))
        return self.classifier(torch.flatten(out, 1))


def _vit() -> nn.Module:
    import timm

    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=NUM_CLASSES)


def _torchvision(name: str) -> Callable[[], nn.Module]:
    return lambda: getattr(torchvision.models, name)(weights=None, num_classes=NUM_CLASSES)


@dataclass(frozen=True)
class Architecture:
    build: Callable[[], nn.Module]
    size: int  # image side in pixels: the smallest at which the default Grad-CAM layer is larger than 1 x 1
    cam_layer: str  # the layer last_conv_layer must pick at that size (captum's LayerGradCam gets the same)
    ig_layer: str  # for layer integrated gradients: a block not followed by an in-place op (captum needs that)
    uncovered: str | None = None  # an activation guided backprop / deconvnet cannot cover: the warning names it


ARCHITECTURES = {
    "resnet18": Architecture(_torchvision("resnet18"), 64, "layer4", "layer3"),
    "mobilenet_v3_small": Architecture(_torchvision("mobilenet_v3_small"), 64, "features", "features.4", "hardswish"),
    "densenet121": Architecture(_torchvision("densenet121"), 64, "features", "features.transition2"),
    "vit_tiny": Architecture(_vit, 32, "patch_embed.proj", "blocks.5", "gelu"),
    "vgg16_colab": Architecture(_torchvision("vgg16"), 32, "features.29", "features.16"),
    "cifar_cnn": Architecture(CifarNet, 32, "features.6", "features.3"),
}


@dataclass
class HeldOut:
    name: str
    arch: Architecture
    model: nn.Module  # in eval mode, with its own BatchNorm statistics
    reference: nn.Module  # the same function, every rectifier an nn.ReLU module: what captum gets
    images: torch.Tensor  # (2, 3, size, size) in [0, 1]
    targets: torch.Tensor  # the predicted classes


def _seen_by_captum(name: str, model: nn.Module) -> nn.Module:
    """The model as captum must get it to apply its ReLU rules everywhere ours do."""
    if name == "densenet121":
        model = DenseNetWithReLUModule(copy.deepcopy(model)).eval()
    if any(isinstance(module, nn.ReLU6) for module in model.modules()):
        model = relu6_as_relu(model)
    return model


def _pixels(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Random images (count, 3, size, size) on the 8-bit grid k / 256, like a photo's pixels.

    On that grid the points x' + a (x - x') of integrated gradients (a = k / 8) are exact in float32,
    so ours and captum's are the same bits: otherwise one rounding step apart, they can fall on
    either side of a ReLU or max-pool decision, and the maps differ by far more than the algorithm.
    """
    return (torch.rand(count, 3, size, size, generator=generator) * 256).round() / 256


def _calibrate_batchnorm(model: nn.Module, batches: Callable[[], torch.Tensor], count: int = 3) -> None:
    """Give every BatchNorm the running statistics of a few batches (their plain average), then eval mode.

    With the default momentum (0.1), three batches would leave the statistics mostly at their initial
    0 / 1; on a network whose activations are small (MobileNet-V3 at initialization) the eval-mode
    output then no longer depends on the image, and every comparison is one of rounding noise.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average
    with torch.no_grad():
        model.train()
        for _ in range(count):
            model(batches())
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.eval()


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def held_out(request) -> HeldOut:
    name = request.param
    arch = ARCHITECTURES[name]
    torch.manual_seed(0)
    model = arch.build()
    generator = torch.Generator().manual_seed(1)
    _calibrate_batchnorm(model, lambda: _pixels(4, arch.size, generator))
    images = _pixels(2, arch.size, generator)
    with torch.no_grad():
        targets = model(images).argmax(dim=1)
    return HeldOut(name, arch, model, _seen_by_captum(name, model), images, targets)


def _captum(method, *args, **kwargs) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum warns on every call that it sets hooks on ReLUs
        return method.attribute(*args, **kwargs)


def _close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} vs captum's {tuple(theirs.shape)}"
    error = relative_error(ours, theirs)
    assert error < TOLERANCE, f"{what}: relative error {error:.2e} against the library"


@contextmanager
def _no_user_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    ours = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert not ours, f"every rectifier of this network is covered, yet the helper warned: {ours}"


# ----------------------------------------------------------------------------- saliency


def test_gradients_equal_captum(held_out):
    model, x, t = held_out.model, held_out.images, held_out.targets
    _close(vanilla_gradient(model, x, t, reduce=None), _captum(captum_attr.Saliency(model), x, target=t), "saliency")
    _close(gradient_x_input(model, x, t), _captum(captum_attr.InputXGradient(model), x, target=t), "gradient x input")


@pytest.mark.parametrize("method, library", [(guided_backprop, "GuidedBackprop"), (deconvnet, "Deconvolution")],
                         ids=["guided_backprop", "deconvnet"])
def test_relu_rules_equal_captum_and_warn_only_about_uncovered_activations(held_out, method, library):
    model, x, t = held_out.model, held_out.images, held_out.targets
    uncovered = held_out.arch.uncovered
    expectation = pytest.warns(UserWarning, match=f"(?i){uncovered}") if uncovered else _no_user_warning()
    with expectation:
        ours = method(model, x, t)
    theirs = _captum(getattr(captum_attr, library)(held_out.reference), x, target=t)
    _close(ours, theirs, method.__name__)
    if held_out.name != "vit_tiny":  # the ViT has no rectifier: there the rule must change nothing
        plain = vanilla_gradient(model, x, t, abs=False, reduce=None)
        assert relative_error(ours, plain) > 0.05, f"{method.__name__} is the plain gradient: no rectifier was changed"


@pytest.mark.parametrize("held_out", ["vit_tiny"], indirect=True)
def test_vit_rules_change_nothing_and_say_so(held_out):
    """A ViT has GELUs and no ReLU: guided backprop is the plain gradient, and the warning says why."""
    model, x, t = held_out.model, held_out.images, held_out.targets
    plain = vanilla_gradient(model, x, t, abs=False, reduce=None)
    for method in (guided_backprop, deconvnet):
        with pytest.warns(UserWarning, match="(?i)gelu"):
            ours = method(model, x, t)
        assert relative_error(ours, plain) < 1e-6


@pytest.mark.parametrize("held_out", ["densenet121"], indirect=True)
@pytest.mark.parametrize("method, library", [(guided_backprop, "GuidedBackprop"), (deconvnet, "Deconvolution")],
                         ids=["guided_backprop", "deconvnet"])
def test_densenet_final_functional_relu_gets_the_rule(held_out, method, library):
    """captum misses DenseNet's ``F.relu`` in ``forward``; ours must not (compared above with a module copy)."""
    model, x, t = held_out.model, held_out.images, held_out.targets
    ours = method(model, x, t)
    plain_captum = _captum(getattr(captum_attr, library)(model), x, target=t)
    assert relative_error(ours, plain_captum) > 1e-2, "the final F.relu kept its plain gradient, as in captum"


def test_smoothgrad_equals_captum_noise_tunnel(held_out):
    model, x, t = held_out.model, held_out.images, held_out.targets
    seed, samples, noise = 5, 3, 0.125  # a power of two: our noisy images and captum's are the same bits
    for squared, kind, count in ((False, "smoothgrad", len(x)), (True, "smoothgrad_sq", 1)):  # squared: one image
        # captum runs all noisy copies in one batch; so do we here, since another batch size may pick another
        # convolution algorithm (seen on a 16-core CPU: 5e-3 on these random-weight nets, with ReLU kinks flipping)
        ours = smoothgrad(model, x[:count], t[:count], n_samples=samples, noise_level=noise, squared=squared,
                          seed=seed, batch_size=samples * count, reduce=None)
        torch.manual_seed(seed)  # captum draws from the global generator
        theirs = _captum(captum_attr.NoiseTunnel(captum_attr.Saliency(model)), x[:count], target=t[:count],
                         nt_type=kind, nt_samples=samples, stdevs=noise)
        _close(ours, theirs, kind)
        # the same noise whatever the batches: 2 + 1 copies per image give the same map, to rounding and kinks
        batched = smoothgrad(model, x[:count], t[:count], n_samples=samples, noise_level=noise, squared=squared,
                             seed=seed, batch_size=2, reduce=None)
        cosine = torch.nn.functional.cosine_similarity(batched.flatten(1), ours.flatten(1))
        assert cosine.min() > 0.99, f"{kind}: batches of 2 change the map (cosine {cosine.min():.4f})"


def test_grad_cam_default_layer_at_the_images_size_equals_captum(held_out):
    model, reference, x, t = held_out.model, held_out.reference, held_out.images, held_out.targets
    layer = held_out.arch.cam_layer
    assert last_conv_layer(model, x) == layer, "the default Grad-CAM layer, probed with these images"
    size = x.shape[-2:]
    their_layer = reference.get_submodule(layer)
    theirs = captum_attr.LayerAttribution.interpolate(
        _captum(captum_attr.LayerGradCam(reference, their_layer), x, target=t, relu_attributions=True), size, "bilinear"
    )[:, 0]
    ours = grad_cam(model, x, t)  # the default layer
    _close(ours, theirs, "grad_cam")
    assert ours.shape == (len(x), *size)
    uncovered = held_out.arch.uncovered
    with pytest.warns(UserWarning, match=f"(?i){uncovered}") if uncovered else _no_user_warning():
        ours_guided = guided_grad_cam(model, x, t)
    theirs_guided = _captum(captum_attr.GuidedGradCam(reference, their_layer), x, target=t, interpolate_mode="bilinear")
    _close(ours_guided, theirs_guided, "guided_grad_cam")


def test_occlusion_equals_captum(held_out):
    model, x, t = held_out.model, held_out.images, held_out.targets
    window, stride = held_out.arch.size // 2, held_out.arch.size // 4
    ours = occlusion(model, x, t, window=window, stride=stride, baseline=0.5, progress=False)
    theirs = _captum(captum_attr.Occlusion(model), x, target=t, sliding_window_shapes=(3, window, window),
                     strides=(3, stride, stride), baselines=0.5)[:, 0]
    _close(ours, theirs, "occlusion")


# ----------------------------------------------------------------------------- attribution


def test_integrated_gradients_equal_captum(held_out):
    model, reference, x, t = held_out.model, held_out.reference, held_out.images, held_out.targets
    # A noise baseline: with black, (x - x') = x and a missing factor (x - x') would go unseen. On the
    # 8-bit grid like the images, and with points a = 1/8, 3/8 ... (riemann_middle) or 0, 1/4 ...
    # (riemann_trapezoid), every path point is exact: see _pixels.
    baselines = _pixels(len(x), x.shape[-1], torch.Generator().manual_seed(3))
    # Gauss-Legendre on a continuous noise baseline too: our path points are computed in captum's order
    # of operations, x' + a (x - x'), so they are the same bits even where a and x' are not exact.
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(4))
    for method, start in (("riemann_middle", baselines), ("gausslegendre", noise)):
        ours = integrated_gradients(model, x, t, baselines=start, n_steps=4, method=method, progress=False)
        theirs = captum_attr.IntegratedGradients(model).attribute(x, baselines=start, target=t, n_steps=4, method=method)
        _close(ours, theirs, f"integrated gradients, {method}")
    layer = held_out.arch.ig_layer
    ours = layer_integrated_gradients(model, x, t, layer, baselines=baselines, n_steps=5, method="riemann_trapezoid",
                                      progress=False)
    theirs = captum_attr.LayerIntegratedGradients(reference, reference.get_submodule(layer)).attribute(
        x, baselines=baselines, target=t, n_steps=5, method="riemann_trapezoid"
    )
    _close(ours, theirs, f"layer integrated gradients at {layer}")


# ----------------------------------------------------------------------------- attacks


def _same_images(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(ours, theirs, atol=ATTACK_TOLERANCE, rtol=0, msg=lambda m: f"{what}: {m}")


def test_fgsm_bim_pgd_equal_torchattacks(held_out):
    model, x, y = held_out.model, held_out.images, held_out.targets
    epsilon, alpha, steps = 8 / 255, 2 / 255, 2
    _same_images(fgsm(model, x, y, epsilon), torchattacks.FGSM(model, eps=epsilon)(x, y), "FGSM")
    _same_images(
        pgd(model, x, y, epsilon, alpha=alpha, steps=steps, random_start=False),
        torchattacks.PGD(model, eps=epsilon, alpha=alpha, steps=steps, random_start=False)(x, y),
        "PGD",
    )
    _same_images(
        bim(model, x, y, epsilon, alpha=alpha, steps=steps),
        torchattacks.BIM(model, eps=epsilon, alpha=alpha, steps=steps)(x, y),
        "BIM",
    )


@pytest.mark.parametrize("held_out", ["resnet18", "mobilenet_v3_small", "vit_tiny", "cifar_cnn"], indirect=True)
def test_deepfool_agrees_with_torchattacks(held_out):
    """The same walk to the nearest linearized boundary, so the same class, direction and about the same length.

    Not bit for bit: ours adds the paper's 1e-4 to every step (a few percent longer where logit gaps
    are small) and clips the sum, torchattacks each step. torchattacks needs one backward pass per
    class per image per step, so DenseNet-121 and VGG-16 (tens of seconds each) are left out.
    """
    model = held_out.model
    x = 0.25 + 0.5 * held_out.images  # pixels away from 0 and 1: no clipping, where the two differ by design
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    ours, info = deepfool(model, x, y, num_candidates=NUM_CLASSES, overshoot=0.02, max_steps=20, return_info=True)
    frozen = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)  # torchattacks' DeepFool calls .backward(): no .grad on the shared model
    try:
        theirs = torchattacks.DeepFool(model, steps=20, overshoot=0.02)(x, y)
    finally:
        for parameter, flag in zip(model.parameters(), frozen):
            parameter.requires_grad_(flag)
    assert info.success.all(), f"DeepFool must cross the nearest boundary of a random network: {info}"
    with torch.no_grad():
        assert torch.equal(model(ours).argmax(1), model(theirs).argmax(1)), "the two land in different classes"
    ours_step, their_step = (ours - x).flatten(1), (theirs - x).flatten(1)
    assert (torch.cosine_similarity(ours_step, their_step) > 0.999).all(), "the perturbations point elsewhere"
    ratio = ours_step.norm(dim=1) / their_step.norm(dim=1)
    assert ((ratio - 1).abs() < 0.1).all(), f"perturbation lengths differ: ours / torchattacks = {ratio.tolist()}"


# ----------------------------------------------------------------------------- train mode


def _everything(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in [*model.parameters(), *model.buffers()]]


TRAIN_MODE_CALLS = {
    "vanilla_gradient": lambda m, x, t: vanilla_gradient(m, x, t),
    "guided_backprop": lambda m, x, t: guided_backprop(m, x, t),
    "grad_cam": lambda m, x, t: grad_cam(m, x, t),
    "fgsm": lambda m, x, t: fgsm(m, x, t, 4 / 255),
}


def test_train_mode_gives_the_eval_answer_and_the_model_back(held_out):
    model, x, t = held_out.model, held_out.images, held_out.targets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the uncovered-activation warning, tested above
        expected = {name: call(model, x, t) for name, call in TRAIN_MODE_CALLS.items()}
        values = _everything(model)
        model.train()
        try:
            for name, call in TRAIN_MODE_CALLS.items():
                got = call(model, x, t)
                assert model.training and all(m.training for m in model.modules()), f"{name} left eval mode on"
                torch.testing.assert_close(got, expected[name], rtol=1e-5, atol=1e-7,
                                           msg=lambda m, name=name: f"{name} in train mode: {m}")
        finally:
            model.eval()
    changed = [i for i, (a, b) in enumerate(zip(values, _everything(model))) if not torch.equal(a, b)]
    assert not changed, f"{len(changed)} parameters or buffers (BatchNorm statistics) changed in train mode"


def test_building_blocks_on_held_out_models(held_out):
    """Notebook 08's helpers on each architecture: dictionary, spatial attribution (complete), groups, their shares."""
    from nnvis_helpers import blocks

    model, image, target = held_out.model, held_out.images[:1], int(held_out.targets[0])
    layer = held_out.arch.ig_layer
    if held_out.name == "vit_tiny":  # tokens (N, 17, 192), not feature maps: a clear error, nothing run
        with pytest.raises(ValueError, match="convolution"):
            blocks.layer_view(model, image, layer)
        with pytest.raises(ValueError, match="feature maps"):
            blocks.spatial_attribution(model, image, layer, target)
        return
    view = blocks.layer_view(model, image, layer)
    attributions, delta = blocks.spatial_attribution(model, image, layer, target, n_steps=128, batch_size=64,
                                                     return_delta=True)
    assert attributions.shape == view.activations.shape
    gap = attributions.sum().item() - delta
    # random weights put steep steps into the path integral: 64 points leave 4-8 % here, 1024 under 1 % (too slow for a test)
    assert abs(delta) <= 0.1 * abs(gap) + 1e-4, f"completeness: delta {delta:.2e} for a gap of {gap:.2e}"
    groups = blocks.neuron_groups(view, 2, signs="split")
    shares = blocks.group_attribution(groups, attributions)
    assert shares.shape == (2,) and torch.isfinite(shares).all()
    cache = blocks.IconCache(model, icon_size=held_out.arch.size, steps=2, progress=False)
    dictionary = blocks.semantic_dictionary(model, image, layer, k=2, cache=cache)
    assert dictionary.map_size == view.map_size and cache.rendered == len(dictionary.icons)


@pytest.mark.parametrize("held_out", ["resnet18", "mobilenet_v3_small", "vit_tiny", "cifar_cnn"], indirect=True)
def test_faithfulness_metrics_on_held_out_models(held_out):
    """Deletion and insertion curves and infidelity: shapes, ranges, the ends, the model as it was.

    Forward passes only, through the model's own output: the two largest networks (DenseNet-121, VGG-16) add
    time, not cases.
    """
    from nnvis_helpers import count_hooks
    from nnvis_helpers.faithfulness import infidelity, perturbation_curve

    model, x, t = held_out.model, held_out.images, held_out.targets
    attributions = gradient_x_input(model, x, t)
    values = _everything(model)
    with torch.no_grad():
        probabilities = model(x).softmax(dim=1).gather(1, t[:, None])[:, 0]
    for mode, image_step in (("deletion", 0), ("insertion", -1)):
        curve = perturbation_curve(model, x, attributions, t, mode=mode, steps=3, batch_size=4, progress=False)
        assert curve.fractions.shape == (4,) and curve.scores.shape == (2, 4) and curve.auc.shape == (2,)
        assert ((curve.scores >= 0) & (curve.scores <= 1)).all() and ((curve.auc >= 0) & (curve.auc <= 1)).all()
        torch.testing.assert_close(curve.scores[:, image_step], probabilities, rtol=1e-4, atol=1e-6,
                                   msg=lambda m, mode=mode: f"{mode}: the unperturbed image's probability: {m}")
    scores = infidelity(model, x, attributions, t, n_perturb=3, batch_size=4, progress=False)
    assert scores.shape == (2,) and torch.isfinite(scores).all() and (scores >= 0).all()
    changed = [i for i, (a, b) in enumerate(zip(values, _everything(model))) if not torch.equal(a, b)]
    assert not changed, f"{len(changed)} parameters or buffers changed"
    assert count_hooks(model) == 0 and not model.training
    assert not any(p.grad is not None for p in model.parameters()), ".grad written on the model"


#: Per architecture: (the layer to invert / caricature, style layers (feature maps), content layer). Early layers:
#: the forward passes stop after the last one needed, which keeps VGG-16 and DenseNet-121 quick.
STYLE_PICKS = {
    "resnet18": ("layer2", ["relu", "layer1"], "layer2"),
    "mobilenet_v3_small": ("features.2", ["features.0", "features.1"], "features.2"),
    "vit_tiny": ("blocks.1", ["patch_embed.proj"], "blocks.1"),  # tokens (N, 17, 192): matched as they are
    "vgg16_colab": ("features.8", ["features.1", "features.6"], "features.8"),
    "cifar_cnn": ("features.6", ["features.2", "features.6"], "features.6"),
    "densenet121": ("features.denseblock1", ["features.relu0", "features.denseblock1"], "features.transition1"),
}


def test_inversion_and_style_on_held_out_models(held_out):
    """Notebook 09's recipes on each architecture: right shapes, better objectives, the model as it was (train mode too)."""
    from nnvis_helpers.featurevis import caricature, invert, style_transfer

    model, photo, painting, size = held_out.model, held_out.images[:1], held_out.images[1:], held_out.arch.size
    layer, style_layers, content_layer = STYLE_PICKS[held_out.name]
    values = _everything(model)
    images, history = invert(model, photo, layer, steps=2, lr=0.1, progress=False, return_history=True)
    assert images.shape == (1, 3, size, size) and images.min() >= 0 and images.max() <= 1
    assert torch.isfinite(history).all() and history[-1] > history[0], f"inversion did not improve: {history.tolist()}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the ViT accepts one size: render resizes the transformed images
        pictures, history = caricature(model, photo, layer, steps=2, progress=False, return_history=True)
    assert pictures.shape == (1, 3, size, size) and pictures.min() >= 0 and pictures.max() <= 1
    assert torch.isfinite(history).all()
    model.train()
    try:
        result, losses = style_transfer(model, photo, painting, style_layers=style_layers, content_layer=content_layer,
                                        steps=2, lr=0.1, progress=False, return_losses=True)
        assert model.training and all(m.training for m in model.modules()), "style_transfer left eval mode on"
    finally:
        model.eval()
    assert result.shape == (1, 3, size, size) and result.min() >= 0 and result.max() <= 1
    assert losses["content"][0] == pytest.approx(0.0, abs=1e-6), "it starts at the content photo"
    assert losses["style"][1] < losses["style"][0], f"the style loss did not fall: {losses}"
    changed = [i for i, (a, b) in enumerate(zip(values, _everything(model))) if not torch.equal(a, b)]
    assert not changed, f"{len(changed)} parameters or buffers (BatchNorm statistics) changed"
    assert not any(p.grad is not None for p in model.parameters()), ".grad written on the model"


# ----------------------------------------------------------------------------- activation atlas (notebook 06)


@dataclass(frozen=True)
class AtlasPick:
    layer: str
    map_size: tuple[int, int]  # the layer's map at the architecture's image size; (1, 1): one vector per image


#: Per architecture: the layer the atlas is made of, and its map at the images' size. Small maps, so that every
#: position of an image can be attributed in one test. VGG-16 is left out: the course runs it on Colab, and its
#: 120 M-parameter head makes each attribution pass slow (seconds) without adding a case.
ATLAS_PICKS = {
    "resnet18": AtlasPick("layer3", (4, 4)),
    "mobilenet_v3_small": AtlasPick("features.4", (4, 4)),  # Hardsigmoids after it: no second derivative in PyTorch
    "densenet121": AtlasPick("features.transition2", (4, 4)),
    "vit_tiny": AtlasPick("fc_norm", (1, 1)),  # the class token (N, 192) after the last norm: no positions
    "cifar_cnn": AtlasPick("features.5", (16, 16)),  # a BatchNorm whose output an in-place ReLU6 overwrites
}
ATLAS_IMAGES = 6  # a layout needs 5 vectors or more, and the ViT gives one per image


@contextmanager
def _in_mode(model: nn.Module, mode: str, what: str):
    """Run the block with the model in ``mode`` ("eval" or "train"); it must come back exactly as it went in.

    Checked after the block: every module's flag, no hook left, requires_grad, no .grad, parameters and buffers.
    """
    model.train(mode == "train")
    try:
        training = [m.training for m in model.modules()]
        requires_grad = [p.requires_grad for p in model.parameters()]
        values = _everything(model)
        yield
        assert [m.training for m in model.modules()] == training, f"{what}: a module's train / eval flag changed"
        assert count_hooks(model) == 0, f"{what}: hooks left behind"
        assert [p.requires_grad for p in model.parameters()] == requires_grad, f"{what}: requires_grad changed"
        assert all(p.grad is None for p in model.parameters()), f"{what}: .grad written on the model"
        changed = sum(not torch.equal(a, b) for a, b in zip(values, _everything(model)))
        assert not changed, f"{what}: {changed} parameters or buffers (BatchNorm statistics) changed"
    finally:
        model.eval()


def _gradient_times_activation(model: nn.Module, layer: str, image: torch.Tensor, mean: bool = False) -> torch.Tensor:
    """(d logit_c / d z_p) . z_p for every class c and position p of ``layer``'s map z, one image: (classes, H * W).

    Positions row by row; (classes, 1) for a layer without a map (gradient . vector), or with ``mean=True``:
    (d logit_c / d z, averaged over the positions) . (z averaged over the positions). The definition in plain
    autograd, no helper involved: the layer's output plus a zero tensor that requires grad, one backward per class.
    The model must be in eval mode.
    """
    saved = {}

    def add_zero(_module, _inputs, output):
        saved["z"], saved["zero"] = output.detach().clone(), torch.zeros_like(output, requires_grad=True)
        return output + saved["zero"]

    handle = model.get_submodule(layer).register_forward_hook(add_zero)
    try:
        logits = model(image)
    finally:
        handle.remove()
    z, rows = saved["z"][0], []
    for target in range(logits.shape[1]):
        (gradient,) = torch.autograd.grad(logits[0, target], saved["zero"], retain_graph=True)
        gradient = gradient[0]
        if z.dim() == 1:
            rows.append((gradient * z).sum()[None])
        elif mean:
            rows.append((gradient.mean(dim=(1, 2)) * z.mean(dim=(1, 2))).sum()[None])
        else:
            rows.append((gradient * z).sum(dim=0).flatten())
    return torch.stack(rows).detach()


@pytest.mark.parametrize("held_out", list(ATLAS_PICKS), indirect=True)
def test_vector_attributions_are_gradient_times_activation_on_held_out_models(held_out):
    """Every position of one image, every class: the helper's Jacobian-vector products equal autograd's, in eval
    and in train mode; data that is not the activations' data, or a class the model lacks, is refused."""
    model, image, size = held_out.model, held_out.images[:1], held_out.arch.size
    pick = ATLAS_PICKS[held_out.name]
    positions = pick.map_size[0] * pick.map_size[1]
    everywhere = collect_activations(model, pick.layer, image, positions_per_image=positions, progress=False)
    assert everywhere.map_size == pick.map_size and everywhere.image_size == (size, size)
    assert len(everywhere) == positions and everywhere.vectors.dim() == 2
    rows, columns = everywhere.positions.unbind(1)
    if pick.map_size == (1, 1):
        assert (everywhere.positions == -1).all(), "a layer without a map has no positions: (-1, -1)"
    order = rows.clamp(min=0) * pick.map_size[1] + columns.clamp(min=0)  # each vector's place, row by row
    assert sorted(order.tolist()) == list(range(positions)), "not every position of the map was collected"
    expected = _gradient_times_activation(model, pick.layer, image)[:, order].T  # (positions, classes)
    scale = float(expected.abs().max())
    assert scale > 1e-6, f"gradient x activation is {scale:.1e} at most: a comparison of zeros would prove nothing"

    results = {}
    for mode in ("eval", "train"):
        with _in_mode(model, mode, f"vector_attributions in {mode} mode"):
            results[mode] = vector_attributions(model, everywhere, image, progress=False)
            if mode == "train":  # bad input: a clear error, and the model as it was (checked on leaving the block)
                with pytest.raises(ValueError, match="not the data these activations were collected from"):
                    vector_attributions(model, everywhere, held_out.images[1:], progress=False)
                with pytest.raises(ValueError, match=f"images of \\({size // 2}, {size // 2}\\) pixels"):
                    vector_attributions(model, everywhere, F.interpolate(image, scale_factor=0.5), progress=False)
                with pytest.raises(ValueError, match=f"class {NUM_CLASSES} does not exist"):
                    vector_attributions(model, everywhere, image, classes=[0, NUM_CLASSES], progress=False)
    ours = results["eval"]
    assert ours.shape == (positions, NUM_CLASSES) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4 * scale,
                               msg=lambda m: f"vector_attributions against autograd's gradient x activation: {m}")
    # summed over the positions: the whole map's gradient x activation, per class
    torch.testing.assert_close(ours.sum(dim=0), expected.sum(dim=0), rtol=1e-4, atol=1e-4 * scale * positions ** 0.5)
    torch.testing.assert_close(results["train"], ours, rtol=1e-5, atol=1e-6 * scale,
                               msg=lambda m: f"train mode does not give the eval-mode attributions: {m}")
    if pick.map_size != (1, 1):  # a spatial mean: the mean gradient dotted with the mean vector
        means = collect_activations(model, pick.layer, image, positions_per_image="mean", progress=False)
        expected_mean = _gradient_times_activation(model, pick.layer, image, mean=True)[:, 0]
        torch.testing.assert_close(vector_attributions(model, means, image, progress=False)[0], expected_mean,
                                   rtol=1e-4, atol=1e-4 * float(expected_mean.abs().max()))


@dataclass
class HeldOutAtlas:
    images: torch.Tensor  # (ATLAS_IMAGES, 3, size, size): the held-out images and a few more
    activations: ActivationSet  # two positions per image (one vector per image without a map)
    attributions: torch.Tensor  # (vectors, NUM_CLASSES), in eval mode
    atlas: Atlas  # a 2 x 2 grid on a PCA layout, one-step icons: the cells and the regions behind them matter here


@pytest.fixture(scope="module")
def held_out_atlas(held_out) -> HeldOutAtlas:
    model, size = held_out.model, held_out.arch.size
    images = torch.cat([held_out.images, _pixels(ATLAS_IMAGES - len(held_out.images), size, torch.Generator().manual_seed(6))])
    activations = collect_activations(model, ATLAS_PICKS[held_out.name].layer, images, positions_per_image=2,
                                      progress=False)
    attributions = vector_attributions(model, activations, images, progress=False)
    atlas = activation_atlas(model, activations, grid_size=2, min_count=1, atlas_layout="pca", icon_size=size, steps=1,
                             progress=False, verbose=False)
    return HeldOutAtlas(images, activations, attributions, atlas)


@pytest.mark.parametrize("held_out", list(ATLAS_PICKS), indirect=True)
def test_atlas_cells_labelled_by_attribution_on_held_out_models(held_out, held_out_atlas):
    """cell_attribution is the mean of each cell's rows; the labels, their agreement and the two-class focus follow."""
    model, atlas, attributions = held_out.model, held_out_atlas.atlas, held_out_atlas.attributions
    activations, grid = held_out_atlas.activations, held_out_atlas.atlas.grid
    assert attributions.shape == (len(activations), NUM_CLASSES) and torch.isfinite(attributions).all()
    assert attributions.abs().max() > 1e-6, "all attributions are zero: the cells would all tie"
    cells = grid.cells.tolist()
    assert len(cells) >= 2, f"the 2 x 2 grid draws {len(cells)} cell: too few to compare cells"
    per_cell = cell_attribution(grid, attributions)
    assert per_cell.shape == (len(cells), NUM_CLASSES)
    for k, (row, column) in enumerate(cells):
        torch.testing.assert_close(per_cell[k], attributions[grid.members(row, column)].mean(dim=0), rtol=1e-5, atol=1e-7)
    labels = attribution_labels(grid, attributions)
    assert torch.equal(labels, per_cell.argmax(dim=1))
    best_three = attribution_labels(grid, attributions, top=3)
    assert best_three.shape == (len(cells), 3) and torch.equal(best_three[:, 0], labels)

    with torch.no_grad():
        predicted = model(held_out_atlas.images).argmax(dim=1)
    assert torch.equal(activations.predicted_class, predicted[activations.image_index])
    members_predict = [set(activations.predicted_class[grid.members(row, column)].tolist()) for row, column in cells]
    own = torch.tensor([min(classes) for classes in members_predict])
    assert label_agreement(grid, own, activations) == 1.0, "each cell labelled with a class its own images predict"
    foreign = torch.tensor([min(set(range(NUM_CLASSES)) - classes) for classes in members_predict])
    assert label_agreement(grid, foreign, activations.predicted_class) == 0.0
    mixed = torch.where(torch.arange(len(cells)) == 0, own, foreign)
    assert label_agreement(grid, mixed, activations) == pytest.approx(1 / len(cells))
    assert 0.0 <= label_agreement(grid, labels, activations) <= 1.0

    first, second = int(predicted[0]), (int(predicted[0]) + 1) % NUM_CLASSES
    kept, lean = attribution_focused_vectors(attributions, (first, second), keep=5)
    tops = {index for column in (first, second) for index in attributions[:, column].topk(5).indices.tolist()}
    assert kept.tolist() == sorted(tops), "not the five vectors most attributed to each of the two classes"
    assert torch.equal(lean, attributions[kept, first] - attributions[kept, second])


@pytest.mark.parametrize("held_out", list(ATLAS_PICKS), indirect=True)
def test_atlas_patch_attack_on_held_out_models(held_out, held_out_atlas):
    """Crops behind a cell, the best one, pasted at the model's own input size: each figure equals the forward passes
    written out here, in eval and in train mode. The ViT's pooled vectors have no region behind them: a clear error."""
    import matplotlib.pyplot as plt

    model, images, size = held_out.model, held_out_atlas.images, held_out.arch.size
    atlas, activations, pick = held_out_atlas.atlas, held_out_atlas.activations, ATLAS_PICKS[held_out.name]
    counts = atlas.grid.counts[atlas.cells[:, 0], atlas.cells[:, 1]]
    cell = tuple(atlas.cells[int(counts.argmax())].tolist())  # the fullest cell
    controls_count = min(2, len(atlas.cells) - 1)
    if pick.map_size == (1, 1):  # no map: no image region behind a vector, whatever the cell
        with _in_mode(model, "train", "the ViT's crops"):
            with pytest.raises(ValueError, match="no image region behind a vector"):
                cell_crops(atlas, *cell, images)
            with pytest.raises(ValueError, match="no image region behind a vector"):
                control_patches(atlas, images, exclude_cells=[cell], count=1)
        side = size // 2
        crops, controls = images[:3, :, :side, :side], images[3:3 + controls_count, :, side:, side:]
    else:
        members = atlas.grid.members(*cell)
        crops = cell_crops(atlas, *cell, images)
        stride = size / pick.map_size[0]
        side = min(size, round(3 * stride))  # three map strides
        assert crops.shape == (len(members), 3, side, side)
        member = int(members[0])  # its crop: the square centred on its map position, inside its own image
        row, column = activations.positions[member].tolist()
        top, left = (min(max(round((p + 0.5) * stride - side / 2), 0), size - side) for p in (row, column))
        assert torch.equal(crops[0], images[int(activations.image_index[member]), :, top:top + side, left:left + side])
        controls = control_patches(atlas, images, exclude_cells=[cell], count=controls_count, seed=1)
        assert controls.shape == (controls_count, 3, side, side)

    # what the helpers must give, written out with plain forward passes in eval mode
    sizes, places = (0.25, 0.5), ("top left", "centre")
    with torch.no_grad():
        clean = model(images).softmax(dim=1)
        target = int(clean.mean(dim=0).argmin())  # a class the images are far from: most of them count
        seen_alone = F.interpolate(crops, size=(size, size), mode="bilinear", align_corners=False,
                                   antialias=size < side).clamp(0, 1)
        crop_probabilities = model(seen_alone).softmax(dim=1)[:, target]
        patch = crops[int(crop_probabilities.argmax())]
        patched = {(i, j): model(paste_patch(images, patch, size=s, place=p)).softmax(dim=1)
                   for i, s in enumerate(sizes) for j, p in enumerate(places)}
    eligible = clean.argmax(dim=1) != target

    image_size = None if held_out.name == "vit_tiny" else size  # the ViT says its own size (32 px)
    results = {}
    for mode in ("eval", "train"):
        with _in_mode(model, mode, f"the patch helpers in {mode} mode"):
            chosen, index, probabilities = choose_patch(model, crops, target, image_size=image_size,
                                                        return_probabilities=True)
            attack = patch_flip_rate(model, images, chosen, target, sizes=sizes, places=places, progress=False)
            control = patch_flip_rate(model, images, controls, target, sizes=(0.25,), places=("bottom right",),
                                      progress=False)
            figure = draw_patch_attack(images[:2], paste_patch(images[:2], chosen, size=0.5, place="centre"), model,
                                       target_class=target, count=2)
            titles = [ax.get_title() for ax in figure.axes]
            plt.close(figure)
            results[mode] = (index, probabilities, attack, control, titles)
            if mode == "train":  # bad input: a clear error, and the model as it was (checked on leaving the block)
                with pytest.raises(ValueError, match="larger than"):
                    patch_flip_rate(model, images, chosen, target, sizes=(size + 1,), progress=False)
                with pytest.raises(ValueError, match=f"class {NUM_CLASSES} does not exist"):
                    patch_flip_rate(model, images, chosen, NUM_CLASSES, sizes=(0.25,), places=("centre",), progress=False)
                if held_out.name == "cifar_cnn":  # its Linear head takes 32 px only: the default 224 px fails
                    with pytest.raises(RuntimeError, match="image_size=32"):
                        choose_patch(model, crops, target)

    index, probabilities, attack, control, titles = results["eval"]
    torch.testing.assert_close(probabilities, crop_probabilities, rtol=1e-4, atol=1e-6)
    assert index == int(crop_probabilities.argmax())
    assert attack.sizes == [round(s * size) for s in sizes] and attack.places == list(places)
    assert attack.flip_rate.shape == (2, 2) and attack.predictions.shape == (2, 2, len(images))
    assert torch.equal(attack.clean_predictions, clean.argmax(dim=1)) and attack.eligible == int(eligible.sum())
    for (i, j), with_patch in patched.items():
        top = with_patch.argmax(dim=1)
        assert torch.equal(attack.predictions[i, j], top), f"size {sizes[i]}, {places[j]}: other top-1 classes"
        if eligible.any():
            assert attack.flip_rate[i, j] == pytest.approx(float((top[eligible] == target).float().mean()))
        assert attack.change_rate[i, j] == pytest.approx(float((top != clean.argmax(dim=1)).float().mean()))
        assert attack.target_gain[i, j] == pytest.approx(float((with_patch - clean)[:, target].mean()), abs=1e-5)
    assert control.patch_count == controls_count and control.flip_rate.shape == (1, 1)
    assert len(titles) == 4 and f"class {int(clean[0].argmax())} " in titles[0]
    train_index, train_probabilities, train_attack, train_control, train_titles = results["train"]
    assert train_index == index and torch.equal(train_attack.predictions, attack.predictions), "train mode changes it"
    torch.testing.assert_close(train_probabilities, probabilities, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(train_attack.target_gain, attack.target_gain, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(train_control.target_gain, control.target_gain, rtol=1e-5, atol=1e-7)
    assert train_titles == titles


@pytest.mark.parametrize("held_out", ["vit_tiny"], indirect=True)
def test_vit_tokens_get_a_clear_error_from_the_atlas(held_out):
    """A ViT block gives tokens (N, 17, 192), not a map of positions: collecting or attributing them says what to
    pick instead, and leaves the model (in train mode) as it was."""
    model, images = held_out.model, held_out.images
    with _in_mode(model, "train", "the ViT's tokens"):
        with pytest.raises(ValueError, match=r"\(N, C, H, W\) maps or \(N, C\) vectors"):
            collect_activations(model, "blocks.5", images, progress=False)
        tokens = ActivationSet("blocks.5", torch.rand(2, 192), torch.arange(2), torch.zeros(2, 2, dtype=torch.long),
                               None, (4, 4), (32, 32), 2)  # as if the tokens were a 4 x 4 map
        with pytest.raises(ValueError, match=r"blocks\.5.*\(N, C, H, W\) maps or \(N, C\) vectors"):
            vector_attributions(model, tokens, images, progress=False)
