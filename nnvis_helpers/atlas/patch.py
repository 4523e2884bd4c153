"""Patches made from the atlas: paste what one class's cells show into photos of another, and watch the answer flip.

Carter, Armstrong, Schubert, Johnson & Olah, "Activation Atlas" (Distill 2019), read the
class-focused atlas where two classes meet and found that the network tells them apart by
features that have nothing to do with the object: next to "snorkel", the "scuba diver" cells
look like parts of a steam locomotive; next to "grey whale", the "great white shark" cells like
a baseball. Pasting a small picture of such a feature into a photo of the other class (a
locomotive into a snorkel photo, a baseball into a grey whale photo) flipped the network's
answer for a share of the photos. The method, one step per function:

1. pick two classes and the cell that leans to the target class in their atlas
   (``class_focused_vectors`` and the class view of the atlas);
2. cut the dataset regions behind that cell's vectors out of their images
   (:func:`cell_crops`: a square around each vector's map position);
3. keep the crop that, seen alone, gives the target class the highest probability
   (:func:`choose_patch`); an icon of the atlas is a patch too;
4. paste it into the source class's photos at a few sizes and places (:func:`paste_patch`);
5. count how often the top-1 becomes the target (:func:`patch_flip_rate`), against control
   patches of the same size cut from random other cells (:func:`control_patches`): a patch
   that only covers the object would also change answers, but not towards the target;
6. look at a few photos before and after (:func:`draw_patch_attack`).

>>> crops = cell_crops(atlas, 3, 7, photos)
>>> patch, index = choose_patch(model, crops, scuba_diver)
>>> attack = patch_flip_rate(model, snorkel_photos, patch, scuba_diver)
>>> control = patch_flip_rate(model, snorkel_photos, control_patches(atlas, photos, [(3, 7)]), scuba_diver)
>>> attack.mean_flip_rate, control.mean_flip_rate
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_images, check_target, class_scores, prepare
from ..images import to_numpy
from ..layers import probe_size, preserve_model_state
from .build import Atlas

__all__ = [
    "PLACES",
    "PatchResult",
    "cell_crops",
    "choose_patch",
    "paste_patch",
    "patch_flip_rate",
    "control_patches",
    "draw_patch_attack",
]

PLACES = ("top left", "top right", "bottom left", "bottom right", "centre")

# The default crop covers this many map strides: the position's own share of the image and half
# a stride around it on each side. The theoretical receptive field of a middle layer covers most
# of the image, but the pixels that really move a unit gather near its centre (the effective
# receptive field, Luo et al. 2016), so a few strides is what the vector mostly "sees".
_CROP_STRIDES = 3


def _whole_number(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}.")
    return int(value)


# ---------------------------------------------------------------------------------------------
# 2. The dataset regions behind a cell
# ---------------------------------------------------------------------------------------------


def _check_atlas(atlas) -> object:
    """The atlas's ActivationSet, checked to hold map positions."""
    if not isinstance(atlas, Atlas):
        raise TypeError(f"atlas must be an Atlas (what activation_atlas() returns), got {type(atlas).__name__}.")
    activations = atlas.activations
    if activations is None or not hasattr(activations, "positions"):
        raise ValueError(
            "this atlas does not keep the activations it was made from (atlas.activations is None), so it cannot "
            "say which image regions lie behind a cell. Make it with activation_atlas(model, activations)."
        )
    if len(activations.positions) and bool((activations.positions < 0).any()):
        raise ValueError(
            f"the atlas's activations of {activations.layer!r} are spatial means (or come from a layer without a map): "
            "their positions are (-1, -1), so there is no image region behind a vector. Collect them at map "
            "positions, collect_activations(model, layer, data, positions_per_image=1) or more, and build the atlas again."
        )
    return activations


def _crop_side(activations, size) -> int:
    height, width = activations.image_size
    if size is None:
        stride = max(height / activations.map_size[0], width / activations.map_size[1])
        side = round(_CROP_STRIDES * stride)
    else:
        side = _whole_number(size, "size (the crop's side in image pixels)")
    return max(1, min(side, height, width))


def _image_of(dataset, index: int, image_size: tuple[int, int]) -> torch.Tensor:
    """Item ``index`` of the dataset the activations came from, as an image (3, H, W)."""
    try:
        item = dataset[index]
    except (IndexError, KeyError) as error:
        raise ValueError(
            f"the dataset has no item {index}, but the atlas's activations came from image {index}: give the dataset "
            "they were collected from (same name, size, length and seed)."
        ) from error
    image = item[0] if isinstance(item, (tuple, list)) else item
    if isinstance(image, torch.Tensor) and image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = f" of shape {tuple(image.shape)}" if isinstance(image, torch.Tensor) else ""
        raise TypeError(
            f"dataset item {index} gives a {type(image).__name__}{shape}; expected an image (3, H, W) in [0, 1] or an "
            "(image, label) pair, as dataset() gives."
        )
    if tuple(image.shape[1:]) != tuple(image_size):
        raise ValueError(
            f"dataset item {index} is {image.shape[1]}x{image.shape[2]} pixels but the activations were collected from "
            f"{image_size[0]}x{image_size[1]} images: give the dataset they were collected from (same size)."
        )
    return image


def _crop_at(image: torch.Tensor, position, activations, side: int) -> torch.Tensor:
    """The square (3, side, side) of ``image`` centred on map position (row, column), shifted inside the image."""
    height, width = image.shape[1:]
    map_height, map_width = activations.map_size
    row, column = (int(v) for v in position)
    centre_y, centre_x = (row + 0.5) * height / map_height, (column + 0.5) * width / map_width
    top = min(max(round(centre_y - side / 2), 0), height - side)
    left = min(max(round(centre_x - side / 2), 0), width - side)
    return image[:, top:top + side, left:left + side]


def _crops_of(atlas: Atlas, dataset, members: torch.Tensor, side: int, output_size: int | None) -> torch.Tensor:
    activations = atlas.activations
    crops = []
    for index in members.tolist():
        image = _image_of(dataset, int(activations.image_index[index]), activations.image_size)
        crops.append(_crop_at(image, activations.positions[index], activations, side).float().cpu())
    crops = torch.stack(crops)
    if output_size is not None and output_size != side:
        crops = F.interpolate(crops, size=(output_size, output_size), mode="bilinear", align_corners=False,
                              antialias=output_size < side).clamp(0, 1)
    return check_images(crops.contiguous(), "the crops (the dataset's images)")


def _check_cell(atlas: Atlas, row, column) -> tuple[int, int]:
    """(row, column) as ints inside the grid; entries of ``atlas.cells`` (0-d tensors) are welcome."""
    grid_size = atlas.grid.grid_size
    checked = []
    for value, name in ((row, "row"), (column, "column")):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < grid_size:
            raise ValueError(f"{name}={value!r} is outside the {grid_size}x{grid_size} grid (0 to {grid_size - 1}).")
        checked.append(int(value))
    return checked[0], checked[1]


def cell_crops(atlas: Atlas, row: int, column: int, dataset, size: int | None = None, count: int | None = None,
               output_size: int | None = None) -> torch.Tensor:
    """The image regions behind the vectors of atlas cell (row, column): square crops (K, 3, s, s) in [0, 1].

    Each member vector came from map position (r, c) of an h x w map of image i of ``dataset``
    (the dataset the activations were collected from); that position covers the pixels around
    ((r + 0.5) H / h, (c + 0.5) W / w), and the crop is the square of side ``size`` pixels
    centred there, shifted inside the image at the border. ``size`` defaults to three map
    strides (48 px for a 14 x 14 map of a 224 px image); ``receptive_field(model, layer).size[0]``
    is the theoretical field, usually far larger. ``count`` keeps the first members (all by
    default); crop k comes from vector ``atlas.grid.members(row, column)[k]``. ``output_size``
    resizes every crop to that many pixels.

    >>> crops = cell_crops(atlas, 3, 7, dataset("offline", length=2000))   # same dataset as the activations
    >>> show_images(crops[:8])
    """
    _check_atlas(atlas)
    row, column = _check_cell(atlas, row, column)
    members = atlas.grid.members(row, column)
    if len(members) == 0:
        drawn = ", ".join(f"({r}, {c})" for r, c in atlas.cells[:6].tolist())
        raise ValueError(f"cell ({row}, {column}) of the atlas is empty: no vector fell into it. "
                         f"Pick a drawn cell such as {drawn}.")
    if count is not None:
        members = members[:_whole_number(count, "count")]
    if output_size is not None:
        output_size = _whole_number(output_size, "output_size")
    return _crops_of(atlas, dataset, members, _crop_side(atlas.activations, size), output_size)


# ---------------------------------------------------------------------------------------------
# 3. The crop the model likes best
# ---------------------------------------------------------------------------------------------


def _as_patch(patch, name: str = "patch") -> torch.Tensor:
    """A patch (3, h, w) or (1, 3, h, w) in [0, 1] -> (3, h, w)."""
    if isinstance(patch, torch.Tensor) and patch.dim() == 3:
        patch = patch.unsqueeze(0)
    if isinstance(patch, torch.Tensor) and patch.dim() == 4 and patch.shape[0] != 1:
        raise ValueError(f"{name} holds {patch.shape[0]} images; give one patch (3, h, w), e.g. crops[index] or atlas.icons[k].")
    return check_images(patch, name)[0]


def _probabilities(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Softmax probabilities (N, classes), on the CPU; the caller holds preserve_model_state and no_grad."""
    outputs = [class_scores(model(chunk)).float().softmax(1).cpu() for chunk in images.split(batch_size)]
    return torch.cat(outputs)


def _check_class(target_class, num_classes: int) -> int:
    if isinstance(target_class, torch.Tensor) and target_class.numel() == 1:
        target_class = target_class.item()
    if isinstance(target_class, bool) or not isinstance(target_class, numbers.Integral):
        raise TypeError(f"target_class must be one class index (an int), got {target_class!r}.")
    return int(check_target(int(target_class), 1, num_classes, name="target_class")[0])


def choose_patch(model: nn.Module, crops: torch.Tensor, target_class: int, background: str = "resize",
                 image_size: int | None = None, batch_size: int = 32, return_probabilities: bool = False,
                 into: torch.Tensor | None = None, size: int | float = 0.3, place: str | tuple[int, int] = "top left"):
    """The crop (3, s, s) that gives ``target_class`` the highest probability, and its index.

    Seen alone: ``background="resize"``: each crop is stretched to the model's input size
    ``image_size`` (``model.info.input_size``, else 224) and is the whole image; ``"grey"``: each
    crop sits at its own size in the middle of a grey image of that size. Seen as a patch:
    ``into`` (N, 3, H, W) are photos to paste every crop into (at ``size`` and ``place``, as
    :func:`paste_patch`), and the crop with the highest mean probability of the target over them
    wins; keep those photos out of the ones you measure the flip rate on. The model runs in eval
    mode without gradients and is given back as it was. ``return_probabilities=True`` adds the
    target's (mean) probability for every crop (K,).

    >>> patch, index = choose_patch(model, cell_crops(atlas, 3, 7, photos), scuba_diver)
    >>> patch, index = choose_patch(model, crops, scuba_diver, into=snorkel_photos[:8], size=0.3)
    """
    if into is not None:
        scores = _pasted_scores(model, crops, target_class, into, size, place, batch_size)
        index = int(scores.argmax())
        patch = crops[index].detach().clone()
        return (patch, index, scores) if return_probabilities else (patch, index)
    images, _ = prepare(model, crops, None)
    if background not in ("resize", "grey", "gray"):
        raise ValueError(f"background must be 'resize' (the crop fills the image) or 'grey' (the crop on a grey image), "
                         f"got {background!r}.")
    batch_size = _whole_number(batch_size, "batch_size")
    side = probe_size(model)[0] if image_size is None else _whole_number(image_size, "image_size", 8)
    height, width = images.shape[2:]
    if background == "resize":
        inputs = F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False,
                               antialias=side < max(height, width)).clamp(0, 1)
    else:
        scale = min(1.0, side / max(height, width))
        inner = images if scale == 1.0 else F.interpolate(
            images, size=(max(1, round(height * scale)), max(1, round(width * scale))), mode="bilinear",
            align_corners=False, antialias=True).clamp(0, 1)
        inputs = torch.full((len(images), 3, side, side), 0.5, device=images.device, dtype=images.dtype)
        top, left = (side - inner.shape[2]) // 2, (side - inner.shape[3]) // 2
        inputs[:, :, top:top + inner.shape[2], left:left + inner.shape[3]] = inner
    with preserve_model_state(model), torch.no_grad():
        try:
            probabilities = _probabilities(model, inputs, batch_size)
        except (RuntimeError, ValueError, AssertionError) as error:
            if image_size is not None:
                raise
            raise RuntimeError(
                f"choose_patch showed the model the crops at {side}x{side} pixels (its default size) and the model "
                f"failed: {error}\nIf your model needs another input size (a 32 px CIFAR network with a Flatten + "
                "Linear head, say), pass it: choose_patch(..., image_size=32)."
            ) from error
    target = _check_class(target_class, probabilities.shape[1])
    scores = probabilities[:, target]
    index = int(scores.argmax())
    patch = crops[index].detach().clone()
    return (patch, index, scores) if return_probabilities else (patch, index)


def _pasted_scores(model, crops, target_class, into, size, place, batch_size) -> torch.Tensor:
    """The target's mean probability over the photos ``into`` with each crop pasted in (K,)."""
    crops = check_images(crops, "crops")
    photos, _ = prepare(model, into, None)
    batch_size = _whole_number(batch_size, "batch_size")
    pixels = _patch_pixels(size, crops[0], tuple(photos.shape[2:]))  # size and place checked before any work
    _corner(place, pixels, tuple(photos.shape[2:]))
    with preserve_model_state(model), torch.no_grad():
        pasted = (_probabilities(model, _paste(photos, crop, max(pixels), place), batch_size) for crop in crops)
        first = next(pasted)
        target = _check_class(target_class, first.shape[1])
        scores = [first[:, target].mean()] + [probabilities[:, target].mean() for probabilities in pasted]
    return torch.stack(scores)


# ---------------------------------------------------------------------------------------------
# 4. Pasting
# ---------------------------------------------------------------------------------------------


def _patch_pixels(size, patch: torch.Tensor, image_size: tuple[int, int]) -> tuple[int, int]:
    """The (height, width) in pixels a patch is pasted at: ``size`` is the longer side (pixels or fraction of the image)."""
    height, width = image_size
    patch_height, patch_width = patch.shape[1:]
    if size is None:
        longer = max(patch_height, patch_width)
    elif isinstance(size, bool) or not isinstance(size, numbers.Real):
        raise TypeError(f"size must be pixels (an int) or a fraction of the image's shorter side (a float), got {size!r}.")
    elif isinstance(size, numbers.Integral):
        longer = int(size)
        if longer < 1:
            raise ValueError(f"size must be at least 1 pixel, got {size}.")
    else:
        if not 0 < size <= 1:
            raise ValueError(f"a float size is a fraction of the image's shorter side and must lie in (0, 1], got {size}; "
                             "give pixels as an int.")
        longer = max(1, round(size * min(height, width)))
    scale = longer / max(patch_height, patch_width)
    pixels = max(1, round(patch_height * scale)), max(1, round(patch_width * scale))
    if pixels[0] > height or pixels[1] > width:
        raise ValueError(
            f"the patch would be {pixels[0]}x{pixels[1]} pixels, larger than the {height}x{width} images: give a "
            f"smaller size (at most {min(height, width)} pixels, or a fraction such as 0.25 of the image's side)."
        )
    return pixels


def _place_key(place):
    """A place name in its one spelling ("top left", "centre"); a (y, x) pixel as a tuple; anything else as it is."""
    if isinstance(place, str):
        name = " ".join(place.strip().lower().replace("_", " ").replace("-", " ").split())
        return "centre" if name == "center" else name
    if isinstance(place, (tuple, list)) and len(place) == 2:
        return tuple(place)
    return place


def _corner(place, pixels: tuple[int, int], image_size: tuple[int, int]) -> tuple[int, int]:
    """The (top, left) pixel of a patch of ``pixels`` at ``place``."""
    height, width = image_size
    patch_height, patch_width = pixels
    place = _place_key(place)
    if isinstance(place, str):
        corners = {
            "top left": (0, 0),
            "top right": (0, width - patch_width),
            "bottom left": (height - patch_height, 0),
            "bottom right": (height - patch_height, width - patch_width),
            "centre": ((height - patch_height) // 2, (width - patch_width) // 2),
        }
        if place not in corners:
            raise ValueError(f"place must be one of {', '.join(PLACES)} or a pixel (y, x) of the patch's top left "
                             f"corner, got {place!r}.")
        return corners[place]
    if (isinstance(place, (tuple, list)) and len(place) == 2
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in place)):
        top, left = int(place[0]), int(place[1])
        if not (0 <= top <= height - patch_height and 0 <= left <= width - patch_width):
            raise ValueError(
                f"a {patch_height}x{patch_width} patch with its top left corner at (y, x) = ({top}, {left}) does not fit "
                f"in {height}x{width} images: y must lie in [0, {height - patch_height}] and x in [0, {width - patch_width}]."
            )
        return top, left
    raise ValueError(f"place must be one of {', '.join(PLACES)} or a pixel (y, x) of the patch's top left corner, "
                     f"got {place!r}.")


def _paste(images: torch.Tensor, patch: torch.Tensor, size, place) -> torch.Tensor:
    pixels = _patch_pixels(size, patch, tuple(images.shape[2:]))
    top, left = _corner(place, pixels, tuple(images.shape[2:]))
    patch = patch.to(device=images.device, dtype=images.dtype)
    if tuple(patch.shape[1:]) != pixels:
        shrink = pixels[0] < patch.shape[1]
        patch = F.interpolate(patch[None], size=pixels, mode="bilinear", align_corners=False, antialias=shrink)[0].clamp(0, 1)
    pasted = images.clone()
    pasted[:, :, top:top + pixels[0], left:left + pixels[1]] = patch
    return pasted


def paste_patch(images: torch.Tensor, patch: torch.Tensor, size: int | float | None = None,
                place: str | tuple[int, int] = "bottom right") -> torch.Tensor:
    """Images (N, 3, H, W) with ``patch`` (3, h, w) pasted in, as a new tensor (the inputs are not changed).

    ``size``: the patch's longer side after resizing, in pixels (an int) or as a fraction of the
    image's shorter side (a float in (0, 1]); None keeps the patch's own size. ``place``: one of
    ``"top left"``, ``"top right"``, ``"bottom left"``, ``"bottom right"`` (flush with the
    corner), ``"centre"``, or the pixel (y, x) of the patch's top left corner. A crop, an icon
    (``atlas.icons[k]``) or any picture in [0, 1] is a patch.

    >>> patched = paste_patch(snorkel_photos, patch, size=0.25, place="top left")
    """
    check_images(images)
    patch = _as_patch(patch)
    return _paste(images.detach(), patch, size, place)


# ---------------------------------------------------------------------------------------------
# 5. How often the answer flips
# ---------------------------------------------------------------------------------------------


def _place_name(place) -> str:
    return place if isinstance(place, str) else f"({place[0]}, {place[1]})"


@dataclass
class PatchResult:
    """What a pasted patch does to a model's answers, for every size (rows) and place (columns).

    ``flip_rate`` (S, P): the share of the images not already predicted as ``target_class``
    whose top-1 becomes it; ``change_rate`` (S, P): the share of all images whose top-1 changes
    at all; ``target_gain`` (S, P): the mean rise of the target's probability; with several
    patches, each figure is their mean. ``mean_flip_rate``: the mean of ``flip_rate`` over all
    sizes and places. ``sizes`` are in pixels (the patch's longer side). ``clean_predictions``
    (N,) and ``clean_probability`` (N,) of the target are the images' own;
    ``predictions`` (S, P, N) the top-1 with the (first) patch. :meth:`table` prints it.
    """

    target_class: int
    sizes: list[int]
    places: list
    flip_rate: torch.Tensor
    change_rate: torch.Tensor
    target_gain: torch.Tensor
    mean_flip_rate: float
    eligible: int
    clean_predictions: torch.Tensor
    clean_probability: torch.Tensor
    predictions: torch.Tensor
    patch_count: int = 1

    def table(self) -> str:
        """The flip rate per size and place as text (flip rate / any change / target gain)."""
        names = [_place_name(place) for place in self.places]
        width = max(20, *(len(name) for name in names)) + 2
        lines = [f"target class {self.target_class}: {self.eligible} images not already predicted as it"
                 f"{f', {self.patch_count} patches' if self.patch_count > 1 else ''}; flip / any change / target gain",
                 "size".ljust(8) + "".join(name.rjust(width) for name in names)]
        for i, size in enumerate(self.sizes):
            cells = [f"{self.flip_rate[i, j]:.0%} / {self.change_rate[i, j]:.0%} / {self.target_gain[i, j]:+.2f}"
                     for j in range(len(self.places))]
            lines.append(f"{size} px".ljust(8) + "".join(cell.rjust(width) for cell in cells))
        lines.append(f"mean flip rate {self.mean_flip_rate:.1%}")
        return "\n".join(lines)


def _as_patches(patch) -> torch.Tensor:
    """One patch (3, h, w) or several (K, 3, h, w) -> (K, 3, h, w), checked."""
    if isinstance(patch, torch.Tensor) and patch.dim() == 3:
        patch = patch.unsqueeze(0)
    return check_images(patch, "patch")


def patch_flip_rate(
    model: nn.Module,
    images: torch.Tensor,
    patch: torch.Tensor,
    target_class: int,
    sizes: Sequence[int | float] = (0.2, 0.3, 0.4),
    places: Sequence[str | tuple[int, int]] = PLACES,
    batch_size: int = 32,
    progress: bool = True,
) -> PatchResult:
    """How often pasting ``patch`` into images (N, 3, H, W) makes ``target_class`` the model's top-1.

    Every size (pixels, or a fraction of the image's side) and place of :func:`paste_patch` is
    tried on every image. ``patch`` is one patch (3, h, w) or several (K, 3, h, w), such as the
    :func:`control_patches`; with several, each is pasted in turn and the figures are averaged.
    Only images the model does not already put in the target class count for the flip rate.
    The model runs in eval mode without gradients, on its own device, and is given back as it was.

    >>> result = patch_flip_rate(model, snorkel_photos, patch, scuba_diver, sizes=(0.25, 0.4))
    >>> print(result.table())
    """
    from tqdm.auto import tqdm

    images, _ = prepare(model, images, None)
    patches = _as_patches(patch)
    batch_size = _whole_number(batch_size, "batch_size")
    if isinstance(sizes, (numbers.Real, type(None))) and not isinstance(sizes, bool):
        sizes = (sizes,)
    if isinstance(places, str) or (isinstance(places, tuple) and len(places) == 2
                                   and all(isinstance(v, numbers.Integral) for v in places)):
        places = (places,)
    sizes, places = list(sizes), list(places)
    if not sizes or not places:
        raise ValueError("give at least one size and one place to try.")
    image_size = tuple(images.shape[2:])
    pixel_sizes = [max(_patch_pixels(size, patches[0], image_size)) for size in sizes]
    for size in pixel_sizes:  # every place checked before any work
        for place in places:
            _corner(place, _patch_pixels(size, patches[0], image_size), image_size)
    places = [_place_key(place) for place in places]

    count = len(images)
    shape = (len(pixel_sizes), len(places))
    flips, changes, gains = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape)
    predictions = torch.zeros((*shape, count), dtype=torch.long)
    bar = tqdm(total=len(patches) * shape[0] * shape[1], desc="patch flip rate", leave=False, disable=not progress)
    try:
        with preserve_model_state(model), torch.no_grad():
            clean = _probabilities(model, images, batch_size)
            target = _check_class(target_class, clean.shape[1])
            clean_predictions = clean.argmax(1)
            eligible = clean_predictions != target
            for k, one_patch in enumerate(patches):
                for i, size in enumerate(pixel_sizes):
                    for j, place in enumerate(places):
                        patched = torch.cat([
                            _probabilities(model, _paste(chunk, one_patch, size, place), batch_size)
                            for chunk in images.split(batch_size)
                        ])
                        top = patched.argmax(1)
                        if k == 0:
                            predictions[i, j] = top
                        if eligible.any():
                            flips[i, j] += (top[eligible] == target).float().mean()
                        changes[i, j] += (top != clean_predictions).float().mean()
                        gains[i, j] += (patched[:, target] - clean[:, target]).mean()
                        bar.update(1)
    finally:
        bar.close()
    patch_count = len(patches)
    flip_rate = flips / patch_count if eligible.any() else torch.full(shape, math.nan)
    return PatchResult(
        target_class=target, sizes=pixel_sizes, places=places, flip_rate=flip_rate, change_rate=changes / patch_count,
        target_gain=gains / patch_count, mean_flip_rate=float(flip_rate.mean()), eligible=int(eligible.sum()),
        clean_predictions=clean_predictions, clean_probability=clean[:, target], predictions=predictions,
        patch_count=patch_count,
    )


def _cell_list(cells) -> list[tuple[int, int]]:
    if cells is None:
        return []
    if isinstance(cells, torch.Tensor):
        cells = cells.reshape(-1, 2).tolist()
    cells = list(cells)
    if len(cells) == 2 and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in cells):
        cells = [cells]  # one cell given as (row, column)
    try:
        return [(int(row), int(column)) for row, column in cells]
    except (TypeError, ValueError):
        raise ValueError(f"exclude_cells must be (row, column) pairs such as [(3, 7), (3, 8)], got {cells!r}.") from None


def control_patches(atlas: Atlas, dataset, exclude_cells=(), count: int = 8, size: int | None = None, seed: int = 0,
                    output_size: int | None = None) -> torch.Tensor:
    """Control patches (count, 3, s, s): one random member crop from each of ``count`` random drawn cells.

    The cells are drawn, without repeats, from the atlas's drawn cells other than
    ``exclude_cells`` (the target's cells, say); ``size`` and ``output_size`` mean what they
    mean in :func:`cell_crops`, so a control covers as much of its image as the patch did.
    The same ``seed`` gives the same patches.

    >>> controls = control_patches(atlas, photos, exclude_cells=[(3, 7)], count=8)
    >>> patch_flip_rate(model, snorkel_photos, controls, scuba_diver).mean_flip_rate
    """
    _check_atlas(atlas)
    count = _whole_number(count, "count")
    seed = _whole_number(seed, "seed", 0)
    excluded = set(_cell_list(exclude_cells))
    candidates = [cell for cell in map(tuple, atlas.cells.tolist()) if cell not in excluded]
    if count > len(candidates):
        raise ValueError(f"asked for {count} control patches but the atlas has only {len(candidates)} drawn cells "
                         f"outside the excluded ones: ask for at most {len(candidates)}.")
    if output_size is not None:
        output_size = _whole_number(output_size, "output_size")
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(candidates), generator=generator)[:count].tolist()
    members = []
    for index in chosen:
        cell_members = atlas.grid.members(*candidates[index])
        members.append(cell_members[int(torch.randint(len(cell_members), (1,), generator=generator))])
    return _crops_of(atlas, dataset, torch.stack(members), _crop_side(atlas.activations, size), output_size)


# ---------------------------------------------------------------------------------------------
# 6. The picture
# ---------------------------------------------------------------------------------------------


def _names(model: nn.Module, labels, num_classes: int) -> Sequence[str]:
    if labels is not None:
        if len(labels) < num_classes:
            raise ValueError(f"labels has {len(labels)} names but the model has {num_classes} classes; give one name per class.")
        return labels
    info_labels = getattr(getattr(model, "info", None), "labels", None)
    if info_labels is not None and len(info_labels) >= num_classes:
        return info_labels
    if num_classes == 1000:
        from ..models import imagenet_labels

        return imagenet_labels()
    return [f"class {i}" for i in range(num_classes)]


def draw_patch_attack(images_before: torch.Tensor, images_after: torch.Tensor, model: nn.Module,
                      labels: Sequence[str] | None = None, target_class: int | None = None, count: int = 4,
                      axes=None, title: str | None = None):
    """Photos before (top row) and after (bottom row) the patch, each titled with its top-1 class and probability.

    ``labels``: the class names (``model.info.labels`` or ImageNet's by default). With
    ``target_class`` a title turns red where the top-1 is the target. ``axes``: a 2 x count
    array of axes to draw in, or None for a new figure. Returns the figure.

    >>> fig = draw_patch_attack(photos, paste_patch(photos, patch, 0.3, "top left"), model, target_class=scuba_diver)
    """
    check_images(images_before, "images_before")
    check_images(images_after, "images_after")
    if images_before.shape != images_after.shape:
        raise ValueError(f"images_before {tuple(images_before.shape)} and images_after {tuple(images_after.shape)} must be the "
                         "same photos, before and after the patch.")
    count = min(_whole_number(count, "count"), len(images_before))
    before, after = images_before[:count], images_after[:count]
    inputs, _ = prepare(model, torch.cat([before, after]), None)
    with preserve_model_state(model), torch.no_grad():
        probabilities = _probabilities(model, inputs, 32)
    names = _names(model, labels, probabilities.shape[1])
    target = None if target_class is None else _check_class(target_class, probabilities.shape[1])
    if axes is None:
        fig, axes = plt.subplots(2, count, figsize=(2.4 * count, 5.2), squeeze=False)
    else:
        axes = np.asarray(axes, dtype=object).reshape(2, -1)
        if axes.shape[1] < count:
            raise ValueError(f"axes has room for {axes.shape[1]} pairs but count={count}; give 2 x {count} axes.")
        fig = axes[0, 0].figure
    top_probability, top_class = probabilities.max(1)
    pictures = to_numpy(torch.cat([before, after])).clip(0, 1)
    for i in range(2 * count):
        ax = axes[i // count, i % count]
        ax.imshow(pictures[i])
        ax.axis("off")
        hit = target is not None and int(top_class[i]) == target
        ax.set_title(f"{'patched' if i >= count else 'original'}\n{str(names[int(top_class[i])])[:20]} "
                     f"{float(top_probability[i]):.2f}", fontsize=8, color="red" if hit else "black")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
