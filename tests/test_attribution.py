"""Integrated gradients and friends: exact on linear models, converging, batch-independent,
equal to captum's, and leaving the model exactly as it was."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients
from conftest import TinyCNN, assert_untouched, snapshot
from torch import nn

from nnvis_helpers import LayerNotFoundError, load_images
from nnvis_helpers.attribution import (
    METHODS,
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

SIZE = 12


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).norm() / reference.norm())


@pytest.fixture
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.rand((3, 3, SIZE, SIZE), generator=generator)


@pytest.fixture
def linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 5)).double().eval()


def linear_ig(model: nn.Module, images, baselines, target) -> torch.Tensor:
    """The exact answer on a linear model: (x - x') * w_target, pixel by pixel."""
    weights = model[1].weight[target].view(-1, 3, SIZE, SIZE)
    return (images - baselines) * weights


# ----------------------------------------------------------------------------- quadrature


@pytest.mark.parametrize("method", METHODS)
def test_integration_points_are_captums(method):
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_sizes, alphas = approximation_parameters(method)
    for n in (2, 5, 64):
        ours_alphas, ours_weights = integration_points(method, n)
        assert torch.equal(ours_alphas, torch.tensor(alphas(n), dtype=torch.float64))
        assert torch.allclose(ours_weights, torch.tensor(step_sizes(n), dtype=torch.float64), rtol=1e-15, atol=0)


def test_weights_sum_to_one_except_captums_trapezoid():
    for method in METHODS:
        total = float(integration_points(method, 10)[1].sum())
        # captum's trapezoid halves the end weights of 1/n instead of using 1/(n - 1): sum 1 - 1/n.
        assert total == pytest.approx(0.9 if method == "riemann_trapezoid" else 1.0, abs=1e-12)


# ----------------------------------------------------------------------------- exactness, convergence


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("baseline", ["black", "white", "noise"])
def test_linear_model_gives_exactly_difference_times_weight(linear_model, images, method, baseline):
    x = images.double()
    x_prime = make_baseline(x, baseline, seed=3)
    target = [0, 3, 4]
    n_steps = 7
    attributions, delta = integrated_gradients(
        linear_model, x, target, baselines=x_prime, n_steps=n_steps, method=method, return_delta=True, progress=False
    )
    expected = linear_ig(linear_model, x, x_prime, target)
    scale = (1 - 1 / n_steps) if method == "riemann_trapezoid" else 1.0  # captum's trapezoid weights
    torch.testing.assert_close(attributions, scale * expected, rtol=1e-12, atol=1e-12)
    if method != "riemann_trapezoid":
        assert delta.abs().max() < 1e-10


def missing_factor_ig(model, images, target, baselines, n_steps=32):
    """The classic bug: the averaged gradient times x, instead of times (x - x')."""
    alphas, weights = integration_points("gausslegendre", n_steps)
    total = torch.zeros_like(images)
    for alpha, weight in zip(alphas.tolist(), weights.tolist()):
        point = (baselines + alpha * (images - baselines)).requires_grad_(True)
        score = model(point).gather(1, torch.as_tensor(target).view(-1, 1)).sum()
        total += weight * torch.autograd.grad(score, point)[0]
    return total * images


def test_the_linear_check_catches_the_missing_factor_only_with_a_nonzero_baseline(linear_model, images):
    x = images.double()
    target = [0, 1, 2]
    black = make_baseline(x, "black")
    white = make_baseline(x, "white")
    # With a black baseline x - x' = x: the bug is invisible, so a test with zeros cannot fail.
    torch.testing.assert_close(missing_factor_ig(linear_model, x, target, black), linear_ig(linear_model, x, black, target))
    with pytest.raises(AssertionError):
        torch.testing.assert_close(missing_factor_ig(linear_model, x, target, white), linear_ig(linear_model, x, white, target))


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_middle", "riemann_right"])
def test_delta_shrinks_as_steps_grow_on_a_relu_network(tiny_cnn, images, method):
    deltas = []
    for n_steps in (2, 8, 32, 128):
        _, delta = integrated_gradients(
            tiny_cnn, images, [1, 2, 3], n_steps=n_steps, method=method, batch_size=256, return_delta=True, progress=False
        )
        deltas.append(float(delta.abs().mean()))
    assert deltas[-1] < deltas[0] / 10, deltas
    assert deltas[-1] < deltas[1] and deltas[-2] < deltas[0], deltas


@pytest.mark.parametrize("batch_size", [1, 7, 64, 10_000])
def test_batch_size_does_not_change_the_result(tiny_cnn, images, batch_size):
    reference = integrated_gradients(tiny_cnn, images, 4, n_steps=12, batch_size=12, progress=False)
    attributions = integrated_gradients(tiny_cnn, images, 4, n_steps=12, batch_size=batch_size, progress=False)
    torch.testing.assert_close(attributions, reference, rtol=1e-5, atol=1e-7)
    layer_reference = layer_integrated_gradients(tiny_cnn, images, 4, "features.3", n_steps=12, batch_size=12, progress=False)
    layer = layer_integrated_gradients(tiny_cnn, images, 4, "features.3", n_steps=12, batch_size=batch_size, progress=False)
    torch.testing.assert_close(layer, layer_reference, rtol=1e-5, atol=1e-7)


def test_several_baselines_average_the_single_baseline_results(tiny_cnn, images):
    baselines = noise_baselines(images, n=3, seed=5)
    averaged, delta = integrated_gradients(tiny_cnn, images, 2, baselines=baselines, n_steps=16, return_delta=True, progress=False)
    one_by_one = [integrated_gradients(tiny_cnn, images, 2, baselines=b, n_steps=16, progress=False) for b in baselines]
    torch.testing.assert_close(averaged, torch.stack(one_by_one).mean(0), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(delta, completeness_delta(tiny_cnn, averaged, images, 2, baselines), rtol=1e-4, atol=1e-5)


def test_expected_gradients_on_a_linear_model(linear_model, images):
    x = images.double()
    reference = make_baseline(x[:1], "noise", seed=9)
    attributions, delta = expected_gradients(linear_model, x, 1, reference, n_samples=5, return_delta=True, progress=False)
    # One reference: every draw has the same baseline, and a linear model has the same gradient everywhere.
    torch.testing.assert_close(attributions, linear_ig(linear_model, x, reference, 1), rtol=1e-12, atol=1e-12)
    assert delta.abs().max() < 1e-10


def test_expected_gradients_completes_on_average(tiny_cnn, images):
    references = noise_baselines(images[:1], n=6, seed=2)[:, 0]
    _, few = expected_gradients(tiny_cnn, images, 0, references, n_samples=4, seed=1, return_delta=True, progress=False)
    _, many = expected_gradients(tiny_cnn, images, 0, references, n_samples=400, seed=1, return_delta=True, progress=False)
    assert many.abs().mean() < few.abs().mean()
    first = expected_gradients(tiny_cnn, images, 0, references, n_samples=8, seed=4, progress=False)
    again = expected_gradients(tiny_cnn, images, 0, references, n_samples=8, seed=4, progress=False)
    assert torch.equal(first, again), "the same seed must give the same draws"


def test_expected_gradients_draws_one_reference_and_one_alpha_per_sample(tiny_cnn, images):
    # What notebook 03 says the helper does: per draw, a reference chosen uniformly and alpha ~ U(0, 1) from one
    # generator seeded with `seed` (references first), one gradient at x' + alpha (x - x'), the mean of (x - x') * grad.
    image, references, n_samples = images[:1], noise_baselines(images[:1], n=5, seed=3)[:, 0], 12
    generator = torch.Generator().manual_seed(7)
    chosen = torch.randint(len(references), (n_samples,), generator=generator)
    alphas = torch.rand(n_samples, generator=generator, dtype=torch.float64).float()
    baselines = references[chosen]
    points = (baselines + alphas.view(-1, 1, 1, 1) * (image - baselines)).requires_grad_(True)
    (gradients,) = torch.autograd.grad(tiny_cnn(points)[:, 2].sum(), points)
    per_draw = (image - baselines) * gradients
    attributions, delta = expected_gradients(tiny_cnn, image, 2, references, n_samples=n_samples, seed=7,
                                             return_delta=True, progress=False)
    torch.testing.assert_close(attributions, per_draw.mean(0, keepdim=True), rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        gaps = tiny_cnn(image)[0, 2] - tiny_cnn(baselines)[:, 2]
    torch.testing.assert_close(delta, (per_draw.flatten(1).sum(1) - gaps).mean().view(1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method,fall", [("riemann_left", 2), ("riemann_right", 2), ("riemann_middle", 4),
                                         ("riemann_trapezoid", 2)])
def test_each_rule_keeps_its_order_on_a_smooth_score(images, method, fall):
    # S(x) = sum_i sin(x_i): doubling m divides an O(1/m) error by 2, an O(1/m^2) error by 4 (notebook 03, section 2).
    from nnvis_helpers.exercises.nb03 import smooth_completeness_error

    errors = [smooth_completeness_error(*integration_points(method, m), images[:1]) for m in (8, 16, 32, 64)]
    assert all(abs(before / after - fall) < 0.1 * fall for before, after in zip(errors, errors[1:])), errors
    assert smooth_completeness_error(*integration_points("gausslegendre", 8), images[:1]) < 1e-12


def test_true_trapezoid_is_second_order_where_captums_is_first(images):
    from nnvis_helpers.exercises import get_exercise
    from nnvis_helpers.exercises.nb03 import smooth_completeness_error

    exercise = get_exercise("03.3")
    steps = (8, 16, 32)
    # The true rule's slices are h = 1/(m - 1) wide: doubling m divides its error by ((2m - 1)/(m - 1))^2 -> 4.
    right = [smooth_completeness_error(*exercise.solution(images[:1], steps)[m], images[:1]) for m in steps]
    falls = [((2 * m - 1) / (m - 1)) ** 2 for m in steps[:-1]]
    assert all(abs(a / b - fall) < 0.05 * fall for a, b, fall in zip(right, right[1:], falls)), right
    wrong = [smooth_completeness_error(*exercise.wrong(images[:1], steps)[m], images[:1]) for m in steps]
    assert all(abs(a / b - 2) < 0.2 for a, b in zip(wrong, wrong[1:])), wrong
    # On sum_i x_i^2 (the old exercise) the slope is linear in alpha: the true trapezoid is exact at every m.
    x = images[:1].double().flatten()
    for m in steps:
        alphas, weights = exercise.solution(images[:1], (m,))[m]
        phi = x * (weights[:, None] * 2 * alphas[:, None] * x[None, :]).sum(0)
        assert abs(float(phi.sum() - (x ** 2).sum())) < 1e-10


def test_the_forgotten_factor_passes_every_check_with_a_black_baseline(tiny_cnn, images):
    # Exercise 03.4: its typical mistake equals the solution when x' = 0, so only a baseline that is not black
    # (the one its check uses) can catch it.
    from nnvis_helpers.exercises import get_exercise

    exercise = get_exercise("03.4")
    image, n_steps = images[:1], 8
    for baseline, same in ((make_baseline(image, "black"), True), (make_baseline(image, "noise", seed=1), False)):
        right = exercise.solution(tiny_cnn, image, 3, baseline, n_steps)
        wrong = exercise.wrong(tiny_cnn, image, 3, baseline, n_steps)
        assert torch.allclose(right, wrong, rtol=1e-6, atol=1e-8) == same
        reference = integrated_gradients(tiny_cnn, image, 3, baselines=baseline, n_steps=n_steps, progress=False)
        torch.testing.assert_close(right, reference, rtol=1e-4, atol=1e-6)


def test_path_profile_on_a_linear_model(linear_model, images):
    x = images[:1].double()
    profile = path_profile(linear_model, x, 3, n_points=5, progress=False)
    with torch.no_grad():
        gap = float(linear_model(x)[0, 3] - linear_model(torch.zeros_like(x))[0, 3])
    torch.testing.assert_close(profile.slopes, torch.full((5,), gap, dtype=profile.slopes.dtype), rtol=1e-9, atol=1e-9)
    assert torch.allclose(profile.gradient_norms, profile.gradient_norms[0].expand(5))
    assert profile.scores[-1] - profile.scores[0] == pytest.approx(gap)
    probability = path_profile(linear_model, x, 3, n_points=5, score="probability", progress=False)
    assert ((probability.scores > 0) & (probability.scores < 1)).all()


# ----------------------------------------------------------------------------- agreement with captum


@pytest.mark.parametrize("method", METHODS)
def test_equals_captum_on_a_tiny_cnn(tiny_cnn, images, method):
    target = [1, 5, 9]
    baselines = make_baseline(images, "blur", blur_sigma=2)
    ours, delta = integrated_gradients(
        tiny_cnn, images, target, baselines=baselines, n_steps=20, method=method, batch_size=16, return_delta=True, progress=False
    )
    theirs, their_delta = IntegratedGradients(tiny_cnn).attribute(
        images, baselines=baselines, target=target, n_steps=20, method=method, internal_batch_size=48,
        return_convergence_delta=True,
    )
    assert relative_error(ours, theirs) < 1e-5
    torch.testing.assert_close(delta, their_delta, rtol=1e-3, atol=1e-5)


def test_layer_ig_equals_captum_on_a_tiny_cnn(tiny_cnn, images):
    # features.2, not features.3: captum fails on a layer followed by ReLU(inplace=True); ours does not.
    target = [0, 3, 6]
    ours, delta = layer_integrated_gradients(tiny_cnn, images, target, "features.2", n_steps=16, return_delta=True, progress=False)
    theirs, their_delta = LayerIntegratedGradients(tiny_cnn, tiny_cnn.features[2]).attribute(
        images, target=target, n_steps=16, return_convergence_delta=True
    )
    assert ours.shape == (3, 8, SIZE // 2, SIZE // 2)
    assert relative_error(ours, theirs) < 1e-5
    torch.testing.assert_close(delta, their_delta, rtol=1e-3, atol=1e-5)


def test_equals_captum_on_the_offline_model(offline_model):
    images = load_images(["chelsea", "coffee"], size=64)
    target = [285, 967]
    ours = integrated_gradients(offline_model, images, target, baselines="blur", n_steps=8, batch_size=16, progress=False)
    theirs = IntegratedGradients(offline_model).attribute(
        images, baselines=make_baseline(images, "blur"), target=target, n_steps=8, internal_batch_size=16
    )
    assert relative_error(ours, theirs) < 1e-4
    # Layer IG in float64: in float32 the two differ by about 4e-4 at blocks.3, because rounding
    # differences of 1e-7 flip a few ReLU6 units between clipped and linear along the path; in
    # float64 they agree to the precision of captum's float32 quadrature weights (about 4e-8).
    model64, images64 = copy.deepcopy(offline_model).double(), images.double()
    ours_layer = layer_integrated_gradients(model64, images64, target, "blocks.3", n_steps=8, progress=False)
    theirs_layer = LayerIntegratedGradients(model64, model64.blocks[3]).attribute(
        images64, target=target, n_steps=8, internal_batch_size=32
    )
    assert relative_error(ours_layer, theirs_layer) < 1e-6


@pytest.mark.slow
def test_completeness_on_the_offline_model_at_full_size(offline_model):
    # Measured at 224 px with 64 Gauss-Legendre steps and the blurred baseline: 0.5 % to 5.5 % (median 1.2 %).
    # Not all photos reach 1 %: EfficientNet-Lite0 is piecewise linear (ReLU6), and on some paths the score
    # changes within a few percent of the path, a spike 64 fixed points resolve poorly (see notebook 03).
    images = load_images()
    target = offline_model(images).argmax(1)
    _, delta = integrated_gradients(offline_model, images, target, baselines="blur", n_steps=64, return_delta=True, progress=False)
    with torch.no_grad():
        gap = (offline_model(images) - offline_model(make_baseline(images, "blur"))).gather(1, target[:, None])[:, 0]
    relative = delta.abs() / gap.abs()
    assert relative.max() < 0.07 and relative.median() < 0.015, relative


# ----------------------------------------------------------------------------- the model is left alone


class ExplodingCNN(TinyCNN):
    """Raises on the ``explode_at``-th forward pass, to check the clean-up of a failed call."""

    def __init__(self, explode_at: int):
        super().__init__()
        self.calls = 0
        self.explode_at = explode_at

    def forward(self, x):
        self.calls += 1
        if self.calls == self.explode_at:
            raise RuntimeError("boom")
        return super().forward(x)


def every_helper(model, images):
    yield lambda: integrated_gradients(model, images, 1, n_steps=4, batch_size=3, return_delta=True, progress=False)
    yield lambda: integrated_gradients(model, images, 1, n_steps=4, method="adaptive", scan_points=3, batch_size=3,
                                       return_delta=True, progress=False)
    yield lambda: layer_integrated_gradients(model, images, 1, "features.3", n_steps=4, batch_size=3, return_delta=True, progress=False)
    yield lambda: expected_gradients(model, images, 1, images, n_samples=4, batch_size=3, return_delta=True, progress=False)
    yield lambda: path_profile(model, images[:1], 1, n_points=6, batch_size=3, progress=False)
    yield lambda: completeness_delta(model, torch.zeros_like(images), images, 1)


def test_model_untouched_and_no_grad_on_trainable_parameters(images):
    torch.manual_seed(0)
    model = TinyCNN().train()  # a user's model: trainable parameters, training mode
    model.classifier.weight.grad = torch.ones_like(model.classifier.weight)
    before = snapshot(model)
    for helper in every_helper(model, images):
        helper()
        assert_untouched(model, before)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("explode_at", [1, 2])
def test_model_untouched_after_a_forced_error(images, explode_at):
    torch.manual_seed(0)
    model = ExplodingCNN(explode_at).eval()
    before = snapshot(model)
    for helper in every_helper(model, images):
        model.calls = 0
        with pytest.raises(RuntimeError, match="boom"):
            helper()
        assert_untouched(model, before)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_gives_clear_errors(tiny_cnn, images):
    with pytest.raises(ValueError, match=r"baselines has shape \(3, 3, 8, 8\)"):
        integrated_gradients(tiny_cnn, images, 1, baselines=torch.zeros(3, 3, 8, 8), progress=False)
    with pytest.raises(ValueError, match="baselines has shape"):
        integrated_gradients(tiny_cnn, images, 1, baselines=torch.zeros(2, 3, SIZE, SIZE), progress=False)
    with pytest.raises(ValueError, match="baselines must lie in"):
        integrated_gradients(tiny_cnn, images, 1, baselines=torch.full_like(images, 255.0), progress=False)
    with pytest.raises(ValueError, match="unknown baseline 'gray'"):
        integrated_gradients(tiny_cnn, images, 1, baselines="gray", progress=False)
    for n_steps in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_steps must be a whole number"):
            integrated_gradients(tiny_cnn, images, 1, n_steps=n_steps, progress=False)
    with pytest.raises(ValueError, match="riemann_trapezoid needs n_steps >= 2"):
        integrated_gradients(tiny_cnn, images, 1, n_steps=1, method="riemann_trapezoid", progress=False)
    with pytest.raises(ValueError, match="unknown integration method 'gauss_legendre'.*Did you mean 'gausslegendre'"):
        integrated_gradients(tiny_cnn, images, 1, method="gauss_legendre", progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        integrated_gradients(tiny_cnn, images, 1, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="target class 10 does not exist"):
        integrated_gradients(tiny_cnn, images, 10, progress=False)
    with pytest.raises(ValueError, match="one image without a batch dimension"):
        integrated_gradients(tiny_cnn, images[0], 1, progress=False)
    with pytest.raises(ValueError, match="0-255"):
        integrated_gradients(tiny_cnn, images * 255, 1, progress=False)
    with pytest.raises(LayerNotFoundError, match="features.3"):
        layer_integrated_gradients(tiny_cnn, images, 1, "features.33", progress=False)
    with pytest.raises(ValueError, match="references have images of shape"):
        expected_gradients(tiny_cnn, images, 1, torch.rand(4, 3, 8, 8), progress=False)
    with pytest.raises(ValueError, match="one image"):
        path_profile(tiny_cnn, images, 1, progress=False)


def test_baseline_builders(images):
    assert make_baseline(images, "black").eq(0).all() and make_baseline(images, "white").eq(1).all()
    noise = make_baseline(images, "noise", seed=7)
    assert torch.equal(noise, make_baseline(images, "noise", seed=7))
    assert not torch.equal(noise, make_baseline(images, "noise", seed=8))
    assert noise.min() >= 0 and noise.max() <= 1 and noise.shape == images.shape
    gray = torch.full_like(images, 0.3)
    torch.testing.assert_close(make_baseline(gray, "blur", blur_sigma=2), gray)
    blurred = make_baseline(images, "blur", blur_sigma=2)
    assert blurred.std() < images.std() / 2, "a blur must remove most of the pixel noise"
    assert noise_baselines(images, n=4).shape == (4, *images.shape)


# ----------------------------------------------------------------------------- adaptive points


def test_adaptive_rule_covers_the_path_once_and_spends_the_budget(tiny_cnn, images):
    for n_steps, scan_points in ((64, 16), (9, 4), (2, 16), (128, 2), (64, 8)):
        rule = adaptive_rule(tiny_cnn, images[:1], 1, "black", n_steps=n_steps, scan_points=scan_points)
        starts, ends, middles = (t[0][~t[0].isnan()] for t in (rule.starts, rule.ends, rule.midpoints))
        assert starts[0] == 0 and ends[-1] == 1 and torch.equal(starts[1:], ends[:-1]), "segments tile [0, 1]"
        assert torch.allclose(middles, (starts + ends) / 2)
        # every gradient is spent and kept: one per first segment, two per cut into thirds (the middle third
        # keeps the parent's midpoint), so there are exactly n_steps segments
        assert len(starts) == n_steps, (n_steps, len(starts))
        widths = ends - starts
        first = 1 / (rule.scan.shape[1] - 1)
        # every width is a first segment's width divided by a power of three
        powers = torch.log(first / widths) / math.log(3)
        assert torch.allclose(powers, powers.round(), atol=1e-6), powers


def test_adaptive_rule_refines_where_the_score_jumps():
    # A 1-D toy on a single pixel: F(x) = 10 * sigmoid(200 (x - 0.03)): a steep rise near the baseline.
    class Steep(nn.Module):
        def forward(self, x):
            return torch.stack([torch.zeros(len(x)), 10 * torch.sigmoid(200 * (x.flatten(1).mean(1) - 0.03))], dim=1)

    model = Steep()
    image = torch.ones(1, 3, 4, 4)
    rule = adaptive_rule(model, image, 1, "black", n_steps=32, scan_points=8)
    middles = rule.midpoints[0][~rule.midpoints[0].isnan()]
    assert (middles < 0.125).sum() > (middles > 0.5).sum() + 5, middles
    fixed, fixed_delta = integrated_gradients(model, image, 1, n_steps=32, return_delta=True, progress=False)
    adaptive, delta = integrated_gradients(model, image, 1, n_steps=32, method="adaptive", scan_points=8,
                                           return_delta=True, progress=False)
    assert abs(float(delta)) < 0.25 * abs(float(fixed_delta)), (float(delta), float(fixed_delta))


@pytest.mark.parametrize("baseline", ["black", "noise"])
def test_adaptive_ig_is_exact_on_a_linear_model(linear_model, images, baseline):
    images = images.double()
    baselines = make_baseline(images, baseline, seed=0)
    ours, delta = integrated_gradients(linear_model, images, 2, baselines=baselines, n_steps=6, method="adaptive",
                                       scan_points=4, return_delta=True, progress=False)
    assert torch.allclose(ours, linear_ig(linear_model, images, baselines, 2), atol=1e-12)
    assert delta.abs().max() < 1e-10


def test_adaptive_ig_on_a_smooth_model_agrees_with_gauss_legendre(images):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * (SIZE - 2) ** 2, 3)).double().eval()
    images = images.double()
    fixed = integrated_gradients(model, images, 1, n_steps=64, progress=False)
    adaptive, delta = integrated_gradients(model, images, 1, n_steps=64, method="adaptive", return_delta=True,
                                           progress=False)
    assert relative_error(adaptive, fixed) < 1e-3
    assert delta.abs().max() < 1e-4


def test_adaptive_ig_gap_falls_as_the_budget_grows(tiny_cnn, images):
    gaps = []
    for n_steps in (8, 32, 128):
        _, delta = integrated_gradients(tiny_cnn, images, 1, n_steps=n_steps, method="adaptive", scan_points=4,
                                        return_delta=True, progress=False)
        gaps.append(float(delta.abs().max()))
    assert gaps[2] < gaps[0] and gaps[1] < gaps[0], gaps


def test_adaptive_ig_batch_size_does_not_change_the_result(tiny_cnn, images):
    first = integrated_gradients(tiny_cnn, images, 1, n_steps=20, method="adaptive", batch_size=3, progress=False)
    second = integrated_gradients(tiny_cnn, images, 1, n_steps=20, method="adaptive", batch_size=1000, progress=False)
    assert torch.allclose(first, second, atol=1e-6)


def test_adaptive_ig_bad_input(tiny_cnn, images):
    before = snapshot(tiny_cnn)
    with pytest.raises(ValueError, match="n_steps"):
        integrated_gradients(tiny_cnn, images, 1, n_steps=1, method="adaptive", progress=False)
    with pytest.raises(ValueError, match="scan_points"):
        integrated_gradients(tiny_cnn, images, 1, n_steps=8, method="adaptive", scan_points=0, progress=False)
    with pytest.raises(ValueError, match="adaptive"):
        integrated_gradients(tiny_cnn, images, 1, method="adaptiv", progress=False)
    with pytest.raises(ValueError, match="one path"):
        adaptive_rule(tiny_cnn, images, 1)
    assert_untouched(tiny_cnn, before)
