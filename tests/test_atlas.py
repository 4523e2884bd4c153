"""The activation atlas: grid, layout (and its fallbacks), batched icons, the rest of the network, faithfulness."""
from __future__ import annotations

import sys

import numpy as np

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from conftest import assert_untouched, snapshot
from nnvis_helpers.atlas import (
    Atlas,
    activation_atlas,
    activations_at,
    atlas_explorer,
    atlas_icon_mask,
    atlas_image,
    class_focused_vectors,
    draw_atlas,
    draw_grid,
    draw_layout,
    draw_path,
    grid_cells,
    icon_faithfulness,
    layer_to_logits,
    layout,
    project,
    render_icons,
    show_cell,
    whitening_matrix,
)
from nnvis_helpers.datasets import ActivationSet

SIZE = 32


def _clusters(count_per_cluster=20, channels=6, seed=0):
    """Three well separated clusters of non-negative vectors, as post-ReLU activations are."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.eye(3, channels) * 5 + 1
    vectors = torch.cat([centre + 0.3 * torch.rand(count_per_cluster, channels, generator=generator) for centre in centres])
    return vectors, torch.arange(3).repeat_interleave(count_per_cluster)


# ------------------------------------------------------------------------------ grid

def test_grid_means_and_counts_match_a_hand_made_example():
    coords = torch.tensor([[0.1, 0.1], [0.2, 0.4], [0.9, 0.1], [1.0, 1.0], [0.74, 0.76], [0.0, 0.99]])
    vectors = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0], [2.0, 4.0], [4.0, 0.0], [7.0, 7.0]])
    grid = grid_cells(coords, vectors, grid_size=2, min_count=1)
    # rows follow y (row 0 = small y), columns follow x; x = 1 belongs to the last column
    assert grid.counts.tolist() == [[2, 1], [1, 2]]
    assert torch.allclose(grid.means[0, 0], torch.tensor([2.0, 1.0]))  # mean of the first two
    assert torch.allclose(grid.means[0, 1], torch.tensor([5.0, 5.0]))
    assert torch.allclose(grid.means[1, 1], torch.tensor([3.0, 2.0]))  # (2, 4) and (4, 0)
    assert torch.allclose(grid.means[1, 0], torch.tensor([7.0, 7.0]))
    assert grid.cell_of.tolist() == [[0, 0], [0, 0], [0, 1], [1, 1], [1, 1], [1, 0]]
    assert grid.members(1, 1).tolist() == [3, 4]
    strict = grid_cells(coords, vectors, grid_size=2, min_count=2)
    assert strict.cells.tolist() == [[0, 0], [1, 1]]
    assert torch.allclose(strict.directions, torch.tensor([[2.0, 1.0], [3.0, 2.0]]))


def test_grid_refuses_bad_input():
    with pytest.raises(ValueError, match="one 2-D position per vector"):
        grid_cells(torch.rand(4, 2), torch.rand(5, 3))
    with pytest.raises(ValueError, match="unit square"):
        grid_cells(torch.rand(4, 2) + 1, torch.rand(4, 3))
    with pytest.raises(ValueError, match="grid_size must be an int >= 1"):
        grid_cells(torch.rand(4, 2), torch.rand(4, 3), grid_size=0)
    with pytest.raises(ValueError, match="NaN"):
        grid_cells(torch.rand(2, 2), torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))


# ------------------------------------------------------------------------------ layout

@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_layout_separates_clusters_and_is_seeded(method):
    vectors, cluster = _clusters()
    first = layout(vectors, method=method, seed=0, verbose=False)
    assert first.method == method
    assert first.coords.shape == (60, 2) and first.coords.min() >= 0 and first.coords.max() <= 1
    again = layout(vectors, method=method, seed=0, verbose=False)
    assert torch.allclose(first.coords, again.coords), "same seed, same map"
    # each point's nearest neighbour on the map belongs to its own cluster
    distances = torch.cdist(first.coords, first.coords) + torch.eye(60) * 10
    assert (cluster[distances.argmin(1)] == cluster).float().mean() > 0.95
    # new vectors land next to their cluster
    placed = first.transform(vectors[[0, 25, 50]] + 0.01)
    centres = torch.stack([first.coords[cluster == c].mean(0) for c in range(3)])
    assert (torch.cdist(placed, centres).argmin(1) == torch.tensor([0, 1, 2])).all()


def test_layout_falls_back_to_tsne_without_umap(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap now raises ImportError
    vectors, _ = _clusters()
    result = layout(vectors, method="auto", seed=0)
    assert result.method == "tsne"
    assert "umap-learn is not installed, using scikit-learn's t-SNE" in capsys.readouterr().out
    with pytest.raises(ImportError, match="pip install umap-learn"):
        layout(vectors, method="umap")


def test_layout_refuses_bad_input():
    with pytest.raises(ValueError, match="unknown layout method 'mds'"):
        layout(torch.rand(10, 3), method="mds")
    with pytest.raises(ValueError, match="at least 5 vectors"):
        layout(torch.rand(3, 3), method="pca")
    with pytest.raises(ValueError, match=r"matrix \(M, C\)"):
        layout(torch.rand(10), method="pca")
    fitted = layout(torch.rand(10, 3), method="pca", verbose=False)
    with pytest.raises(ValueError, match="same layer"):
        fitted.transform(torch.rand(2, 4))


def test_whitening_matrix_inverts_the_correlation():
    vectors = torch.randn(500, 4) @ torch.tensor([[2.0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0.5, 0], [0, 0, 1, 3]])
    correlation = vectors.T @ vectors / 500
    assert torch.allclose(whitening_matrix(vectors) @ correlation, torch.eye(4), atol=1e-3)


# ------------------------------------------------------------------------------ the rest of the network

def test_layer_to_logits_runs_the_rest_of_the_network_on_the_tiled_vector(tiny_cnn):
    vectors = torch.rand(3, 16) - 0.3
    logits = layer_to_logits(tiny_cnn, "features.3", vectors, image_size=SIZE)
    # by hand: after features.3 come ReLU, AdaptiveAvgPool2d(4), flatten, Linear; the map is 16x16 at 32 px
    tiled = vectors[:, :, None, None].expand(3, 16, 16, 16)
    expected = tiny_cnn.classifier(tiny_cnn.features[4:](tiled.clone()).flatten(1))
    assert torch.allclose(logits, expected, atol=1e-5)


class BatchNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(8, 5))

    def forward(self, x):
        return self.head(self.features(x))


def _everything(model):
    return [t.detach().clone() for t in list(model.parameters()) + list(model.buffers())]


@pytest.mark.parametrize("train", [False, True])
def test_atlas_helpers_leave_any_model_as_it_was(train):
    torch.manual_seed(0)
    model = BatchNormNet()
    with torch.no_grad():
        for _ in range(3):
            model.train()(torch.rand(4, 3, SIZE, SIZE))  # real BatchNorm statistics
    model.train(train)
    before, values = snapshot(model), _everything(model)
    images = torch.rand(2, 3, SIZE, SIZE)
    first = layer_to_logits(model, "features.5", torch.rand(2, 8), image_size=SIZE)
    second = layer_to_logits(model, "features.5", torch.rand(2, 8), image_size=SIZE)
    assert first.shape == (2, 5) and not torch.allclose(first, second)
    assert torch.equal(activations_at(model, "features.5", images), activations_at(model, "features.5", images)), \
        "eval mode: no Dropout, no batch statistics"
    render_icons(model, "features.5", torch.rand(2, 8), icon_size=SIZE, steps=2, progress=False)
    with pytest.raises(ValueError, match="8 channels"):
        layer_to_logits(model, "features.5", torch.rand(2, 7), image_size=SIZE)
    assert_untouched(model, before)
    assert all(torch.equal(a, b) for a, b in zip(values, _everything(model))), "a buffer or weight changed"


# ------------------------------------------------------------------------------ icons and faithfulness

def test_batched_icons_cost_less_per_icon_than_one_at_a_time_and_move_towards_their_direction(tiny_cnn):
    directions = torch.rand(4, 16)
    icons = render_icons(tiny_cnn, "features.3", directions, icon_size=SIZE, steps=12, cosine_power=1.0,
                         progress=False)
    assert icons.shape == (4, 3, SIZE, SIZE) and icons.min() >= 0 and icons.max() <= 1
    # each icon's activation points closer to its own direction than a grey image's does
    own = torch.nn.functional.cosine_similarity(activations_at(tiny_cnn, "features.3", icons), directions)
    grey = torch.nn.functional.cosine_similarity(
        activations_at(tiny_cnn, "features.3", torch.full((4, 3, SIZE, SIZE), 0.5)), directions)
    assert (own > grey).all(), (own, grey)
    one_by_one = render_icons(tiny_cnn, "features.3", directions, icon_size=SIZE, steps=12, batch_size=1,
                              progress=False)
    assert one_by_one.shape == icons.shape


def _atlas_from_images(model, layer, images):
    """An atlas whose cell means are exactly the centre activations of ``images``, one per cell."""
    vectors = activations_at(model, layer, images)
    count = len(vectors)
    coords = torch.stack([(torch.arange(count) + 0.5) / count, torch.full((count,), 0.5)], 1)
    fitted = layout(vectors, method="pca", verbose=False)
    grid = grid_cells(coords, vectors, grid_size=count, min_count=1)
    return Atlas(layer=layer, layout=fitted, grid=grid, icons=images, image_size=SIZE)


def test_icon_faithfulness_finds_own_cells_and_misplaced_icons(tiny_cnn):
    torch.manual_seed(3)
    images = torch.rand(6, 3, SIZE, SIZE)
    images[:, :, :, : SIZE // 2] *= torch.rand(6, 3, 1, 1)  # make the six activations clearly different
    atlas = _atlas_from_images(tiny_cnn, "features.3", images)
    check = icon_faithfulness(tiny_cnn, atlas)
    assert check.own_rate == 1.0 and check.neighbour_rate == 1.0
    assert check.best_cell.tolist() == atlas.cells.tolist()
    atlas.icons = images.flip(0)  # icon k now shows image 5 - k: far from its cell for most k
    swapped = icon_faithfulness(tiny_cnn, atlas)
    assert swapped.own_rate < 0.5
    assert swapped.neighbour_rate < 1.0


def test_project_places_training_vectors_where_the_layout_put_them(tiny_cnn):
    images = torch.rand(8, 3, SIZE, SIZE)
    atlas = _atlas_from_images(tiny_cnn, "features.3", images)
    assert torch.allclose(project(atlas, tiny_cnn, images), atlas.layout.coords, atol=1e-5)
    on_layout = project(atlas.layout, tiny_cnn, images, layer="features.3")
    assert torch.allclose(on_layout, atlas.layout.coords, atol=1e-5)
    with pytest.raises(TypeError, match="needs the layer"):
        project(atlas.layout, tiny_cnn, images)
    with pytest.raises(TypeError, match="Atlas or a Layout"):
        project(images, tiny_cnn, images)


def test_class_focused_vectors_keep_the_top_of_each_class(tiny_cnn):
    vectors = torch.rand(40, 16)
    activations = ActivationSet(layer="features.3", vectors=vectors, image_index=torch.arange(40),
                                positions=torch.zeros(40, 2, dtype=torch.long), predictions=None,
                                map_size=(16, 16), image_size=(SIZE, SIZE), num_images=40, labels=None)
    kept, lean = class_focused_vectors(tiny_cnn, activations, (1, 2), keep=5)
    logits = layer_to_logits(tiny_cnn, "features.3", vectors, image_size=SIZE)
    expected = set(logits[:, 1].topk(5).indices.tolist()) | set(logits[:, 2].topk(5).indices.tolist())
    assert set(kept.tolist()) == expected
    assert torch.allclose(lean, logits[kept, 1] - logits[kept, 2], atol=1e-5)
    with pytest.raises(ValueError, match="class 10 does not exist"):
        class_focused_vectors(tiny_cnn, activations, (1, 10))


# ------------------------------------------------------------------------------ pictures

def test_atlas_image_puts_each_icon_in_its_cell(tiny_cnn):
    images = torch.rand(5, 3, SIZE, SIZE)
    atlas = _atlas_from_images(tiny_cnn, "features.3", images)
    canvas = atlas_image(atlas, background=1.0)
    assert canvas.shape == (3, 5 * SIZE, 5 * SIZE)
    row, column = atlas.cells[2].tolist()
    assert torch.equal(canvas[:, row * SIZE:(row + 1) * SIZE, column * SIZE:(column + 1) * SIZE], images[2])
    assert (canvas[:, :SIZE, :SIZE] == 1.0).all(), "row 0 is empty: background"
    mask = atlas_icon_mask(atlas)
    assert mask.shape == canvas.shape[1:] and mask.sum() == 5 * SIZE * SIZE
    assert mask[row * SIZE, column * SIZE] and not mask[0, 0]
    faded = atlas_image(atlas, fade=True, background=1.0)
    counts = atlas.grid.counts[atlas.cells[:, 0], atlas.cells[:, 1]]
    if counts.max() == counts.min():
        assert torch.equal(faded, canvas), "equal counts: nothing to fade"


def test_draw_atlas_shows_density_as_bars_and_keeps_the_icons(tiny_cnn):
    images = torch.rand(6, 3, SIZE, SIZE)
    atlas = _atlas_from_images(tiny_cnn, "features.3", images)
    atlas.grid.counts[atlas.cells[0, 0], atlas.cells[0, 1]] = 30  # one busy cell
    figure = draw_atlas(atlas)
    drawn = figure.axes[0].images[0].get_array()
    expected = atlas_image(atlas).permute(1, 2, 0).numpy()
    assert np.allclose(drawn, expected), "icons drawn at full colour"
    bars = sorted(patch.get_width() for patch in figure.axes[0].patches)
    step = 1 / atlas.grid.grid_size
    assert len(bars) == len(atlas.cells) and bars[-1] == pytest.approx(0.88 * step), "the busiest cell has the full bar"
    assert bars[0] < 0.5 * bars[-1], "a sparse cell gets a short bar"
    plt.close(figure)
    assert not draw_atlas(atlas, density=None).axes[0].patches
    plt.close("all")
    with pytest.raises(ValueError, match="density="):
        draw_atlas(atlas, density="size")


def test_drawings_return_figures_and_check_their_arguments(tiny_cnn):
    images = torch.rand(5, 3, SIZE, SIZE)
    atlas = _atlas_from_images(tiny_cnn, "features.3", images)
    figures = [
        draw_layout(atlas.layout, labels=["a", "b", "a", "c", "a"], grid_size=5),
        draw_grid(atlas.grid),
        draw_atlas(atlas, cell_labels=list("vwxyz"), cell_colours=["red"] * 5),
        draw_path(atlas, torch.tensor([[0.1, 0.5], [0.9, 0.5]]), labels=["start", "end"]),
        draw_path(atlas.layout, torch.tensor([[0.1, 0.5], [0.9, 0.5]]), point_labels=list("abcab")),
    ]
    assert all(isinstance(figure, plt.Figure) for figure in figures)
    with pytest.raises(ValueError, match="3 entries for 5 drawn cells"):
        draw_atlas(atlas, cell_labels=list("xyz"))
    with pytest.raises(ValueError, match=r"cell \(0, 0\) has fewer than 1 vectors"):
        show_cell(atlas, 0, 0)
    plt.close("all")


def test_explorer_widget_redraws_the_picked_cell(tiny_cnn):
    images = torch.rand(5, 3, SIZE, SIZE)
    atlas = _atlas_from_images(tiny_cnn, "features.3", images)
    widget = atlas_explorer(atlas)
    picker, picture = widget.children
    first = picture.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    picker.value = picker.options[-1][1]
    assert picture.value != first, "picking another cell draws another picture"
    plt.close("all")


def _held_out(name):
    torch.manual_seed(0)
    if name == "vit":
        import timm

        return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=10), "fc_norm", "mean"
    import torchvision

    builders = {"resnet18": (torchvision.models.resnet18, "layer3"),
                "mobilenet_v3_small": (torchvision.models.mobilenet_v3_small, "features.8")}
    builder, layer = builders[name]
    return builder(weights=None, num_classes=10), layer, 1


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "vit"])
def test_a_whole_small_atlas_on_held_out_models_in_train_mode(name):
    """Networks the course does not use, with random weights, in train mode: the atlas works and changes nothing."""
    from nnvis_helpers import collect_activations

    model, layer, positions = _held_out(name)
    with torch.no_grad():
        model.train()(torch.rand(4, 3, 64, 64))  # BatchNorm statistics that are not the defaults
    before, values = snapshot(model), _everything(model)
    images = torch.rand(24, 3, 64, 64)
    activations = collect_activations(model, layer, images, positions_per_image=positions, progress=False)
    atlas_ = activation_atlas(model, activations, grid_size=3, min_count=1, atlas_layout="pca", icon_size=64, steps=2,
                              progress=False, verbose=False)
    assert len(atlas_.icons) == len(atlas_.cells) > 0
    logits = layer_to_logits(model, layer, atlas_.grid.directions, image_size=64)
    assert logits.shape == (len(atlas_.cells), 10) and torch.isfinite(logits).all()
    assert project(atlas_, model, images[:2], position="mean").shape == (2, 2)
    assert_untouched(model, before)
    assert all(torch.equal(a, b) for a, b in zip(values, _everything(model))), "a buffer or weight changed"


def test_icon_transforms_keep_the_icon_size():
    import random

    from nnvis_helpers.atlas import icon_transforms

    images = torch.rand(2, 3, 40, 40, requires_grad=True)
    transform = icon_transforms(40)
    rng = random.Random(0)
    for _ in range(10):
        moved = transform(images, rng)
        assert moved.shape == images.shape
    moved.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
