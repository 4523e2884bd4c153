"""The Colab path: learners in Colab get VGG-16 from ``load_model("auto")``; CI never downloads it.

``NNVIS_RANDOM_WEIGHTS=1`` makes ``load_model`` build the same torchvision VGG-16 with random
weights (nothing is downloaded), through the same branch of ``load_model`` that Colab takes. On it,
at a small image size, every helper call that notebooks 00, 02 and 05 make when the model is VGG-16
runs with the notebooks' settings and layer choices, so a typo in a VGG-only branch fails here.

The whole notebooks also run on that model (slow test below): only their asserts that need real
ImageNet weights may fail, and those are written ``... or not info.pretrained``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import assert_untouched, snapshot
from nnvis_helpers import (
    OFFLINE_MODEL, capture_activations, count_hooks, get_layer, list_layers, load_model, model_info, top_predictions,
)
from nnvis_helpers.adversarial import JPEGCompression, accuracy_vs_epsilon, bim, deepfool, evaluation_set, fgsm, pgd
from nnvis_helpers.saliency import (
    deconvnet, grad_cam, gradient_x_input, guided_backprop, guided_grad_cam, last_conv_layer, occlusion, relu6_as_relu,
    sanity_check_randomization, smoothgrad, vanilla_gradient,
)

SIZE = 64  # VGG-16's last conv block is 4 x 4 here: Grad-CAM still has a map
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vgg():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NNVIS_RANDOM_WEIGHTS", "1")
        patch.delenv("NNVIS_MODEL", raising=False)
        torch.manual_seed(0)
        model = load_model("auto", verbose=False)
    return model


@pytest.fixture(scope="module")
def photos():
    from nnvis_helpers import load_images

    return load_images(["camera", "motorcycle"], size=SIZE)


def test_auto_gives_vgg16_through_the_torchvision_branch(vgg):
    info = model_info(vgg)
    assert info.name == "vgg16" and not info.pretrained and info.num_classes == 1000
    assert info.mean == (0.485, 0.456, 0.406) and info.input_size == 224
    assert not vgg.training and not any(p.requires_grad for p in vgg.parameters())
    assert "RANDOM" in info.description


def test_notebook_00_calls(vgg, photos):
    assert len(top_predictions(vgg, photos, k=5)[0]) == 5
    rows = list_layers(vgg, (1, 3, SIZE, SIZE))
    assert {row.name: row.output_shape for row in rows}["features.28"] == (1, 512, 4, 4)
    with pytest.raises(ValueError, match="features"):
        get_layer(vgg, "feature.28")
    first_conv = next(row.name for row in rows if "Conv" in row.type)
    with capture_activations(vgg, first_conv) as activations:
        vgg(photos[:1])
    assert first_conv == "features.0" and activations[first_conv].shape == (1, 64, SIZE, SIZE)
    assert count_hooks(vgg) == 0


def test_notebook_02_calls(vgg, photos):
    captum = pytest.importorskip("captum.attr")
    before = snapshot(vgg)
    with torch.no_grad():
        predicted = vgg(photos).argmax(dim=1)
    layer = last_conv_layer(vgg)
    assert layer == "features.29", "the notebook's text names VGG-16's Grad-CAM layer"
    assert last_conv_layer(vgg, photos) == layer
    seen = relu6_as_relu(vgg)  # VGG has no ReLU6: the copy changes nothing
    assert not any(isinstance(m, torch.nn.ReLU6) for m in vgg.modules())
    maps = {
        "gradient": vanilla_gradient(vgg, photos, predicted),
        "gradient x input": gradient_x_input(vgg, photos, predicted),
        "guided backprop": guided_backprop(vgg, photos, predicted),
        "deconvnet": deconvnet(vgg, photos, predicted),
        "smoothgrad": smoothgrad(vgg, photos, predicted, n_samples=8, noise_level=0.15, seed=0, batch_size=8),
        "Grad-CAM": grad_cam(vgg, photos, predicted, layer=layer),
        "guided Grad-CAM": guided_grad_cam(vgg, photos, predicted, layer=layer),
        "occlusion": occlusion(vgg, photos, predicted, window=32, stride=16, progress=False),
    }
    assert all(torch.isfinite(m).all() and m.shape[0] == 2 and m.shape[-1] == SIZE for m in maps.values())
    theirs = captum.GuidedBackprop(seen).attribute(photos, target=predicted)
    assert (maps["guided backprop"] - theirs).norm() / theirs.norm() < 1e-4
    small = torch.nn.functional.interpolate(photos[:1], size=32, mode="bilinear", antialias=True).clamp(0, 1)
    sanity = sanity_check_randomization(vgg, small, predicted[:1], seed=0, progress=False)  # its defaults, at 32 px
    assert sanity.layers[0] == "classifier.6" and sanity.layers[-1] == "features.0" and len(sanity.layers) == 16
    assert set(sanity.correlations) == {"gradient", "gradient x input", "guided backprop", "deconvnet", "Grad-CAM",
                                        "guided Grad-CAM"}
    assert_untouched(vgg, before)


def test_notebook_05_calls(vgg, offline_model):
    from nnvis_helpers import load_images

    images = load_images(["chelsea", "coffee"], size=32)
    with torch.no_grad():
        labels = vgg(images).argmax(dim=1)
    epsilon = 2 / 255
    _, fgsm_info = fgsm(vgg, images, labels, epsilon, return_info=True)
    pgd_images, pgd_info = pgd(vgg, images, labels, epsilon, steps=2, seed=0, return_info=True)
    bim(vgg, images, labels, epsilon, steps=2)
    assert (pgd_info.linf <= epsilon + 1e-6).all()
    # the VGG-only branch: the offline model is checked too
    assert model_info(vgg).name != OFFLINE_MODEL
    with torch.no_grad():
        offline_labels = offline_model(images).argmax(dim=1)
    _, offline_info = pgd(offline_model, images, offline_labels, epsilon, steps=2, seed=0, return_info=True)
    assert offline_info.success.shape == (2,)
    _, deepfool_info = deepfool(vgg, images, labels, num_candidates=4, max_steps=3, return_info=True)
    l2_epsilon = max(round(deepfool_info.l2.max().item() * 2, 2), 0.01)
    _, l2_info = pgd(vgg, images, labels, l2_epsilon, norm="l2", steps=2, seed=0, return_info=True)
    assert (l2_info.l2 <= l2_epsilon * (1 + 1e-5)).all()
    eval_images, _ = evaluation_set(["chelsea", "coffee"], views=2, size=32)
    curve = accuracy_vs_epsilon(vgg, eval_images, attack=pgd, epsilons=[0, epsilon], steps=2, seed=0, progress=False)
    assert curve[0] == 1.0
    target = list(model_info(vgg).labels).index("toaster")
    pgd(vgg, images[:1], None, 4 / 255, steps=2, seed=0, target_class=target)
    jpeg = torch.nn.Sequential(JPEGCompression(quality=50), vgg)
    with torch.no_grad():
        jpeg_labels = jpeg(images).argmax(dim=1)
    pgd(jpeg, images, jpeg_labels, 1 / 255, steps=2, seed=0)
    assert count_hooks(vgg) == 0 and all(p.grad is None for p in vgg.parameters())


def test_auto_finds_the_imagenette_standin_as_torchvision_reads_it(imagenette_standin, monkeypatch, capsys):
    from nnvis_helpers import ImagenetteImages, dataset

    monkeypatch.delenv("NNVIS_DATASET", raising=False)
    monkeypatch.setenv("NNVIS_DATA_ROOT", str(imagenette_standin))
    val = dataset("auto", size=64, length=400, seed=3)
    assert "using imagenette (it is already downloaded" in capsys.readouterr().out
    assert isinstance(val, ImagenetteImages) and len(val) == 400 and val.available == 3925 and val.split == "val"
    assert val.classes[0] == "tench" and len(val.classes) == 10
    image, label = val[0]
    assert image.shape == (3, 64, 64) and 0 <= image.min() and image.max() <= 1 and 0 <= label < 10
    assert len({val[i][1] for i in range(40)}) >= 5, "a shuffled draw: the first pictures hold many classes"
    both = dataset("auto", size=64, length=5000, seed=3, verbose=False)
    assert len(both) == 5000 and both.split == "all" and both.available == 3925 + 9469
    folder = imagenette_standin / "imagenette2-320" / "val"
    sizes = {Image.open(path).size for path in list(folder.glob("*/*.JPEG"))[::97]}
    assert min(min(size) for size in sizes) == 320 and any(w != h for w, h in sizes), "320 px shorter side, not square"


# Every notebook on the learner's Colab path: load_model("auto") takes the VGG-16 branch (random weights: nothing to
# download), dataset("auto") finds the Imagenette stand-in on disk. `make test-colab` runs them (CI does too).
NOTEBOOKS = sorted(path.stem for path in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.colab
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_notebook_runs_on_the_colab_path(notebook, imagenette_standin):
    """Fast mode, VGG-16 with random weights, Imagenette stand-in: no cell may fail. Claims verified on the offline model
    only print their figure there (claim(..., model=model)); equalities against the libraries stay hard."""
    nbclient = pytest.importorskip("nbclient")
    import nbformat

    path = ROOT / "notebooks" / f"{notebook}.ipynb"
    nb = nbformat.read(path, as_version=4)
    env = {"NNVIS_FAST": "1", "NNVIS_RANDOM_WEIGHTS": "1", "NNVIS_DATA_ROOT": str(imagenette_standin), "MPLBACKEND": "Agg"}
    old = {key: os.environ.get(key) for key in [*env, "NNVIS_MODEL", "NNVIS_DATASET"]}
    os.environ.update(env)
    os.environ.pop("NNVIS_MODEL", None)
    os.environ.pop("NNVIS_DATASET", None)
    try:
        client = nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3", allow_errors=True,
                                         resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    errors = [(index, output["ename"], output["evalue"][:300]) for index, cell in enumerate(nb.cells)
              if cell.cell_type == "code" for output in cell.get("outputs", []) if output.get("output_type") == "error"]
    assert not errors, f"{notebook} on the Colab path: {errors}"
    printed = json.dumps([cell.get("outputs", []) for cell in nb.cells if cell.cell_type == "code"])
    code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    if 'load_model("auto"' in code:
        assert "using vgg16" in printed, f"{notebook} should have taken the VGG-16 branch"
    if 'dataset("auto"' in code:
        assert "using imagenette" in printed, f"{notebook} should have found the Imagenette stand-in"
    # the two checks above must have something to check: 00 loads its model with "auto", 06 its data
    assert notebook != "00_start_here" or 'load_model("auto"' in code
    assert notebook != "06_activation_atlas" or 'dataset("auto"' in code
