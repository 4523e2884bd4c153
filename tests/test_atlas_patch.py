"""Patches from the atlas (Carter et al. 2019): crops behind a cell, pasting, flip rates, controls, the picture."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import assert_untouched, snapshot
from nnvis_helpers import count_hooks
from nnvis_helpers.atlas import Atlas, AtlasGrid
from nnvis_helpers.atlas.patch import (
    PatchResult,
    cell_crops,
    choose_patch,
    control_patches,
    draw_patch_attack,
    paste_patch,
    patch_flip_rate,
)
from nnvis_helpers.datasets import ActivationSet

RED, GREY = 1, 0


class RedDetector(nn.Module):
    """Class 1 ("red") exactly when a 3x3 patch of pure red is in the image, class 0 otherwise.

    The redness R - G - B, averaged over 3x3 windows, is 1 on pure red, at most 0.5 - 0.3 - 0.3
    on the bluish backgrounds below and -0.5 on grey; minus 0.5 and a ReLU keep only red. The
    Dropout flips answers at random in train mode, so a helper that forgets eval mode is caught.
    """

    def __init__(self):
        super().__init__()
        self.redness = nn.Conv2d(3, 1, 3)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(1, 2)
        with torch.no_grad():
            self.redness.weight.copy_(torch.tensor([1.0, -1.0, -1.0])[None, :, None, None].expand(1, 3, 3, 3) / 9)
            self.redness.bias.fill_(-0.5)
            self.head.weight.copy_(torch.tensor([[0.0], [20.0]]))
            self.head.bias.copy_(torch.tensor([1.0, 0.0]))

    def forward(self, x):
        return self.head(self.dropout(self.pool(torch.relu(self.redness(x))).flatten(1)))


def _backgrounds(count: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Bluish noise (R <= 0.5, G and B >= 0.3): never red."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 3, size, size, generator=generator)
    images[:, 0] *= 0.5
    images[:, 1:] = 0.3 + 0.7 * images[:, 1:]
    return images


def _solid(colour, side: int) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.float32)[:, None, None].expand(3, side, side).clone()


# ---------------------------------------------------------------------------------------------
# paste_patch
# ---------------------------------------------------------------------------------------------


def _numbered_patch(side: int = 4) -> torch.Tensor:
    """A patch whose every pixel has its own value in (0, 1], so a misplaced or flipped copy shows."""
    return (torch.arange(3 * side * side, dtype=torch.float32).reshape(3, side, side) + 1) / (3 * side * side)


@pytest.mark.parametrize("place, top, left", [
    ("top left", 0, 0), ("top right", 0, 26), ("bottom left", 16, 0), ("bottom right", 16, 26),
    ("centre", 8, 13), ("center", 8, 13), ((5, 7), 5, 7), ((16, 26), 16, 26),
])
def test_paste_patch_puts_every_pixel_in_its_place(place, top, left):
    images = torch.zeros(2, 3, 20, 30)
    patch = _numbered_patch()
    before_images, before_patch = images.clone(), patch.clone()
    pasted = paste_patch(images, patch, place=place)
    assert pasted.shape == images.shape
    assert torch.equal(pasted[:, :, top:top + 4, left:left + 4], patch.expand(2, -1, -1, -1))
    outside = pasted.clone()
    outside[:, :, top:top + 4, left:left + 4] = 0
    assert outside.abs().sum() == 0, "pixels outside the patch changed"
    assert torch.equal(images, before_images) and torch.equal(patch, before_patch), "an input was changed"


def test_paste_patch_resizes_to_pixels_or_a_fraction():
    images = torch.zeros(1, 3, 20, 30)
    patch = _solid([0.2, 0.7, 0.4], 5)
    for size, side in ((8, 8), (0.5, 10), (1.0, 20)):
        pasted = paste_patch(images, patch, size=size, place="bottom right")
        filled = (pasted.abs().sum(1)[0] > 0).nonzero()
        assert filled[:, 0].min() == 20 - side and filled[:, 0].max() == 19
        assert filled[:, 1].min() == 30 - side and filled[:, 1].max() == 29
        assert len(filled) == side * side
        assert torch.allclose(pasted[0, :, 20 - side:, 30 - side:], patch[:, :1, :1].expand(3, side, side), atol=1e-6)
    # The resized patch is the patch resized, not a crop of it.
    numbered = _numbered_patch(4)
    pasted = paste_patch(images, numbered, size=8, place="top left")
    expected = F.interpolate(numbered[None], size=(8, 8), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(pasted[0, :, :8, :8], expected, atol=1e-6)


def test_paste_patch_takes_an_icon_batch_of_one_and_keeps_a_long_patch_s_shape():
    images = torch.zeros(3, 3, 20, 30)
    icon = _numbered_patch(4)[None]
    assert torch.equal(paste_patch(images, icon, place="top left")[:, :, :4, :4], icon.expand(3, -1, -1, -1))
    long = torch.full((3, 4, 8), 0.5)
    pasted = paste_patch(images, long, size=16, place="top left")
    assert (pasted[0, 0] > 0).sum() == 8 * 16 and (pasted[0, 0, :8, :16] == 0.5).all()


def test_paste_patch_errors_say_what_to_do():
    images = torch.zeros(1, 3, 20, 30)
    patch = _solid([1.0, 0.0, 0.0], 4)
    with pytest.raises(ValueError, match="larger than the 20x30 images"):
        paste_patch(images, patch, size=25)
    with pytest.raises(ValueError, match="larger than"):
        paste_patch(images, _solid([1.0, 0.0, 0.0], 24))
    with pytest.raises(ValueError, match="top left"):
        paste_patch(images, patch, place="middle")
    with pytest.raises(ValueError, match=r"y must lie in \[0, 16\]"):
        paste_patch(images, patch, place=(17, 0))
    with pytest.raises(ValueError, match="fraction"):
        paste_patch(images, patch, size=1.5)
    with pytest.raises(ValueError, match="one patch"):
        paste_patch(images, torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        paste_patch(images, patch * 255)


# ---------------------------------------------------------------------------------------------
# cell_crops and control_patches on a hand-made atlas
# ---------------------------------------------------------------------------------------------

IMAGE, MAP = 32, 4  # stride 8: map position (r, c) covers pixels 8r..8r+7, 8c..8c+7


def _marked_image(row: int, column: int, tint: float) -> torch.Tensor:
    """A dark image (its blue channel = ``tint``) with a white 2x2 square at the centre of map position (row, column)."""
    image = torch.zeros(3, IMAGE, IMAGE)
    image[2] = tint
    centre_y, centre_x = 8 * row + 4, 8 * column + 4
    image[:, centre_y - 1:centre_y + 1, centre_x - 1:centre_x + 1] = 1.0
    return image


def _hand_atlas(positions, cells, grid_size=2, mean=False):
    """Vector m comes from image m at ``positions[m]`` and falls into grid cell ``cells[m]``; dataset of (image, label)."""
    count = len(positions)
    positions = torch.tensor(positions)
    cell_of = torch.tensor(cells)
    data = [(_marked_image(*positions[m].tolist(), tint=m / (2 * count)), 0) for m in range(count)]
    activations = ActivationSet(
        layer="features", vectors=torch.rand(count, 4, generator=torch.Generator().manual_seed(0)),
        image_index=torch.arange(count), positions=torch.full((count, 2), -1) if mean else positions,
        predictions=None, map_size=(MAP, MAP), image_size=(IMAGE, IMAGE), num_images=count,
    )
    counts = torch.zeros(grid_size, grid_size, dtype=torch.long)
    for row, column in cell_of.tolist():
        counts[row, column] += 1
    grid = AtlasGrid(grid_size=grid_size, means=torch.zeros(grid_size, grid_size, 4), counts=counts, cell_of=cell_of,
                     min_count=1)
    icons = torch.rand(len(grid.cells), 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return Atlas(layer="features", layout=None, grid=grid, icons=icons, activations=activations, image_size=IMAGE), data


POSITIONS = [(1, 2), (2, 1), (0, 0), (3, 3), (1, 1)]
CELLS = [(0, 0), (0, 0), (0, 0), (1, 1), (0, 1)]  # cell (1, 0) stays empty


def test_cell_crops_are_centred_on_each_member_s_map_position():
    atlas, data = _hand_atlas(POSITIONS, CELLS)
    crops = cell_crops(atlas, 0, 0, data, size=8)
    assert crops.shape == (3, 3, 8, 8)
    for k, (row, column) in enumerate(POSITIONS[:3]):
        image = data[k][0]
        assert torch.equal(crops[k], image[:, 8 * row:8 * row + 8, 8 * column:8 * column + 8])
        white = (crops[k].min(0).values == 1).nonzero()
        assert white.float().mean(0).tolist() == [3.5, 3.5], "the marked centre is not the crop's centre"


def test_cell_crops_default_side_is_three_strides_shifted_inside_at_the_border():
    atlas, data = _hand_atlas(POSITIONS, CELLS)
    crops = cell_crops(atlas, 0, 0, data)
    assert crops.shape == (3, 3, 24, 24)
    # member 0 at (1, 2): centre pixel (12, 20), the 24 px square around it fits: rows 0..23, columns 8..31
    assert torch.equal(crops[0], data[0][0][:, 0:24, 8:32])
    assert (crops[0].min(0).values == 1).nonzero().float().mean(0).tolist() == [11.5, 11.5]
    # member 2 at (0, 0): centre pixel (4, 4), the square is pushed inside the image
    assert torch.equal(crops[2], data[2][0][:, 0:24, 0:24])
    assert cell_crops(atlas, 0, 0, data, count=2).shape == (2, 3, 24, 24)
    assert torch.equal(cell_crops(atlas, *atlas.cells[0], data), crops)  # a row of atlas.cells names the cell too
    resized = cell_crops(atlas, 1, 1, data, output_size=12)
    assert resized.shape == (1, 3, 12, 12) and 0 <= resized.min() and resized.max() <= 1


def test_cell_crops_errors():
    atlas, data = _hand_atlas(POSITIONS, CELLS)
    with pytest.raises(ValueError, match=r"cell \(1, 0\) of the atlas is empty"):
        cell_crops(atlas, 1, 0, data)
    with pytest.raises(ValueError, match="outside the 2x2 grid"):
        cell_crops(atlas, 2, 0, data)
    mean_atlas, _ = _hand_atlas(POSITIONS, CELLS, mean=True)
    with pytest.raises(ValueError, match="spatial means.*positions_per_image"):
        cell_crops(mean_atlas, 0, 0, data)
    with pytest.raises(ValueError, match="16x16 pixels but the activations were collected from 32x32"):
        cell_crops(atlas, 0, 0, [(image[:, :16, :16], label) for image, label in data])
    with pytest.raises(ValueError, match="no item 3"):
        cell_crops(atlas, 1, 1, data[:3])


def _control_atlas():
    """18 vectors in a 3x3 grid, two per cell; image m is the only one with blue tint m / 36."""
    positions = [(m % 4, (m // 4) % 4) for m in range(18)]
    cells = [((m % 9) // 3, (m % 9) % 3) for m in range(18)]
    return _hand_atlas(positions, cells, grid_size=3)


def _source_images(crops: torch.Tensor) -> list[int]:
    """Which image each crop came from, read off its blue tint (the darkest blue pixel, away from the white mark)."""
    return [round(float(crop[2].min()) * 36) for crop in crops]


def test_control_patches_are_seeded_and_skip_the_excluded_cells():
    atlas, data = _control_atlas()
    excluded = [(0, 0), (1, 1)]
    controls = control_patches(atlas, data, exclude_cells=excluded, count=7, size=8, seed=3)
    assert controls.shape == (7, 3, 8, 8)
    cells = [((m % 9) // 3, (m % 9) % 3) for m in _source_images(controls)]
    assert sorted(cells) == sorted(set(map(tuple, atlas.cells.tolist())) - set(excluded)), "a cell repeated or excluded"
    assert torch.equal(controls, control_patches(atlas, data, exclude_cells=excluded, count=7, size=8, seed=3))
    assert not torch.equal(controls, control_patches(atlas, data, exclude_cells=excluded, count=7, size=8, seed=4))
    one = control_patches(atlas, data, exclude_cells=(2, 2), count=8, size=8, seed=0)
    assert all(((m % 9) // 3, (m % 9) % 3) != (2, 2) for m in _source_images(one))
    with pytest.raises(ValueError, match="only 7 drawn cells"):
        control_patches(atlas, data, exclude_cells=excluded, count=8)
    assert control_patches(atlas, data, count=2).shape == (2, 3, 24, 24)


# ---------------------------------------------------------------------------------------------
# choose_patch, patch_flip_rate, draw_patch_attack on the red detector
# ---------------------------------------------------------------------------------------------


def test_choose_patch_picks_the_crop_the_model_likes():
    model = RedDetector()
    dim_red = torch.zeros(3, 12, 12)
    dim_red[0] = 0.8  # redness 0.3 after the threshold: class 1, less sure than pure red
    pure_red_square = torch.full((3, 12, 12), 0.5)
    pure_red_square[:, 3:9, 3:9] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    crops = torch.stack([torch.full((3, 12, 12), 0.5), dim_red, pure_red_square, _backgrounds(1, 12)[0]])
    for background in ("resize", "grey"):
        patch, index, probabilities = choose_patch(model, crops, RED, background=background, image_size=32,
                                                   return_probabilities=True)
        assert index == 2 and torch.equal(patch, crops[2])
        assert probabilities.shape == (4,) and probabilities[2] > probabilities[1] > 0.5 > probabilities[0]
    assert choose_patch(model, crops, GREY, image_size=32)[1] in (0, 3)
    with pytest.raises(ValueError, match="background"):
        choose_patch(model, crops, RED, background="white")
    with pytest.raises(ValueError, match="does not exist"):
        choose_patch(model, crops, 2, image_size=32)


def test_choose_patch_by_pasting_scores_the_mean_over_the_photos_it_was_given():
    model = RedDetector().train()
    photos = _backgrounds(5, 32)
    dim_red = torch.zeros(3, 12, 12)
    dim_red[0] = 0.8
    crops = torch.stack([torch.full((3, 12, 12), 0.5), dim_red, torch.tensor([1.0, 0.0, 0.0])[:, None, None].expand(3, 12, 12)])
    patch, index, scores = choose_patch(model, crops, RED, into=photos, size=16, place="centre", return_probabilities=True)
    assert index == 2 and torch.equal(patch, crops[2]) and scores.shape == (3,)
    with torch.no_grad():
        expected = model.eval()(paste_patch(photos, crops[1], 16, "centre")).softmax(1)[:, RED].mean()
    assert scores[1] == pytest.approx(float(expected), abs=1e-6), "the mean probability of the target, pasted"
    model.train()
    assert model.training and count_hooks(model) == 0, "the model comes back in train mode, no hooks"
    with pytest.raises(ValueError, match="larger than the 32x32 images"):
        choose_patch(model, crops, RED, into=photos, size=40)
    with pytest.raises(ValueError, match="place must be one of"):
        choose_patch(model, crops, RED, into=photos, place="middle")


def test_patch_flip_rate_red_flips_everything_grey_nothing_model_untouched():
    model = RedDetector().train()
    before = snapshot(model)
    images = _backgrounds(6)
    images[5, :, 10:15, 10:15] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # already "red": not counted
    sizes, places = (6, 0.25), ("top left", "top right", "bottom left", "bottom right", "centre", (3, 5))
    red = patch_flip_rate(model, images, _solid([1.0, 0.0, 0.0], 8), RED, sizes=sizes, places=places, progress=False)
    assert isinstance(red, PatchResult)
    assert red.sizes == [6, 8] and red.eligible == 5 and red.flip_rate.shape == (2, 6)
    assert torch.equal(red.flip_rate, torch.ones(2, 6)) and red.mean_flip_rate == 1.0
    assert torch.allclose(red.change_rate, torch.full((2, 6), 5 / 6))
    # red: logits (1, 10), p = sigmoid(9); plain: logits (1, 0), p = sigmoid(-1); the red image gains nothing
    expected_gain = 5 / 6 * float(torch.sigmoid(torch.tensor(9.0)) - torch.sigmoid(torch.tensor(-1.0)))
    assert torch.allclose(red.target_gain, torch.full((2, 6), expected_gain), atol=1e-5)
    assert (red.predictions == RED).all() and red.clean_predictions.tolist() == [GREY] * 5 + [RED]
    assert "mean flip rate 100.0%" in red.table()

    grey = patch_flip_rate(model, images, _solid([0.5, 0.5, 0.5], 8), RED, sizes=sizes, places=places, progress=False)
    assert grey.mean_flip_rate == 0.0
    assert grey.change_rate.max() <= 1 / 6  # only the red image, if the patch covers its square
    assert model.training
    assert_untouched(model, before)
    # Several patches: one red and one grey flip half the time on average.
    both = patch_flip_rate(model, images, torch.stack([_solid([1.0, 0.0, 0.0], 8), _solid([0.5] * 3, 8)]), RED,
                           sizes=8, places="top left", progress=False)
    assert both.flip_rate.tolist() == [[0.5]] and both.patch_count == 2


def test_patch_flip_rate_leaves_nothing_behind_after_an_error():
    model = RedDetector().train()
    before = snapshot(model)
    with pytest.raises(ValueError, match="target_class class 7 does not exist"):
        patch_flip_rate(model, _backgrounds(2), _solid([1.0, 0.0, 0.0], 8), 7, progress=False)
    with pytest.raises(ValueError, match="top left"):
        patch_flip_rate(model, _backgrounds(2), _solid([1.0, 0.0, 0.0], 8), RED, places=("left",), progress=False)
    assert count_hooks(model) == 0 and model.training
    assert_untouched(model, before)


def test_draw_patch_attack_returns_a_figure():
    model = RedDetector()
    images = _backgrounds(3)
    patched = paste_patch(images, _solid([1.0, 0.0, 0.0], 8), size=0.25, place="top left")
    fig = draw_patch_attack(images, patched, model, labels=["plain", "red"], target_class=RED, count=3)
    try:
        titles = [ax.get_title() for ax in fig.axes]
        assert len(titles) == 6
        assert all("plain" in title for title in titles[:3]) and all("red" in title for title in titles[3:])
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="same photos"):
        draw_patch_attack(images, patched[:2], model)


# ---------------------------------------------------------------------------------------------
# The offline model: a cat photo pasted in raises the cat class more than a control patch
# ---------------------------------------------------------------------------------------------


def test_cat_patch_raises_the_cat_class_more_than_a_control(offline_model):
    from nnvis_helpers import dataset, load_image

    size = 128
    photos = dataset("offline", size=size, length=24, seed=0, verbose=False)
    cat_label = photos.classes.index("chelsea")
    others = [image for image, label in (photos[i] for i in range(len(photos))) if label != cat_label][:6]
    images = torch.stack(others)
    cat = load_image("chelsea", size=size)
    with torch.no_grad():
        cat_class = int(offline_model(cat).argmax())
    assert 281 <= cat_class <= 285, f"the cat photo is not a domestic cat to the model: class {cat_class}"
    patch = cat[0, :, 16:112, 16:112]  # the cat's head and body, most of the photo
    generator = torch.Generator().manual_seed(0)
    control = torch.stack([images[i, :, top:top + 96, left:left + 96]
                           for i, (top, left) in enumerate(torch.randint(0, size - 96, (len(images), 2), generator=generator).tolist())])
    before = snapshot(offline_model)
    options = dict(sizes=(0.5,), places=("top left", "bottom right"), progress=False)
    attack = patch_flip_rate(offline_model, images, patch, cat_class, **options)
    baseline = patch_flip_rate(offline_model, images, control, cat_class, **options)
    assert_untouched(offline_model, before)
    print(f"cat patch: gain {attack.target_gain.mean():.3f}, flips {attack.mean_flip_rate:.0%}; "
          f"control: gain {baseline.target_gain.mean():.4f}, flips {baseline.mean_flip_rate:.0%}")
    assert attack.target_gain.mean() > baseline.target_gain.mean() + 0.05
    assert attack.mean_flip_rate >= baseline.mean_flip_rate
