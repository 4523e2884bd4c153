import json

import numpy as np
import pytest
import torch

from nnvis_helpers import claim, course_seed, describe_device, get_device, is_fast, pick, quality, seed_everything
from nnvis_helpers.claims import relative_margin


def test_fast_flag_wins(monkeypatch):
    monkeypatch.setenv("NNVIS_FAST", "1")
    monkeypatch.setenv("NNVIS_QUALITY", "full")
    assert quality() == "fast" and is_fast()
    assert pick(fast=1, cpu=2, full=3) == 1


def test_forced_preset(monkeypatch):
    monkeypatch.delenv("NNVIS_FAST", raising=False)
    monkeypatch.setenv("NNVIS_QUALITY", "full")
    assert pick(fast=1, cpu=2, full=3) == 3
    monkeypatch.setenv("NNVIS_FAST", "0")
    monkeypatch.setenv("NNVIS_QUALITY", "cpu")
    assert quality() == "cpu"


def test_automatic_preset_follows_the_hardware(monkeypatch):
    monkeypatch.delenv("NNVIS_FAST", raising=False)
    monkeypatch.delenv("NNVIS_QUALITY", raising=False)
    assert quality() == ("cpu" if get_device().type == "cpu" else "full")


def test_unknown_preset_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NNVIS_FAST", raising=False)
    monkeypatch.setenv("NNVIS_QUALITY", "ultra")
    with pytest.raises(ValueError, match="fast, cpu, full"):
        quality()


def test_seed_everything_reproduces_all_generators():
    seed_everything(3)
    first = (np.random.rand(), torch.rand(2), torch.randint(0, 100, (3,)))
    generator = seed_everything(3)
    second = (np.random.rand(), torch.rand(2), torch.randint(0, 100, (3,)))
    assert first[0] == second[0] and torch.equal(first[1], second[1]) and torch.equal(first[2], second[2])
    assert torch.equal(generator.initial_seed() * torch.ones(1), 3 * torch.ones(1))
    with pytest.raises(ValueError):
        seed_everything(-1)


def test_course_seed_follows_nnvis_seed(monkeypatch):
    monkeypatch.delenv("NNVIS_SEED", raising=False)
    assert course_seed() == 0
    monkeypatch.setenv("NNVIS_SEED", " 7 ")
    assert course_seed() == 7
    for wrong in ("-1", "1.5", "abc"):
        monkeypatch.setenv("NNVIS_SEED", wrong)
        with pytest.raises(ValueError, match="NNVIS_SEED"):
            course_seed()


def test_device():
    device = get_device()
    assert device.type in ("cuda", "mps", "cpu")
    assert describe_device(torch.device("cpu")).startswith("cpu (")


def test_on_cuda_get_device_turns_tensorfloat32_off(monkeypatch):
    """Found on the first GPU run (H200): cuDNN's default TF32 convolutions broke the 1e-4 checks
    against captum and torchattacks in notebooks 02-06. get_device() must switch it off."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    try:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic = True, True, False
        assert get_device() == torch.device("cuda")
        assert (cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic) == (False, False, True)
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic = saved


def test_on_the_cpu_get_device_leaves_the_backend_flags_alone(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    saved = torch.backends.cudnn.allow_tf32
    if get_device().type == "cpu":
        assert torch.backends.cudnn.allow_tf32 == saved


def test_claim_prints_figure_bound_and_margin(capsys, tmp_path, monkeypatch):
    log = tmp_path / "claims.jsonl"
    monkeypatch.setenv("NNVIS_CLAIMS_LOG", str(log))
    assert claim("PGD-10 fools", torch.tensor(1.0), ">=", 0.9)
    assert not claim("cosine of the inversion", np.float32(0.41), ">=", 0.45)
    assert claim("completeness gap", 0.004, "<", 0.01)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "PGD-10 fools: 1 >= 0.9 holds, margin 0.1 (10%)"
    assert printed[1].startswith("cosine of the inversion: 0.41 >= 0.45 FAILS, short by 0.04")
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [round(r["margin"], 3) for r in logged] == [0.1, round(-0.04 / 0.45, 3), 0.6]
    assert relative_margin(0.004, "<", 0.01) == pytest.approx(0.6)


@pytest.mark.parametrize("value, op, message", [(torch.ones(3), "<", "one number"), ("0.5", "<", "a number"),
                                                (float("nan"), "<", "a number"), (0.5, "=<", "op must be")])
def test_claim_rejects_what_it_cannot_compare(value, op, message):
    with pytest.raises((TypeError, ValueError), match=message):
        claim("x", value, op, 1.0)


def test_claim_is_hard_only_on_the_models_it_was_verified_on(capsys, tiny_cnn):
    from types import SimpleNamespace

    verified = SimpleNamespace(info=SimpleNamespace(name="efficientnet_lite0", pretrained=True))
    random_lite = SimpleNamespace(info=SimpleNamespace(name="efficientnet_lite0", pretrained=False))
    vgg = SimpleNamespace(info=SimpleNamespace(name="vgg16", pretrained=True))
    assert not claim("rate", 0.5, ">=", 0.9, model=verified), "hard on the model it was verified on"
    assert claim("rate", 0.5, ">=", 0.9, model=vgg), "shown, not asserted, on another model"
    assert claim("rate", 0.5, ">=", 0.9, model=random_lite)
    assert claim("rate", 0.5, ">=", 0.9, model=tiny_cnn)
    assert not claim("rate", 0.5, ">=", 0.9, model=vgg, verified_on=("vgg16",))
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("rate: 0.5 >= 0.9 FAILS")
    assert printed[1] == "rate: 0.5 >= 0.9 does not hold: verified on efficientnet_lite0, shown here only (vgg16)"
    assert printed[2].endswith("(efficientnet_lite0, random weights)")
    assert printed[3].endswith(f"(your own {type(tiny_cnn).__name__})")
    with pytest.raises(TypeError, match="tuple of model names"):
        claim("rate", 0.5, ">=", 0.9, model=vgg, verified_on="vgg16")
