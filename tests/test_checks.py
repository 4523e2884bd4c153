"""One checking path: the same mistake gets the same clear message from every helper, before any work."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import TinyCNN, assert_untouched, snapshot
from nnvis_helpers import (
    bim, check_target, deconvnet, deepfool, expected_gradients, featurevis, fgsm, grad_cam, gradient_x_input,
    guided_backprop, guided_grad_cam, integrated_gradients, layer_integrated_gradients, list_layers, load_model,
    occlusion, path_profile, pgd, render, smoothgrad, vanilla_gradient,
)
from nnvis_helpers.checks import check_number, class_scores

SIZE = 32

# Every helper with a class target, called the way a learner would; `t` is the target.
HELPERS = {
    "vanilla_gradient": lambda m, x, t: vanilla_gradient(m, x, t),
    "gradient_x_input": lambda m, x, t: gradient_x_input(m, x, t),
    "guided_backprop": lambda m, x, t: guided_backprop(m, x, t),
    "deconvnet": lambda m, x, t: deconvnet(m, x, t),
    "smoothgrad": lambda m, x, t: smoothgrad(m, x, t, n_samples=2),
    "grad_cam": lambda m, x, t: grad_cam(m, x, t, layer="features.3"),
    "guided_grad_cam": lambda m, x, t: guided_grad_cam(m, x, t, layer="features.3"),
    "occlusion": lambda m, x, t: occlusion(m, x, t, window=16, stride=16, progress=False),
    "integrated_gradients": lambda m, x, t: integrated_gradients(m, x, t, n_steps=2, progress=False),
    "layer_integrated_gradients": lambda m, x, t: layer_integrated_gradients(m, x, t, "features.3", n_steps=2, progress=False),
    "expected_gradients": lambda m, x, t: expected_gradients(m, x, t, torch.rand(2, 3, SIZE, SIZE), n_samples=2, progress=False),
    "path_profile": lambda m, x, t: path_profile(m, x[:1], t if isinstance(t, int) else t[:1], n_points=2, progress=False),
    "fgsm": lambda m, x, t: fgsm(m, x, t, 1 / 255),
    "pgd": lambda m, x, t: pgd(m, x, t, 1 / 255, steps=1),
    "bim": lambda m, x, t: bim(m, x, t, 1 / 255, steps=1),
    "deepfool": lambda m, x, t: deepfool(m, x, t, max_steps=1),
}


class TupleOutput(TinyCNN):
    """A classifier that returns (scores, features), as many research models do."""

    def forward(self, x):
        features = self.features(x)
        return self.classifier(features.flatten(1)), features


class CountingCNN(TinyCNN):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


def images(count: int = 2) -> torch.Tensor:
    return torch.rand(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("helper", HELPERS.values(), ids=HELPERS.keys())
def test_an_empty_batch_is_refused_with_one_message(helper):
    model = CountingCNN().eval()
    with pytest.raises(ValueError, match="empty batch"):
        helper(model, torch.rand(0, 3, SIZE, SIZE), 1)
    assert model.calls == 0


@pytest.mark.parametrize("helper", HELPERS.values(), ids=HELPERS.keys())
def test_a_negative_class_is_refused_on_a_model_without_info(helper):
    model = CountingCNN().eval()
    with pytest.raises(ValueError, match="-1 is negative"):
        helper(model, images(), -1)
    assert model.calls == 0, "a negative class is known to be wrong before any forward pass"


@pytest.mark.parametrize("helper", HELPERS.values(), ids=HELPERS.keys())
def test_a_class_the_model_does_not_have_names_the_class_count(helper):
    with pytest.raises(ValueError, match="class 10 does not exist: this model has 10 classes"):
        helper(TinyCNN().eval(), images(), 10)


@pytest.mark.parametrize("helper", HELPERS.values(), ids=HELPERS.keys())
def test_one_hot_targets_get_the_argmax_hint(helper):
    one_hot = nn.functional.one_hot(torch.tensor([1, 2]), 10)
    with pytest.raises(ValueError, match=r"argmax\(dim=1\)"):
        helper(TinyCNN().eval(), images(), one_hot)


@pytest.mark.parametrize("helper", HELPERS.values(), ids=HELPERS.keys())
def test_a_model_returning_a_tuple_is_told_how_to_wrap_it(helper):
    model = TupleOutput().eval()
    before = snapshot(model)
    with pytest.raises(TypeError, match=r"(?s)returned a tuple of 2 items.*output\[0\]"):
        helper(model, images(), 1)
    assert_untouched(model, before)


def test_render_refuses_a_tuple_output_too():
    with pytest.raises(TypeError, match="returned a tuple"):
        render(TupleOutput().eval(), featurevis.class_logit(1), steps=1, image_size=SIZE, progress=False)


@pytest.mark.parametrize("helper", HELPERS.values(), ids=HELPERS.keys())
def test_a_float64_model_gets_float64_images(helper):
    torch.manual_seed(0)
    model = TinyCNN().double().eval()
    result = helper(model, images(), 1)
    result = result[0] if isinstance(result, tuple) else result
    if isinstance(result, torch.Tensor):
        assert torch.isfinite(result).all()
    else:  # path_profile: a named tuple of curves
        assert all(torch.isfinite(curve).all() for curve in result)


@pytest.mark.parametrize("value", [-0.1, float("nan"), "0.1", None])
def test_noise_level_is_validated(value):
    with pytest.raises(ValueError, match="noise_level must be a number"):
        smoothgrad(TinyCNN().eval(), images(), 1, n_samples=2, noise_level=value)


@pytest.mark.parametrize("option, value", [("window", 0), ("stride", 2.5), ("window", "16")])
def test_occlusion_options_are_validated(option, value):
    with pytest.raises(ValueError, match=f"{option} must be a whole number"):
        occlusion(TinyCNN().eval(), images(), 1, **{option: value}, progress=False)


def test_grad_cam_on_a_one_by_one_map_says_to_pick_another_layer():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Conv2d(4, 5, 1), nn.Flatten()).eval()
    with pytest.raises(ValueError, match="1 x 1 map"):
        grad_cam(model, images(), 1, layer="3")
    assert grad_cam(model, images(), 1, layer="0").shape == (2, SIZE, SIZE)


def test_check_target_messages():
    with pytest.raises(TypeError, match="imagenet_labels"):
        check_target("tabby", 1, 1000)
    with pytest.raises(TypeError, match="missing"):
        check_target(None, 1, 1000)
    with pytest.raises(ValueError, match="nested list"):
        check_target([[1], [2]], 2, 1000)
    assert check_target(5, 2, None).tolist() == [5, 5]  # the upper end is checked later, on the output


def test_class_scores_refuses_other_outputs():
    with pytest.raises(TypeError, match="output.logits"):
        class Output:
            logits = torch.zeros(1, 3)

        class_scores(Output())
    with pytest.raises(ValueError, match=r"\(N, classes\)"):
        class_scores(torch.zeros(1, 3, 4, 4))
    assert class_scores(torch.tensor([[1.0, 2.0]]), torch.tensor([1])).tolist() == [2.0]


def test_check_number():
    assert check_number(3, "n", low=1, integer=True) == 3
    with pytest.raises(ValueError, match=r"n must be a whole number in \[1, inf\], got True"):
        check_number(True, "n", low=1, integer=True)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        check_number(0, "x", low=0, high=1, low_open=True)


def test_load_model_suggests_the_family_that_was_meant():
    with pytest.raises(ValueError, match="'resnet18', 'resnet34', 'resnet50'") as error:
        load_model("resnet")
    assert "alexnet" not in str(error.value)


class CifarNet(nn.Module):
    """A 32 px network with a Flatten + Linear head: it accepts 32 x 32 images only."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(8 * 16 * 16, 10))

    def forward(self, x):
        return self.head(self.features(x))


def test_list_layers_on_a_fixed_size_network_says_which_size_to_pass():
    model = CifarNet().eval()
    with pytest.raises(RuntimeError, match=r"input_size=\(1, 3, 32, 32\)"):
        list_layers(model)
    rows = {row.name: row.output_shape for row in list_layers(model, input_size=(1, 3, 32, 32))}
    assert rows["head.2"] == (1, 10)


def test_default_grad_cam_layer_follows_the_images_size():
    torch.manual_seed(0)
    model = CifarNet().eval()
    cam = grad_cam(model, images(), 1)  # probes at 32 px, not 224
    assert cam.shape == (2, SIZE, SIZE) and torch.isfinite(cam).all()
    assert guided_grad_cam(model, images(), 1).shape == (2, 3, SIZE, SIZE)


def test_render_on_a_fixed_size_network_resizes_back_with_a_warning():
    torch.manual_seed(0)
    model = CifarNet().eval()
    with pytest.warns(UserWarning, match="accepts only"):
        result = render(model, featurevis.class_logit(3), steps=2, image_size=SIZE, progress=False)
    assert result.shape == (1, 3, SIZE, SIZE)
    with pytest.raises(RuntimeError, match="pass image_size="):
        render(model, featurevis.class_logit(3), steps=1, image_size=48, progress=False)


def test_sanity_check_defaults_on_a_fixed_size_network():
    from nnvis_helpers import sanity_check_randomization

    torch.manual_seed(0)
    model = CifarNet().eval()
    result = sanity_check_randomization(model, images(1), 1, progress=False)  # its default Grad-CAM layer at 32 px
    assert result.layers == ["head.2", "features.1", "features.0"]
    assert all(len(values) == 3 for values in result.correlations.values())
