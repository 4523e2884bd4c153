import numpy as np
import pytest
import torch

from nnvis_helpers import describe_device, get_device, is_fast, pick, quality, seed_everything


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
