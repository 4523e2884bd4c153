"""nnvis_helpers.featurevis: objectives rise, compose and fail clearly; render leaves the model untouched."""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from nnvis_helpers import LayerNotFoundError, count_hooks
from nnvis_helpers.featurevis import (
    ActivationRunner,
    Objective,
    blur,
    channel,
    class_logit,
    class_probability,
    compose,
    deepdream,
    direction,
    diversity,
    evaluate,
    fourier,
    jitter,
    l1,
    l2,
    layer,
    neuron,
    pad,
    pixels,
    random_rotate,
    random_scale,
    render,
    standard_transforms,
    total_variation,
)
from conftest import assert_untouched, snapshot

SIZE = 32


def _rises(model, objective, batch_size=1, steps=12, **options):
    images, history = render(model, objective, steps=steps, image_size=SIZE, batch_size=batch_size,
                             progress=False, return_history=True, transforms=None, **options)
    assert images.shape == (batch_size, 3, SIZE, SIZE)
    assert images.min() >= 0 and images.max() <= 1
    assert torch.isfinite(history).all()
    return history


OBJECTIVES = {
    "neuron": lambda: neuron("features.3", 2),
    "neuron_xy": lambda: neuron("features.0", 1, x=3, y=5),
    "channel": lambda: channel("features.3", 5),
    "layer": lambda: layer("features.3"),
    "class_logit": lambda: class_logit(3),
    "class_probability": lambda: class_probability(3),
    "direction": lambda: direction("features.3", torch.linspace(-1, 1, 16)),
    "direction_cosine": lambda: direction("features.3", torch.linspace(-1, 1, 16), cosine_power=1.0),
    "negative_channel": lambda: -channel("features.3", 5),
    "minus_tv": lambda: channel("features.3", 5) - 0.1 * total_variation(),
}


@pytest.mark.parametrize("name", OBJECTIVES)
@pytest.mark.parametrize("param", ["pixels", "fourier"])
def test_every_objective_rises(tiny_cnn, name, param):
    objective = OBJECTIVES[name]()
    history = _rises(tiny_cnn, objective, param=param)
    assert history[-3:].mean() > history[:2].mean(), f"{name} did not go up: {history.tolist()}"


def test_diversity_rises_on_a_batch(tiny_cnn):
    history = _rises(tiny_cnn, diversity("features.3"), batch_size=3, steps=20, lr=0.1)
    assert history[-3:].mean() > history[:2].mean()


@pytest.mark.parametrize("penalty", [l1, l2, total_variation, blur])
def test_regularizers_fall_when_subtracted(tiny_cnn, penalty):
    images = torch.rand(1, 3, SIZE, SIZE)
    history = _rises(tiny_cnn, -1.0 * penalty(), param=pixels(init=images), steps=10)
    assert history[-1] > history[0]


def test_evaluate_matches_a_manual_forward(tiny_cnn):
    images = torch.rand(2, 3, SIZE, SIZE)
    expected = tiny_cnn.features[:4](images)[:, 5].mean((1, 2))
    assert torch.allclose(evaluate(tiny_cnn, images, channel("features.3", 5)), expected, atol=1e-6)
    assert torch.allclose(evaluate(tiny_cnn, images, class_logit(2)), tiny_cnn(images)[:, 2].detach(), atol=1e-6)


def test_inplace_relu_after_the_layer_does_not_change_what_we_read(tiny_cnn):
    # features.0 is a conv followed by ReLU(inplace=True); the objective must see the conv output
    images = torch.rand(1, 3, SIZE, SIZE)
    conv = tiny_cnn.features[0](images)
    together = channel("features.0", 1) + class_logit(0)  # full pass: the ReLU runs
    value = evaluate(tiny_cnn, images, together)
    assert torch.allclose(value, conv[:, 1].mean((1, 2)) + tiny_cnn(images)[:, 0], atol=1e-5)
    assert (conv[:, 1] < 0).any(), "test needs negative conv outputs to be meaningful"


def test_batch_argument_targets_one_image(tiny_cnn):
    objective = class_logit(1, batch=0) + class_logit(2, batch=1)
    images = torch.rand(2, 3, SIZE, SIZE)
    logits = tiny_cnn(images).detach()
    assert torch.allclose(evaluate(tiny_cnn, images, objective), torch.stack([logits[0, 1], logits[1, 2]]), atol=1e-6)


@pytest.mark.parametrize("cosine_power", [0.0, 4.0])
@pytest.mark.parametrize("position", [{}, {"x": 1, "y": 2}])
def test_batched_direction_equals_the_sum_of_single_image_objectives(tiny_cnn, cosine_power, position):
    torch.manual_seed(1)
    images = torch.rand(3, 3, SIZE, SIZE)
    vectors = torch.randn(3, 16)
    batched = evaluate(tiny_cnn, images, direction("features.3", vectors, cosine_power, **position))
    singles = torch.cat([
        evaluate(tiny_cnn, images[b:b + 1], direction("features.3", vectors[b], cosine_power, **position))
        for b in range(3)
    ])
    assert torch.allclose(batched, singles, rtol=1e-5, atol=1e-5)
    assert torch.allclose(batched.sum(), singles.sum(), rtol=1e-5)
    # and it is not the same vector for every image: image 0 read with row 1 gives another value
    swapped = evaluate(tiny_cnn, images[:1], direction("features.3", vectors[1], cosine_power, **position))
    assert not torch.allclose(swapped, batched[:1])


def test_batched_direction_gradient_pulls_each_image_towards_its_own_row(tiny_cnn):
    images = torch.rand(2, 3, SIZE, SIZE, requires_grad=True)
    vectors = torch.randn(2, 16)
    with ActivationRunner(tiny_cnn, direction("features.3", vectors)) as runner:
        acts = runner(images)
        direction("features.3", vectors)(acts).sum().backward()
    alone = images.detach()[1:].clone().requires_grad_(True)
    with ActivationRunner(tiny_cnn, direction("features.3", vectors[1])) as runner:
        direction("features.3", vectors[1])(runner(alone)).sum().backward()
    assert torch.allclose(images.grad[1:], alone.grad, atol=1e-6), "image 1 must only feel row 1"


def test_batched_direction_needs_one_row_per_image(tiny_cnn):
    with pytest.raises(ValueError, match="3 rows .* batch has 2 images; render with batch_size=3"):
        render(tiny_cnn, direction("features.3", torch.ones(3, 16)), batch_size=2, steps=2, image_size=SIZE,
               progress=False)


# ------------------------------------------------------------------------------ composition

def test_composition_with_numbers_and_objectives(tiny_cnn):
    a, b = channel("features.3", 1), channel("features.3", 2)
    images = torch.rand(1, 3, SIZE, SIZE)
    va, vb = evaluate(tiny_cnn, images, a), evaluate(tiny_cnn, images, b)
    cases = {
        "a + b": (a + b, va + vb),
        "a - b": (a - b, va - vb),
        "2 * a": (2 * a, 2 * va),
        "a * 2": (a * 2, 2 * va),
        "a / 4": (a / 4, va / 4),
        "-a": (-a, -va),
        "a + 1": (a + 1, va + 1),
        "1 - a": (1 - a, 1 - va),
        "sum": (sum([a, b]), va + vb),
        "0.5*a - 3*b + 2": (0.5 * a - 3 * b + 2, 0.5 * va - 3 * vb + 2),
    }
    for name, (objective, expected) in cases.items():
        assert isinstance(objective, Objective), name
        assert torch.allclose(evaluate(tiny_cnn, images, objective), expected, atol=1e-5), name
    assert (a + class_logit(0)).needs_output and not (a + b).needs_output
    assert (a + layer("features.0")).layers == ("features.3", "features.0")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda a: a * a, "cannot multiply two objectives"),
        (lambda a: a + "x", "cannot add an objective and a str"),
        (lambda a: "x" + a, "cannot add an objective and a str"),
        (lambda a: a - "x", "cannot subtract"),
        (lambda a: a * "3", "cannot multiply"),
        (lambda a: a * True, "cannot multiply"),
        (lambda a: a * torch.tensor(2.0), "cannot multiply"),
        (lambda a: a / a, "cannot divide"),
    ],
)
def test_composition_refuses_anything_else(make, message):
    with pytest.raises(TypeError, match=message):
        make(channel("features.3", 1))


# ------------------------------------------------------------------------------ bad input fails early

class CountingForward(nn.Module):
    """Wraps a model and counts forward passes (the wrapper's own layer names get a prefix)."""

    def __init__(self, model):
        super().__init__()
        self.net = model
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


def test_unknown_layer_fails_before_any_forward(tiny_cnn):
    model = CountingForward(tiny_cnn)
    before = snapshot(model)
    with pytest.raises(LayerNotFoundError, match=r"net\.features\.3"):
        render(model, channel("net.features.33", 0), steps=5, image_size=SIZE, progress=False)
    assert model.calls == 0
    assert_untouched(model, before)


@pytest.mark.parametrize(
    "objective, message",
    [
        (channel("net.features.3", 16), r"16 channels, valid choices are 0 to 15"),
        (neuron("net.features.0", 0, x=40), r"valid x are 0 to 31"),
        (class_logit(10), r"10 classes, valid choices are 0 to 9"),
        (direction("net.features.3", torch.ones(7)), r"7 entries but layer 'net.features.3' has 16 channels"),
        (channel("net.features.3", 1, batch=3), r"batch has 1 images"),
        (diversity("net.features.3"), "batch_size=2 or more"),
    ],
)
def test_bad_channel_class_or_position_fails_before_any_step(tiny_cnn, objective, message):
    model = CountingForward(tiny_cnn)
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        render(model, objective, steps=50, image_size=SIZE, progress=False)
    assert model.calls == 1, "only the checking pass may run"
    assert_untouched(model, before)


def test_bad_arguments_are_explained():
    with pytest.raises(TypeError, match="layer is named by a string"):
        channel(3, 1)
    with pytest.raises(TypeError, match="channel must be an int"):
        channel("features.3", 1.5)
    with pytest.raises(ValueError, match="no ImageNet class called"):
        class_logit("not a class")
    with pytest.raises(ValueError, match="1-D float vector"):
        direction("features.3", torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="NaN"):
        direction("features.3", torch.tensor([1.0, float("nan")]))


# ------------------------------------------------------------------------------ model left untouched

def test_render_leaves_the_model_untouched(tiny_cnn):
    tiny_cnn.train()  # a model in train mode: render computes in eval mode and gives the train mode back
    tiny_cnn.classifier.weight.grad = torch.ones_like(tiny_cnn.classifier.weight)
    before = snapshot(tiny_cnn)
    seen = []
    spy = tiny_cnn.features[0].register_forward_hook(lambda m, i, o: seen.append(m.training))
    try:
        render(tiny_cnn, channel("features.3", 1) + class_logit(2), steps=3, image_size=SIZE, progress=False)
    finally:
        spy.remove()
    assert seen and not any(seen), "render must run the model in eval mode"
    assert_untouched(tiny_cnn, before)
    assert tiny_cnn.training


def test_hooks_are_registered_once_per_render(tiny_cnn, monkeypatch):
    registered = []
    original = nn.Module.register_forward_hook

    def counting(self, *args, **kwargs):
        registered.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "register_forward_hook", counting)
    render(tiny_cnn, channel("features.3", 1) + channel("features.0", 2), steps=7, image_size=SIZE, progress=False)
    assert len(registered) == 2  # one per needed layer, not per step, none on other modules


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_no_hook_left_after_an_error_inside(tiny_cnn, error):
    calls = {"n": 0}

    def exploding(acts):
        calls["n"] += 1
        if calls["n"] > 3:  # after the checking pass and a couple of steps
            raise error("forced")
        return acts["features.3"][:, 0].mean((1, 2))

    tiny_cnn.classifier.weight.grad = torch.zeros_like(tiny_cnn.classifier.weight)
    before = snapshot(tiny_cnn)
    with pytest.raises(error):
        render(tiny_cnn, Objective(exploding, "exploding", layers=["features.3"]), steps=10, image_size=SIZE, progress=False)
    assert count_hooks(tiny_cnn) == 0
    assert_untouched(tiny_cnn, before)


def test_deepdream_and_evaluate_leave_the_model_untouched(tiny_cnn):
    before = snapshot(tiny_cnn)
    photo = torch.rand(1, 3, 40, 40)
    dream = deepdream(tiny_cnn, photo, "features.3", octaves=2, steps=3, progress=False)
    assert dream.shape == photo.shape and dream.min() >= 0 and dream.max() <= 1
    assert not torch.equal(dream, photo)
    assert evaluate(tiny_cnn, dream, layer("features.3")) > evaluate(tiny_cnn, photo, layer("features.3"))
    assert_untouched(tiny_cnn, before)


def _high_frequency_share(images: torch.Tensor) -> float:
    power = torch.fft.fft2(images - images.mean((2, 3), keepdim=True)).abs().pow(2).mean((0, 1))
    fy, fx = torch.fft.fftfreq(power.shape[0])[:, None], torch.fft.fftfreq(power.shape[1])[None, :]
    return (power[(fx**2 + fy**2).sqrt() > 0.25].sum() / power.sum()).item()


def test_deepdream_objective_rises_with_every_option(tiny_cnn):
    photo = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    start = evaluate(tiny_cnn, photo, layer("features.3"))
    for options in (dict(octaves=1), dict(octaves=3, smooth=0.0), dict(octaves=3, smooth=1.5, jitter=0)):
        dream = deepdream(tiny_cnn, photo, layer("features.3"), steps=4, progress=False, **options)
        assert evaluate(tiny_cnn, dream, layer("features.3")) > start, options


def test_deepdream_smoothing_removes_fine_detail_from_the_change(tiny_cnn):
    photo = torch.full((1, 3, 48, 48), 0.5)
    changes = {sigma: deepdream(tiny_cnn, photo, "features.3", octaves=1, steps=6, smooth=sigma, jitter=0,
                                progress=False) - photo for sigma in (0.0, 2.0)}
    assert _high_frequency_share(changes[2.0]) < 0.5 * _high_frequency_share(changes[0.0])


def test_deepdream_output_follows_the_model_not_the_photo(tiny_cnn):
    model_device = next(tiny_cnn.parameters()).device
    dream = deepdream(tiny_cnn, torch.rand(1, 3, 32, 32), "features.3", octaves=2, steps=1, progress=False)
    assert dream.device == model_device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_deepdream_follows_the_model_to_the_gpu(tiny_cnn):
    model = tiny_cnn.cuda()
    dream = deepdream(model, torch.rand(1, 3, 32, 32), "features.3", octaves=2, steps=2, progress=False)  # photo on the CPU
    assert dream.device.type == "cuda" and count_hooks(model) == 0


@pytest.mark.parametrize("options", [dict(steps=0), dict(smooth=-1.0), dict(jitter=-2), dict(octaves=0), dict(octave_scale=1.0)])
def test_deepdream_refuses_bad_settings(tiny_cnn, options):
    with pytest.raises(ValueError):
        deepdream(tiny_cnn, torch.rand(1, 3, 32, 32), "features.3", progress=False, **options)


def test_deepdream_recipe_lifts_a_late_layer_and_changes_more_than_the_old_settings(offline_model):
    """Notebook 04's recipe, small: on blocks.5 it lifts the objective well above the photo's and changes the photo far more
    than the first version's settings. Whether it also beats their objective depends on the seed at this size (0.9-1.4x at
    128 px and 15 steps over six seeds; 1.3-2.4x with the notebook's CPU settings, which the notebook asserts)."""
    from nnvis_helpers import load_image

    photo = load_image("china", size=128)
    objective = layer("blocks.5")
    for seed in (0, 1):
        old = deepdream(offline_model, photo, objective, octaves=4, steps=5, step_size=0.01, jitter=16, smooth=0, seed=seed,
                        progress=False)
        new = deepdream(offline_model, photo, objective, steps=15, seed=seed, progress=False)
        # measured over six seeds: 1.8-2.6x the photo's objective, 4.0-4.3x the old settings' change
        assert evaluate(offline_model, new, objective) > 1.4 * evaluate(offline_model, photo, objective)
        assert (new - photo).abs().mean() > 2.5 * (old - photo).abs().mean()


# ------------------------------------------------------------------------------ early stop

class Recorder(nn.Module):
    """A net whose late part records whether it ran."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.early = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.late = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
        self.late_runs = 0

    def forward(self, x):
        x = self.early(x)
        self.late_runs += 1
        return self.late(x)


def test_forward_stops_after_the_deepest_needed_layer():
    model = Recorder().eval()
    render(model, channel("early.0", 1), steps=5, image_size=SIZE, progress=False)
    assert model.late_runs == 1  # the checking pass only; every step stopped early
    model.late_runs = 0
    render(model, channel("early.0", 1) + class_logit(0), steps=5, image_size=SIZE, progress=False)
    assert model.late_runs == 6  # class objectives need the whole network


class SharedReLU(nn.Module):
    """One ReLU module called twice, as in torchvision's ResNet blocks."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv2(self.relu(self.conv1(x))))


def test_a_layer_called_twice_is_read_at_its_last_call():
    model = SharedReLU().eval()
    images = torch.rand(1, 3, SIZE, SIZE)
    expected = model(images)[:, 2].mean((1, 2)).detach()
    with ActivationRunner(model, channel("relu", 2)) as runner, torch.no_grad():
        runner.check(images)
        assert torch.allclose(channel("relu", 2)(runner(images)), expected)


# ------------------------------------------------------------------------------ parameterizations, transforms

@pytest.mark.parametrize("recipe", [pixels(), pixels(decorrelate=True), fourier(), fourier(decorrelate=False),
                                    fourier(decay_power=1.5)])
@pytest.mark.parametrize("size", [(32, 32), (31, 45)])
def test_parameterizations_give_images_in_0_1(recipe, size):
    param = recipe(3, size, torch.device("cpu"), torch.Generator().manual_seed(0))
    with torch.no_grad():
        param.raw.mul_(1000)  # even extreme parameters stay inside [0, 1]
    images = param()
    assert images.shape == (3, 3, *size)
    assert images.min() >= 0 and images.max() <= 1
    assert len(list(param.parameters())) == 1


def test_pixels_from_an_image_and_max_change():
    photo = torch.rand(1, 3, 16, 16) * 0.8 + 0.1
    start = pixels(init=photo)(2, (16, 16), torch.device("cpu"), torch.Generator())()
    assert torch.allclose(start, photo.expand(2, -1, -1, -1), atol=1e-5)
    limited = pixels(init=photo, max_change=8 / 255)(1, (16, 16), torch.device("cpu"), torch.Generator())
    with torch.no_grad():
        limited.raw.normal_(0, 100)
    assert (limited() - photo).abs().max() <= 8 / 255 + 1e-6


def test_render_with_max_change_stays_in_the_ball(tiny_cnn):
    photo = torch.rand(1, 3, SIZE, SIZE)
    images = render(tiny_cnn, class_logit(4), param=pixels(init=photo, max_change=0.03), transforms=None,
                    steps=10, image_size=SIZE, progress=False)
    assert (images - photo).abs().max() <= 0.03 + 1e-6


TRANSFORMS = {
    "pad": pad(4),
    "pad_reflect": pad(4, mode="reflect"),
    "jitter": jitter(3),
    "scale": random_scale([0.9, 1.1]),
    "rotate": random_rotate([-10, 5]),
    "standard": standard_transforms(),
    "compose": compose(pad(2), jitter(2)),
}


@pytest.mark.parametrize("name", TRANSFORMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_transforms_keep_device_and_dtype_and_gradient(name, dtype):
    images = torch.rand(2, 3, 24, 24, dtype=dtype, requires_grad=True)
    out = TRANSFORMS[name](images, random.Random(1))
    assert out.dtype == dtype and out.device == images.device and out.shape[:2] == (2, 3)
    out.sum().backward()
    assert images.grad is not None


def test_transforms_are_reproducible_with_the_same_rng():
    images = torch.rand(1, 3, 24, 24)
    a = standard_transforms()(images, random.Random(5))
    b = standard_transforms()(images, random.Random(5))
    assert torch.equal(a, b)


def test_render_is_reproducible_with_a_seed(tiny_cnn):
    a = render(tiny_cnn, channel("features.3", 1), steps=4, image_size=SIZE, seed=3, progress=False)
    b = render(tiny_cnn, channel("features.3", 1), steps=4, image_size=SIZE, seed=3, progress=False)
    c = render(tiny_cnn, channel("features.3", 1), steps=4, image_size=SIZE, seed=4, progress=False)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_regularizer_alone_needs_no_forward(tiny_cnn):
    model = CountingForward(tiny_cnn)
    render(model, -total_variation(), steps=3, image_size=SIZE, progress=False)
    assert model.calls == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_render_follows_the_model_to_the_gpu(tiny_cnn):
    model = tiny_cnn.cuda()
    images = render(model, channel("features.3", 1), steps=3, image_size=SIZE, progress=False)
    assert images.device.type == "cuda"


# ------------------------------------------------------------------------------ the real model

def test_channel_visualization_beats_photos_on_the_offline_model(offline_model):
    """Short render on EfficientNet-Lite0: the objective goes up and beats a real photo."""
    from nnvis_helpers import load_image

    objective = channel("blocks.3", 5)
    images, history = render(offline_model, objective, steps=24, image_size=64, progress=False, return_history=True)
    assert history[-4:].mean() > history[:2].mean()
    photo = load_image("chelsea", size=64)
    assert evaluate(offline_model, images, objective) > evaluate(offline_model, photo, objective)


@pytest.mark.slow
def test_quality_on_the_offline_model():
    """Full-quality checks of issue 6 (class visualizations classified right, channel >= 3x photos)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "bench" / "featurevis_quality.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


# ----------------------------------------------------------------------------- redirected ReLU6


class _DeadStart(nn.Module):
    """conv -> ReLU6 -> 1x1 conv: with a bias of -5 every ReLU6 unit is at 0 on a grey image, so its gradient is zero."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.first = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU6(inplace=True)
        self.second = nn.Conv2d(4, 2, 1)
        with torch.no_grad():
            self.first.bias.fill_(-5.0)
            self.second.weight.abs_()

    def forward(self, x):
        return self.second(self.act(self.first(x)))


def _unit_gradient(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    image = image.clone().requires_grad_(True)
    (-model(image)[:, 0, 4, 4].sum()).backward()   # the loss a render step descends
    return image.grad


def test_redirected_relu6_revives_a_dead_start_and_keeps_the_forward_pass():
    from nnvis_helpers.featurevis import redirected_relu6

    model = _DeadStart().eval()
    grey = torch.full((1, 3, 9, 9), 0.5)
    photo = torch.rand(2, 3, 9, 9) * 10
    plain = (model(grey), model(photo), _unit_gradient(model, grey))
    with redirected_relu6(model) as redirected:
        assert redirected is model and type(model.act) is not nn.ReLU6
        assert torch.equal(model(grey), plain[0]) and torch.equal(model(photo), plain[1]), "the forward pass is unchanged"
        revived = _unit_gradient(model, grey)
    assert plain[2].abs().max() == 0, "the plain gradient is dead at the grey start"
    assert revived.abs().max() > 0, "the redirected gradient is not"
    step = grey - 0.1 * revived                  # one descent step moves the unit's input towards the living range
    with torch.no_grad():
        before, after = model.first(grey)[0, :, 4, 4], model.first(step)[0, :, 4, 4]
    assert (after >= before - 1e-6).all() and (after > before).any()
    assert type(model.act) is nn.ReLU6 and model.act.inplace, "the modules are given back"
    with pytest.raises(RuntimeError, match="inside"):
        with redirected_relu6(model):
            raise RuntimeError("an error inside")
    assert type(model.act) is nn.ReLU6 and model.act.inplace, "also after an error"


def test_redirected_relu6_leaves_a_living_gradient_alone():
    from nnvis_helpers.featurevis import redirected_relu6

    model = _DeadStart().eval()
    with torch.no_grad():
        model.first.bias.zero_()
    image = torch.rand(1, 3, 9, 9)
    plain = _unit_gradient(model, image)
    with redirected_relu6(model):
        assert torch.equal(_unit_gradient(model, image), plain)
