"""Atlas cells labelled by attribution (Carter et al. 2019): the Jacobian-vector product equals per-class gradients,
gradient x activation is complete for a linear rest of the network, the model is left as it was, the cell helpers."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from conftest import assert_untouched, snapshot
from nnvis_helpers import count_hooks
from nnvis_helpers.atlas import grid_cells
from nnvis_helpers.atlas.attribution import (
    attribution_focused_vectors,
    attribution_labels,
    cell_attribution,
    label_agreement,
    vector_attributions,
)
from nnvis_helpers.datasets import ActivationSet, collect_activations

SIZE = 16
CLASSES = 5


class AttributionNet(nn.Module):
    """Conv, BatchNorm, in-place ReLU / ReLU6, SiLU, a Linear head with a hidden layer: a non-linear rest of the network."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
            nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU6(inplace=True),
            nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, CLASSES))

    def forward(self, x):
        return self.head(self.features(x))


class LinearRestNet(nn.Module):
    """After ``features.2`` everything is linear: global average pool, then a Linear layer."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, CLASSES))

    def forward(self, x):
        return self.head(self.features(x))


def _trained_statistics(model: nn.Module) -> nn.Module:
    """Real BatchNorm running statistics (not the identity of a fresh layer), then eval mode."""
    with torch.no_grad():
        for _ in range(3):
            model.train()(torch.rand(8, 3, SIZE, SIZE) * 0.8 + 0.1)
    return model.eval()


@pytest.fixture
def net() -> AttributionNet:
    torch.manual_seed(0)
    model = _trained_statistics(AttributionNet())
    with torch.no_grad():  # larger weights in the head: attributions of order 0.01-1 rather than 1e-5
        model.head[2].weight.mul_(4)
        model.head[4].weight.mul_(8)
    return model


def _images(count: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.rand(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _dataset(images: torch.Tensor) -> TensorDataset:
    return TensorDataset(images, torch.zeros(len(images), dtype=torch.long))


def _split(model: AttributionNet, layer: str):
    """The network cut at ``layer`` by hand: (before, after), with no hook involved."""
    if layer == "features.4":
        return model.features[:5], lambda maps: model.head(model.features[5:](maps.clone()))
    if layer == "head.2":
        return (lambda images: model.head[:3](model.features(images))), model.head[3:]
    raise AssertionError(layer)


def _explicit_attributions(model: AttributionNet, activations: ActivationSet, images: torch.Tensor) -> torch.Tensor:
    """One backward pass per vector and class: (d logit_c / d z) . (h at its place) -- the definition, written plainly."""
    before, after = _split(model, activations.layer)
    result = torch.zeros(len(activations), CLASSES)
    for row in range(len(activations)):
        image = int(activations.image_index[row])
        row_position, column = activations.positions[row].tolist()
        maps = before(images[image : image + 1]).detach().requires_grad_(True)
        logits = after(maps)
        for target in range(CLASSES):
            (gradient,) = torch.autograd.grad(logits[0, target], maps, retain_graph=True)
            if maps.dim() == 2:
                result[row, target] = (gradient[0] * maps[0]).sum()
            elif row_position < 0:  # a spatial mean h: the mean gradient over the positions, dotted with h
                result[row, target] = (gradient[0].mean(dim=(1, 2)) * maps[0].mean(dim=(1, 2))).sum()
            else:
                result[row, target] = (gradient[0, :, row_position, column] * maps[0, :, row_position, column]).sum()
    return result.detach()


# ------------------------------------------------------------------------------ the attribution itself

@pytest.mark.parametrize("layer, positions", [("features.4", 1), ("features.4", 3), ("features.4", "mean"), ("head.2", 1)])
def test_jvp_attribution_equals_one_backward_per_class(net, layer, positions):
    images = _images()
    data = _dataset(images)
    activations = collect_activations(net, layer, data, positions_per_image=positions, progress=False)
    attributions = vector_attributions(net, activations, data, batch_size=4, progress=False)
    expected = _explicit_attributions(net, activations, images)
    assert attributions.shape == (len(activations), CLASSES) and attributions.dtype == torch.float32
    scale = float(expected.abs().max())
    assert scale > 1e-4, "the reference is all zero: the test would prove nothing"
    assert (expected[:, 0] - expected[:, 1]).abs().max() > 1e-3 * scale, "the classes should differ"
    assert torch.allclose(attributions, expected, rtol=1e-4, atol=1e-5 * scale), (attributions - expected).abs().max()


def test_attribution_does_not_depend_on_batch_size_data_form_or_subset(net):
    images = _images(7)
    activations = collect_activations(net, "features.4", _dataset(images), positions_per_image=3, progress=False)
    whole = vector_attributions(net, activations, _dataset(images), batch_size=32, progress=False)
    # a batch of images mixes nothing into another image's attribution (eval mode), whatever the batch size
    assert torch.allclose(whole, vector_attributions(net, activations, images, batch_size=2, progress=False), atol=1e-7)
    only_images = [image for image in images]  # items without labels, one at a time
    assert torch.allclose(whole, vector_attributions(net, activations, only_images, batch_size=3, progress=False), atol=1e-7)
    # a subset keeps its own rows, in its own order (not by image), and images without a kept vector are skipped
    keep = torch.tensor([20, 9, 2, 7, 1, 10])
    part = vector_attributions(net, activations.subset(keep), _dataset(images), batch_size=3, progress=False)
    assert torch.allclose(part, whole[keep], atol=1e-7)
    columns = vector_attributions(net, activations, images, classes=[3, 1], progress=False)
    assert torch.allclose(columns, whole[:, [3, 1]], atol=1e-7)


def test_gradient_times_activation_is_complete_when_the_rest_is_linear():
    torch.manual_seed(0)
    model = _trained_statistics(LinearRestNet())
    images = _images(4, seed=2)
    data = _dataset(images)
    logits = model(images).detach()
    bias = model.head[2].bias.detach()
    everywhere = collect_activations(model, "features.2", data, positions_per_image=SIZE * SIZE, progress=False)
    attributions = vector_attributions(model, everywhere, data, batch_size=3, progress=False)
    per_image = torch.zeros(len(images), CLASSES).index_add_(0, everywhere.image_index, attributions)
    # logit = W . mean_p z_p + b, so the products of all positions add up to the logit without its bias
    assert torch.allclose(per_image, logits - bias, atol=1e-5), (per_image - (logits - bias)).abs().max()
    assert (logits - bias).abs().max() > 0.01, "the logits without their bias are all zero: the test would prove nothing"
    # the spatial mean is attributed on the scale of one position: the mean of the positions' attributions
    means = collect_activations(model, "features.2", data, positions_per_image="mean", progress=False)
    of_means = vector_attributions(model, means, data, progress=False)
    assert torch.allclose(of_means * SIZE * SIZE, logits - bias, atol=1e-5), (of_means * SIZE * SIZE - (logits - bias)).abs().max()


# ------------------------------------------------------------------------------ bad input and hygiene

def test_other_data_is_refused_and_the_model_is_left_as_it_was(net):
    images = _images()
    activations = collect_activations(net, "features.4", _dataset(images), positions_per_image=2, progress=False)
    net.train()
    next(net.parameters()).grad = torch.ones_like(next(net.parameters()))
    before = snapshot(net)
    buffers = [buffer.clone() for buffer in net.buffers()]
    attributions = vector_attributions(net, activations, _dataset(images), progress=False)
    assert attributions.abs().max() > 0
    with pytest.raises(ValueError, match="not the data these activations were collected from"):
        vector_attributions(net, activations, _dataset(_images(seed=5)), progress=False)
    with pytest.raises(ValueError, match="not the data these activations were collected from"):
        vector_attributions(net, activations, _dataset(images.flip(0)), batch_size=2, progress=False)
    with pytest.raises(ValueError, match="images of \\(20, 20\\) pixels"):
        vector_attributions(net, activations, torch.rand(6, 3, 20, 20), progress=False)

    def breaks_in_the_middle():
        yield images[:2]
        raise RuntimeError("the disk went away")

    with pytest.raises(RuntimeError, match="the disk went away"):
        vector_attributions(net, activations, breaks_in_the_middle(), batch_size=2, progress=False)
    assert net.training and count_hooks(net) == before["hooks"]
    assert_untouched(net, before)
    assert all(torch.equal(a, b) for a, b in zip(buffers, net.buffers())), "BatchNorm statistics changed"


def test_bad_input_gets_a_clear_error(net):
    images = _images()
    activations = collect_activations(net, "features.4", _dataset(images), progress=False)
    before = snapshot(net)
    with pytest.raises(TypeError, match="ActivationSet"):
        vector_attributions(net, activations.vectors, images, progress=False)
    with pytest.raises(ValueError, match="holds 4 images but the activations were collected from 6"):
        vector_attributions(net, activations, images[:4], progress=False)
    with pytest.raises(ValueError, match="gave 4 images but the activations were collected from 6"):
        vector_attributions(net, activations, iter([images[:4]]), progress=False)
    with pytest.raises(ValueError, match="class 7 does not exist: this model has 5 classes"):
        vector_attributions(net, activations, images, classes=[1, 7], progress=False)
    with pytest.raises(ValueError, match="class indices"):
        vector_attributions(net, activations, images, classes=[0.5], progress=False)
    with pytest.raises(ValueError, match="layer"):
        vector_attributions(net, ActivationSet("features.99", activations.vectors, activations.image_index,
                                               activations.positions, None, (8, 8), (SIZE, SIZE), 6), images, progress=False)
    broken = ActivationSet("features.4", activations.vectors, activations.image_index + 1, activations.positions,
                           None, (8, 8), (SIZE, SIZE), 6)
    with pytest.raises(ValueError, match="image_index runs from 1 to 6"):
        vector_attributions(net, broken, images, progress=False)
    assert_untouched(net, before)


# ------------------------------------------------------------------------------ cells

def _hand_made_grid():
    # 2 x 2 grid, at least 2 vectors per drawn cell: cells (0, 0) with vectors 0, 1 and (1, 1) with 3, 4;
    # cell (0, 1) holds only vector 2 and is not drawn
    coords = torch.tensor([[0.1, 0.1], [0.2, 0.4], [0.9, 0.1], [1.0, 1.0], [0.74, 0.76]])
    return grid_cells(coords, torch.rand(5, 3), grid_size=2, min_count=2)


def test_cell_attribution_and_labels_on_a_hand_made_grid():
    grid = _hand_made_grid()
    assert grid.cells.tolist() == [[0, 0], [1, 1]]
    attributions = torch.tensor([
        [1.0, 3.0, 0.0],
        [3.0, 0.0, 1.0],   # cell (0, 0): mean (2, 1.5, 0.5)
        [9.0, 9.0, 9.0],   # undrawn
        [0.0, 1.0, 4.0],
        [0.0, 3.0, 0.0],   # cell (1, 1): mean (0, 2, 2), a tie: argmax takes the first, 1
    ])
    per_cell = cell_attribution(grid, attributions)
    assert torch.allclose(per_cell, torch.tensor([[2.0, 1.5, 0.5], [0.0, 2.0, 2.0]]))
    assert attribution_labels(grid, attributions).tolist() == [0, 1]
    attributions[4, 2] = 1.0  # now class 2 leads cell (1, 1): mean (0, 2, 2.5)
    assert attribution_labels(grid, attributions).tolist() == [0, 2]
    assert attribution_labels(grid, attributions, top=2).tolist() == [[0, 1], [2, 1]]
    with pytest.raises(ValueError, match="one row per vector"):
        cell_attribution(grid, attributions[:4])
    with pytest.raises(ValueError, match="NaN"):
        cell_attribution(grid, torch.full((5, 3), float("nan")))
    with pytest.raises(ValueError, match="top must be"):
        attribution_labels(grid, attributions, top=4)


def test_label_agreement_counts_cells_whose_label_one_of_their_images_predicts():
    grid = _hand_made_grid()
    predicted = torch.tensor([4, 7, 0, 2, 2])  # cell (0, 0) predicts {4, 7}, cell (1, 1) {2}; vector 2 is undrawn
    assert label_agreement(grid, torch.tensor([7, 2]), predicted) == 1.0
    assert label_agreement(grid, torch.tensor([0, 2]), predicted) == 0.5  # 0 is only the undrawn vector's class
    assert label_agreement(grid, torch.tensor([1, 3]), predicted) == 0.0
    assert label_agreement(grid, torch.tensor([[1, 4], [3, 5]]), predicted) == 0.5  # any of the top labels
    activations = ActivationSet("x", torch.rand(5, 3), torch.arange(5), torch.full((5, 2), -1), predicted, (1, 1), (8, 8), 5)
    assert label_agreement(grid, torch.tensor([7, 2]), activations) == 1.0
    with pytest.raises(ValueError, match="one class index per vector"):
        label_agreement(grid, torch.tensor([7, 2]), predicted[:4])
    with pytest.raises(ValueError, match="2 drawn cells"):
        label_agreement(grid, torch.tensor([7, 2, 1]), predicted)


def test_attribution_focused_vectors_keep_the_top_of_each_class():
    attributions = torch.zeros(12, 3)
    attributions[:, 0] = torch.arange(12.0)          # class 0 likes the last vectors most
    attributions[:, 2] = -torch.arange(12.0) * 2     # class 2 likes the first ones
    kept, lean = attribution_focused_vectors(attributions, (0, 2), keep=5)
    assert kept.tolist() == [0, 1, 2, 3, 4, 7, 8, 9, 10, 11]
    assert torch.equal(lean, attributions[kept, 0] - attributions[kept, 2])
    assert (lean[:5] < lean[5:].min()).all()  # the first five lean to class 2 and the last five to class 0
    overlap, _ = attribution_focused_vectors(attributions, (0, 1), keep=12)
    assert overlap.tolist() == list(range(12))  # a union: every vector once
    assert len(attribution_focused_vectors(torch.rand(100, 3), (0, 1))[0]) >= 10  # default: a tenth per class
    with pytest.raises(ValueError, match="class 3 does not exist"):
        attribution_focused_vectors(attributions, (0, 3))
    with pytest.raises(ValueError, match="keep must be"):
        attribution_focused_vectors(attributions, (0, 1), keep=2)
    with pytest.raises(ValueError, match="pair"):
        attribution_focused_vectors(attributions, 0)


# ------------------------------------------------------------------------------ a real network

def test_the_predicted_class_gets_more_attribution_than_another_on_the_offline_model(offline_model):
    from nnvis_helpers.datasets import dataset

    photos = dataset("offline", size=64, length=8, verbose=False)
    activations = collect_activations(offline_model, "blocks.4", photos, positions_per_image=2, progress=False)
    before = snapshot(offline_model)
    attributions = vector_attributions(offline_model, activations, photos, progress=False)
    assert_untouched(offline_model, before)
    assert attributions.shape == (16, 1000)
    predicted = activations.predicted_class
    other = (predicted + torch.randint(1, 1000, predicted.shape, generator=torch.Generator().manual_seed(0))) % 1000
    rows = torch.arange(len(predicted))
    top, random = attributions[rows, predicted].mean(), attributions[rows, other].mean()
    print(f"mean attribution to the top-1 class {top:.3f}, to a random other class {random:.3f}")
    assert top > random
