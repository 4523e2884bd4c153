import numpy as np
import pytest
import torch
from PIL import Image

from nnvis_helpers import check_images, check_target, colourfulness, load_image, load_images, sample_images, to_numpy, to_pil


@pytest.mark.parametrize("name", sample_images())
def test_every_sample_loads(name):
    image = load_image(name, size=64)
    assert image.shape == (1, 3, 64, 64) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1 and image.std() > 0.02


def test_size_options():
    assert load_image("coffee", size=(50, 80)).shape == (1, 3, 50, 80)
    assert load_image("coffee", size=None).shape == (1, 3, 400, 600)
    assert load_images(["chelsea", "coffee"], size=32).shape == (2, 3, 32, 32)


def _save(tmp_path, array, mode=None, name="picture.png"):
    path = tmp_path / name
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def test_grayscale_is_converted_to_rgb(tmp_path):
    path = _save(tmp_path, np.full((10, 12), 128, np.uint8))
    image = load_image(path, size=None)
    assert image.shape == (1, 3, 10, 12)
    assert torch.allclose(image, torch.full_like(image, 128 / 255))


def test_rgba_is_composited_over_white(tmp_path):
    array = np.zeros((8, 8, 4), np.uint8)
    array[..., 0] = 255  # red
    array[:4, :, 3] = 255  # top half opaque, bottom half transparent
    image = load_image(_save(tmp_path, array), size=None)[0]
    assert torch.allclose(image[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(image[:, 7, 0], torch.ones(3))


def test_palette_image(tmp_path):
    picture = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert("P")
    path = tmp_path / "palette.png"
    picture.save(path)
    assert load_image(path, size=None).shape == (1, 3, 8, 8)


def test_16_bit_image_is_scaled(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((6, 6), 65535, np.uint16)).save(path)
    image = load_image(path, size=None)
    assert image.shape == (1, 3, 6, 6) and torch.allclose(image, torch.ones_like(image))
    half = load_image(np.full((4, 4), 32768, np.uint16), size=None)
    assert abs(half.mean().item() - 0.5) < 1e-3


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture")
    with pytest.raises(ValueError, match="not an image"):
        load_image(path)


def test_missing_path_lists_the_samples():
    with pytest.raises(FileNotFoundError, match="chelsea"):
        load_image("/no/such/picture.jpg")


def test_unreachable_url_is_a_clear_error():
    with pytest.raises(ConnectionError, match="could not download"):
        load_image("http://127.0.0.1:9/cat.jpg")


def test_round_trip_to_pil_and_numpy():
    image = load_image("chelsea", size=32)
    picture = to_pil(image)
    assert picture.size == (32, 32) and picture.mode == "RGB"
    assert np.abs(np.asarray(picture) / 255.0 - to_numpy(image)[0]).max() <= 0.5 / 255 + 1e-6
    assert isinstance(to_pil(load_images(["chelsea", "coffee"], size=8)), list)


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (torch.rand(3, 8, 8), ValueError, "unsqueeze"),
        (torch.rand(1, 1, 8, 8), ValueError, r"\(N, 3, H, W\)"),
        (torch.rand(1, 4, 8, 8), ValueError, r"\(N, 3, H, W\)"),
        ((torch.rand(1, 3, 8, 8) * 255).to(torch.uint8), TypeError, "255"),
        (torch.full((1, 3, 8, 8), float("nan")), ValueError, "NaN"),
        (torch.rand(1, 3, 8, 8) * 255, ValueError, "divide by 255"),
        (np.zeros((1, 3, 8, 8)), TypeError, "torch.Tensor"),
    ],
)
def test_check_images_rejects_bad_input(bad, error, match):
    with pytest.raises(error, match=match):
        check_images(bad)


def test_check_target_forms():
    assert check_target(3, 2, 10).tolist() == [3, 3]
    assert check_target([1, 2], 2, 10).tolist() == [1, 2]
    assert check_target(torch.tensor(4), 3, 10).tolist() == [4, 4, 4]
    for bad, error in [(10, ValueError), (-1, ValueError), ([1, 2, 3], ValueError), (1.5, TypeError), (True, TypeError)]:
        with pytest.raises(error):
            check_target(bad, 2, 10)


def test_colourfulness_follows_hasler_and_suesstrunk():
    assert colourfulness(torch.full((2, 3, 8, 8), 0.4)) == pytest.approx(0.0, abs=1e-6), "grey has no colour"
    red = torch.zeros(3, 4, 4)
    red[0] = 1.0  # rg = 255, yb = 127.5 everywhere, no spread
    assert colourfulness(red) == pytest.approx(0.3 * (255**2 + 127.5**2) ** 0.5)
    images = torch.rand(3, 3, 10, 12, generator=torch.Generator().manual_seed(0))
    r, g, b = (images[:, c].numpy().ravel() * 255 for c in range(3))
    rg, yb = r - g, (r + g) / 2 - b
    expected = np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    assert colourfulness(images) == pytest.approx(expected, rel=1e-5)
    half = torch.zeros(10, 12, dtype=torch.bool)
    half[:, :6] = True
    picture = torch.full((3, 10, 12), 0.5)
    picture[:, :, :6] = red[:, :1, :1]
    assert colourfulness(picture, mask=half) == pytest.approx(colourfulness(red)), "only the masked pixels count"
    # Over the whole picture the contrast between the red and the grey half counts as spread, too: a page
    # around the pictures changes the figure, so measure drawn pictures on their own pixels.
    assert colourfulness(picture) > 2 * colourfulness(picture, mask=half)
    with pytest.raises(ValueError, match="selects no pixel"):
        colourfulness(picture, mask=torch.zeros(10, 12, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be"):
        colourfulness(picture, mask=torch.ones(4, 4, dtype=torch.bool))
