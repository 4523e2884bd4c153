"""Is a channel about one thing? unit_vectors and example_groups (nnvis_helpers.channels.facets).

unit_vectors must read the same numbers as a plain forward pass with capture_activations (a small
CNN, resnet18 without weights, the offline model). example_groups gets a hand-made network whose
channel 0 is relu(red) + relu(blue): its top examples truly come in two kinds (red squares and
blue squares on grey), and the split must find exactly those two, with a high score, while the
channels that see one colour only score low.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from nnvis_helpers.channels import ExampleGroups, example_groups, top_examples, unit_vectors
from nnvis_helpers.layers import LayerNotFoundError, capture_activations, count_hooks

from conftest import assert_untouched, snapshot


def small_cnn(seed: int = 0) -> nn.Module:
    """A CIFAR-style net with BatchNorm (train mode would change its statistics), strides and in-place ReLUs."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(12, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()


def random_images(count: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def reference_vectors(model: nn.Module, layer: str, images: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The brute-force answer: the whole model run in eval mode, the layer's map read at each position."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), capture_activations(model, layer) as acts:
            model(images)
    finally:
        model.train(was_training)
    maps = acts[layer].float()
    return maps[torch.arange(len(images)), :, positions[:, 0], positions[:, 1]]


def random_positions(count: int, map_size: tuple[int, int], seed: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, map_size[0], (count,), generator=generator)
    cols = torch.randint(0, map_size[1], (count,), generator=generator)
    return torch.stack([rows, cols], 1)


# ----------------------------------------------------------------------------- unit_vectors


@pytest.mark.parametrize("network, layer, size", [
    ("small_cnn", "3", 32),            # a plain convolution, its output then changed by an in-place ReLU
    ("small_cnn", "6", 32),            # BatchNorm: eval statistics must be used, also from train mode
    ("resnet18", "layer2.0", 64),      # a residual block (weights=None): not an architecture the course uses
])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_unit_vectors_equal_the_captured_map_at_those_positions(network, layer, size, mode):
    if network == "small_cnn":
        model = small_cnn()
    else:
        torch.manual_seed(0)
        model = resnet18(weights=None).eval()
    model.train(mode == "train")
    images = random_images(7, size)
    with torch.no_grad(), capture_activations(model.eval(), layer) as acts:
        model(images[:1])
    model.train(mode == "train")
    map_size = tuple(acts[layer].shape[2:])
    positions = random_positions(len(images), map_size)
    expected = reference_vectors(model, layer, images, positions)
    before = snapshot(model)
    buffers = [buffer.clone() for buffer in model.buffers()]

    # batch_size=3: three batches of 3, 3 and 1 images, each with its own positions
    vectors = unit_vectors(model, layer, images, positions.tolist(), batch_size=3)

    assert vectors.shape == (len(images), acts[layer].shape[1]) and vectors.device.type == "cpu"
    assert torch.allclose(vectors, expected, atol=1e-5), (vectors - expected).abs().max()
    # each row is its own image's vector at its own position, not a neighbour's
    shifted = reference_vectors(model, layer, images, positions.roll(1, 0))
    assert not torch.allclose(vectors, shifted, atol=1e-3)
    assert count_hooks(model) == 0 and model.training == (mode == "train")
    assert_untouched(model, before)
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers())), "BatchNorm statistics changed"


def test_unit_vectors_on_the_offline_model(offline_model):
    from nnvis_helpers.datasets import dataset

    data = dataset("offline", size=96, length=5)
    images = torch.stack([data[i][0] for i in range(len(data))])
    positions = torch.tensor([[0, 0], [5, 5], [2, 3], [3, 2], [1, 4]])  # blocks.3 of a 96 px image is 6x6
    expected = reference_vectors(offline_model, "blocks.3", images, positions)
    before = snapshot(offline_model)
    vectors = unit_vectors(offline_model, "blocks.3", images, positions, batch_size=2)
    assert vectors.shape == (5, expected.shape[1]) and expected.shape[1] > 16
    assert torch.allclose(vectors, expected, atol=1e-4), (vectors - expected).abs().max()
    assert_untouched(offline_model, before)


def test_unit_vectors_one_position_for_every_image_of_one_batch():
    model = small_cnn()
    images = random_images(4, 32)
    vectors = unit_vectors(model, "3", images, [(2, 5)], batch_size=8)
    expected = reference_vectors(model, "3", images, torch.tensor([[2, 5]] * 4))
    assert torch.allclose(vectors, expected, atol=1e-5)


def test_unit_vectors_one_position_for_every_image_over_several_batches():
    model = small_cnn()
    images = random_images(5, 32)
    vectors = unit_vectors(model, "3", images, [(2, 5)], batch_size=2)
    expected = reference_vectors(model, "3", images, torch.tensor([[2, 5]] * 5))
    assert torch.allclose(vectors, expected, atol=1e-5)


def test_unit_vectors_refuses_bad_input():
    model = small_cnn()
    images = random_images(4, 32)
    with pytest.raises(LayerNotFoundError, match="no layer 'nope'"):
        unit_vectors(model, "nope", images, [(0, 0)] * 4)
    with pytest.raises(ValueError, match=r"outside the layer's 16x16 map"):
        unit_vectors(model, "3", images, [(0, 16)] * 4)
    with pytest.raises(ValueError, match="4 images but 3 positions"):
        unit_vectors(model, "3", images, [(0, 0)] * 3)
    assert count_hooks(model) == 0


def test_unit_vectors_refuses_too_few_positions_whatever_the_batch_size():
    model = small_cnn()
    with pytest.raises(ValueError, match="4 images but 3 positions"):
        unit_vectors(model, "3", random_images(4, 32), [(0, 0)] * 3, batch_size=2)


# ----------------------------------------------------------------------------- example_groups


class RedOrBlue(nn.Module):
    """A hand-made two-layer net of 1x1 convolutions on (R, G, B).

    ``colour`` = ReLU(R - G), ReLU(B - G): "red" and "blue". ``detect`` (then ReLU, named ``out``):
    channel 0 = red + blue (one channel, two kinds of input), channel 1 = 3 red, channel 2 = 3 blue.
    At a red unit the layer's vector is (r, 3r, 0), at a blue one (b, 0, 3b): cosine 0.1 apart.
    """

    def __init__(self):
        super().__init__()
        self.colour = nn.Conv2d(3, 2, 1)
        self.detect = nn.Conv2d(2, 3, 1)
        with torch.no_grad():
            self.colour.weight.copy_(torch.tensor([[1.0, -1.0, 0.0], [0.0, -1.0, 1.0]])[:, :, None, None])
            self.colour.bias.zero_()
            self.detect.weight.copy_(torch.tensor([[1.0, 1.0], [3.0, 0.0], [0.0, 3.0]])[:, :, None, None])
            self.detect.bias.zero_()
        self.out = nn.ReLU()
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        maps = self.out(self.detect(torch.relu(self.colour(x))))
        return self.head(maps.amax((2, 3)))


def red_and_blue_squares(per_colour: int = 8, size: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey images with mild noise and one red or one blue square each; the colour of image i is ``blue[i]``.

    The red and the blue images take turns in strength, so the top examples of "red + blue" hold both kinds.
    """
    generator = torch.Generator().manual_seed(seed)
    images, blue = [], []
    for i in range(per_colour):
        for is_blue in (False, True):
            image = (0.5 + 0.03 * torch.randn(3, size, size, generator=generator)).clamp(0, 1)
            strength = 0.5 + 0.04 * i + (0.02 if is_blue else 0.0)
            colour = torch.tensor([0.45 - strength / 2, 0.45 - strength / 2, 0.45 - strength / 2])
            colour[2 if is_blue else 0] = 0.45 + strength / 2
            top, left = torch.randint(0, size - 8, (2,), generator=generator).tolist()
            image[:, top : top + 8, left : left + 8] = colour.clamp(0, 1)[:, None, None]
            images.append(image)
            blue.append(is_blue)
    return torch.stack(images), torch.tensor(blue)


@pytest.fixture(scope="module")
def colours():
    torch.manual_seed(0)
    model = RedOrBlue().eval()
    images, blue = red_and_blue_squares()
    top = top_examples(model, "out", images, channels=[0, 1, 2], k=8, progress=False)
    return model, images, blue, top


def test_the_hand_made_case_is_what_it_says(colours):
    model, images, blue, top = colours
    kinds = blue[top.max_index]  # (3 channels, 8 examples): True for a blue image
    assert 2 <= int(kinds[0].sum()) <= 6, "channel 0's top examples must hold both red and blue images"
    assert not kinds[1].any() and kinds[2].all(), "channel 1 sees only red, channel 2 only blue"


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_example_groups_separates_red_from_blue(colours, mode):
    model, images, blue, top = colours
    model.train(mode == "train")
    before = snapshot(model)
    groups = example_groups(model, top, images, count=8)
    assert model.training == (mode == "train") and count_hooks(model) == 0
    assert_untouched(model, before)
    model.eval()

    assert isinstance(groups, ExampleGroups) and groups.layer == "out"
    assert groups.channels.tolist() == [0, 1, 2] and groups.labels.shape == (3, 8)
    kinds = blue[top.max_index[0, :8]]
    first, second = groups.groups(0)
    assert len(first) + len(second) == 8 and len(first) > 0 and len(second) > 0
    # each group holds one colour only, and the two groups hold different colours
    assert kinds[first].unique().numel() == 1 and kinds[second].unique().numel() == 1, groups.labels[0]
    assert bool(kinds[first][0]) != bool(kinds[second][0])
    score = dict(groups.ranking())
    assert score[0] > 0.7, score  # cosine 1 within, about 0.1 between
    assert score[1] < 0.2 and score[2] < 0.2, score  # one colour: one blob
    assert groups.ranking()[0][0] == 0


def test_example_groups_on_a_small_cnn_is_deterministic_and_leaves_no_trace():
    model = small_cnn().train()
    images = random_images(24, 32)
    top = top_examples(model, "6", images, channels=[0, 3, 5], k=6, progress=False)
    before = snapshot(model)
    first = example_groups(model, top, images, count=6, seed=0, batch_size=5)
    assert_untouched(model, before)
    assert model.training and count_hooks(model) == 0
    again = example_groups(model, top, images, count=6, seed=0, batch_size=16)
    assert torch.equal(first.labels, again.labels) and torch.allclose(first.score, again.score)
    assert first.labels.shape == (3, 6) and ((first.score >= 0) & (first.score <= 2)).all()


def test_example_groups_needs_four_examples(colours):
    model, images, _, top = colours
    with pytest.raises(ValueError, match="at least 4 top examples"):
        example_groups(model, top, images, count=3)
    few = top_examples(model, "out", images, channels=[0], k=3, progress=False)
    with pytest.raises(ValueError, match=r"count=3.*k >= 4"):
        example_groups(model, few, images)  # count=12 asked, but only 3 examples were kept
    assert count_hooks(model) == 0
