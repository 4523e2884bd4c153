"""Dataset examples, receptive-field crops, unit deconvolution and channel cards (notebook 07)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v3_small, resnet18

from nnvis_helpers.architecture import layer_table, receptive_field
from nnvis_helpers.channels import (
    channel_cards,
    draw_card,
    draw_cards,
    field_crops,
    top_examples,
    unit_deconvolution,
)
from nnvis_helpers.layers import capture_activations, count_hooks


def small_cnn(seed: int = 0) -> nn.Module:
    """A CIFAR-style net with stride, dilation, asymmetric kernels and padding: receptive fields are not trivial."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(12, 16, (3, 5), padding=(1, 2), dilation=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=2, dilation=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
    return model.eval()


def linear_cnn(seed: int = 0) -> nn.Module:
    """No rectifier: every weight path is open, so the field's edge pixels all reach the unit."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()


def images(count: int = 10, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def brute_force(model, layer, data, k, border=0):
    with torch.no_grad(), capture_activations(model, layer) as acts:
        model(data)
    maps = acts[layer].float()
    if border:
        maps = maps[..., border:-border, border:-border]
    peak = maps.flatten(2).amax(2).t()  # (C, N)
    mean = maps.mean((2, 3)).t()
    index = torch.arange(data.shape[0]).expand_as(peak)
    results = {}
    for name, scores in (("max", peak), ("mean", mean)):
        order = sorted(range(data.shape[0]), key=lambda n: n)  # ties: the smaller index first
        ranked = [sorted(order, key=lambda n: -float(row[n]))[:k] for row in scores]
        results[name] = torch.tensor(ranked)
    return results, maps, index


# ----------------------------------------------------------------------------- top examples


@pytest.mark.parametrize("border", [0, 1])
def test_top_examples_match_brute_force(border):
    model, data = small_cnn(), images(23)
    top = top_examples(model, "6", data, k=4, batch_size=5, ignore_border=border, progress=False)
    expected, maps, _ = brute_force(model, "6", data, 4, border)
    assert torch.equal(top.max_index, expected["max"])
    assert torch.equal(top.mean_index, expected["mean"])
    assert torch.allclose(top.max_scores, maps.flatten(2).amax(2).t().gather(1, expected["max"]), atol=1e-6)
    # the position is the strongest unit of that image, in the whole map's coordinates
    for row, channel in enumerate(top.channels.tolist()):
        for image, (y, x) in zip(top.max_index[row].tolist(), top.max_positions[row].tolist()):
            assert border <= y < top.map_size[0] - border and border <= x < top.map_size[1] - border
            assert maps[image, channel, y - border, x - border] == maps[image, channel].max()


def test_one_pass_for_many_channels_equals_one_pass_each():
    model, data = small_cnn(), images(17)
    together = top_examples(model, "4", data, channels=[1, 5, 9], k=3, batch_size=4, progress=False)
    for channel in (1, 5, 9):
        alone = top_examples(model, "4", data, channels=[channel], k=3, batch_size=7, progress=False)
        for by in ("max", "mean"):
            for ours, theirs in zip(together.of(channel, by), alone.of(channel, by)):
                assert torch.equal(ours, theirs)


def test_ties_do_not_depend_on_batching():
    model, data = small_cnn(), images(12)
    data[3:9] = 0.0  # equal images: equal scores
    first = top_examples(model, "2", data, k=5, batch_size=1, progress=False)
    second = top_examples(model, "2", data, k=5, batch_size=12, progress=False)
    assert torch.equal(first.max_index, second.max_index) and torch.equal(first.mean_index, second.mean_index)


def test_top_examples_on_offline_model(offline_model):
    from nnvis_helpers.datasets import dataset

    data = dataset("offline", size=96, length=24)
    stacked = torch.stack([data[i][0] for i in range(len(data))])
    top = top_examples(offline_model, "blocks.2", data, channels=[0, 3, 11], k=5, batch_size=10, progress=False)
    expected, _, _ = brute_force(offline_model, "blocks.2", stacked, 5)
    assert torch.equal(top.max_index, expected["max"][[0, 3, 11]])
    assert torch.equal(top.mean_index, expected["mean"][[0, 3, 11]])
    assert top.image_max.shape == (24, 3) and top.num_images == 24


def test_top_examples_bad_input_changes_nothing():
    model = small_cnn()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="out of range"):
        top_examples(model, "2", images(4), channels=[3, 99], progress=False)
    with pytest.raises(ValueError, match="feature maps"):
        top_examples(model, "11", images(4), progress=False)
    with pytest.raises(ValueError, match="ignore_border"):
        top_examples(model, "6", images(4), ignore_border=8, progress=False)
    with pytest.raises(ValueError, match="distinct"):
        top_examples(model, "2", images(4), channels=[1, 1], progress=False)
    with pytest.raises(ValueError, match="k"):
        top_examples(model, "2", images(4), k=0, progress=False)
    with pytest.raises(ValueError, match="closest|Did you mean|not found|no layer"):
        top_examples(model, "conv9", images(4), progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        top_examples(model, "2", images(4) * 255, progress=False)
    assert count_hooks(model) == 0 and model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.filterwarnings("ignore:unit_deconvolution:UserWarning")  # MobileNetV3's hardswish has no guided rule
@pytest.mark.parametrize("make, layer", [
    (lambda: resnet18(weights=None), "layer2"),
    (lambda: mobilenet_v3_small(weights=None), "features.3"),
])
def test_heldout_models_in_train_mode(make, layer):
    torch.manual_seed(0)
    model = make().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    top = top_examples(model, layer, images(6, 64), k=2, progress=False)
    assert top.max_index.shape[1] == 2
    cards = channel_cards(model, layer, images(6, 64), channels=[0, 1], k=2, icons=False, top=top, progress=False)
    assert len(cards) == 2 and cards[0].crops.shape[0] == 2
    assert count_hooks(model) == 0 and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------- receptive-field crops


def _unit(model, layer, image, channel, y, x):
    with torch.no_grad(), capture_activations(model, layer) as acts:
        model(image)
    return acts[layer][0, channel, y, x]


@pytest.mark.parametrize("y, x", [(0, 0), (3, 5), (7, 7), (2, 7)])
def test_crop_box_holds_exactly_the_pixels_that_move_the_unit(y, x):
    model, layer, size = linear_cnn(), "2", 32
    image = images(1, size)
    table = layer_table(model, (1, 3, size, size))
    top, left, bottom, right = receptive_field(model, layer, table=table).box(y, x, image_size=size)
    reference = _unit(model, layer, image, 2, y, x)
    outside = image.clone()
    noise = torch.rand_like(image)
    mask = torch.ones(size, size, dtype=torch.bool)
    mask[top:bottom, left:right] = False
    outside[..., mask] = noise[..., mask]
    assert torch.allclose(_unit(model, layer, outside, 2, y, x), reference, atol=1e-6)
    # every edge row and column of the box moves it: the box is no larger than it must be
    for rows, columns in ((slice(top, top + 1), slice(left, right)), (slice(bottom - 1, bottom), slice(left, right)),
                          (slice(top, bottom), slice(left, left + 1)), (slice(top, bottom), slice(right - 1, right))):
        edge = image.clone()
        edge[..., rows, columns] = 1 - edge[..., rows, columns]
        assert not torch.allclose(_unit(model, layer, edge, 2, y, x), reference, atol=1e-6)


def test_crop_box_on_offline_model(offline_model):
    from nnvis_helpers.images import load_image

    image, layer, (y, x) = load_image("chelsea", size=128), "blocks.2", (5, 9)
    table = layer_table(offline_model, (1, 3, 128, 128))
    top, left, bottom, right = receptive_field(offline_model, layer, table=table).box(y, x, image_size=128)
    assert (bottom - top, right - left) != (128, 128)  # the box is a real part of the image
    reference = _unit(offline_model, layer, image, 3, y, x)
    mask = torch.ones(128, 128, dtype=torch.bool)
    mask[top:bottom, left:right] = False
    outside, inside = image.clone(), image.clone()
    outside[..., mask] = torch.rand_like(image)[..., mask]
    inside[..., ~mask] = torch.rand_like(image)[..., ~mask]
    assert torch.allclose(_unit(offline_model, layer, outside, 3, y, x), reference, atol=1e-5)
    assert not torch.allclose(_unit(offline_model, layer, inside, 3, y, x), reference, atol=1e-3)
    crops, kept = field_crops(offline_model, layer, image, [(y, x)], table=table)
    assert crops.shape[-2:] == tuple(receptive_field(offline_model, layer, table=table).size)
    assert int(kept.sum()) == (bottom - top) * (right - left)
    assert torch.equal(crops[0][:, kept[0, 0]].reshape(3, bottom - top, right - left), image[0, :, top:bottom, left:right])


def test_crops_show_padding_as_such():
    model, size = linear_cnn(), 32
    crops, inside = field_crops(model, "2", images(2, size), [(0, 0), (4, 4)])
    field = receptive_field(model, "2", table=layer_table(model, (1, 3, size, size)))
    assert field.size == (9, 9) and crops.shape == (2, 3, 9, 9) and inside.shape == (2, 1, 9, 9)
    assert field.box(0, 0)[:2] == (-4, -4) and 0 <= min(field.box(4, 4)) and max(field.box(4, 4)) <= size
    assert not inside[0].all() and inside[1].all()  # the corner unit hangs over the border; the middle one does not
    with pytest.raises(ValueError, match="outside the layer"):
        field_crops(model, "2", images(2, size), [(0, 0), (8, 0)])
    with pytest.raises(ValueError, match="one \\(row, column\\) per image"):
        field_crops(model, "2", images(3, size), [(0, 0), (1, 1)])


# ----------------------------------------------------------------------------- unit deconvolution


@pytest.mark.parametrize("rule", ["deconvnet", "guided", "gradient"])
def test_unit_deconvolution_is_zero_outside_the_field(rule):
    model, layer, size = small_cnn(), "6", 32
    table = layer_table(model, (1, 3, size, size))
    field = receptive_field(model, layer, table=table)
    positions = torch.tensor([[0, 0], [3, 4], [7, 7]])
    maps = unit_deconvolution(model, images(3, size), layer, 5, positions, rule=rule)
    assert maps.shape == (3, 3, size, size)
    for n, (y, x) in enumerate(positions.tolist()):
        top, left, bottom, right = field.box(y, x, image_size=size)
        mask = torch.ones(size, size, dtype=torch.bool)
        mask[top:bottom, left:right] = False
        assert maps[n][:, mask].abs().max() == 0
    assert count_hooks(model) == 0


def test_unit_deconvolution_on_offline_model_and_deconvnet_ignores_the_image(offline_model):
    from nnvis_helpers.datasets import dataset

    data = dataset("offline", size=96, length=4)
    batch = torch.stack([data[i][0] for i in range(4)])
    position = [(5, 5)]
    table = layer_table(offline_model, (1, 3, 96, 96))
    top, left, bottom, right = receptive_field(offline_model, "blocks.2", table=table).box(5, 5, image_size=96)
    guided = unit_deconvolution(offline_model, batch, "blocks.2", 3, position, rule="guided")
    deconv = unit_deconvolution(offline_model, batch, "blocks.2", 3, position, rule="deconvnet")
    outside = torch.ones(96, 96, dtype=torch.bool)
    outside[top:bottom, left:right] = False
    assert guided[..., outside].abs().max() == 0 and deconv[..., outside].abs().max() == 0
    # Without max pooling there are no switches: the deconvnet's picture is the same for every image.
    assert torch.allclose(deconv[0], deconv[1:], atol=1e-6)
    assert not torch.allclose(guided[0], guided[1], atol=1e-4)


def test_unit_deconvolution_bad_input_changes_nothing():
    model = small_cnn().train()
    with pytest.raises(ValueError, match="rule"):
        unit_deconvolution(model, images(2), "6", 0, [(0, 0)], rule="lrp")
    with pytest.raises(ValueError, match="out of range"):
        unit_deconvolution(model, images(2), "6", 16, [(0, 0)])
    with pytest.raises(ValueError, match="outside the layer"):
        unit_deconvolution(model, images(2), "6", 1, [(0, 99)])
    assert count_hooks(model) == 0 and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


# ----------------------------------------------------------------------------- cards


def test_cards_hold_what_they_say():
    model, data = small_cnn(), images(12, 32)
    cards = channel_cards(model, "6", data, channels=[2, 4], k=3, icons=True, progress=False)
    card = cards[1]
    assert card.channel == 4 and card.crops.shape == card.deconvolutions.shape == (3, 3, *card.crops.shape[-2:])
    assert card.inside.shape == (3, 1, *card.crops.shape[-2:]) and card.icon.shape[0] == 3
    assert card.activations.shape == (12,) and torch.isclose(card.activations.max(), card.scores[0])
    # the crop's inside part is the image's pixels, the rest the checkerboard
    (y, x), image = card.positions[0].tolist(), data[int(card.image_index[0])]
    field = receptive_field(model, "6", table=layer_table(model, (1, 3, 32, 32)))
    top, left, bottom, right = field.box(y, x, image_size=32)
    assert torch.equal(card.crops[0][:, card.inside[0, 0]].reshape(3, bottom - top, right - left), image[:, top:bottom, left:right])
    draw_card(card)
    draw_cards(cards)
    with pytest.raises(TypeError, match="indexable"):
        channel_cards(model, "6", (image for image in data), channels=[0], icons=False, progress=False)
    assert count_hooks(model) == 0


# ----------------------------------------------------------------------------- the explorer


def test_card_explorer_steps_through_channels_and_reuses_the_pass():
    pytest.importorskip("ipywidgets")
    from nnvis_helpers.channels import card_explorer

    model, data = small_cnn(), images(8, 32)
    top = top_examples(model, "6", data, k=3, progress=False)
    explorer = card_explorer(model, data, ["4", "6"], k=3, icons=False, tops={"6": top}, progress=False)
    assert explorer.top("6") is top  # no second pass for a layer already collected
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and "CardExplorer" in bundle["text/plain"]
    assert bundle["text/plain"] == repr(explorer), "print(explorer) shows the same line where the widget cannot run"
    controls, status, picture = explorer.widget.children
    layer, channel, previous, following = controls.children
    first = picture.value
    assert first[:4] == b"\x89PNG" and "channel 0" in status.value
    following.click()
    assert channel.value == 1 and bytes(picture.value) != bytes(first) and ("4", 1) in explorer._cards
    previous.click()
    previous.click()
    assert channel.value == channel.max == 11  # steps around the end of layer 4's 12 channels
    layer.value = "6"
    assert channel.max == 15 and explorer._tops["6"] is top and ("6", 11) in explorer._cards
    assert count_hooks(model) == 0
    with pytest.raises(ValueError, match="tops"):
        card_explorer(model, data, ["4"], tops={"6": top})


def test_vision_transformer_and_densenet():
    """A ViT's patch embedding is a map (it works); its encoder gives tokens (a clear error, nothing changed).
    DenseNet's concatenating blocks work in train mode."""
    from torchvision.models import densenet121
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5).train()
    top = top_examples(vit, "conv_proj", images(5, 32), k=2, progress=False)
    assert top.map_size == (4, 4) and top.max_index.shape == (16, 2)
    with pytest.raises(ValueError, match="feature maps"):
        top_examples(vit, "encoder.layers.encoder_layer_0", images(5, 32), progress=False)
    assert count_hooks(vit) == 0 and all(m.training for m in vit.modules())

    net = densenet121(weights=None).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cards = channel_cards(net, "features.denseblock1", images(4, 64), channels=[0, 200], k=2, icons=False, progress=False)
    assert [card.channel for card in cards] == [0, 200] and cards[1].crops.shape[0] == 2
    assert count_hooks(net) == 0 and all(m.training for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_effective_boxes_follow_the_signal():
    from nnvis_helpers.channels import effective_boxes

    model, size = linear_cnn(), 32
    table = layer_table(model, (1, 3, size, size))
    field = receptive_field(model, "2", table=table)  # 9 x 9, units 4 px apart
    (y, x) = (4, 4)
    cy, cx = (int(v) for v in field.center(y, x))
    point = torch.zeros(1, 3, size, size)
    point[0, :, cy, cx] = 1.0  # all the signal at the unit's centre
    spread = torch.zeros(1, 3, size, size)
    top, left, bottom, right = field.box(y, x, image_size=size)
    spread[0, :, top:bottom, left:right] = 1.0  # spread evenly over the field
    (small,) = effective_boxes(model, "2", point, [(y, x)], table=table).tolist()
    (large,) = effective_boxes(model, "2", spread, [(y, x)], share=1.0, table=table).tolist()
    assert small == [4, 4, 5, 5]  # one pixel, in the middle of the 9 x 9 crop
    assert large == [0, 0, 9, 9]
    with pytest.raises(ValueError, match="share"):
        effective_boxes(model, "2", point, [(y, x)], share=0)


def test_effective_field_of_the_offline_model_is_smaller_than_the_traced_one(offline_model):
    from nnvis_helpers.channels import effective_boxes
    from nnvis_helpers.images import load_image

    image = load_image("chelsea", size=160)
    table = layer_table(offline_model, (1, 3, 160, 160))
    maps = unit_deconvolution(offline_model, image, "blocks.3", 5, [(5, 5)], rule="guided")
    (box,) = effective_boxes(offline_model, "blocks.3", maps, [(5, 5)], table=table).tolist()
    side = max(box[2] - box[0], box[3] - box[1])
    assert 0 < side < receptive_field(offline_model, "blocks.3", table=table).size[0] / 2, box
