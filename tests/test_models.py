import time

import pytest
import torch
from conftest import snapshot, assert_untouched

from nnvis_helpers import (
    OFFLINE_MODEL,
    get_layer,
    imagenet_labels,
    load_image,
    load_images,
    load_model,
    model_info,
    top_predictions,
)


def test_labels_offline():
    labels = imagenet_labels()
    assert len(labels) == 1000 and labels[281] == "tabby" and labels[967] == "espresso"


def test_offline_model_is_frozen_eval_and_normalizing(offline_model):
    assert not offline_model.training
    assert not any(p.requires_grad for p in offline_model.parameters())
    info = model_info(offline_model)
    assert info.name == OFFLINE_MODEL and info.num_classes == 1000 and info.mean == (0.5, 0.5, 0.5)
    # Layer names are those of timm's network, as print(model) shows them.
    assert "conv_stem" in str(offline_model) and get_layer(offline_model, "blocks.6.0.conv_pw") is not None
    # Normalization is inside: the model on x equals timm's forward on (x - 0.5) / 0.5.
    x = torch.rand(1, 3, 64, 64)
    base_forward = type(offline_model).__mro__[2].forward
    with torch.no_grad():
        assert torch.allclose(offline_model(x), base_forward(offline_model, (x - 0.5) / 0.5), atol=1e-5)


@pytest.mark.parametrize(
    "photo, expected",
    [
        ("chelsea", {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}),
        ("coffee", {"espresso"}),
        ("camera", {"tripod"}),
        ("motorcycle", {"moped", "motor scooter"}),
    ],
)
def test_offline_model_recognises_sample_photos(offline_model, photo, expected):
    label, probability = top_predictions(offline_model, load_image(photo), k=1)[0][0]
    assert label in expected, f"{photo} classified as {label} ({probability:.0%})"


def test_batch_prediction_shapes(offline_model):
    before = snapshot(offline_model)
    predictions = top_predictions(offline_model, load_images(["chelsea", "coffee"], size=160), k=3)
    assert len(predictions) == 2 and all(len(row) == 3 for row in predictions)
    assert all(0 <= p <= 1 for row in predictions for _, p in row)
    assert_untouched(offline_model, before)


def test_model_rejects_wrong_input_shape(offline_model):
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        offline_model(torch.rand(3, 32, 32))


def test_unknown_model_name():
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        load_model("not_a_network", verbose=False)


def test_offline_torchvision_model_fails_fast_and_clearly(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # nothing cached here
    from nnvis_helpers import models

    monkeypatch.setattr(models, "_can_reach", lambda url, timeout=3.0: False)
    start = time.time()
    with pytest.raises(ConnectionError, match="efficientnet_lite0"):
        load_model("vgg16", verbose=False)
    assert time.time() - start < 5


def test_reachability_probe_times_out_quickly():
    from nnvis_helpers.models import _can_reach

    start = time.time()
    _can_reach("https://10.255.255.1/weights.pth", timeout=0.5)  # answer does not matter here: the time does
    assert time.time() - start < 2


def test_auto_prints_its_choice_and_obeys_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("NNVIS_MODEL", OFFLINE_MODEL)
    model = load_model("auto")
    assert model_info(model).name == OFFLINE_MODEL
    assert "NNVIS_MODEL" in capsys.readouterr().out


def test_auto_falls_back_offline(monkeypatch, tmp_path, capsys):
    from nnvis_helpers import models

    monkeypatch.delenv("NNVIS_MODEL", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(models, "_can_reach", lambda url, timeout=3.0: False)
    assert model_info(load_model("auto")).name == OFFLINE_MODEL
    assert "offline" in capsys.readouterr().out


def test_torchvision_model_loads_from_cache(monkeypatch, tmp_path):
    """A cached torchvision checkpoint loads with names as print(model) shows ('features.28')."""
    from torchvision.models import VGG11_Weights, vgg11

    from nnvis_helpers import models

    weights = VGG11_Weights.DEFAULT
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    torch.manual_seed(0)
    reference = vgg11()
    torch.save(reference.state_dict(), checkpoints / weights.url.rsplit("/", 1)[1])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(models, "_can_reach", lambda url, timeout=3.0: False)
    model = load_model("vgg11", verbose=False)
    assert model_info(model).name == "vgg11" and model_info(model).mean == (0.485, 0.456, 0.406)
    assert isinstance(get_layer(model, "features.18"), torch.nn.Conv2d)
    x = torch.rand(1, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), reference.eval()((x - mean) / std), atol=1e-4)
