"""Feature inversion, caricatures and style transfer: the objectives rise, equal their definitions and fail clearly.

``nnvis_helpers.featurevis.inversion`` and ``.style`` on the tiny seeded CNN of conftest (32-40 px,
a few steps), the photo-started Fourier parameterization, and the default style layers of the
models ``load_model`` knows (built on the meta device: the module tree without weights).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nnvis_helpers import LayerNotFoundError, count_hooks, get_layer, load_model
from nnvis_helpers.featurevis import (
    MODEL_OUTPUT,
    STYLE_LAYERS,
    activation_dot,
    activation_match,
    caricature,
    default_style_layers,
    evaluate,
    fourier,
    gram_matrix,
    invert,
    jitter,
    photo_activations,
    pixels,
    random_scale,
    render,
    style,
    style_transfer,
    total_variation,
)
from conftest import assert_untouched, snapshot

SIZE = 32
CONV = "features.3"  # 16 channels, 16 x 16 at 32 px (in-place ReLU after it)
EARLY = "features.1"  # the first ReLU: 8 channels, 32 x 32


def _photo(seed: int = 1, size=SIZE) -> torch.Tensor:
    """A smooth random picture (not white noise), inside (0, 1)."""
    size = (size, size) if isinstance(size, int) else size
    coarse = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False).clamp(0.02, 0.98)


def _history(model, objective, steps=10, batch_size=1, size=SIZE, **options):
    options.setdefault("transforms", None)
    images, history = render(model, objective, steps=steps, image_size=size, batch_size=batch_size,
                             progress=False, return_history=True, **options)
    assert images.shape == (batch_size, 3, size, size)
    assert images.min() >= 0 and images.max() <= 1
    assert torch.isfinite(history).all()
    return history


@pytest.fixture
def no_steps(monkeypatch):
    """Counts optimizer steps: a bad input must fail before the first one."""
    steps = []
    original = torch.optim.Adam.step

    def counting(self, *args, **kwargs):
        steps.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counting)
    return steps


# ----------------------------------------------------------------------------- the objectives' values


def test_photo_activations_equal_the_layers_outputs(tiny_cnn):
    photo = _photo()
    got = photo_activations(tiny_cnn, photo, [EARLY, CONV, MODEL_OUTPUT])
    assert list(got) == [EARLY, CONV, MODEL_OUTPUT]
    with torch.no_grad():
        early = tiny_cnn.features[:2](photo)
        conv = tiny_cnn.features[:4](photo)  # the convolution's output, after the in-place ReLU
        logits = tiny_cnn(photo)
    torch.testing.assert_close(got[EARLY], early)
    assert got[CONV].shape == (1, 16, 16, 16)
    torch.testing.assert_close(got[CONV], conv)
    torch.testing.assert_close(got[MODEL_OUTPUT], logits)
    assert not any(t.requires_grad for t in got.values())
    assert count_hooks(tiny_cnn) == 0
    single = photo_activations(tiny_cnn, photo, CONV)  # one name as a string
    assert list(single) == [CONV] and torch.equal(single[CONV], got[CONV])


@pytest.mark.parametrize("layer", [EARLY, CONV, MODEL_OUTPUT])
def test_match_is_perfect_and_dot_is_the_norm_at_the_photo_itself(tiny_cnn, layer):
    photo = _photo()
    target = photo_activations(tiny_cnn, photo, layer)[layer]
    assert evaluate(tiny_cnn, photo, activation_match(layer, target, "l2")).item() == pytest.approx(0.0, abs=1e-6)
    assert evaluate(tiny_cnn, photo, activation_match(layer, target, "cosine")).item() == pytest.approx(1.0, abs=1e-5)
    # <A, A0> / |A0| * cos^p is |A0| at A = A0, whatever the power
    for power in (0.0, 1.0, 3.0):
        value = evaluate(tiny_cnn, photo, activation_dot(layer, target, cosine_power=power)).item()
        assert value == pytest.approx(target.norm().item(), rel=1e-5)
    # another picture is further away: a real distance, not a constant
    other = _photo(seed=7)
    assert evaluate(tiny_cnn, other, activation_match(layer, target, "l2")).item() < -1e-3
    assert evaluate(tiny_cnn, other, activation_match(layer, target, "cosine")).item() < 1 - 1e-4


def test_l2_match_is_the_relative_squared_error(tiny_cnn):
    photo, other = _photo(), _photo(seed=7)
    target = photo_activations(tiny_cnn, photo, CONV)[CONV]
    mine = photo_activations(tiny_cnn, other, CONV)[CONV]
    expected = -((mine - target) ** 2).sum() / (target ** 2).sum()
    got = evaluate(tiny_cnn, other, activation_match(CONV, target[0], "l2"))  # (C, H, W) works too
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    cosine = F.cosine_similarity(mine.flatten(), target.flatten(), dim=0)
    assert evaluate(tiny_cnn, other, activation_match(CONV, target, "cosine")).item() == pytest.approx(cosine.item(),
                                                                                                        rel=1e-5)


def test_target_is_resized_to_the_activations_map(tiny_cnn):
    """A 32 px photo's target against a 40 px image: the target follows the map (bilinear)."""
    target = photo_activations(tiny_cnn, _photo(), CONV)[CONV]  # 16 x 16
    bigger = _photo(seed=7, size=40)
    mine = photo_activations(tiny_cnn, bigger, CONV)[CONV]  # 20 x 20
    assert mine.shape[-2:] == (20, 20)
    goal = F.interpolate(target, size=(20, 20), mode="bilinear", align_corners=False)
    expected = -((mine - goal) ** 2).sum() / (goal ** 2).sum()
    assert evaluate(tiny_cnn, bigger, activation_match(CONV, target)).item() == pytest.approx(expected.item(), rel=1e-5)


# ----------------------------------------------------------------------------- they rise under render


@pytest.mark.parametrize("name", ["match_l2", "match_cosine", "dot", "dot_power0", "match_logits", "style"])
def test_every_new_objective_rises(tiny_cnn, name):
    photo = _photo()
    targets = photo_activations(tiny_cnn, photo, [EARLY, CONV, MODEL_OUTPUT])
    objective = {
        "match_l2": lambda: activation_match(CONV, targets[CONV], "l2"),
        "match_cosine": lambda: activation_match(CONV, targets[CONV], "cosine"),
        "dot": lambda: activation_dot(CONV, targets[CONV]),
        "dot_power0": lambda: activation_dot(CONV, targets[CONV], cosine_power=0),
        "match_logits": lambda: activation_match(MODEL_OUTPUT, targets[MODEL_OUTPUT]),
        "style": lambda: style({EARLY: targets[EARLY], CONV: targets[CONV]}),
    }[name]()
    history = _history(tiny_cnn, objective, steps=10, lr=0.1)
    assert history[-3:].mean() > history[:2].mean(), f"{name} did not go up: {history.tolist()}"


def test_objectives_rise_under_transforms_that_change_the_size(tiny_cnn):
    """jitter and scaling make the maps smaller or larger than the target's: it is resized, and still followed."""
    targets = photo_activations(tiny_cnn, _photo(), CONV)
    objective = activation_match(CONV, targets[CONV]) + 0.1 * activation_dot(CONV, targets[CONV])
    history = _history(tiny_cnn, objective, steps=12, lr=0.1, transforms=[jitter(5), random_scale([0.8, 1.25])])
    assert history[-3:].mean() > history[:2].mean(), history.tolist()


def test_batched_targets_one_per_image(tiny_cnn):
    """A target of N images: image i follows target i (and batch= picks one image)."""
    photos = torch.cat([_photo(1), _photo(2)])
    targets = photo_activations(tiny_cnn, photos, CONV)[CONV]
    both = evaluate(tiny_cnn, photos, activation_match(CONV, targets))
    assert both.shape == (2,) and torch.allclose(both, torch.zeros(2), atol=1e-6)
    swapped = evaluate(tiny_cnn, photos.flip(0), activation_match(CONV, targets))
    assert (swapped < -1e-3).all()
    only_second = evaluate(tiny_cnn, photos.flip(0), activation_match(CONV, targets, batch=1))
    assert only_second[0] == 0 and only_second[1] < -1e-3


# ----------------------------------------------------------------------------- Gram matrices and style


def test_gram_matrix_equals_the_double_loop():
    acts = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(0))
    expected = torch.zeros(2, 4, 4)
    for n in range(2):
        for i in range(4):
            for j in range(4):
                expected[n, i, j] = (acts[n, i] * acts[n, j]).sum() / (3 * 5)
    got = gram_matrix(acts)
    assert got.shape == (2, 4, 4)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(gram_matrix(torch.ones(1, 2, 4, 4)), torch.ones(1, 2, 2))
    # where things are is gone: shuffling the positions (the same way in every channel) keeps G
    shuffled = acts.flatten(2)[:, :, torch.randperm(15, generator=torch.Generator().manual_seed(1))].view_as(acts)
    torch.testing.assert_close(gram_matrix(shuffled), got)


def test_style_loss_is_zero_for_the_style_image_only(tiny_cnn):
    painting = _photo(seed=3)
    targets = photo_activations(tiny_cnn, painting, [EARLY, CONV])
    objective = style(targets)
    assert evaluate(tiny_cnn, painting, objective).item() == pytest.approx(0.0, abs=1e-6)
    other = _photo(seed=9)
    loss = -evaluate(tiny_cnn, other, objective).item()
    mine = photo_activations(tiny_cnn, other, [EARLY, CONV])
    expected = sum(((gram_matrix(mine[n]) - gram_matrix(targets[n])) ** 2).sum() / (gram_matrix(targets[n]) ** 2).sum()
                   for n in (EARLY, CONV))
    assert loss == pytest.approx(expected.item(), rel=1e-5) and loss > 1e-4
    weighted = -evaluate(tiny_cnn, other, style(targets, weights={EARLY: 2.0, CONV: 0.0})).item()
    goal = gram_matrix(targets[EARLY])
    early_only = ((gram_matrix(mine[EARLY]) - goal) ** 2).sum() / (goal ** 2).sum()
    assert weighted == pytest.approx(2 * early_only.item(), rel=1e-5)


# ----------------------------------------------------------------------------- parameterizations from a photo


@pytest.mark.parametrize("decorrelate", [True, False])
@pytest.mark.parametrize("size", [(32, 32), (31, 33)], ids=["even", "odd"])
def test_fourier_init_gives_back_the_photo(decorrelate, size):
    photo = _photo(size=size)
    image_param = fourier(decorrelate=decorrelate, init=photo)(2, size, "cpu", torch.Generator().manual_seed(0))
    first = image_param().detach()
    assert first.shape == (2, 3, *size)
    assert (first - photo).abs().max() < 2e-3
    # the spectrum is the parameter: a step changes the picture
    assert len(list(image_param.parameters())) == 1 and image_param.raw.requires_grad


def test_fourier_init_checks_the_photo():
    with pytest.raises(ValueError, match="image_size"):
        fourier(init=_photo())(1, (40, 40), "cpu", torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="give 1 or 3"):
        fourier(init=torch.cat([_photo(1), _photo(2)]))(3, (SIZE, SIZE), "cpu", torch.Generator().manual_seed(0))


def test_pixels_init_still_starts_from_the_photo():
    photo = _photo()
    for decorrelate in (False, True):
        first = pixels(init=photo, decorrelate=decorrelate)(1, (SIZE, SIZE), "cpu", torch.Generator())().detach()
        assert (first - photo).abs().max() < 2e-3
    bounded = pixels(init=photo, max_change=0.1)(1, (SIZE, SIZE), "cpu", torch.Generator())().detach()
    assert torch.allclose(bounded, photo)


def test_render_from_a_photo_starts_at_a_perfect_match(tiny_cnn):
    photo = _photo()
    targets = photo_activations(tiny_cnn, photo, CONV)
    history = _history(tiny_cnn, activation_match(CONV, targets[CONV]), steps=2, param=fourier(init=photo))
    assert history[0].item() > -1e-3  # the first step's image is the photo


# ----------------------------------------------------------------------------- the recipes


def test_invert_and_caricature_return_one_image_per_layer(tiny_cnn):
    photo = _photo()
    before = snapshot(tiny_cnn)
    layers = [EARLY, CONV, MODEL_OUTPUT]
    images, history = invert(tiny_cnn, photo, layers, steps=6, lr=0.1, progress=False, return_history=True)
    assert images.shape == (3, 3, SIZE, SIZE) and images.min() >= 0 and images.max() <= 1
    assert history[-2:].mean() > history[:2].mean(), history.tolist()
    # image i is the inversion of layer i: it matches that layer better than the noise it started from
    start = fourier()(3, (SIZE, SIZE), "cpu", torch.Generator().manual_seed(0))().detach()
    targets = photo_activations(tiny_cnn, photo, layers)
    for i, name in enumerate(layers):
        objective = activation_match(name, targets[name])
        assert evaluate(tiny_cnn, images[i:i + 1], objective) > evaluate(tiny_cnn, start[i:i + 1], objective), name
    assert_untouched(tiny_cnn, before)
    single = invert(tiny_cnn, photo, CONV, metric="cosine", param="pixels", tv_weight=0.1, steps=2, progress=False)
    assert single.shape == (1, 3, SIZE, SIZE)
    pictures, history = caricature(tiny_cnn, photo, [EARLY, CONV], steps=6, lr=0.1, progress=False,
                                   return_history=True)
    assert pictures.shape == (2, 3, SIZE, SIZE) and pictures.min() >= 0 and pictures.max() <= 1
    assert history[-2:].mean() > history[:2].mean(), history.tolist()
    assert_untouched(tiny_cnn, before)


def test_invert_is_reproducible_and_leaves_a_train_mode_model(tiny_cnn):
    photo = _photo()
    first = invert(tiny_cnn, photo, CONV, steps=3, progress=False)
    tiny_cnn.train()
    tiny_cnn.classifier.weight.grad = torch.ones_like(tiny_cnn.classifier.weight)
    before = snapshot(tiny_cnn)
    again = invert(tiny_cnn, photo, CONV, steps=3, progress=False)
    assert torch.equal(first, again)
    assert_untouched(tiny_cnn, before)
    assert tiny_cnn.training


def test_style_transfer_from_the_content(tiny_cnn):
    content, painting = _photo(1), _photo(5, size=40)  # the style image may have another size
    before = snapshot(tiny_cnn)
    result, losses = style_transfer(tiny_cnn, content, painting, style_layers=[EARLY, CONV], content_layer=CONV,
                                    steps=8, lr=0.1, progress=False, return_losses=True)
    assert result.shape == (1, 3, SIZE, SIZE) and result.min() >= 0 and result.max() <= 1
    assert set(losses) == {"style", "content"}
    assert losses["content"][0] == pytest.approx(0.0, abs=1e-6)  # it starts at the content photo
    assert losses["content"][1] > 0  # and moves away from it
    assert losses["style"][1] < losses["style"][0], losses
    # the numbers are the losses of those images
    content_target = photo_activations(tiny_cnn, content, CONV)[CONV]
    assert -evaluate(tiny_cnn, result, activation_match(CONV, content_target)).item() == pytest.approx(
        losses["content"][1], rel=1e-4)
    style_objective = style(photo_activations(tiny_cnn, painting, [EARLY, CONV]))
    assert -evaluate(tiny_cnn, content, style_objective).item() == pytest.approx(losses["style"][0], rel=1e-4)
    assert -evaluate(tiny_cnn, result, style_objective).item() == pytest.approx(losses["style"][1], rel=1e-4)
    assert_untouched(tiny_cnn, before)
    plain = style_transfer(tiny_cnn, content, painting, style_layers=[EARLY, CONV], content_layer=CONV, steps=8,
                           lr=0.1, progress=False)
    assert torch.equal(plain, result)


def test_style_transfer_from_noise_reports_the_noise_images_losses(tiny_cnn):
    content, painting = _photo(1), _photo(5)
    common = dict(style_layers=[EARLY], content_layer=CONV, init="noise", steps=3, progress=False,
                  return_losses=True)
    result, losses = style_transfer(tiny_cnn, content, painting, seed=4, **common)
    noise = fourier()(1, (SIZE, SIZE), "cpu", torch.Generator().manual_seed(4))().detach()
    content_target = photo_activations(tiny_cnn, content, CONV)[CONV]
    style_objective = style(photo_activations(tiny_cnn, painting, [EARLY]))
    content_at_noise = -evaluate(tiny_cnn, noise, activation_match(CONV, content_target)).item()
    assert losses["content"][0] == pytest.approx(content_at_noise, rel=1e-4)
    assert losses["style"][0] == pytest.approx(-evaluate(tiny_cnn, noise, style_objective).item(), rel=1e-4)
    assert losses["content"][0] > 0.1  # noise is far from the photo
    again, losses_again = style_transfer(tiny_cnn, content, painting, seed=4, **common)
    assert torch.equal(again, result) and losses_again == losses
    other, other_losses = style_transfer(tiny_cnn, content, painting, seed=5, **common)
    assert other_losses["content"][0] != losses["content"][0]
    pixel_result = style_transfer(tiny_cnn, content, painting, style_layers=[EARLY], content_layer=CONV, param="pixels",
                                  steps=2, progress=False)
    assert pixel_result.shape == (1, 3, SIZE, SIZE) and pixel_result.min() >= 0 and pixel_result.max() <= 1


# ----------------------------------------------------------------------------- clear errors, before any step


def _target(shape):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0))


RENDER_ERRORS = {
    "channels": (lambda: activation_match(CONV, _target((1, 8, 16, 16))), 1,
                 r"16 channels but the activation_match target has 8"),
    "dims": (lambda: activation_match(CONV, _target((16, 16))), 1, r"activations of shape \(1, 16, 16, 16\)"),
    "batch": (lambda: activation_dot(CONV, _target((3, 16, 16, 16))), 2, r"holds 3 images but the batch has 2"),
    "classes": (lambda: activation_match(MODEL_OUTPUT, _target((1, 5))), 1, r"10 classes but"),
    "logit_dims": (lambda: activation_match(MODEL_OUTPUT, _target((1, 10, 2))), 1, r"the logits have activations"),
    "batch_index": (lambda: activation_match(CONV, _target((16, 16, 16)), batch=2), 2, r"batch=2"),
    "style_channels": (lambda: style({CONV: _target((1, 8, 4, 4))}), 1, r"style target has 8 channels"),
    "style_logits": (lambda: style({"classifier": _target((1, 10, 1, 1))}), 1, r"shape \(1, 10\)"),
}


@pytest.mark.parametrize("name", RENDER_ERRORS)
def test_target_not_matching_the_layer_fails_before_any_step(tiny_cnn, no_steps, name):
    make, batch_size, message = RENDER_ERRORS[name]
    before = snapshot(tiny_cnn)
    with pytest.raises(ValueError, match=message):
        render(tiny_cnn, make(), steps=5, image_size=SIZE, batch_size=batch_size, progress=False)
    assert not no_steps and count_hooks(tiny_cnn) == 0
    assert_untouched(tiny_cnn, before)


def test_bad_targets_and_arguments_fail_when_made():
    with pytest.raises(ValueError, match="NaN"):
        activation_match(CONV, torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="NaN"):
        activation_dot(CONV, torch.full((1, 16, 2, 2), float("inf")))
    with pytest.raises(ValueError, match="float tensor"):
        activation_match(CONV, torch.ones(1, 16, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        activation_match(CONV, torch.ones(1, 1, 16, 2, 2))
    with pytest.raises(ValueError, match="metric must be one of"):
        activation_match(CONV, torch.ones(16), metric="l1")
    with pytest.raises(ValueError, match="cosine_power"):
        activation_dot(CONV, torch.ones(16), cosine_power=-1)
    with pytest.raises(TypeError, match="layer is named by a string"):
        activation_match(3, torch.ones(16))
    for bad in (torch.ones(2, 16, 4, 4), torch.ones(16, 4, 4), "not a tensor"):
        with pytest.raises(ValueError, match=r"one image's activation \(1, C, H, W\)"):
            style({CONV: bad})
    with pytest.raises(ValueError, match="style needs"):
        style({})
    with pytest.raises(ValueError, match="no target"):
        style({CONV: torch.ones(1, 16, 4, 4)}, weights={EARLY: 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        style({CONV: torch.ones(1, 16, 4, 4)}, weights={CONV: -1.0})
    for bad in (torch.ones(4, 5), torch.ones(2, 4, 5), [[1.0]]):
        with pytest.raises(ValueError, match=r"gram_matrix needs activations of shape \(N, C, H, W\)"):
            gram_matrix(bad)


RECIPE_ERRORS = {
    "unknown_layer": (lambda m, p: invert(m, p, [CONV, "features.33"]), LayerNotFoundError, r"features\.33"),
    "unknown_style_layer": (lambda m, p: style_transfer(m, p, p, style_layers=["feature.1"], content_layer=CONV),
                            LayerNotFoundError, r"feature\.1"),
    "photo_batch": (lambda m, p: invert(m, torch.cat([p, p]), CONV), ValueError,
                    r"give one photo \(1, 3, H, W\), got 2"),
    "caricature_batch": (lambda m, p: caricature(m, torch.cat([p, p]), CONV), ValueError, r"give one photo"),
    "photo_not_images": (lambda m, p: invert(m, p[0], CONV), ValueError, r"unsqueeze\(0\)"),
    "bad_metric": (lambda m, p: invert(m, p, CONV, metric="L2"), ValueError, r"metric must be one of"),
    "tv_weight": (lambda m, p: invert(m, p, CONV, tv_weight=-0.1), ValueError, r"tv_weight must be a number >= 0"),
    "bad_param": (lambda m, p: invert(m, p, CONV, param="pixel"), ValueError, r"unknown parameterization"),
    "style_weight": (lambda m, p: style_transfer(m, p, p, [EARLY], CONV, style_weight=-1), ValueError,
                     r"style_weight must be a number >= 0"),
    "content_weight": (lambda m, p: style_transfer(m, p, p, [EARLY], CONV, content_weight=True), ValueError,
                       r"content_weight"),
    "st_param": (lambda m, p: style_transfer(m, p, p, [EARLY], CONV, param="fft"), ValueError,
                 r"param must be 'fourier' or 'pixels'"),
    "st_init": (lambda m, p: style_transfer(m, p, p, [EARLY], CONV, init="photo"), ValueError,
                r"init must be 'content' or 'noise'"),
    "style_batch": (lambda m, p: style_transfer(m, p, torch.cat([p, p]), [EARLY], CONV), ValueError,
                    r"one style image"),
    "style_on_logits": (lambda m, p: style_transfer(m, p, p, [MODEL_OUTPUT], CONV), ValueError,
                        r"one image's activation \(1, C, H, W\)"),
    "no_defaults": (lambda m, p: style_transfer(m, p, p), ValueError,
                    r"pass style_layers=\[\.\.\.\] and content_layer"),
    "no_defaults_content": (lambda m, p: style_transfer(m, p, p, style_layers=[EARLY]), ValueError,
                            r"content_layer"),
    "no_layers": (lambda m, p: photo_activations(m, p, []), ValueError, r"at least one layer"),
}


@pytest.mark.parametrize("name", RECIPE_ERRORS)
def test_bad_recipe_input_fails_before_any_step_and_leaves_the_model(tiny_cnn, no_steps, name):
    call, error, message = RECIPE_ERRORS[name]
    tiny_cnn.classifier.weight.grad = torch.ones_like(tiny_cnn.classifier.weight)
    before = snapshot(tiny_cnn)
    with pytest.raises(error, match=message):
        call(tiny_cnn, _photo())
    assert not no_steps, "an optimization step ran before the error"
    assert count_hooks(tiny_cnn) == 0
    assert_untouched(tiny_cnn, before)


def test_default_style_layers_of_a_model_without_defaults(tiny_cnn):
    with pytest.raises(ValueError, match=r"no default style layers for TinyCNN: pass style_layers=.*content_layer"):
        default_style_layers(tiny_cnn)


@pytest.mark.parametrize("name", ["vgg19", "vgg16", "efficientnet_lite0"])
def test_default_style_layers_exist_in_their_models(name):
    with torch.device("meta"):  # the module tree only: no weights are made, so VGG-19 takes milliseconds
        model = load_model(name, pretrained=False, verbose=False)
    style_layers, content_layer = default_style_layers(model)
    assert (style_layers, content_layer) == STYLE_LAYERS[name]
    assert len(style_layers) == len(set(style_layers)) >= 4
    modules = [get_layer(model, layer) for layer in (*style_layers, content_layer)]  # raises for a name not there
    if name.startswith("vgg"):  # Gatys et al.: the ReLUs right after convolutions (relu1_1 ... relu5_1, relu4_2)
        order = [n for n, _ in model.features.named_children()]
        for layer, module in zip((*style_layers, content_layer), modules):
            assert isinstance(module, torch.nn.ReLU), layer
            previous = model.features[order.index(layer.split(".")[1]) - 1]
            assert isinstance(previous, torch.nn.Conv2d), f"{layer} does not follow a convolution"
        # relu1_1 ... relu5_1: the first ReLU after the input and after each of the four max-pools
        pools = [i for i, m in enumerate(model.features) if isinstance(m, torch.nn.MaxPool2d)]
        assert [int(layer.split(".")[1]) for layer in style_layers] == [1] + [p + 2 for p in pools[:4]]


def test_style_pictures_load_by_name_and_stay_out_of_the_photo_list():
    from nnvis_helpers import load_image, sample_images
    from nnvis_helpers.images import describe_sample

    for name in ("hubble", "ihc"):
        picture = load_image(name, 32)
        assert picture.shape == (1, 3, 32, 32) and 0 <= picture.min() < picture.max() <= 1
        assert picture.std() > 0.01, f"{name} is flat"
        assert describe_sample(name)
        assert name not in sample_images()  # pictures, not photos of objects
