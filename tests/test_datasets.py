"""Pictures in quantity (offline photos, folders, Imagenette, dataset()) and collect_activations."""
from __future__ import annotations

import ctypes
import gc
import os
import pickle
import re
import subprocess
import sys
import time
import weakref

import numpy as np
import psutil
import pytest
import torch
from conftest import TinyCNN, assert_untouched, snapshot
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

import nnvis_helpers
from nnvis_helpers import (
    ActivationSet,
    ImageFolderImages,
    ImagenetteImages,
    LayerNotFoundError,
    OfflinePhotos,
    capture_activations,
    collect_activations,
    count_hooks,
    dataset,
    load_image,
)
from nnvis_helpers import datasets as datasets_module
from nnvis_helpers.datasets import folders as folders_module
from nnvis_helpers import models as models_module

ALL_PHOTOS = [
    "chelsea", "coffee", "astronaut", "rocket", "motorcycle", "camera", "china", "flower",
    "grace_hopper", "brick", "grass", "gravel",
]


def test_everything_is_re_exported():
    missing = [name for name in datasets_module.__all__ if name not in nnvis_helpers.__all__ or not hasattr(nnvis_helpers, name)]
    assert not missing


# --------------------------------------------------------------------------------------------
# OfflinePhotos


def test_offline_photos_items():
    photos = OfflinePhotos(length=40, size=32)
    assert len(photos) == 40 and photos.classes == ALL_PHOTOS
    image, label = photos[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1 and image.std() > 0.01
    assert isinstance(label, int) and 0 <= label < len(ALL_PHOTOS)
    assert photos.classes[label] in photos.describe(0)
    with pytest.raises(IndexError, match="40 items"):
        photos[40]
    assert torch.equal(photos[-1][0], photos[39][0])


def test_offline_item_is_the_same_in_any_order_and_with_workers():
    photos = OfflinePhotos(length=12, size=24, seed=3)
    forward = [photos[i] for i in range(12)]
    backward = [photos[i] for i in reversed(range(12))][::-1]
    again = OfflinePhotos(length=12, size=24, seed=3)
    for (a, label_a), (b, label_b) in zip(forward, backward):
        assert torch.equal(a, b) and label_a == label_b
    assert all(torch.equal(again[i][0], forward[i][0]) for i in (0, 5, 11))
    with_workers = torch.cat([images for images, _ in DataLoader(photos, batch_size=5, num_workers=2)])
    assert torch.equal(with_workers, torch.stack([image for image, _ in forward]))
    copied = pickle.loads(pickle.dumps(photos))
    assert torch.equal(copied[7][0], forward[7][0])
    other = OfflinePhotos(length=12, size=24, seed=4)
    assert sum(torch.equal(other[i][0], forward[i][0]) for i in range(12)) == 0
    assert len({tuple(image.flatten()[:20].tolist()) for image, _ in forward}) == 12, "every item is a different picture"


def test_offline_photos_uses_every_photo():
    photos = OfflinePhotos(length=300, size=8)
    labels = {photos[i][1] for i in range(300)}
    assert labels == set(range(len(ALL_PHOTOS)))
    only = OfflinePhotos(length=30, size=8, photos=["brick", "coffee"])
    assert only.classes == ["brick", "coffee"] and {only[i][1] for i in range(30)} == {0, 1}


def test_describe_says_what_the_item_is():
    # Without jitter, the item must be exactly the crop that describe() names, cut from the photo.
    from torchvision.transforms.functional import hflip, resized_crop

    photos = OfflinePhotos(length=20, size=40, color_jitter=0, scale=(0.3, 0.6))
    mirrored_seen = set()
    for index in range(12):
        text = photos.describe(index)
        name = text.split("'")[1]
        side, top, left = map(int, re.search(r"the (\d+)x\1 square at row (\d+), column (\d+) of", text).group(1, 2, 3))
        photo = load_image(name, size=None)[0]
        expected = resized_crop(photo, top, left, side, side, [40, 40], antialias=True).clamp(0, 1)
        mirrored = "mirrored" in text
        mirrored_seen.add(mirrored)
        image, label = photos[index]
        assert photos.classes[label] == name
        assert torch.allclose(image, hflip(expected) if mirrored else expected, atol=1e-6), text
        assert 0.3 * min(photo.shape[1:]) ** 2 <= (side + 1) ** 2 and (side - 1) ** 2 <= 0.6 * min(photo.shape[1:]) ** 2
    assert mirrored_seen == {True, False}
    assert not any("mirrored" in OfflinePhotos(length=20, flip=False).describe(i) for i in range(20))


@pytest.mark.parametrize(
    "options, match",
    [
        ({"length": 0}, "length"),
        ({"size": 4}, "size"),
        ({"photos": ["chelsea", "dog"]}, "unknown photo 'dog'.*grace_hopper"),
        ({"photos": []}, "no photo"),
        ({"scale": (0.5, 0.2)}, "smallest <= largest"),
        ({"scale": (0, 1)}, "0 < smallest"),
        ({"scale": "big"}, "pair"),
        ({"color_jitter": 1.5}, "color_jitter"),
        ({"seed": -1}, "seed"),
    ],
)
def test_offline_photos_refuses_nonsense(options, match):
    with pytest.raises(ValueError, match=match):
        OfflinePhotos(**options)


# --------------------------------------------------------------------------------------------
# collect_activations on tiny models


def _images(count: int = 6, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_positions_are_seeded_distinct_and_independent_of_batch_size(tiny_cnn):
    images = _images(7)
    first = collect_activations(tiny_cnn, "features.3", images, positions_per_image=5, seed=1, batch_size=3, progress=False)
    again = collect_activations(tiny_cnn, "features.3", images, positions_per_image=5, seed=1, batch_size=7, progress=False)
    other = collect_activations(tiny_cnn, "features.3", images, positions_per_image=5, seed=2, progress=False)
    assert len(first) == 35 and first.vectors.shape == (35, 16) and first.map_size == (8, 8)
    assert torch.equal(first.positions, again.positions) and torch.allclose(first.vectors, again.vectors, atol=1e-6)
    assert not torch.equal(first.positions, other.positions)
    assert torch.equal(first.image_index, torch.arange(7).repeat_interleave(5))
    for image in range(7):
        chosen = first.positions[first.image_index == image]
        assert len({tuple(p) for p in chosen.tolist()}) == 5, "positions of one image are distinct"
    assert first.positions.min() >= 0 and first.positions.max() < 8
    every = collect_activations(tiny_cnn, "features.3", images[:1], positions_per_image=64, progress=False)
    assert len({tuple(p) for p in every.positions.tolist()}) == 64


def test_vectors_equal_capture_activations(tiny_cnn):
    # features.3 is followed by ReLU(inplace=True): the vectors must be the conv output, before the ReLU.
    images = _images(5)
    acts = collect_activations(tiny_cnn, "features.3", images, positions_per_image=3, batch_size=2, progress=False)
    with capture_activations(tiny_cnn, "features.3") as captured:
        logits = tiny_cnn(images)
    maps = captured["features.3"]
    assert (maps < 0).any(), "the check needs negative values that an in-place ReLU would have erased"
    rows, columns = acts.positions.unbind(1)
    assert torch.allclose(acts.vectors, maps[acts.image_index, :, rows, columns], atol=1e-6)
    assert torch.equal(acts.predictions, logits.argmax(1))
    assert torch.equal(acts.predicted_class, logits.argmax(1)[acts.image_index])
    assert acts.image_size == (16, 16) and acts.num_images == 5 and acts.labels is None and acts.layer == "features.3"
    mean = collect_activations(tiny_cnn, "features.3", images, positions_per_image="mean", progress=False)
    assert torch.allclose(mean.vectors, maps.mean(dim=(2, 3)), atol=1e-6)
    assert (mean.positions == -1).all() and torch.equal(mean.image_index, torch.arange(5))


def test_vectors_of_a_linear_layer_before_an_in_place_relu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 12), nn.ReLU(inplace=True), nn.Linear(12, 4)).eval()
    images = _images(6, size=8)
    acts = collect_activations(model, "1", images, positions_per_image=3, progress=False)
    expected = model[1](images.flatten(1))
    assert (expected < 0).any() and acts.vectors.shape == (6, 12) and acts.map_size == (1, 1)
    assert torch.allclose(acts.vectors, expected, atol=1e-6)
    assert (acts.positions == -1).all()


class _Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


class _SharedReLU(nn.Module):
    """One ReLU module used twice per forward pass, as torchvision's ResNet blocks do."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.after = _Counting()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.head(self.after(x).mean(dim=(2, 3)))


def test_early_stop_skips_the_rest_and_keeps_the_last_call():
    torch.manual_seed(0)
    model = _SharedReLU().eval()
    images = _images(8, size=6)
    with capture_activations(model, "relu") as captured:
        model(images)
    for predictions in (False, True):
        model.after.calls = 0
        acts = collect_activations(model, "relu", images, positions_per_image="mean", batch_size=2, predictions=predictions, progress=False)
        assert torch.allclose(acts.vectors, captured["relu"].mean(dim=(2, 3)), atol=1e-6), "the layer's last call, as capture_activations"
        # 4 batches. With predictions every batch runs whole; without, one image runs whole first (it counts
        # how often the layer runs) and every batch then stops after the layer's last call.
        assert model.after.calls == (4 if predictions else 1)
        assert (acts.predictions is not None) == predictions


def test_top_examples_take_the_last_call_of_a_shared_layer():
    from nnvis_helpers.channels import top_examples

    torch.manual_seed(0)
    model = _SharedReLU().eval()
    images = _images(8, size=6)
    with capture_activations(model, "relu") as captured:
        model(images)
    model.after.calls = 0
    top = top_examples(model, "relu", images, k=3, batch_size=3, progress=False)
    assert model.after.calls == 1  # only the counting image ran past the layer
    assert torch.allclose(top.image_max, captured["relu"].flatten(2).amax(2), atol=1e-6)


class _Stream(Dataset):
    def __init__(self, images, labelled=True):
        self.images, self.labelled, self.loaded = images, labelled, 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        self.loaded += 1
        return (self.images[index], index % 3) if self.labelled else self.images[index]


def test_every_kind_of_data_gives_the_same_vectors(tiny_cnn):
    images = _images(7)
    reference = collect_activations(tiny_cnn, "features.0", images, positions_per_image=2, progress=False)
    labels = torch.arange(7) % 3
    forms = {
        "dataset": _Stream(images),
        "dataset without labels": _Stream(images, labelled=False),
        "dataloader": DataLoader(_Stream(images), batch_size=4),
        "generator of batches": (images[i : i + 3] for i in range(0, 7, 3)),
        "generator of pairs": ((images[i : i + 2], labels[i : i + 2]) for i in range(0, 7, 2)),
        "single images": iter(list(images)),
        "single labelled images": ((image, int(label)) for image, label in zip(images, labels)),
    }
    for name, data in forms.items():
        acts = collect_activations(tiny_cnn, "features.0", data, positions_per_image=2, batch_size=3, progress=False)
        assert torch.allclose(acts.vectors, reference.vectors, atol=1e-6) and torch.equal(acts.positions, reference.positions), name
        assert torch.equal(acts.predictions, reference.predictions), name
        has_labels = name in ("dataset", "dataloader", "generator of pairs", "single labelled images")
        assert (acts.labels is not None) == has_labels, name
        if has_labels:
            assert torch.equal(acts.labels, labels), name


def test_max_images_stops_the_stream(tiny_cnn):
    stream = _Stream(_images(20))
    acts = collect_activations(tiny_cnn, "features.0", stream, max_images=5, batch_size=4, progress=False)
    assert acts.num_images == 5 and stream.loaded == 5 and acts.predictions.shape == (5,) and acts.labels.shape == (5,)
    pulled = []

    def generator():
        for index in range(100):
            pulled.append(index)
            yield _images(1, seed=index)[0]

    acts = collect_activations(tiny_cnn, "features.0", generator(), max_images=7, batch_size=3, progress=False)
    assert acts.num_images == 7 and len(pulled) <= 9


def test_activation_set_subset(tiny_cnn):
    acts = collect_activations(tiny_cnn, "features.3", _images(4), positions_per_image=3, progress=False)
    picked = acts.subset(acts.image_index == 2)
    assert isinstance(picked, ActivationSet) and len(picked) == 3 and (picked.image_index == 2).all()
    assert torch.equal(picked.predictions, acts.predictions) and picked.num_images == 4
    by_index = acts.subset([0, 5])
    assert torch.equal(by_index.vectors, acts.vectors[[0, 5]]) and torch.equal(by_index.positions, acts.positions[[0, 5]])
    with pytest.raises(ValueError, match="one entry per vector"):
        acts.subset(torch.tensor([True, False]))


def _resident_bytes(process) -> int:
    gc.collect()
    try:  # hand freed heap back to the system, so that growth from here on is new memory
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return process.memory_info().rss


def test_memory_stays_bounded_over_10000_images():
    """Measured in a child process whose C allocator returns freed image batches to the system at once.

    glibc raises its mmap threshold after the first large free: later 600 kB batches then come from the heap,
    and the resident size grows by 0.4-13 MB over 5,000 streamed images depending on fragmentation (12 runs
    here), whatever the code keeps. With the threshold fixed (MALLOC_MMAP_THRESHOLD_) the resident size
    tracks the live objects: 0.6 MB over the second half, against 124 MB when the images are kept."""
    if os.environ.get("NNVIS_MEMORY_CHILD") == "1":
        return _measure_memory_over_10000_images()
    environment = {**os.environ, "NNVIS_MEMORY_CHILD": "1", "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:randomly", "-p", "no:cacheprovider",
                            f"{__file__}::test_memory_stays_bounded_over_10000_images"],
                           env=environment, capture_output=True, text=True, timeout=600)
    print(child.stdout[-2000:])
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-2000:]


def _measure_memory_over_10000_images():
    # 10,000 images of 3x32x32 float32 take 123 MB; collect_activations keeps one 8-channel vector
    # per image (0.3 MB). Two measurements while the stream runs: the process's resident memory,
    # and how many of the batches the generator made are still alive.
    process = psutil.Process()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    image_bytes = 10_000 * 3 * 32 * 32 * 4

    def stream(resident: list[int], alive: list[int]):
        generator, made = torch.Generator().manual_seed(0), []
        for step in range(200):
            batch = torch.rand(50, 3, 32, 32, generator=generator)
            made.append(weakref.ref(batch))
            yield batch
            del batch
            if step % 10 == 9:
                resident.append(process.memory_info().rss)
                alive.append(sum(ref() is not None for ref in made))

    collect_activations(model, "0", torch.rand(50, 3, 32, 32), progress=False)  # imports, thread pools: not images
    before, resident, alive = _resident_bytes(process), [], []
    acts = collect_activations(model, "0", stream(resident, alive), positions_per_image=1, batch_size=50, progress=False)
    growth = max(resident) - before
    assert len(acts) == 10_000 and acts.num_images == 10_000 and acts.vectors.shape == (10_000, 8)

    # The control: the same stream kept in a list, as a collect_activations that held on to the
    # images would. It measures about +123 MB and 200 live batches. (A collect_activations that
    # kept a copy of every batch measured +247 MB, 123 MB of it over the second half.)
    before_control, control_resident, control_alive = _resident_bytes(process), [], []
    kept = list(stream(control_resident, control_alive))
    control_growth = max(control_resident) - before_control
    del kept
    print(f"10,000 images ({image_bytes / 1e6:.0f} MB): resident memory grew {growth / 1e6:.1f} MB "
          f"({(resident[-1] - resident[len(resident) // 2 - 1]) / 1e6:.1f} MB over the second half) with at most "
          f"{max(alive)} batches alive; keeping them grew {control_growth / 1e6:.0f} MB, {max(control_alive)} batches alive")
    assert control_growth > 0.8 * image_bytes and max(control_alive) == 200, "the measurement must see images that are kept"
    assert max(alive) <= 3, f"{max(alive)} batches of images were still alive: collect_activations keeps images"
    # Allocator arenas and caches take a few MB at the start and then stay flat: the second half of
    # the stream (62 MB of images) must add almost nothing.
    assert growth < image_bytes / 4, f"memory grew by {growth / 1e6:.0f} MB while streaming {image_bytes / 1e6:.0f} MB of images"
    second_half = resident[-1] - resident[len(resident) // 2 - 1]
    assert second_half < image_bytes / 16, f"memory grew by {second_half / 1e6:.0f} MB over the second 5,000 images"


_PEAK_CHILD = """
import sys
import psutil
from nnvis_helpers import collect_activations, dataset, load_model, top_examples
what, length = sys.argv[1], int(sys.argv[2])
model = load_model("efficientnet_lite0")
data = dataset("offline", size=224, length=length, seed=0)
for index in range(0, len(data), 7):  # decode every photo once: that cache is not the stream's
    data[index]
def resident_peak():  # VmHWM: the kernel's own high-water mark of resident memory, exact
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))
with open("/proc/self/clear_refs", "w") as clear:  # reset the high-water mark to the present resident size
    clear.write("5")
before = psutil.Process().memory_info().rss
if what == "collect":
    collect_activations(model, "blocks.3", data, batch_size=32, progress=False)
else:
    top_examples(model, "blocks.3", data, k=4, batch_size=32, progress=False)
peak = [resident_peak()]
print((peak[0] - before) / 2**20)
"""


@pytest.mark.parametrize("what", ["collect", "top_examples"])
def test_peak_memory_is_flat_in_the_number_of_images_streamed(what):
    """Peak resident memory while 200 and then 800 offline crops stream through the offline model (blocks.3, 224 px).

    Each length runs in a fresh process with the C allocator as a learner has it (no malloc variables); the peak
    is the kernel's high-water mark (VmHWM). When every batch left small kept tensors on glibc's heap (lists of
    per-batch vectors and predictions), the peak grew with the stream: 815 -> 1,175 and 966 -> 1,228 MiB for
    200 -> 800 images (+360, +262). With the kept rows in one buffer: 764 -> 777 and 778 -> 763 MiB (+13, -15);
    the peak is the forward pass of one batch, whatever the length."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    peaks = {}
    for length in (200, 800):
        child = subprocess.run([sys.executable, "-c", _PEAK_CHILD, what, str(length)], env=environment,
                               capture_output=True, text=True, timeout=600)
        assert child.returncode == 0, child.stderr[-3000:]
        peaks[length] = float(child.stdout.split()[-1])
    growth = peaks[800] - peaks[200]
    print(f"{what}: peak growth {peaks[200]:.0f} MiB for 200 images, {peaks[800]:.0f} MiB for 800: "
          f"{growth:+.0f} MiB for 4x the images (bound 100)")
    assert growth < 100, f"the peak grew by {growth:.0f} MiB with 4x the images: something is kept per batch"


class _NormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.norm = nn.BatchNorm2d(6)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        x = self.drop(self.relu(self.norm(self.conv(x))))
        return self.head(x.mean(dim=(2, 3)))


def _failing_stream(error: BaseException):
    generator = torch.Generator().manual_seed(0)
    yield torch.rand(4, 3, 8, 8, generator=generator)
    yield torch.rand(4, 3, 8, 8, generator=generator)
    raise error


@pytest.mark.parametrize("how", ["success", "error", "interrupt"])
def test_model_is_left_exactly_as_it_was(how):
    torch.manual_seed(0)
    model = _NormNet().train()  # a model in the middle of training
    model.norm.running_mean.normal_()
    model.conv.weight.grad = torch.ones_like(model.conv.weight)
    model.head.bias.requires_grad_(False)
    before = snapshot(model)
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    if how == "success":
        images = _images(8, size=8)
        acts = collect_activations(model, "norm", images, positions_per_image=2, batch_size=3, progress=False)
        model.eval()
        with torch.no_grad():
            assert torch.equal(acts.predictions, model(images).argmax(1)), "ran in eval mode: no dropout, running statistics"
        model.train()
        assert not acts.vectors.requires_grad
    else:
        error = RuntimeError("the disk went away") if how == "error" else KeyboardInterrupt()
        with pytest.raises(type(error)):
            collect_activations(model, "norm", _failing_stream(error), batch_size=4, progress=False)
    assert_untouched(model, before)
    assert count_hooks(model) == 0 and model.training and model.drop.training
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers[name]), f"buffer {name} changed"


def test_collect_activations_refuses_nonsense(tiny_cnn):
    images = _images(2)
    with pytest.raises(LayerNotFoundError, match="features.3"):
        collect_activations(tiny_cnn, "feature.3", images, progress=False)
    for bad in (0, -1, 1.5, True, "max"):
        with pytest.raises(ValueError, match="positions_per_image"):
            collect_activations(tiny_cnn, "features.3", images, positions_per_image=bad, progress=False)
    with pytest.raises(ValueError, match="at most 64"):
        collect_activations(tiny_cnn, "features.3", images, positions_per_image=65, progress=False)
    with pytest.raises(ValueError, match="no images"):
        collect_activations(tiny_cnn, "features.3", [], progress=False)
    with pytest.raises(ValueError, match="no images"):
        collect_activations(tiny_cnn, "features.3", (image for image in []), progress=False)
    with pytest.raises(ValueError, match="divide by 255"):
        collect_activations(tiny_cnn, "features.3", images * 255, progress=False)
    with pytest.raises(ValueError, match="one size"):
        collect_activations(tiny_cnn, "features.3", [images, _images(2, size=20)], progress=False)
    with pytest.raises(TypeError, match="dataset"):
        collect_activations(tiny_cnn, "features.3", "chelsea", progress=False)
    with pytest.raises(TypeError, match="expected image tensors"):
        collect_activations(tiny_cnn, "features.3", [np.zeros((3, 16, 16))], progress=False)
    with pytest.raises(ValueError, match="unsqueeze"):
        collect_activations(tiny_cnn, "features.3", images[0], progress=False)
    flat = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(2), nn.Flatten(), nn.Linear(4 * 14 * 14, 2)).eval()
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) maps or \(N, C\) vectors"):
        collect_activations(flat, "1", images, progress=False)
    unused = TinyCNN().eval()
    unused.spare = nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match="never ran"):
        collect_activations(unused, "spare", images, progress=False)
    features_only = tiny_cnn.features
    with pytest.raises(ValueError, match="predictions=False"):
        collect_activations(features_only, "3", images, progress=False)
    assert collect_activations(features_only, "3", images, predictions=False, progress=False).predictions is None
    assert count_hooks(tiny_cnn) == 0


def test_offline_photos_through_workers_give_the_same_activations(tiny_cnn):
    photos = OfflinePhotos(length=10, size=16)
    alone = collect_activations(tiny_cnn, "features.3", photos, positions_per_image=2, batch_size=4, progress=False)
    workers = collect_activations(tiny_cnn, "features.3", photos, positions_per_image=2, batch_size=4, num_workers=2, progress=False)
    assert torch.equal(alone.vectors, workers.vectors) and torch.equal(alone.labels, workers.labels)
    assert torch.equal(alone.labels, torch.tensor([photos[i][1] for i in range(10)]))


def test_offline_model_vectors_and_predictions(offline_model):
    photos = OfflinePhotos(length=4, size=96)
    images = torch.stack([photos[i][0] for i in range(4)])
    acts = collect_activations(offline_model, "blocks.5", photos, positions_per_image=2, batch_size=3, progress=False)
    with capture_activations(offline_model, "blocks.5") as captured, torch.no_grad():
        logits = offline_model(images)
    rows, columns = acts.positions.unbind(1)
    assert acts.map_size == (3, 3) and acts.vectors.shape == (8, captured["blocks.5"].shape[1])
    assert torch.allclose(acts.vectors, captured["blocks.5"][acts.image_index, :, rows, columns], atol=1e-4)
    assert torch.equal(acts.predictions, logits.argmax(1))


# --------------------------------------------------------------------------------------------
# Folders, Imagenette, dataset()


def _write_pictures(folder, names=("a.png", "b.png", "c.jpg")):
    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(0)
    for index, name in enumerate(names):
        size = (40 + 10 * index, 30 + 5 * index)
        mode = ("RGB", "L", "RGBA")[index % 3]
        mode = "RGB" if mode == "RGBA" and not name.endswith(".png") else mode  # JPEG has no alpha
        shape = (size[1], size[0], {"RGB": 3, "L": 1, "RGBA": 4}[mode])
        array = generator.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(array.squeeze(2) if mode == "L" else array, mode).save(folder / name)


def test_image_folder_flat_with_a_fake_picture(tmp_path):
    _write_pictures(tmp_path / "pictures")
    (tmp_path / "pictures" / "notes.jpg").write_text("not a picture")
    (tmp_path / "pictures" / "readme.txt").write_text("ignored: not a picture name")
    with pytest.warns(UserWarning, match="notes.jpg"):
        pictures = ImageFolderImages(tmp_path / "pictures", size=24)
    assert len(pictures) == 3 and pictures.classes == ["pictures"]
    for index in range(3):
        image, label = pictures[index]
        assert image.shape == (3, 24, 24) and image.dtype == torch.float32 and label == 0
        assert 0 <= image.min() and image.max() <= 1


def test_image_folder_with_class_subfolders(tmp_path):
    _write_pictures(tmp_path / "cat", ("1.png", "2.png"))
    _write_pictures(tmp_path / "dog", ("3.jpg",))
    _write_pictures(tmp_path / ".ipynb_checkpoints", ("4.png",))
    (tmp_path / "empty").mkdir()
    pictures = ImageFolderImages(str(tmp_path), size=16)
    assert pictures.classes == ["cat", "dog"] and len(pictures) == 3
    assert [label for _, label in pictures.samples] == [0, 0, 1] and pictures[2][0].shape == (3, 16, 16)
    acts = collect_activations(TinyCNN().eval(), "features.0", pictures, progress=False)
    assert torch.equal(acts.labels, torch.tensor([0, 0, 1]))


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no pictures in .*\.jpg, \.jpeg, \.png"):
        ImageFolderImages(tmp_path / "empty")
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "x.png").write_text("not a picture")
    with pytest.warns(UserWarning, match="x.png"), pytest.raises(ValueError, match="no pictures"):
        ImageFolderImages(tmp_path / "fake")
    _write_pictures(tmp_path / "real", ("a.png",))
    with pytest.raises(NotADirectoryError, match="load_image"):
        ImageFolderImages(tmp_path / "real" / "a.png")
    with pytest.raises(FileNotFoundError, match="no folder"):
        ImageFolderImages(tmp_path / "missing")


def _fake_imagenette(root, folder="imagenette2-160"):
    for wnid in ("n01440764", "n02102040"):
        _write_pictures(root / folder / "val" / wnid, (f"{wnid}_1.JPEG",))
        _write_pictures(root / folder / "train" / wnid, (f"{wnid}_2.JPEG",))


def test_imagenette_when_it_is_on_disk(tmp_path, capsys):
    _fake_imagenette(tmp_path)
    images = ImagenetteImages(tmp_path, size=32)
    assert images.classes == ["tench", "English springer"] and len(images) == 2
    image, label = images[1]
    assert image.shape == (3, 32, 32) and label == 1
    chosen = dataset("auto", size=32, root=tmp_path, length=2)
    assert isinstance(chosen, ImagenetteImages) and len(chosen) == 2 and chosen.split == "val"
    assert capsys.readouterr().out.strip() == f"dataset('auto'): using imagenette (it is already downloaded in {tmp_path})."
    with pytest.raises(FileNotFoundError, match="download=True"):
        ImagenetteImages(tmp_path / "elsewhere")


def test_imagenette_gives_the_length_asked_for_and_adds_train_when_val_is_too_small(tmp_path, monkeypatch, capsys):
    for wnid in ("n01440764", "n02102040"):
        _write_pictures(tmp_path / "imagenette2-160" / "val" / wnid, tuple(f"{wnid}_v{i}.JPEG" for i in range(3)))
        _write_pictures(tmp_path / "imagenette2-160" / "train" / wnid, tuple(f"{wnid}_t{i}.JPEG" for i in range(5)))
    few = dataset("imagenette", size=16, root=tmp_path, length=4, seed=1)
    assert len(few) == 4 and few.split == "val" and few.available == 6
    assert [few[i][1] for i in range(4)] == [dataset("imagenette", size=16, root=tmp_path, length=4, seed=1)[i][1]
                                             for i in range(4)], "the same pictures from the same seed"
    assert "4 of its 6 val pictures (seed 1)" in repr(few)
    more = dataset("imagenette", size=16, root=tmp_path, length=10)
    assert len(more) == 10 and more.split == "all" and more.available == 16 and {more[i][1] for i in range(10)} == {0, 1}
    assert capsys.readouterr().out == ""
    everything = dataset("imagenette", size=16, root=tmp_path, length=100)
    assert len(everything) == 16 and "100 pictures asked for, Imagenette has 16" in capsys.readouterr().out
    assert len(ImagenetteImages(tmp_path, split="train", size=16)) == 10
    with pytest.raises(IndexError, match="16"):
        everything[16]
    with pytest.raises(ValueError, match="'val', 'train' or 'all'"):
        ImagenetteImages(tmp_path, split="test")
    with pytest.raises(ValueError, match="length"):
        ImagenetteImages(tmp_path, length=0)
    monkeypatch.delenv("NNVIS_DATASET", raising=False)
    monkeypatch.setenv("NNVIS_DATA_ROOT", str(tmp_path))
    assert folders_module.default_data_root() == tmp_path
    assert isinstance(dataset("auto", size=16, length=3), ImagenetteImages), "NNVIS_DATA_ROOT is where 'auto' looks"


def test_auto_falls_back_to_the_offline_photos(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("NNVIS_DATASET", raising=False)
    monkeypatch.setattr(models_module, "_can_reach", lambda url, timeout=3.0: False)
    start = time.perf_counter()
    chosen = dataset("auto", size=32, length=50, root=tmp_path)
    assert time.perf_counter() - start < 2
    assert isinstance(chosen, OfflinePhotos) and len(chosen) == 50 and chosen[0][0].shape == (3, 32, 32)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dataset('auto'): using offline (") and "cannot be reached" in lines[0]
    dataset("auto", size=32, root=tmp_path, verbose=False)
    assert capsys.readouterr().out == ""


def test_the_real_probe_answers_within_its_timeout():
    url = folders_module._imagenette_url("160px")
    start = time.perf_counter()
    answer = models_module._can_reach(url, timeout=1.0)
    assert isinstance(answer, bool) and time.perf_counter() - start < 2.0


def test_nnvis_dataset_overrides_auto(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(models_module, "_can_reach", lambda url, timeout=3.0: pytest.fail("no probe when NNVIS_DATASET is set"))
    monkeypatch.setenv("NNVIS_DATASET", "offline")
    assert isinstance(dataset("auto", size=16, length=5), OfflinePhotos)
    assert "NNVIS_DATASET=offline is set" in capsys.readouterr().out
    _write_pictures(tmp_path / "mine")
    monkeypatch.setenv("NNVIS_DATASET", str(tmp_path / "mine"))
    chosen = dataset("auto", size=16)
    assert isinstance(chosen, ImageFolderImages) and len(chosen) == 3
    assert isinstance(dataset("offline", size=16, length=3), OfflinePhotos), "only 'auto' reads NNVIS_DATASET"
    with pytest.raises(ValueError, match="'offline', 'imagenette' or the path"):
        dataset("imagenet")
