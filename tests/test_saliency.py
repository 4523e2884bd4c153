"""Saliency maps: exact on models we can solve by hand, equal to captum, and harmless to the model."""
from __future__ import annotations

import functools
import warnings

import pytest
import torch
import torchvision
from torch import nn

from conftest import TinyCNN, assert_untouched, snapshot
from nnvis_helpers import LayerNotFoundError, count_hooks, load_images
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
    sanity_check_randomization,
    smoothgrad,
    vanilla_gradient,
)

captum_attr = pytest.importorskip("captum.attr")

METHODS = {
    "vanilla_gradient": vanilla_gradient,
    "gradient_x_input": gradient_x_input,
    "guided_backprop": guided_backprop,
    "deconvnet": deconvnet,
    "smoothgrad": functools.partial(smoothgrad, n_samples=3, batch_size=2),
    "grad_cam": grad_cam,
    "guided_grad_cam": guided_grad_cam,
    "occlusion": functools.partial(occlusion, window=16, stride=16, progress=False),
}


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return load_images(["chelsea", "coffee"], size=64)


def linear_model(num_classes: int = 4, size: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, num_classes)).eval()


# --------------------------------------------------------------------- exact answers


def test_saliency_of_a_linear_model_is_the_absolute_weights():
    model = linear_model()
    images = torch.rand(3, 3, 8, 8)
    weights = model[1].weight.detach()
    for target in range(4):
        expected = weights[target].abs().reshape(3, 8, 8)
        maps = vanilla_gradient(model, images, target, reduce=None)
        assert torch.allclose(maps, expected.expand(3, -1, -1, -1))
        assert torch.allclose(vanilla_gradient(model, images, target), expected.amax(dim=0).expand(3, -1, -1))
        assert torch.allclose(gradient_x_input(model, images, target), images * weights[target].reshape(3, 8, 8))


def test_signed_gradient_keeps_the_sign():
    model = linear_model()
    maps = vanilla_gradient(model, torch.rand(1, 3, 8, 8), 2, abs=False, reduce=None)
    assert torch.allclose(maps[0], model[1].weight[2].detach().reshape(3, 8, 8))


def test_occlusion_of_a_linear_model_is_the_patch_contribution():
    model = linear_model()
    images = torch.rand(1, 3, 8, 8)
    contribution = (images[0] * model[1].weight[1].detach().reshape(3, 8, 8)).sum(dim=0)
    maps = occlusion(model, images, 1, window=4, stride=4, progress=False)
    for top in (0, 4):
        for left in (0, 4):
            patch = maps[0, top : top + 4, left : left + 4]
            assert torch.allclose(patch, contribution[top : top + 4, left : left + 4].sum().expand(4, 4), atol=1e-5)


def test_smoothgrad_without_noise_is_the_gradient(images):
    model = TinyCNN().eval()
    assert torch.allclose(smoothgrad(model, images, 3, n_samples=3, noise_level=0.0), vanilla_gradient(model, images, 3), atol=1e-7)


def test_smoothgrad_is_reproducible_and_the_seed_matters(images):
    model = TinyCNN().eval()
    first = smoothgrad(model, images, 3, n_samples=4, seed=5)
    assert torch.equal(first, smoothgrad(model, images, 3, n_samples=4, seed=5))
    assert not torch.equal(first, smoothgrad(model, images, 3, n_samples=4, seed=6))


# --------------------------------------------------------------------- ReLU backward rules


class GuidedReference(torch.autograd.Function):
    """Guided ReLU/ReLU6 written as one autograd function, for comparison."""

    @staticmethod
    def forward(ctx, x, top, deconv):
        ctx.save_for_backward(x)
        ctx.top, ctx.deconv = top, deconv
        return x.clamp(0, top)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if ctx.deconv:
            return grad.clamp(min=0), None, None
        return grad.clamp(min=0) * ((x > 0) & (x < ctx.top)), None, None


class ActivationNet(nn.Module):
    """conv-act-conv-act-linear; the activation module may be in place, ReLU6, or one reused module."""

    def __init__(self, activation: str = "relu", inplace: bool = False, reuse: bool = False, reference: str | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(6 * 16, 5)
        make = (lambda: nn.ReLU6(inplace=inplace)) if activation == "relu6" else (lambda: nn.ReLU(inplace=inplace))
        self.act1 = make()
        self.act2 = self.act1 if reuse else make()
        self.top = 6.0 if activation == "relu6" else float("inf")
        self.reference = reference  # None: the modules; "guided"/"deconv": the reference function

    def act(self, module, x):
        if self.reference is None:
            return module(x)
        return GuidedReference.apply(x, self.top, self.reference == "deconv")

    def forward(self, x):
        x = self.act(self.act1, self.conv1(x) * 30)  # scaled so that some units pass 6
        x = nn.functional.adaptive_avg_pool2d(self.act(self.act2, self.conv2(x) * 4), 4)
        return self.head(x.flatten(1))


@pytest.mark.parametrize("activation", ["relu", "relu6"])
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("reuse", [False, True])
@pytest.mark.parametrize("method,rule", [(guided_backprop, "guided"), (deconvnet, "deconv")])
def test_relu_rules_match_a_reference(activation, inplace, reuse, method, rule, images):
    model = ActivationNet(activation, inplace, reuse).eval()
    reference = ActivationNet(activation, reference=rule).eval()
    images = images.requires_grad_(True)
    (expected,) = torch.autograd.grad(reference(images)[:, 2].sum(), images)
    maps = method(model, images.detach(), 2)
    assert torch.allclose(maps, expected, atol=1e-6), f"largest difference {(maps - expected).abs().max():.3g}"
    assert not torch.allclose(maps, vanilla_gradient(model, images.detach(), 2, abs=False, reduce=None))
    if activation == "relu6":  # the ReLU6 units that saturated must matter: some inputs pass 6
        with torch.no_grad():
            assert (model.conv1(images) * 30 > 6).any()


def test_relu_rules_agree_with_captum_on_a_relu_network(images):
    model = TinyCNN().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guided = captum_attr.GuidedBackprop(model).attribute(images, target=3)
        deconv = captum_attr.Deconvolution(model).attribute(images, target=3)
    assert relative_error(guided_backprop(model, images, 3), guided) < 1e-6
    assert relative_error(deconvnet(model, images, 3), deconv) < 1e-6


def test_relu6_as_relu_is_seen_by_captum_and_computes_the_same():
    model = ActivationNet("relu6", inplace=True).eval()
    seen = relu6_as_relu(model)
    assert isinstance(seen.act1, nn.ReLU) and not isinstance(model.act1, nn.ReLU)
    images = torch.rand(2, 3, 4, 4)
    assert torch.equal(seen(images), model(images))


# --------------------------------------------------------------------- the model is left alone


def _mixed_training(model: nn.Module) -> nn.Module:
    model.eval()
    model.features[1].train()  # an odd mix, to see that every flag comes back as it was
    return model


@pytest.mark.parametrize("name", METHODS)
def test_model_untouched(name, images):
    model = _mixed_training(TinyCNN())  # parameters require grad, as in a model being trained
    model.classifier.weight.grad = torch.ones_like(model.classifier.weight)
    before = snapshot(model)
    METHODS[name](model, images, [1, 2])
    assert_untouched(model, before)


class Exploding(TinyCNN):
    """Fails in the middle of the forward pass, after the hooks have been placed."""

    def forward(self, x):
        self.features(x)
        raise RuntimeError("boom")


@pytest.mark.parametrize("name", METHODS)
def test_model_untouched_when_the_method_raises(name, images):
    model = TinyCNN()
    _mixed_training(model)
    before = snapshot(model)
    with pytest.raises(ValueError, match="does not exist"):
        METHODS[name](model, images, 10)  # TinyCNN has classes 0..9: found after the forward pass
    assert_untouched(model, before)
    exploding = _mixed_training(Exploding())
    before = snapshot(exploding)
    with pytest.raises(RuntimeError, match="boom"):
        METHODS[name](exploding, images, 1, **({"layer": "features.4"} if "cam" in name else {}))
    assert_untouched(exploding, before)


def test_sanity_check_never_touches_the_model(images):
    model = _mixed_training(TinyCNN())
    before = snapshot(model)
    result = sanity_check_randomization(model, images, 1, progress=False)
    assert_untouched(model, before)
    assert result.layers == ["classifier", "features.3", "features.0"]
    assert set(result.correlations) >= {"gradient", "guided backprop", "Grad-CAM"}
    for values in result.correlations.values():
        assert len(values) == 3 and all(-1 <= v <= 1 for v in values)
    # Randomizing every layer must change the plain gradient: far from a perfect rank correlation.
    assert result.correlations["gradient"][-1] < 0.9


def test_hundred_calls_leave_no_hooks():
    model, images = TinyCNN().eval(), torch.rand(1, 3, 8, 8)
    for _ in range(100):
        guided_backprop(model, images, 1)
    assert count_hooks(model) == 0


# --------------------------------------------------------------------- inputs


def test_wrong_target_gives_a_clear_error(offline_model, photos):
    with pytest.raises(ValueError, match="1000 classes"):
        vanilla_gradient(offline_model, photos, 1000)
    with pytest.raises(ValueError, match="-1 is negative"):
        grad_cam(offline_model, photos, [1, -1])
    with pytest.raises(ValueError, match="one class per image"):
        guided_backprop(offline_model, photos, [1, 2, 3])
    with pytest.raises(TypeError, match="integer class"):
        smoothgrad(offline_model, photos, torch.tensor([1.0, 2.0]))


def test_bad_images_and_options(images):
    model = TinyCNN().eval()
    with pytest.raises(ValueError, match="unsqueeze"):
        vanilla_gradient(model, images[0], 1)
    with pytest.raises(ValueError, match="divide by 255"):
        vanilla_gradient(model, images * 255, 1)
    with pytest.raises(ValueError, match="reduce"):
        vanilla_gradient(model, images, 1, reduce="mean")
    with pytest.raises(ValueError, match="window"):
        occlusion(model, images, 1, window=64, progress=False)
    with pytest.raises(LayerNotFoundError, match="features.4"):
        grad_cam(model, images, 1, layer="features.44")
    with pytest.raises(ValueError, match="conv map"):
        grad_cam(model, images, 1, layer="classifier")


@pytest.mark.parametrize("name", METHODS)
def test_batch_equals_single_images(name, images):
    model = TinyCNN().eval()
    batch = METHODS[name](model, images, [1, 2])
    for index, target in enumerate([1, 2]):
        single = METHODS[name](model, images[index : index + 1], target)
        if name == "smoothgrad":  # noise is drawn for the whole batch: compare the shape only
            assert single.shape[1:] == batch.shape[1:]
        else:
            assert torch.allclose(single[0], batch[index], atol=1e-6)


@pytest.mark.parametrize("name", METHODS)
def test_targets_as_int_list_or_tensor(name, images):
    model = TinyCNN().eval()
    expected = METHODS[name](model, images, 4)
    assert torch.allclose(METHODS[name](model, images, [4, 4]), expected)
    assert torch.allclose(METHODS[name](model, images, torch.tensor([4, 4])), expected)
    assert torch.allclose(METHODS[name](model, images, torch.tensor(4)), expected)


@pytest.mark.parametrize("name", METHODS)
def test_works_inside_no_grad_and_on_a_frozen_model(name, images):
    model = TinyCNN().eval()
    expected = METHODS[name](model, images, 4)
    model.requires_grad_(False)
    with torch.no_grad():
        assert torch.allclose(METHODS[name](model, images, 4), expected)


# --------------------------------------------------------------------- layers for Grad-CAM


def test_last_conv_layer_is_found_for_common_architectures(offline_model):
    assert last_conv_layer(offline_model) == "bn2"
    assert last_conv_layer(TinyCNN()) == "features.4"
    with torch.device("meta"):  # shapes only: no memory, no time
        vgg, resnet = torchvision.models.vgg11(), torchvision.models.resnet18()
    assert last_conv_layer(vgg) == "features.19"  # the ReLU after the last conv, before pooling
    assert last_conv_layer(resnet) == "layer4"
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        last_conv_layer(linear_model(size=224))


def test_grad_cam_of_a_layer_before_an_inplace_relu_sees_negative_values(images):
    # features.3 is a conv followed by an in-place ReLU: without ReLU, its map must keep negative values.
    cam = grad_cam(TinyCNN().eval(), images, 1, layer="features.3", relu=False, upsample=False)
    assert cam.shape == (2, 16, 16) and (cam < 0).any()


# --------------------------------------------------------------------- captum on the real model


def _captum(method, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return method.attribute(*args, **kwargs)


def test_agreement_with_captum_on_the_offline_model(offline_model, photos):
    model, targets = offline_model, [285, 967]
    seen = relu6_as_relu(model)  # captum's GuidedBackprop/Deconvolution only look at nn.ReLU
    layer = getattr(model, last_conv_layer(model))
    ca = captum_attr
    pairs = {
        "saliency": (vanilla_gradient(model, photos, targets, reduce=None), _captum(ca.Saliency(model), photos, targets)),
        "gradient x input": (gradient_x_input(model, photos, targets), _captum(ca.InputXGradient(model), photos, targets)),
        "guided backprop": (guided_backprop(model, photos, targets), _captum(ca.GuidedBackprop(seen), photos, targets)),
        "deconvnet": (deconvnet(model, photos, targets), _captum(ca.Deconvolution(seen), photos, targets)),
        "grad-cam": (
            grad_cam(model, photos, targets),
            ca.LayerAttribution.interpolate(
                _captum(ca.LayerGradCam(model, layer), photos, targets, relu_attributions=True), (64, 64), "bilinear"
            )[:, 0],
        ),
        "guided grad-cam": (
            guided_grad_cam(model, photos, targets),
            _captum(ca.GuidedGradCam(seen, getattr(seen, "bn2")), photos, targets, interpolate_mode="bilinear"),
        ),
        "occlusion": (
            occlusion(model, photos, targets, window=24, stride=20, baseline=0.5, progress=False),
            _captum(ca.Occlusion(model), photos, target=targets, sliding_window_shapes=(3, 24, 24), strides=(3, 20, 20), baselines=0.5)[:, 0],
        ),
    }
    for squared, kind in ((False, "smoothgrad"), (True, "smoothgrad_sq")):
        torch.manual_seed(7)
        # captum's noise depends on its nt_samples_batch_size; with all samples in one batch it is ours, for any batch_size of ours
        theirs = _captum(ca.NoiseTunnel(ca.Saliency(model)), photos, target=targets, nt_type=kind, nt_samples=5, stdevs=0.1)
        pairs[kind] = (smoothgrad(model, photos, targets, n_samples=5, batch_size=2, noise_level=0.1, squared=squared, seed=7, reduce=None), theirs)
    errors = {name: relative_error(ours, theirs) for name, (ours, theirs) in pairs.items()}
    assert all(error < 1e-4 for error in errors.values()), errors


def test_captum_guided_backprop_skips_relu6(offline_model, photos):
    # What a learner trips over: on EfficientNet captum's GuidedBackprop returns the plain gradient.
    theirs = _captum(captum_attr.GuidedBackprop(offline_model), photos[:1], 285)
    assert relative_error(vanilla_gradient(offline_model, photos[:1], 285, abs=False, reduce=None), theirs) < 1e-6
    assert relative_error(guided_backprop(offline_model, photos[:1], 285), theirs) > 0.5


# ----------------------------------------------------------------------------- rectifiers inside forward


class Rectified(nn.Module):
    """The same small network with its rectifiers written four ways: modules, F.relu, in-place x.relu_(), F.relu6."""

    def __init__(self, style: str):
        super().__init__()
        torch.manual_seed(0)
        self.style = style
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)
        self.relu = nn.ReLU(inplace=True)
        self.relu6 = nn.ReLU6()
        with torch.no_grad():
            self.conv2.weight.mul_(60)  # some units above 6, so ReLU6's upper end matters

    def forward(self, x):
        x = self.conv1(x)
        if self.style == "modules":
            x = self.relu6(self.conv2(self.relu(x)))
        elif self.style == "functional":
            x = torch.nn.functional.relu6(self.conv2(torch.nn.functional.relu(x, inplace=True)))
        else:  # in place, on tensors, as many research codes do
            x = self.conv2(x.relu_())
            x = torch.nn.functional.hardtanh(x, 0.0, 6.0)
        return self.head(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("method", [guided_backprop, deconvnet], ids=["guided", "deconvnet"])
@pytest.mark.parametrize("style", ["functional", "tensor methods"])
def test_the_rule_covers_functional_and_in_place_rectifiers(method, style):
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every activation is a rectifier here: no warning
        expected = method(Rectified("modules").eval(), images, 2)
        got = method(Rectified(style).eval(), images, 2)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    plain = vanilla_gradient(Rectified(style).eval(), images, 2, abs=False, reduce=None)
    assert relative_error(got, plain) > 0.05, "the rule must change the map, not fall back to the gradient"


class GeluNet(nn.Module):
    def __init__(self, act: nn.Module):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = act
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.nn.functional.relu(self.act(self.conv(x))).mean(dim=(2, 3)))


def test_uncovered_activations_are_named_in_a_warning():
    images = torch.rand(1, 3, 8, 8)
    with pytest.warns(UserWarning, match=r"kept their ordinary gradient: gelu x1 \(modules: act\)"):
        guided_backprop(GeluNet(nn.GELU()).eval(), images, 0)
    with pytest.warns(UserWarning, match=r"hardswish x1"):
        deconvnet(GeluNet(nn.Hardswish()).eval(), images, 0)
    no_relu = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    with pytest.warns(UserWarning, match="no ReLU or ReLU6, so the rule changed nothing"):
        result = guided_backprop(no_relu, images, 0)
    torch.testing.assert_close(result, vanilla_gradient(no_relu, images, 0, abs=False, reduce=None))


def test_smoothgrad_does_not_depend_on_batch_size(tiny_cnn):
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    maps = [smoothgrad(tiny_cnn, images, [1, 2, 3], n_samples=7, batch_size=size, reduce=None, seed=3) for size in (1, 3, 7, 50)]
    for other in maps[1:]:
        torch.testing.assert_close(other, maps[0], rtol=1e-5, atol=1e-7)
    single = smoothgrad(tiny_cnn, images[1:2], 2, n_samples=7, batch_size=2, reduce=None, seed=3)
    assert not torch.allclose(single, maps[0][1:2]), "image 1 of a batch gets the noise that follows image 0's"


def test_smoothgrad_equals_captum_noise_tunnel_for_several_images(tiny_cnn):
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(5)
    theirs = captum_attr.NoiseTunnel(captum_attr.Saliency(tiny_cnn)).attribute(
        images, target=[1, 2, 3], nt_type="smoothgrad", nt_samples=6, stdevs=0.2)
    ours = smoothgrad(tiny_cnn, images, [1, 2, 3], n_samples=6, noise_level=0.2, seed=5, batch_size=4, reduce=None)
    assert relative_error(ours, theirs) < 1e-5


def test_every_helper_computes_in_eval_mode_and_restores_train_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        model(torch.rand(8, 3, 8, 8))  # running statistics that are not the defaults
    reference = vanilla_gradient(model.eval(), torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)), 1)
    model.train()
    running = model[1].running_mean.clone(), model[1].num_batches_tracked.clone()
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    first, second = vanilla_gradient(model, images, 1), vanilla_gradient(model, images, 1)
    torch.testing.assert_close(first, reference)
    torch.testing.assert_close(second, first, rtol=0, atol=0)  # Dropout is off
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(model[1].running_mean, running[0]) and torch.equal(model[1].num_batches_tracked, running[1])
