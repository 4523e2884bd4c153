"""The pictures of the building blocks and their explorer, on hand-made results (no model needed)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from nnvis_helpers.blocks import (  # noqa: E402
    ActivationGrid,
    Flow,
    NeuronGroups,
    SemanticDictionary,
    blocks_explorer,
    activation_grid_image,
    draw_activation_grid,
    draw_attribution,
    draw_dictionary,
    draw_flow,
    draw_group_map,
    draw_groups,
    group_colours,
)

PHOTO = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))


def _dictionary() -> SemanticDictionary:
    values, channels = torch.rand(4, 4, 6, generator=torch.Generator().manual_seed(1)).topk(3, dim=2)
    icons = {int(c): torch.rand(3, 8, 8) for c in channels.unique()}
    return SemanticDictionary(layer="features.4", map_size=(4, 4), channels=channels, values=values, icons=icons)


def _groups(k: int = 3) -> NeuronGroups:
    maps, directions = torch.rand(k, 4, 4), torch.rand(k, 6)
    return NeuronGroups(layer="features.4", maps=maps, directions=directions,
                        reconstruction=torch.einsum("ghw,gc->chw", maps, directions), relative_error=0.25)


def _texts(figure) -> str:
    return " ".join(text.get_text() for ax in figure.axes for text in ax.texts + [ax.title]) + " " + (
        figure._suptitle.get_text() if figure._suptitle else "")


def test_the_dictionary_marks_each_place_and_shows_its_channels():
    dictionary = _dictionary()
    figure = draw_dictionary(PHOTO, dictionary, [(0, 0), (3, 2)])
    assert len(figure.axes) == 1 + 2 * 3, "the photo and an icon per channel and place"
    assert all(len(ax.child_axes) == 1 for ax in figure.axes[1:]), "a bar under every icon"
    first = int(dictionary.channels[3, 2, 0])
    assert f"ch {first}: {float(dictionary.values[3, 2, 0]):.2f}" in _texts(figure)
    assert len(figure.axes[0].patches) == 2, "one square per place on the photo"
    plt.close(figure)
    with pytest.raises(ValueError, match="outside the 4 x 4 map"):
        draw_dictionary(PHOTO, dictionary, [(4, 0)])


def test_the_grid_mosaic_keeps_colour_and_shows_strength_as_bars():
    icons = torch.zeros(2, 2, 3, 8, 8)
    icons[:, :, 0] = 1.0  # red icons
    vectors = torch.tensor([[[1.0, 0.0], [0.0, 0.5]], [[0.0, 0.0], [2.0, 0.0]]])  # lengths 1, 0.5, 0, 2
    grid = ActivationGrid(layer="features.4", cells=(2, 2), vectors=vectors, icons=icons, seconds_per_icon=0.1)
    figure = draw_activation_grid(PHOTO, grid)
    mosaic = figure.axes[1].images[0].get_array()
    assert mosaic.shape == (16, 16, 3)
    assert (mosaic[..., 0] == 1).all() and (mosaic[..., 1:] == 0).all(), "every icon keeps its colour"
    bars = [patch.get_width() for patch in figure.axes[1].patches]
    assert bars == pytest.approx([0.88 * 8 * share for share in (0.5, 0.25, 0.0, 1.0)]), "bar length = strength"
    plt.close(figure)
    faded = draw_activation_grid(PHOTO, grid, fade=True)
    mosaic = faded.axes[1].images[0].get_array()
    assert mosaic[12, 12, 0] == 1 and mosaic[12, 12, 1] == 0, "the strongest cell keeps its icon"
    assert mosaic[12, 4].min() == 1, "a silent cell fades to white"
    assert 0.7 < mosaic[4, 12, 1] < 0.8, "a quarter-strength cell is three quarters faded"
    assert not faded.axes[1].patches
    plt.close(faded)
    assert torch.equal(activation_grid_image(grid), icons.permute(2, 0, 3, 1, 4).reshape(3, 16, 16)), "the icons, as drawn"
    assert torch.allclose(activation_grid_image(grid, fade=True).permute(1, 2, 0), torch.as_tensor(mosaic).float())
    with pytest.raises(TypeError, match="ActivationGrid"):
        activation_grid_image(icons)


def test_attribution_and_group_maps_draw_on_given_axes():
    figure, axes = plt.subplots(1, 2)
    attributions = torch.zeros(6, 4, 4)
    attributions[:, 0, 0] = 1.0
    assert draw_attribution(PHOTO, attributions, ax=axes[0], title="to 'cat'") is figure
    assert draw_group_map(PHOTO, _groups(), ax=axes[1]) is figure
    overlay = axes[0].images[1].get_array()
    assert overlay[0, 0] == 6 and overlay.sum() == 6, "positions summed over channels"
    plt.close(figure)


def test_groups_figure_has_a_column_per_group_and_checks_its_names():
    groups = _groups(3)
    figure = draw_groups(PHOTO, groups, torch.rand(3, 3, 8, 8), torch.randn(3, 2), ["cat", "dog"])
    assert len(figure.axes) == 3 * 4 and "group 3" in _texts(figure)
    plt.close(figure)
    with pytest.raises(ValueError, match="class_names"):
        draw_groups(PHOTO, groups, None, torch.randn(3, 2))
    assert group_colours(12).shape == (12, 3)


def test_flow_draws_edges_above_the_threshold_only():
    a_to_b = torch.tensor([[1.0, 0.01], [-0.5, 0.2]])
    b_to_class = torch.tensor([[2.0], [0.0]])
    flow = Flow(layers=("a", "b"), classes=[3], a_to_b=a_to_b, b_to_class=b_to_class, a_to_class=torch.zeros(2, 1))
    figure = draw_flow(flow, torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), ["cat"], minimum=0.05)
    lines = figure.axes[0].lines
    assert len(lines) == 3 + 1, "three A->B edges over 5 % of the largest, one B->class edge"
    assert sum(line.get_color() == "#1f77b4" for line in lines) == 1, "the negative edge is blue"
    plt.close(figure)
    with pytest.raises(ValueError, match="one name per class"):
        draw_flow(flow, torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), ["cat", "dog"])


def test_explorer_falls_back_to_text_and_builds_its_widget():
    calls = []

    def make_groups(k):
        calls.append(k)
        return _groups(k)

    explorer = blocks_explorer(PHOTO, _dictionary(), make_groups, ks=[2, 3], k=3)
    bundle = explorer._repr_mimebundle_()
    assert "BlocksExplorer of features.4" in bundle["text/plain"] and bundle["text/plain"] == repr(explorer)
    pytest.importorskip("ipywidgets")
    assert "application/vnd.jupyter.widget-view+json" in bundle, "a widget view where ipywidgets is installed"
    assert calls == [3], "groups made for the shown k only"
    buttons = explorer.widget.children[1].children[0].children
    assert len(buttons) == 16
    buttons[5]._click_handlers(buttons[5])            # a click on row 1, column 1 draws that place
    assert len(explorer.widget.children[1].children[1].value) > 0
    with pytest.raises(ValueError, match="must be one of"):
        blocks_explorer(PHOTO, _dictionary(), make_groups, ks=[2, 3], k=5)
