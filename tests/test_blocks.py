"""The building blocks of interpretability: layer views, icon cache, semantic dictionary, activation grid,
spatial attribution (exact on a linear network), neuron groups (NMF) and the information flow between them."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from conftest import assert_untouched, snapshot
from nnvis_helpers import LayerNotFoundError, blocks, load_image
from nnvis_helpers.atlas import activations_at

SIZE = 32
LAYER = "features.4"  # TinyCNN: the second in-place ReLU, 16 channels, 16 x 16 at 32 px
EARLY = "features.1"  # the first one, 8 channels, 32 x 32


def _image(size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


class LinearNet(nn.Module):
    """conv -> conv -> mean over positions -> linear, no nonlinearity: IG's integrand is constant, so it is exact."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.first = nn.Conv2d(3, 4, 3, padding=1)
        self.second = nn.Conv2d(4, 5, 3, padding=1)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(self.second(self.first(x)).mean((2, 3)))


class SideBranch(nn.Module):
    """A network with a branch whose result is thrown away: nothing downstream depends on ``side``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Conv2d(3, 4, 3, padding=1)
        self.side = nn.Conv2d(3, 2, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        self.side(x)
        return self.head(self.body(x).mean((2, 3)))


# ----------------------------------------------------------------------------- layer view


def test_layer_view_is_the_layer_output_and_stops_after_it(tiny_cnn):
    image = _image()
    calls = []
    handle = tiny_cnn.classifier.register_forward_hook(lambda *args: calls.append(1))
    try:
        view = blocks.layer_view(tiny_cnn, image, LAYER)
    finally:
        handle.remove()
    assert not calls, "the forward pass ran past the layer"
    expected = tiny_cnn.features[:5](image[None])[0]
    assert view.layer == LAYER and view.activations.dtype == torch.float32
    assert view.activations.shape == (16, 16, 16) and view.image.shape == (3, SIZE, SIZE)
    torch.testing.assert_close(view.activations, expected)
    torch.testing.assert_close(blocks.layer_view(tiny_cnn, image[None], LAYER).activations, expected)


def test_layer_view_errors_say_what_to_do(tiny_cnn):
    before = snapshot(tiny_cnn)
    with pytest.raises(LayerNotFoundError, match="features.4"):
        blocks.layer_view(tiny_cnn, _image(), "features.44")
    with pytest.raises(ValueError, match="convolution"):
        blocks.layer_view(tiny_cnn, _image(), "classifier")
    with pytest.raises(ValueError, match="one photo"):
        blocks.layer_view(tiny_cnn, torch.rand(2, 3, SIZE, SIZE), LAYER)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        blocks.layer_view(tiny_cnn, _image() * 255, LAYER)
    assert_untouched(tiny_cnn, before)


# ----------------------------------------------------------------------------- icons and the semantic dictionary


def _spy_renders(monkeypatch) -> list[int]:
    """Count the calls of render_icons made by blocks, and how many icons each asked for."""
    calls: list[int] = []
    original = blocks.compute.render_icons

    def spy(model, layer, directions, **options):
        calls.append(len(directions))
        return original(model, layer, directions, **options)

    monkeypatch.setattr(blocks.compute, "render_icons", spy)
    return calls


def test_semantic_dictionary_renders_every_channel_once(tiny_cnn, monkeypatch):
    renders = _spy_renders(monkeypatch)
    cache = blocks.IconCache(tiny_cnn, icon_size=16, steps=2, progress=False)
    image = _image()
    dictionary = blocks.semantic_dictionary(tiny_cnn, image, LAYER, k=3, cache=cache)
    activations = blocks.layer_view(tiny_cnn, image, LAYER).activations
    unique = set(dictionary.channels.unique().tolist())
    assert dictionary.map_size == (16, 16) and dictionary.channels.shape == (16, 16, 3)
    assert dictionary.channels.dtype == torch.long
    torch.testing.assert_close(dictionary.values, activations.permute(1, 2, 0).topk(3, dim=2).values)
    assert (dictionary.values[..., :-1] >= dictionary.values[..., 1:]).all(), "most active first"
    torch.testing.assert_close(dictionary.values, activations.permute(1, 2, 0).gather(2, dictionary.channels))
    assert set(dictionary.icons) == unique and len(unique) > 3
    assert renders == [len(unique)], "all missing channels in one render_icons call"
    assert cache.rendered == len(unique) == len(cache) and (LAYER, min(unique)) in cache
    assert all(icon.shape == (3, 16, 16) and 0 <= icon.min() and icon.max() <= 1 for icon in dictionary.icons.values())

    again = blocks.semantic_dictionary(tiny_cnn, _image(seed=1), LAYER, k=3, cache=cache)
    new = set(again.channels.unique().tolist()) - unique
    assert cache.rendered == len(unique) + len(new) and renders[1:] == ([len(new)] if new else [])
    first, second = sorted(unique)[:2]
    asked = cache.icons(LAYER, [second, first, second])
    assert torch.equal(asked, torch.stack([dictionary.icons[second], dictionary.icons[first], dictionary.icons[second]]))


def test_semantic_dictionary_can_draw_its_icons_at_the_values_before_the_activation(tiny_cnn):
    cache = blocks.IconCache(tiny_cnn, icon_size=16, steps=2, progress=False)
    dictionary = blocks.semantic_dictionary(tiny_cnn, _image(), LAYER, k=2, cache=cache, icon_layer="features.3")
    assert all(("features.3", channel) in cache and (LAYER, channel) not in cache for channel in dictionary.icons)
    with pytest.raises(ValueError, match="8 channels"):
        blocks.semantic_dictionary(tiny_cnn, _image(), LAYER, k=2, cache=cache, icon_layer=EARLY)


def test_icon_cache_checks_channels_and_model(tiny_cnn):
    cache = blocks.IconCache(tiny_cnn, icon_size=16, steps=2, progress=False)
    with pytest.raises(ValueError, match="16 channels"):
        cache.icons(LAYER, [3, 16])
    assert cache.rendered == 0
    with pytest.raises(ValueError, match="same model"):
        blocks.semantic_dictionary(LinearNet(), _image(), "first", cache=cache)
    with pytest.raises(ValueError, match="k must"):
        blocks.semantic_dictionary(tiny_cnn, _image(), LAYER, k=17, cache=cache)


# ----------------------------------------------------------------------------- activation grid


def _quadrants(size: int = SIZE) -> torch.Tensor:
    """Red, green, blue and black quadrants: four cells whose first-layer vectors differ."""
    image = torch.zeros(3, size, size)
    half = size // 2
    image[0, :half, :half] = 1
    image[1, :half, half:] = 1
    image[2, half:, :half] = 1
    return image


def test_activation_grid_one_batched_render_of_the_pooled_vectors(tiny_cnn, monkeypatch):
    renders = _spy_renders(monkeypatch)
    image = _quadrants()
    grid = blocks.activation_grid(tiny_cnn, image, EARLY, cells=4, icon_size=16, steps=16, progress=False)
    pooled = nn.functional.adaptive_avg_pool2d(blocks.layer_view(tiny_cnn, image, EARLY).activations, 4)
    assert renders == [16], "one render of all 16 cells"
    assert grid.cells == (4, 4) and grid.vectors.shape == (4, 4, 8) and grid.icons.shape == (4, 4, 3, 16, 16)
    torch.testing.assert_close(grid.vectors, pooled.permute(1, 2, 0))
    assert grid.seconds_per_icon > 0
    own, mean = blocks.grid_alignment(tiny_cnn, grid)
    assert own.shape == mean.shape == (4, 4)
    # A random network's first layer tells these colours apart, not all of them as well (blue is weak in it).
    assert (own > mean).float().mean() >= 0.7, f"icons do not produce their own cell's vector: {own - mean}"


def test_grid_alignment_compares_the_centre_vector_of_each_icon(tiny_cnn):
    icons = torch.rand(2, 3, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    centres = activations_at(tiny_cnn, LAYER, icons.flatten(0, 1), "centre").view(2, 3, 16)
    grid = blocks.ActivationGrid(layer=LAYER, cells=(2, 3), vectors=centres, icons=icons, seconds_per_icon=0.0)
    own, mean = blocks.grid_alignment(tiny_cnn, grid)
    torch.testing.assert_close(own, torch.ones(2, 3))
    expected = nn.functional.cosine_similarity(centres.flatten(0, 1), centres.flatten(0, 1).mean(0, keepdim=True))
    torch.testing.assert_close(mean, expected.view(2, 3))
    with pytest.raises(ValueError, match="cells must"):
        blocks.activation_grid(tiny_cnn, _image(), LAYER, cells=17, icon_size=16, steps=1, progress=False)


# ----------------------------------------------------------------------------- spatial attribution


def test_spatial_attribution_is_exact_on_a_linear_network():
    model, image = LinearNet(), _image(16)
    activation = blocks.layer_view(model, image, "first").activations
    units = activation[None].clone().requires_grad_(True)
    logit = model.head(model.second(units).mean((2, 3)))[0, 2]
    (gradient,) = torch.autograd.grad(logit, units)
    for method in ("gausslegendre", "riemann_middle"):
        attributions, delta = blocks.spatial_attribution(model, image, "first", 2, n_steps=3, method=method,
                                                         return_delta=True)
        torch.testing.assert_close(attributions, (gradient * units)[0].detach(), rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            change = float(logit - model.head(model.second(torch.zeros_like(units)).mean((2, 3)))[0, 2])
        assert abs(delta) <= 1e-5 * abs(change) and abs(float(attributions.sum()) - change) <= 1e-5 * abs(change)

    direction = torch.tensor([0.5, -1.0, 0.0, 2.0, 1.0])
    target = blocks.LayerTarget("second", direction)
    attributions, delta = blocks.spatial_attribution(model, image, "first", target, n_steps=2, return_delta=True)
    scalar = (model.second(units) * direction.view(1, -1, 1, 1)).sum()
    (gradient,) = torch.autograd.grad(scalar, units)
    torch.testing.assert_close(attributions, (gradient * units)[0].detach(), rtol=1e-5, atol=1e-6)
    assert abs(delta) <= 1e-5 * float(scalar.detach().abs())


def test_spatial_attribution_completeness_and_targets_on_a_relu_network(tiny_cnn):
    image = _image()
    rough, rough_delta = blocks.spatial_attribution(tiny_cnn, image, EARLY, 3, n_steps=2, return_delta=True)
    fine, fine_delta = blocks.spatial_attribution(tiny_cnn, image, EARLY, 3, n_steps=64, batch_size=64,
                                                  return_delta=True)
    change = float(fine.sum()) - fine_delta
    assert rough.shape == fine.shape == (8, SIZE, SIZE)
    assert abs(fine_delta) < 0.02 * abs(change) and abs(fine_delta) < abs(rough_delta)
    batched = blocks.spatial_attribution(tiny_cnn, image, EARLY, 3, n_steps=64, batch_size=7)
    torch.testing.assert_close(batched, fine, rtol=1e-4, atol=1e-6)

    target = blocks.LayerTarget.channel(LAYER, 5, channels=16)
    attributions, delta = blocks.spatial_attribution(tiny_cnn, image, EARLY, target, n_steps=64, batch_size=64,
                                                     return_delta=True)
    scalar = float(blocks.layer_view(tiny_cnn, image, LAYER).activations[5].sum())
    change = float(attributions.sum()) - delta
    assert change == pytest.approx(scalar, rel=1e-4), "f(0) of a channel after conv-ReLU-pool-conv-ReLU"
    assert abs(delta) < 0.02 * abs(change)


def test_spatial_attribution_errors_come_before_any_work(tiny_cnn):
    before = snapshot(tiny_cnn)
    image = _image()
    with pytest.raises(ValueError, match="runs before"):
        blocks.spatial_attribution(tiny_cnn, image, LAYER, blocks.LayerTarget.channel(EARLY, 0, 8))
    with pytest.raises(ValueError, match="8 entries"):
        blocks.spatial_attribution(tiny_cnn, image, EARLY, blocks.LayerTarget.channel(LAYER, 0, 8))
    with pytest.raises(ValueError, match="10 classes"):
        blocks.spatial_attribution(tiny_cnn, image, EARLY, 10)
    with pytest.raises(ValueError, match="one photo"):
        blocks.spatial_attribution(tiny_cnn, image.expand(2, -1, -1, -1), EARLY, 1)
    with pytest.raises(TypeError, match="LayerTarget"):
        blocks.spatial_attribution(tiny_cnn, image, EARLY, "tabby")
    with pytest.raises(ValueError, match="convolutional"):
        blocks.spatial_attribution(tiny_cnn, image, "classifier", 1)
    with pytest.raises(ValueError, match="index must"):
        blocks.LayerTarget.channel(LAYER, 16, channels=16)
    with pytest.raises(ValueError, match="upstream"):
        blocks.spatial_attribution(SideBranch(), _image(16), "side", 1, n_steps=2)
    assert_untouched(tiny_cnn, before)


# ----------------------------------------------------------------------------- neuron groups


def test_neuron_groups_on_real_activations(offline_model):
    image = load_image("chelsea", 96)
    with pytest.raises(ValueError, match="blocks.4.0.bn1"):
        blocks.neuron_groups(blocks.layer_view(offline_model, image, "blocks.4"), k=2)
    view = blocks.layer_view(offline_model, image, "blocks.4.0.bn1")
    errors = []
    for k in (1, 2, 4, 8):
        groups = blocks.neuron_groups(view, k)
        errors.append(groups.relative_error)
        assert groups.maps.shape == (k, 6, 6) and groups.directions.shape == (k, 480)
        assert (groups.maps >= 0).all() and (groups.directions >= 0).all()
        summed = torch.einsum("khw,kc->chw", groups.maps, groups.directions)
        torch.testing.assert_close(summed, groups.reconstruction, rtol=1e-4, atol=1e-5)
        shares = groups.maps.sum((1, 2)) * groups.directions.sum(1)
        assert (shares[:-1] >= shares[1:]).all(), "largest group first"
        torch.testing.assert_close(groups.directions.norm(dim=1), torch.ones(k))
    assert all(a > b for a, b in zip(errors, errors[1:])), f"the error must fall as k grows: {errors}"
    assert errors[-1] < 0.8


def test_neuron_groups_split_signs_and_checks():
    activations = torch.randn(6, 4, 5, generator=torch.Generator().manual_seed(6))
    groups = blocks.neuron_groups(activations, k=3, signs="split", layer="made up")
    assert groups.directions.shape == (3, 12) and groups.reconstruction.shape == (12, 4, 5)
    assert groups.layer == "made up" and groups.signs == "split" and 0 < groups.relative_error < 1
    with pytest.raises(ValueError, match="signs='split'"):
        blocks.neuron_groups(activations, k=3)
    with pytest.raises(ValueError, match="k must"):
        blocks.neuron_groups(activations.abs(), k=7)
    with pytest.raises(ValueError, match="k must"):
        blocks.neuron_groups(activations.abs(), k=0)


def test_group_attribution_splits_by_share_of_the_reconstruction():
    generator = torch.Generator().manual_seed(7)
    activations = torch.rand(5, 3, 4, generator=generator)
    activations[2] = 0  # a channel that never fires: nothing reconstructs it
    groups = blocks.neuron_groups(activations, k=2)
    attributions = torch.randn(5, 3, 4, generator=generator)
    parts = blocks.group_attribution(groups, attributions)
    covered = groups.reconstruction > 0
    assert parts.shape == (2,) and not covered[2].any()
    assert float(parts.sum()) == pytest.approx(float(attributions[covered].sum()), rel=1e-5, abs=1e-6)
    share = groups.maps[0][None] * groups.directions[0][:, None, None] / groups.reconstruction
    assert float(parts[0]) == pytest.approx(float((attributions * share)[covered].sum()), rel=1e-4)
    with pytest.raises(ValueError, match=r"\(5, 3, 4\)"):
        blocks.group_attribution(groups, attributions[:, :2])

    split = blocks.neuron_groups(activations - 0.5, k=2, signs="split")
    assert float(blocks.group_attribution(split, attributions).sum()) == pytest.approx(
        float(attributions[split.reconstruction.view(2, 5, 3, 4).sum(0) > 0].sum()), rel=1e-5)


# ----------------------------------------------------------------------------- information flow


def test_information_flow_matches_single_attributions(tiny_cnn):
    image = _image()
    groups_a = blocks.neuron_groups(blocks.layer_view(tiny_cnn, image, EARLY), k=3)
    groups_b = blocks.neuron_groups(blocks.layer_view(tiny_cnn, image, LAYER), k=2)
    flow = blocks.information_flow(tiny_cnn, image, groups_a, groups_b, classes=[1, 4], n_steps=8, batch_size=20)
    assert flow.layers == (EARLY, LAYER) and flow.classes == [1, 4]
    assert flow.a_to_b.shape == (3, 2) and flow.b_to_class.shape == (2, 2) and flow.a_to_class.shape == (3, 2)
    for j, index in enumerate([1, 4]):
        for groups, column in ((groups_a, flow.a_to_class[:, j]), (groups_b, flow.b_to_class[:, j])):
            single = blocks.spatial_attribution(tiny_cnn, image, groups.layer, index, n_steps=8)
            torch.testing.assert_close(column, blocks.group_attribution(groups, single), rtol=1e-4, atol=1e-5)
    direction = groups_b.directions[1] / groups_b.directions[1].norm()
    single = blocks.spatial_attribution(tiny_cnn, image, EARLY, blocks.LayerTarget(LAYER, direction), n_steps=8)
    torch.testing.assert_close(flow.a_to_b[:, 1], blocks.group_attribution(groups_a, single), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="runs before"):
        blocks.information_flow(tiny_cnn, image, groups_b, groups_a, classes=[1], n_steps=2)
    with pytest.raises(ValueError, match="10 classes"):
        blocks.information_flow(tiny_cnn, image, groups_a, groups_b, classes=[1, 10], n_steps=2)


# ----------------------------------------------------------------------------- a held-out architecture


def test_resnet18_in_train_mode_gives_the_eval_results():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    image = _image(64)
    target = blocks.LayerTarget.channel("layer3", 7, channels=256)
    expected_view = blocks.layer_view(model.eval(), image, "layer2").activations
    expected = blocks.spatial_attribution(model, image, "layer2", target, n_steps=4)
    model.train()
    before = snapshot(model)
    buffers = [buffer.clone() for buffer in model.buffers()]
    torch.testing.assert_close(blocks.layer_view(model, image, "layer2").activations, expected_view)
    torch.testing.assert_close(blocks.spatial_attribution(model, image, "layer2", target, n_steps=4), expected)
    assert model.training and all(module.training for module in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers())), "BatchNorm statistics changed"
    assert_untouched(model, before)
