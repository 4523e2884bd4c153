"""The activations a layer gives on many images, kept as a few vectors per image.

* :func:`collect_activations` — streams images through a model and keeps a few activation
  vectors per image (an :class:`ActivationSet`), never the images themselves.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..checks import check_images
from ..layers import _first_tensor, _model_device, _StopForward, get_layer, preserve_model_state
from .photos import _check_int

__all__ = ["ActivationSet", "collect_activations", "stream_layer"]


@dataclass
class ActivationSet:
    """Activation vectors of one layer, kept at a few positions of many images (see :func:`collect_activations`).

    ``vectors`` (M, C) float32 on the CPU; ``image_index`` (M,) the item each came from, counted
    in stream order; ``positions`` (M, 2) its (row, column) in the layer's map, (-1, -1) for a
    spatial mean or a layer without a map; ``predictions`` and ``labels`` (num_images,) per
    image, or None; ``map_size`` the layer's (H, W); ``image_size`` the images' (H, W).

    >>> acts = collect_activations(model, "blocks.5", dataset("offline"))
    >>> acts.vectors.shape, acts.predicted_class[:3]
    """

    layer: str
    vectors: torch.Tensor
    image_index: torch.Tensor
    positions: torch.Tensor
    predictions: torch.Tensor | None
    map_size: tuple[int, int]
    image_size: tuple[int, int]
    num_images: int
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.vectors.shape[0]

    @property
    def predicted_class(self) -> torch.Tensor | None:
        """The model's top-1 class of the image each vector came from, (M,), or None."""
        return None if self.predictions is None else self.predictions[self.image_index]

    def subset(self, mask_or_indices) -> "ActivationSet":
        """The vectors picked by a boolean mask (M,) or by indices; per-image predictions and labels stay whole."""
        index = torch.as_tensor(mask_or_indices)
        if index.dtype == torch.bool:
            if index.shape != (len(self),):
                raise ValueError(f"a mask must have one entry per vector, shape ({len(self)},), got {tuple(index.shape)}.")
            index = index.nonzero().squeeze(1)
        elif index.is_floating_point():
            raise TypeError("subset takes a boolean mask or integer indices, not floats.")
        index = index.long().reshape(-1)
        return ActivationSet(
            self.layer, self.vectors[index], self.image_index[index], self.positions[index], self.predictions,
            self.map_size, self.image_size, self.num_images, self.labels,
        )


def _as_labels(labels, count: int) -> torch.Tensor | None:
    """Integer class labels as a long tensor (count,), or None when they are not integers."""
    if labels is None:
        return None
    try:
        tensor = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        return None
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool or tensor.numel() != count:
        return None
    return tensor.reshape(count).long().cpu()


def _split_item(item) -> tuple[torch.Tensor, object, bool]:
    """One element of the data -> (images, labels, is_batch)."""
    labels = None
    if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], torch.Tensor):
        item, labels = item
    if not isinstance(item, torch.Tensor) or item.dim() not in (3, 4):
        shape = f" of shape {tuple(item.shape)}" if isinstance(item, torch.Tensor) else ""
        raise TypeError(
            f"the data gave a {type(item).__name__}{shape}; expected image tensors (B, 3, H, W) or (3, H, W) in [0, 1], "
            "or (images, labels) pairs. load_image() or dataset() make such tensors."
        )
    return item, labels, item.dim() == 4


def _batches(data, batch_size: int, num_workers: int, pin_memory: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Any kind of data -> batches (images (B, 3, H, W), labels (B,) or None) of at most ``batch_size``."""
    if isinstance(data, torch.Tensor):
        if data.dim() != 4:
            check_images(data, "data")  # explains the shape that was expected
        items: Iterable = (data[start : start + batch_size] for start in range(0, len(data), batch_size))
    elif isinstance(data, Dataset):
        items = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=pin_memory)
    elif isinstance(data, (str, bytes, os.PathLike)):
        raise TypeError(f"data is a name or path ({str(data)!r}); load it first: collect_activations(model, layer, dataset({str(data)!r})).")
    else:
        try:
            items = iter(data)
        except TypeError:
            raise TypeError(
                f"data must be a Dataset, a DataLoader, a tensor (N, 3, H, W) or an iterable of images, got {type(data).__name__}."
            ) from None
    pending: list[tuple[torch.Tensor, object]] = []  # single images waiting to fill a batch

    def flush():
        sizes = sorted({tuple(image.shape) for image, _ in pending})
        if len(sizes) > 1:
            raise ValueError(f"the data gave single images of different shapes {sizes[:2]}: give images of one size.")
        images = torch.stack([image for image, _ in pending])
        labels = [label for _, label in pending]
        pending.clear()
        return images, None if any(label is None for label in labels) else _as_labels(labels, len(labels))

    for item in items:
        images, labels, is_batch = _split_item(item)
        if not is_batch:
            pending.append((images, labels))
            if len(pending) == batch_size:
                yield flush()
            continue
        if pending:
            yield flush()
        labels = _as_labels(labels, images.shape[0])
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size], None if labels is None else labels[start : start + batch_size]
    if pending:
        yield flush()


def _stream_length(data) -> int | None:
    """How many images ``data`` holds, when it says so (not for generators or iterable datasets)."""
    try:
        if isinstance(data, torch.Tensor):
            return data.shape[0] if data.dim() == 4 else None
        if isinstance(data, DataLoader):
            return len(data.dataset)
        return len(data) if isinstance(data, Dataset) else None
    except TypeError:
        return None


def _expected_images(data, max_images: int | None) -> int | None:
    """How many images a stream of ``data`` will give, capped by ``max_images``; None when unknown."""
    total = _stream_length(data)
    return max_images if total is None else total if max_images is None else min(total, max_images)


class _Rows:
    """Rows of one dtype and width, appended batch by batch into one preallocated tensor that doubles when full.

    Why not a list of per-batch tensors: glibc serves allocations between 128 kB and 32 MB (the layer's maps,
    the images) from its heap once a large block was freed, and every small tensor kept from a batch then sits
    on top of that batch's freed memory, so the heap can never shrink: a learner's process grew by about
    0.27 MiB per image streamed through the offline model (1.3 kB kept). One block, allocated before the
    stream when its length is known and otherwise doubled a handful of times, pins nothing.
    """

    def __init__(self, capacity: int | None):
        self.capacity, self.data, self.count = capacity, None, 0

    def append(self, rows: torch.Tensor) -> None:
        rows = rows.detach()
        needed = self.count + rows.shape[0]
        if self.data is None or needed > self.data.shape[0]:
            size = max(needed, self.capacity or 0, 2 * (0 if self.data is None else self.data.shape[0]), 1024)
            grown = torch.empty((size, *rows.shape[1:]), dtype=rows.dtype)
            if self.data is not None:
                grown[: self.count] = self.data[: self.count]
            self.data = grown
        self.data[self.count : needed] = rows  # copies from the device too
        self.count = needed

    def result(self, empty_shape: tuple[int, ...] = (0,), dtype=torch.float32) -> torch.Tensor:
        """The rows kept, as one tensor that owns just them (a clone, so the spare capacity is freed)."""
        if self.data is None:
            return torch.empty(empty_shape, dtype=dtype)
        return self.data[: self.count].clone() if self.count < self.data.shape[0] else self.data


class _VectorKeeper:
    """The forward hook of :func:`collect_activations`: keeps the chosen vectors of each batch.

    The first batch gets a full pass that counts how often the layer runs (a module such as a
    shared ReLU may run several times); from then on the vectors are taken at the last call,
    as :func:`capture_activations` keeps, and with ``stop_early`` the pass ends right there.
    """

    def __init__(self, layer: str, count: int, mean: bool, stop_early: bool, seed: int, total_images: int | None = None):
        self.layer, self.count, self.mean, self.stop_early = layer, count, mean, stop_early
        self.generator = torch.Generator().manual_seed(seed)
        self.expected_calls: int | None = None
        self.map_size: tuple[int, int] | None = None
        rows = None if total_images is None else total_images * count
        self.vectors, self.positions, self.image_index = _Rows(rows), _Rows(rows), _Rows(rows)
        self.images_done = 0

    def __call__(self, _module, _inputs, output) -> None:
        self.calls += 1
        tensor = _first_tensor(output)
        if self.expected_calls is None:  # the counting pass; a later in-place op must not change our copy
            self.first_output = tensor.detach().clone() if isinstance(tensor, torch.Tensor) else output
        elif self.calls == self.expected_calls:
            self.keep(tensor)
            if self.stop_early:
                raise _StopForward

    def run(self, model: nn.Module, images: torch.Tensor):
        """``model(images)`` with the vectors kept; None when the pass stopped after the layer."""
        if self.expected_calls is None and self.stop_early and images.shape[0] > 1:
            # Count the layer's calls on one image, so that the whole first batch can stop early too.
            self.batch, self.calls = 1, 0
            model(images[:1])
            self._counted()
            self.first_output = None
        self.batch, self.calls = images.shape[0], 0
        try:
            output = model(images)
        except _StopForward:
            output = None
        if self.expected_calls is None:
            self._counted()
            self.keep(self.first_output)
            self.first_output = None
        self.images_done += self.batch
        return output

    def _counted(self) -> None:
        if self.calls == 0:
            raise ValueError(
                f"layer {self.layer!r} never ran during the forward pass: model.forward does not use it. "
                "Pick a layer on the path from the image to the output."
            )
        self.expected_calls = self.calls

    def keep(self, tensor) -> None:
        batch = self.batch
        if not isinstance(tensor, torch.Tensor) or tensor.dim() not in (2, 4) or tensor.shape[0] != batch:
            got = f"a tensor of shape {tuple(tensor.shape)}" if isinstance(tensor, torch.Tensor) else "no tensor"
            raise ValueError(
                f"layer {self.layer!r} gives {got} for a batch of {batch} images; collect_activations needs "
                "(N, C, H, W) maps or (N, C) vectors. Pick a convolution block, a pooling or a linear layer "
                "(layer_names(model) lists them)."
            )
        map_size = tuple(tensor.shape[2:]) if tensor.dim() == 4 else (1, 1)
        if self.map_size is not None and map_size != self.map_size:
            raise ValueError(f"layer {self.layer!r} gave a {map_size} map after {self.map_size}: give images of one size.")
        self.map_size = map_size
        height, width = map_size
        if tensor.dim() == 2 or self.mean:
            # A copy: an in-place op after the layer (ReLU(inplace=True)) would change the output we hold.
            vectors = tensor.clone() if tensor.dim() == 2 else tensor.float().mean(dim=(2, 3))
            positions = torch.full((batch, 2), -1, dtype=torch.long)
        else:
            if self.count > height * width:
                raise ValueError(
                    f"positions_per_image={self.count} but layer {self.layer!r} has a {height}x{width} map, "
                    f"{height * width} positions; ask for at most {height * width}, or 'mean'."
                )
            # Drawn image by image, so the positions do not depend on the batch size.
            flat = torch.stack([torch.randperm(height * width, generator=self.generator)[: self.count] for _ in range(batch)])
            index = flat.to(tensor.device)[:, None, :].expand(-1, tensor.shape[1], -1)
            vectors = tensor.flatten(2).gather(2, index).transpose(1, 2).reshape(-1, tensor.shape[1])
            positions = torch.stack([flat // width, flat % width], dim=2).reshape(-1, 2)
        self.vectors.append(vectors.float())
        self.positions.append(positions)
        per_image = vectors.shape[0] // batch
        self.image_index.append(torch.arange(self.images_done, self.images_done + batch).repeat_interleave(per_image))


def stream_layer(model: nn.Module, module: nn.Module, keeper, data, batch_size: int, num_workers: int,
                 max_images: int | None, progress: bool, description: str):
    """Run ``data`` through ``model`` without gradients with ``keeper`` hooked on ``module``; yield (output, labels) per batch.

    The loop that :func:`collect_activations` and the dataset examples of notebook 07 share: it
    checks every batch (values in [0, 1], one image size, kept in ``keeper.image_size``), moves
    it to the model's device and dtype, and stops after ``max_images``. ``keeper.run(model,
    images)`` does the forward pass; the hook is removed however the loop ends. The caller holds
    :func:`preserve_model_state`.
    """
    from tqdm.auto import tqdm

    device = _model_device(model)
    if max_images is not None:
        max_images = _check_int(max_images, "max_images", 1)
        if isinstance(data, Dataset) and _stream_length(data) is not None:
            data = Subset(data, range(min(max_images, len(data))))  # the rest is never loaded
    total = _expected_images(data, max_images)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    keeper.image_size = None
    bar = tqdm(total=total, desc=description, unit="image", disable=not progress)
    handle = module.register_forward_hook(keeper)
    try:
        with torch.no_grad():
            for images, labels in _batches(data, batch_size, num_workers, pin_memory=device.type == "cuda"):
                if max_images is not None:
                    images = images[: max_images - keeper.images_done]
                    labels = None if labels is None else labels[: len(images)]
                check_images(images, "a batch of the data")
                if keeper.image_size is not None and tuple(images.shape[2:]) != keeper.image_size:
                    raise ValueError(
                        f"the data has images of {tuple(images.shape[2:])} pixels after {keeper.image_size}: give images of "
                        "one size (dataset(..., size=224) or load_image(..., size=224) make them)."
                    )
                keeper.image_size = tuple(images.shape[2:])
                output = keeper.run(model, images.to(device=device, dtype=dtype, non_blocking=True))
                yield output, labels
                bar.update(images.shape[0])
                if max_images is not None and keeper.images_done >= max_images:
                    break
    finally:
        handle.remove()
        bar.close()
    if keeper.images_done == 0:
        raise ValueError("the data gave no images; check that the dataset or generator is not empty.")


def collect_activations(
    model: nn.Module,
    layer: str,
    data,
    positions_per_image: int | str = 1,
    batch_size: int = 32,
    seed: int = 0,
    predictions: bool = True,
    num_workers: int = 0,
    max_images: int | None = None,
    progress: bool = True,
) -> ActivationSet:
    """Stream ``data`` through ``model`` and keep ``positions_per_image`` activation vectors of ``layer`` per image.

    ``data``: a Dataset (items (image, label) or image), a DataLoader, a tensor (N, 3, H, W),
    or any iterable of batches (B, 3, H, W), (images, labels) pairs or single images (3, H, W),
    all in [0, 1] and of one size. For a map (N, C, H, W) each image gives ``positions_per_image``
    distinct positions drawn from ``seed`` (same seed, same positions), or its spatial mean with
    ``"mean"``; a layer with output (N, C) gives one vector per image. ``predictions=True``
    also keeps the model's top-1 class per image; ``False`` stops each forward pass right
    after the layer. Runs in eval mode without gradients, on the model's device, and keeps only
    the vectors (M, C), never the images. :func:`capture_activations` is the other tool: a hook
    that records the whole maps of the batches you run yourself.

    >>> acts = collect_activations(model, "blocks.5", dataset("offline", length=512), positions_per_image=4)
    >>> acts.vectors.shape  # 512 images x 4 positions, 192 channels
    torch.Size([2048, 192])
    """
    module = get_layer(model, layer)  # an unknown name lists the closest ones
    layer_name = layer if isinstance(layer, str) else next(name for name, m in model.named_modules() if m is module)
    mean = isinstance(positions_per_image, str) and positions_per_image.strip().lower() == "mean"
    if not mean and (
        isinstance(positions_per_image, bool) or not isinstance(positions_per_image, (int, np.integer)) or positions_per_image < 1
    ):
        raise ValueError(
            "positions_per_image must be a positive int (how many places of each image's map to keep) "
            f"or 'mean' (the spatial mean), got {positions_per_image!r}."
        )
    batch_size = _check_int(batch_size, "batch_size", 1)
    num_workers = _check_int(num_workers, "num_workers", 0)
    if max_images is not None:
        _check_int(max_images, "max_images", 1)  # before any work
    # The length, when the data says it: the kept rows then go into buffers allocated once, before the stream.
    total = _expected_images(data, max_images)
    keeper = _VectorKeeper(layer_name, 1 if mean else int(positions_per_image), mean, not predictions,
                           _check_int(seed, "seed", 0), total_images=total)
    predicted, labels_kept, has_labels = _Rows(total), _Rows(total), True
    with preserve_model_state(model):
        for output, labels in stream_layer(model, module, keeper, data, batch_size, num_workers, max_images, progress,
                                           f"collect {layer_name}"):
            if predictions:
                logits = _first_tensor(output)
                if logits is None or logits.dim() != 2:
                    got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(output).__name__
                    raise ValueError(f"the model's output is {got}, not class scores (N, classes): pass predictions=False.")
                predicted.append(logits.argmax(dim=1))
            has_labels = has_labels and labels is not None
            if has_labels:
                labels_kept.append(labels)
    return ActivationSet(
        layer=layer_name,
        vectors=keeper.vectors.result(),
        image_index=keeper.image_index.result(dtype=torch.long),
        positions=keeper.positions.result((0, 2), torch.long),
        predictions=predicted.result(dtype=torch.long) if predictions else None,
        map_size=keeper.map_size,
        image_size=keeper.image_size,
        num_images=keeper.images_done,
        labels=labels_kept.result(dtype=torch.long) if has_labels else None,
    )
