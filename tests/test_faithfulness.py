"""Faithfulness metrics: the curves equal a pixel-by-pixel loop, change every pixel once, rank a perfect map
first on a linear model; infidelity and max-sensitivity equal captum's; bad input fails before any work."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.metrics import infidelity as captum_infidelity
from captum.metrics import sensitivity_max as captum_sensitivity_max
from conftest import TinyCNN, assert_untouched, snapshot
from torch import nn

from nnvis_helpers import count_hooks
from nnvis_helpers.attribution import make_baseline
from nnvis_helpers.faithfulness import (
    Curve,
    deletion_curve,
    infidelity,
    infidelity_noise,
    insertion_curve,
    perturbation_curve,
    sensitivity_max,
    sensitivity_perturbations,
)
from nnvis_helpers.saliency import gradient_x_input, vanilla_gradient

SIZE = 16
PIXELS = SIZE * SIZE


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand((2, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(1))


def linear_model(classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * PIXELS, classes)).double().eval()


class Recorder(nn.Module):
    """A linear classifier that keeps every batch it is given."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3 * PIXELS, 3)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.linear(x.flatten(1))


# ----------------------------------------------------------------------------- the curves


def brute_force_curve(model, images, maps, target, mode, steps, baseline, score):
    """Each step's image built pixel by pixel from a Python ranking (sorted() is stable: ties keep pixel order)."""
    scores = torch.zeros(len(images), steps + 1, dtype=images.dtype)
    for i in range(len(images)):
        values = maps[i].flatten().tolist()
        order = sorted(range(PIXELS), key=lambda p: -values[p])
        for k in range(steps + 1):
            image = (images[i] if mode == "deletion" else baseline[i]).clone()
            source = baseline[i] if mode == "deletion" else images[i]
            for p in order[:round(k * PIXELS / steps)]:
                row, column = divmod(p, SIZE)
                image[:, row, column] = source[:, row, column]
            with torch.no_grad():
                output = model(image[None])[0]
            scores[i, k] = (output.softmax(0) if score == "probability" else output)[target[i]]
    return scores


@pytest.mark.parametrize("mode, score", [("deletion", "probability"), ("insertion", "logit")])
def test_equals_a_pixel_by_pixel_loop(tiny_cnn, images, mode, score):
    model, x = tiny_cnn.double(), images.double()
    maps = (torch.rand((2, SIZE, SIZE), generator=torch.Generator().manual_seed(2)) * 4).round()  # many ties
    baseline = torch.rand(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    target, steps = [3, 7], 7  # 7 does not divide 256: the rounding matters
    expected = brute_force_curve(model, x, maps, target, mode, steps, baseline, score)
    curve = perturbation_curve(model, x, maps, target, mode=mode, steps=steps, baseline=baseline, score=score,
                               batch_size=5, progress=False)
    assert isinstance(curve, Curve) and curve.mode == mode and curve.baseline == "tensor"
    torch.testing.assert_close(curve.scores, expected, rtol=1e-10, atol=1e-12)
    counts = torch.tensor([round(k * PIXELS / steps) for k in range(steps + 1)], dtype=torch.float64)
    torch.testing.assert_close(curve.fractions.double(), counts / PIXELS)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
@pytest.mark.parametrize("steps", [7, 32, PIXELS])
def test_every_pixel_changes_once_in_the_order_of_the_map(images, mode, steps):
    model = Recorder().eval()
    x = 0.1 + 0.8 * images  # every value differs from the black baseline
    maps = torch.randn((2, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(4))
    perturbation_curve(model, x, maps, 1, mode=mode, steps=steps, baseline="black", batch_size=64, progress=False)
    seen = torch.cat(model.seen).view(2, steps + 1, 3, SIZE, SIZE)
    ranking = maps.sum(1).flatten(1)
    for i in range(2):
        differs = seen[i] != (x[i] if mode == "deletion" else 0)  # (steps + 1, 3, H, W): changed from the start
        changed = differs.any(1).flatten(1)
        assert torch.equal(changed, differs.all(1).flatten(1)), "a pixel changed in some colour channels only"
        counts = changed.sum(1).tolist()
        assert counts == [round(k * PIXELS / steps) for k in range(steps + 1)], counts
        assert counts[-1] == PIXELS and not changed[0].any()
        assert (changed[1:] >= changed[:-1]).all(), "a pixel changed back"
        for k in range(1, steps):
            if 0 < counts[k] < PIXELS:
                assert ranking[i][changed[k]].min() >= ranking[i][~changed[k]].max(), "not the top pixels first"
    last = seen[:, -1]
    assert torch.equal(last, torch.zeros_like(x) if mode == "deletion" else x)


def test_a_perfect_map_falls_fastest_on_a_linear_model(images):
    model, x = linear_model(), images.double()
    target = [0, 2]
    weights = model[1].weight[target].view(2, 3, SIZE, SIZE)
    perfect = weights * x  # each pixel's share of the logit against a black baseline
    others = {"random": torch.randn(perfect.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype),
              "reversed": -perfect}
    kwargs = dict(steps=16, baseline="black", score="logit", progress=False)
    best_deletion = deletion_curve(model, x, perfect, target, **kwargs)
    best_insertion = insertion_curve(model, x, perfect, target, **kwargs)
    for name, attributions in others.items():
        deletion = deletion_curve(model, x, attributions, target, **kwargs)
        insertion = insertion_curve(model, x, attributions, target, **kwargs)
        # Removing the k pixels of largest share lowers a linear logit most, at every step.
        assert (best_deletion.scores <= deletion.scores + 1e-9).all(), name
        assert (best_deletion.auc < deletion.auc).all(), f"deletion: perfect {best_deletion.auc} vs {name} {deletion.auc}"
        assert (best_insertion.scores >= insertion.scores - 1e-9).all(), name
        assert (best_insertion.auc > insertion.auc).all(), f"insertion: perfect {best_insertion.auc} vs {name} {insertion.auc}"


def test_auc_is_the_trapezoid_area_and_the_ends_are_the_image_and_the_baseline(tiny_cnn, images):
    target = [4, 6]
    attributions = gradient_x_input(tiny_cnn, images, target)
    with torch.no_grad():
        image_probability = tiny_cnn(images).softmax(1)[[0, 1], target]
        blurred = make_baseline(images, "blur", blur_sigma=SIZE / 16)
        blur_probability = tiny_cnn(blurred).softmax(1)[[0, 1], target]
    for mode in ("deletion", "insertion"):
        curve = perturbation_curve(tiny_cnn, images, attributions, target, mode=mode, steps=10, progress=False)
        assert curve.baseline == "blur" and curve.scores.shape == (2, 11) and curve.auc.shape == (2,)
        assert curve.fractions[0] == 0 and curve.fractions[-1] == 1 and curve.scores.device.type == "cpu"
        expected = np.trapezoid(curve.scores.numpy(), curve.fractions.numpy(), axis=1)
        np.testing.assert_allclose(curve.auc.numpy(), expected, rtol=1e-6)
        first, last = (image_probability, blur_probability) if mode == "deletion" else (blur_probability, image_probability)
        torch.testing.assert_close(curve.scores[:, 0], first, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(curve.scores[:, -1], last, rtol=1e-5, atol=1e-7)


def test_constant_baselines(tiny_cnn, images):
    for baseline, value, name in (("black", 0.0, "black"), ("grey", 0.5, "grey"), (0.25, 0.25, "0.25")):
        curve = deletion_curve(tiny_cnn, images, images, 2, steps=4, baseline=baseline, progress=False)
        with torch.no_grad():
            expected = tiny_cnn(torch.full_like(images, value)).softmax(1)[:, 2]
        assert curve.baseline == name
        torch.testing.assert_close(curve.scores[:, -1], expected, rtol=1e-5, atol=1e-7)
    one = torch.full((1, 3, SIZE, SIZE), 0.5)
    torch.testing.assert_close(deletion_curve(tiny_cnn, images, images, 2, steps=4, baseline=one, progress=False).scores,
                               deletion_curve(tiny_cnn, images, images, 2, steps=4, baseline="grey", progress=False).scores)


@pytest.mark.parametrize("batch_size", [1, 7, 10_000])
def test_batch_size_does_not_change_the_result(tiny_cnn, images, batch_size):
    attributions = torch.randn(images.shape, generator=torch.Generator().manual_seed(6))
    for mode in ("deletion", "insertion"):
        reference = perturbation_curve(tiny_cnn, images, attributions, [1, 2], mode=mode, steps=9, progress=False)
        curve = perturbation_curve(tiny_cnn, images, attributions, [1, 2], mode=mode, steps=9, batch_size=batch_size,
                                   progress=False)
        torch.testing.assert_close(curve.scores, reference.scores, rtol=1e-5, atol=1e-7)


def test_coarse_maps_are_upsampled_bilinearly(tiny_cnn, images):
    coarse = torch.rand((2, 4, 4), generator=torch.Generator().manual_seed(7))
    upsampled = F.interpolate(coarse[:, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    reference = deletion_curve(tiny_cnn, images, upsampled, 3, steps=8, progress=False)
    for shape in ((2, 4, 4), (2, 1, 4, 4)):
        curve = deletion_curve(tiny_cnn, images, coarse.view(shape), 3, steps=8, progress=False)
        torch.testing.assert_close(curve.scores, reference.scores, rtol=0, atol=0)
    # (N, 1, H, W) and (N, H, W) at full size are the same map; (N, 3, H, W) is summed over colour.
    colour = torch.rand(images.shape, generator=torch.Generator().manual_seed(8))
    summed = deletion_curve(tiny_cnn, images, colour.sum(1, keepdim=True), 3, steps=8, progress=False)
    torch.testing.assert_close(deletion_curve(tiny_cnn, images, colour, 3, steps=8, progress=False).scores, summed.scores)


# ----------------------------------------------------------------------------- infidelity


def captum_perturbations(noise: torch.Tensor):
    def perturb(inputs):
        assert inputs.shape == noise.shape, "captum asked for the perturbations in other chunks"
        return noise, inputs - noise
    return perturb


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_equals_captum(tiny_cnn, images, normalize):
    target = [1, 8]
    # float64, so that our batches of 5 and captum's single batch give the same scores to many digits
    model, x = tiny_cnn.double(), images.double()
    gradients = vanilla_gradient(model, x, target, abs=False, reduce=None)
    for attributions in (gradients, gradients * x):
        ours = infidelity(model, x, attributions, target, n_perturb=6, noise_std=0.01, seed=3, batch_size=5,
                          normalize=normalize, progress=False)
        noise = infidelity_noise(x, 6, 0.01, seed=3)
        theirs = captum_infidelity(model, captum_perturbations(noise), x, attributions, target=target,
                                   n_perturb_samples=6, normalize=normalize)
        assert ours.shape == (2,) and (ours > 0).all()
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=0)


def test_infidelity_equals_captum_in_float32_and_is_seeded(tiny_cnn, images):
    attributions = gradient_x_input(tiny_cnn, images, 5)
    ours = infidelity(tiny_cnn, images, attributions, 5, n_perturb=4, batch_size=8, progress=False)  # captum's one batch
    theirs = captum_infidelity(tiny_cnn, captum_perturbations(infidelity_noise(images, 4)), images, attributions,
                               target=5, n_perturb_samples=4)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=0)
    noise = infidelity_noise(images, 4, noise_std=0.003, seed=0)
    assert noise.shape == (8, 3, SIZE, SIZE) and 0.002 < float(noise.std()) < 0.004
    assert torch.equal(ours, infidelity(tiny_cnn, images, attributions, 5, n_perturb=4, progress=False))
    assert not torch.equal(ours, infidelity(tiny_cnn, images, attributions, 5, n_perturb=4, seed=1, progress=False))


def test_infidelity_on_a_linear_model(images):
    model, x = linear_model(), images.double()
    weights = model[1].weight[[1, 3]].view(2, 3, SIZE, SIZE)
    # The gradient predicts f(x) - f(x - I) = w . I exactly: infidelity 0 (to rounding).
    assert infidelity(model, x, weights, [1, 3], progress=False).max() < 1e-20
    wrong = infidelity(model, x, weights * x, [1, 3], progress=False)
    assert (wrong > 1e-8).all()
    # normalize: the best scaling is found, so 10x the map scores as the map; without it, it does not
    scaled = [infidelity(model, x, s * weights.flip(-1), [1, 3], normalize=True, progress=False) for s in (1, 10)]
    torch.testing.assert_close(scaled[0], scaled[1], rtol=1e-9, atol=1e-20)
    plain = [infidelity(model, x, s * weights.flip(-1), [1, 3], progress=False) for s in (1, 10)]
    assert (plain[1] > 10 * plain[0]).all()


# ----------------------------------------------------------------------------- max-sensitivity


def test_sensitivity_max_equals_captum(tiny_cnn, images):
    model, x = tiny_cnn.double(), images.double()
    target = torch.tensor([2, 9])
    for explain in (lambda inputs, t: vanilla_gradient(model, inputs, t),
                    lambda inputs, t: gradient_x_input(model, inputs, t)):
        ours = sensitivity_max(explain, x, target, radius=0.05, n_perturb=5, seed=2, progress=False)
        perturbed = sensitivity_perturbations(x, 0.05, 5, seed=2)

        def their_explain(inputs, target):
            # captum passes the images as a tuple (x,) and iterates over what comes back: a tuple of maps
            return (explain(inputs[0] if isinstance(inputs, tuple) else inputs, target),)

        theirs = captum_sensitivity_max(their_explain, x, perturb_func=lambda inputs, radius: perturbed,
                                        perturb_radius=0.05, n_perturb_samples=5, target=target)
        assert ours.shape == (2,) and (ours > 0).all()
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=0)


def test_sensitivity_perturbations_stay_in_the_ball_and_the_image_range(images):
    perturbed = sensitivity_perturbations(images, radius=0.1, n_perturb=3, seed=0)
    assert perturbed.shape == (6, 3, SIZE, SIZE) and perturbed.min() >= 0 and perturbed.max() <= 1
    assert (perturbed - images.repeat_interleave(3, 0)).abs().max() <= 0.1 + 1e-7
    assert torch.equal(perturbed, sensitivity_perturbations(images, radius=0.1, n_perturb=3, seed=0))
    constant = sensitivity_max(lambda x, t: torch.ones(len(x), 5), images, 0, n_perturb=3, progress=False)
    assert torch.equal(constant, torch.zeros(2)), "a map that ignores the image has sensitivity 0"


# ----------------------------------------------------------------------------- bad input, model untouched


class CountingCNN(TinyCNN):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


def test_bad_input_fails_before_any_work_and_leaves_the_model_alone(images):
    torch.manual_seed(0)
    model = CountingCNN().train()
    model.classifier.weight.grad = torch.ones_like(model.classifier.weight)
    before = snapshot(model)
    good = images.clone()
    nan = good.clone()
    nan[0, 0, 3, 3] = float("nan")
    cases = [
        (lambda: perturbation_curve(model, images, good[:1].sum(1), 1), r"1 maps but there are 2 images"),
        (lambda: perturbation_curve(model, images, good[:1], 1), r"shape \(1, 3, 16, 16\) but the images"),
        (lambda: perturbation_curve(model, images, good[:, :2], 1), r"attributions has shape \(2, 2, 16, 16\)"),
        (lambda: perturbation_curve(model, images, torch.rand(2, 3, 8, 8), 1), r"shape \(2, 3, 8, 8\) but the images"),
        (lambda: perturbation_curve(model, images, torch.rand(2, 20, 20), 1), r"maps of 20 x 20 for images of 16 x 16"),
        (lambda: perturbation_curve(model, images, good[None], 1), r"attributions has shape \(1, 2, 3, 16, 16\)"),
        (lambda: perturbation_curve(model, images, nan, 1), "NaN"),
        (lambda: perturbation_curve(model, images, good, 1, steps=0), r"steps must be a whole number in \[1, 256\]"),
        (lambda: perturbation_curve(model, images, good, 1, steps=PIXELS + 1), "steps must be a whole number"),
        (lambda: perturbation_curve(model, images, good, 1, steps=2.5), "steps must be a whole number"),
        (lambda: perturbation_curve(model, images, good, 1, mode="delete"), "mode must be one of.*Did you mean 'deletion'"),
        (lambda: perturbation_curve(model, images, good, 1, score="prob"), "score must be one of"),
        (lambda: perturbation_curve(model, images, good, 1, baseline="gray"), "baseline must be one of.*Did you mean 'grey'"),
        (lambda: perturbation_curve(model, images, good, 1, baseline=1.5), r"baseline must be a number in \[0, 1\]"),
        (lambda: perturbation_curve(model, images, good, 1, baseline=torch.zeros(2, 3, 8, 8)),
         r"baseline has shape \(2, 3, 8, 8\)"),
        (lambda: perturbation_curve(model, images, good, 1, baseline=torch.zeros(3, 3, SIZE, SIZE)), "baseline has shape"),
        (lambda: perturbation_curve(model, images, good, 1, baseline=good * 255), "0-255"),
        (lambda: perturbation_curve(model, images, good, 1, baseline=[0.5]), "baseline must be one of"),
        (lambda: perturbation_curve(model, images, good, 1, batch_size=0), "batch_size"),
        (lambda: perturbation_curve(model, images, good, -1), "target class -1 is negative"),
        (lambda: perturbation_curve(model, images * 255, good, 1), "0-255"),
        (lambda: infidelity(model, images, good.sum(1), 1), "one value per pixel and colour"),
        (lambda: infidelity(model, images, nan, 1), "NaN"),
        (lambda: infidelity(model, images, good, 1, n_perturb=0), "n_perturb"),
        (lambda: infidelity(model, images, good, 1, noise_std=0), "noise_std"),
        (lambda: sensitivity_max("vanilla_gradient", images, 1), "explain must be a function"),
        (lambda: sensitivity_max(lambda x, t: torch.zeros(1, 3), images, 1, progress=False), "one attribution per image"),
        (lambda: sensitivity_max(lambda x, t: vanilla_gradient(model, x, t), images, 1, radius=0), "radius"),
    ]
    for call, message in cases:
        with pytest.raises((ValueError, TypeError), match=message):
            call()
        assert model.calls == 0, f"the model ran before the error {message!r}"
        assert_untouched(model, before)
        assert count_hooks(model) == 0
    # A class the model does not have: a model without ``model.info`` says its class count on its first output.
    with pytest.raises(ValueError, match="target class 10 does not exist"):
        perturbation_curve(model, images, good, 10, progress=False)
    assert model.calls == 1
    assert_untouched(model, before)


class ExplodingCNN(TinyCNN):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("boom")
        return super().forward(x)


def test_model_untouched_after_success_and_after_a_forced_error(images):
    torch.manual_seed(0)
    model = ExplodingCNN().train()
    model.classifier.weight.grad = torch.ones_like(model.classifier.weight)
    before = snapshot(model)
    helpers = [
        lambda: perturbation_curve(model, images, images, 1, steps=4, batch_size=3, progress=False),
        lambda: insertion_curve(model, images, images, 1, steps=4, batch_size=3, progress=False),
        lambda: infidelity(model, images, images, 1, n_perturb=4, batch_size=3, progress=False),
    ]
    for helper in helpers:
        model.calls = 0
        with pytest.raises(RuntimeError, match="boom"):
            helper()
        assert_untouched(model, before)
        model.calls = -100  # no explosion: the call succeeds
        helper()
        assert_untouched(model, before)
        assert count_hooks(model) == 0 and model.training


@pytest.mark.parametrize("patch", [2, 5])
def test_regions_change_whole_and_in_the_order_of_their_mean(images, patch):
    # Samek et al.'s region perturbation: patch x patch regions (5 does not divide 16: smaller regions at the edges).
    model = Recorder().eval()
    x = 0.1 + 0.8 * images
    maps = torch.randn((2, SIZE, SIZE), generator=torch.Generator().manual_seed(5))
    regions = -(-SIZE // patch)
    steps = regions * regions
    curve = perturbation_curve(model, x, maps, 1, steps=steps, baseline="black", progress=False, patch=patch)
    seen = torch.cat(model.seen).view(2, steps + 1, 3, SIZE, SIZE)
    region_of = (torch.arange(SIZE) // patch)[:, None] * regions + (torch.arange(SIZE) // patch)[None, :]
    means = torch.stack([torch.stack([maps[i][region_of == r].mean() for r in range(steps)]) for i in range(2)])
    for i in range(2):
        changed = (seen[i] != x[i]).any(1)  # (steps + 1, H, W)
        order = means[i].argsort(descending=True, stable=True)
        for k in range(steps + 1):
            expected = torch.isin(region_of, order[:k])
            assert torch.equal(changed[k], expected), f"step {k}: not the {k} regions with the largest mean"
    assert torch.allclose(curve.fractions, torch.arange(steps + 1) / steps)
    with pytest.raises(ValueError, match="patch"):
        perturbation_curve(model, x, maps, 1, patch=SIZE + 1, progress=False)
    with pytest.raises(ValueError, match="regions"):
        perturbation_curve(model, x, maps, 1, steps=steps + 1, patch=patch, progress=False)
