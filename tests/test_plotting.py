import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from nnvis_helpers import normalize_heatmap, overlay_heatmap, plot_predictions, save_gallery_figure, show_heatmap, show_images


def test_show_images_grid_and_titles():
    fig = show_images(torch.rand(5, 3, 8, 8), titles=list("abcde"), ncols=3)
    assert len(fig.axes) == 6 and [ax.get_title() for ax in fig.axes[:5]] == list("abcde")
    with pytest.raises(ValueError, match="one title per image"):
        show_images(torch.rand(2, 3, 8, 8), titles=["only one"])
    plt.close("all")


def test_plot_functions_draw_on_a_given_axis():
    fig, axes = plt.subplots(1, 3)
    assert overlay_heatmap(torch.rand(1, 3, 16, 16), torch.rand(4, 4), ax=axes[0]) is fig
    assert show_heatmap(torch.rand(16, 16), ax=axes[1]) is fig
    assert plot_predictions([("tabby", 0.6), ("tiger cat", 0.3)], ax=axes[2]) is fig
    assert [t.get_text() for t in axes[2].get_yticklabels()] == ["tiger cat", "tabby"]
    plt.close("all")


def test_normalize_heatmap():
    heat = normalize_heatmap(torch.tensor([[0.0, 1.0], [2.0, 4.0]]), percentile=100)
    assert np.allclose(heat, [[0, 0.25], [0.5, 1.0]])
    assert normalize_heatmap(torch.rand(3, 5, 5)).shape == (5, 5)  # channels reduced by max |.|
    assert np.all(normalize_heatmap(torch.zeros(4, 4)) == 0)
    with pytest.raises(ValueError, match="2-D"):
        normalize_heatmap(np.zeros((2, 2, 2, 2)))


def test_gallery_figure_only_when_asked(tmp_path, monkeypatch):
    fig = show_images(torch.rand(1, 3, 8, 8))
    monkeypatch.delenv("NNVIS_GALLERY_DIR", raising=False)
    assert save_gallery_figure(fig, "x") is None
    monkeypatch.setenv("NNVIS_GALLERY_DIR", str(tmp_path))
    path = save_gallery_figure(fig, "x")
    assert Image.open(path).size[0] > 10
    plt.close("all")
