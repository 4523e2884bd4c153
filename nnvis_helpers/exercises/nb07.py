"""Exercises of notebook 07 (what a filter responds to), each with a self-check, our solution and a typical mistake.

* 07.1 Top examples by the mean, by hand, for one channel — the ranking ``top_examples`` makes in one pass.
* 07.2 The crop of one unit, by hand, from its receptive field: clipped at the image border.
* 07.3 Network Dissection's IoU of one channel and one concept, summed over the images as the paper does.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from ..architecture import crop_receptive_field, layer_table, receptive_field
from ..layers import capture_activations
from . import Exercise, register

#: The sizes the tests use (the notebook passes its own data).
_TEST_SIZE = 96


@lru_cache(maxsize=1)
def _model():
    from ..models import load_model

    return load_model("efficientnet_lite0", verbose=False)


@lru_cache(maxsize=1)
def _images() -> torch.Tensor:
    from ..datasets import dataset

    data = dataset("offline", size=_TEST_SIZE, length=24, verbose=False)
    return torch.stack([data[i][0] for i in range(len(data))])


# ----------------------------------------------------------------------------- 07.1 top examples by the mean


def _ex1_context():
    return {"model": _model(), "images": _images(), "layer": "blocks.3", "channel": 5, "k": 4}


def solution_1(model, images, layer, channel, k):
    """The k images whose map of ``channel`` has the highest spatial mean, best first."""
    with torch.no_grad(), capture_activations(model, layer) as acts:
        model(images)
    means = acts[layer][:, channel].mean(dim=(1, 2))          # s_mean for every image
    return means.argsort(descending=True, stable=True)[:k]


def wrong_1(model, images, layer, channel, k):
    """The strongest unit instead of the mean: the other ranking of the notebook."""
    with torch.no_grad(), capture_activations(model, layer) as acts:
        model(images)
    return acts[layer][:, channel].flatten(1).amax(1).argsort(descending=True, stable=True)[:k]


def check_1(answer, model, images, layer, channel, k):
    from ..channels import top_examples

    answer = torch.as_tensor(answer).reshape(-1).long().cpu()
    assert len(answer) == k, f"return the indices of the {k} best images, got {len(answer)} values"
    top = top_examples(model, layer, images, channels=[channel], k=k, progress=False)
    scores, expected, _ = top.of(channel, by="mean")
    by_max = top.of(channel, by="max")[1]
    if not torch.equal(answer, expected):
        hint = " — these are the top images by the strongest unit (max): average the map instead" if torch.equal(answer, by_max) else ""
        raise AssertionError(f"expected images {expected.tolist()} (highest mean activation first), got {answer.tolist()}{hint}")
    shared = len(set(expected.tolist()) & set(by_max.tolist()))
    return f"the same images as top_examples(..., by='mean'); {shared} of the {k} are also in the top {k} by max"


register(Exercise(
    id="07.1", title="top examples by the mean, by hand", check=check_1, solution=solution_1, wrong=wrong_1,
    make_context=_ex1_context,
    answer="Capture the layer's maps, average channel c over its positions for every image, sort descending and keep k. The "
           "mean favours images filled with the pattern; the max favours one strong spot, so the two lists differ.",
))


# ----------------------------------------------------------------------------- 07.2 the crop of one unit


def _ex2_context():
    model = _model()
    image = _images()[:1]
    return {"model": model, "image": image, "layer": "blocks.2", "table": layer_table(model, tuple(image.shape)), "y": 5, "x": 6}


def solution_2(model, image, layer, table, y, x):
    """The pixels unit (y, x) of ``layer`` sees, clipped to the image: image[..., top:bottom, left:right]."""
    field = receptive_field(model, layer, table=table)
    top = field.start[0] + y * field.jump[0]
    left = field.start[1] + x * field.jump[1]
    bottom, right = top + field.size[0], left + field.size[1]
    height, width = image.shape[-2:]
    return image[..., max(top, 0) : min(bottom, height), max(left, 0) : min(right, width)]


def wrong_2(model, image, layer, table, y, x):
    """No clipping: a field that starts above the image gives a negative index, which Python counts from the end."""
    field = receptive_field(model, layer, table=table)
    top = field.start[0] + y * field.jump[0]
    left = field.start[1] + x * field.jump[1]
    return image[..., top : top + field.size[0], left : left + field.size[1]]


def check_2(answer, model, image, layer, table, y, x):
    height, width = table.row(layer).output_shape[2:]
    middle = (y, x)
    for y, x in (middle, (0, 0), (height - 1, width - 1), (0, width - 1)):
        crop = answer(model=model, image=image, layer=layer, table=table, y=y, x=x)
        expected = crop_receptive_field(image, model, layer, y, x, table=table)
        assert isinstance(crop, torch.Tensor) and crop.shape == expected.shape, (
            f"unit ({y}, {x}): expected a crop of shape {tuple(expected.shape)}, got "
            f"{tuple(crop.shape) if isinstance(crop, torch.Tensor) else type(crop).__name__}"
            + (" — a field that hangs over the border must be clipped to the image (max(top, 0), min(bottom, H))" if (y, x) != middle else "")
        )
        assert torch.equal(crop, expected), f"unit ({y}, {x}): the crop has the right size but not the right pixels"
    field = receptive_field(model, layer, table=table)
    return f"{field.size[0]} x {field.size[1]} px at unit {middle}, clipped at the corners, as crop_receptive_field cuts them"


register(Exercise(
    id="07.2", title="the crop of one unit, by hand", check=check_2, solution=solution_2, wrong=wrong_2,
    make_context=_ex2_context, takes_function=True,
    answer="top = start + y * jump, bottom = top + size (exclusive), the same for columns; clip both to the image. "
           "Units near the border have fields that hang over it, so their crops are smaller.",
))


# ----------------------------------------------------------------------------- 07.3 the IoU of Network Dissection


def _ex3_context():
    from ..channels import concept_images

    concepts = concept_images(size=_TEST_SIZE, per_concept=4, seed=0, groups=("colour",))
    model, layer, channel = _model(), "blocks.1", 11
    with torch.no_grad(), capture_activations(model, layer) as acts:
        model(concepts.images)
    maps = acts[layer][:, channel : channel + 1]
    chosen = concepts.concept == concepts.index_of("cyan")
    return {
        "maps": maps[chosen],
        "masks": concepts.masks[chosen],
        "threshold": float(torch.quantile(maps.flatten().float(), 0.995)),
    }


def solution_3(maps, masks, threshold):
    """IoU = sum over images |M ∩ L| / sum over images |M ∪ L|, M the upsampled map above the threshold."""
    upsampled = F.interpolate(maps.float(), size=masks.shape[-2:], mode="bilinear", align_corners=False)
    active = upsampled > threshold
    intersection = (active & masks).sum()
    union = (active | masks).sum()
    return float(intersection) / max(float(union), 1.0)


def wrong_3(maps, masks, threshold):
    """The mean of per-image IoUs: images where the channel is silent count as much as the rest."""
    upsampled = F.interpolate(maps.float(), size=masks.shape[-2:], mode="bilinear", align_corners=False)
    active = upsampled > threshold
    intersection = (active & masks).flatten(1).sum(1).float()
    union = (active | masks).flatten(1).sum(1).float().clamp_min(1)
    return float((intersection / union).mean())


def check_3(answer, maps, masks, threshold):
    assert isinstance(answer, (float, int)) or (isinstance(answer, torch.Tensor) and answer.numel() == 1), (
        f"return one number, the IoU, got {type(answer).__name__}")
    value = float(answer)
    expected = solution_3(maps, masks, threshold)
    assert 0.0 <= value <= 1.0, f"an IoU lies in [0, 1], got {value:.3f}"
    per_image = wrong_3(maps, masks, threshold)
    if abs(value - expected) > 1e-6:
        hint = (" — that is the mean of the per-image IoUs; Network Dissection sums the intersections and the unions over all images first"
                if abs(value - per_image) < 1e-6 else " — upsample the maps to the masks' size (bilinear) before thresholding")
        raise AssertionError(f"expected IoU {expected:.4f}, got {value:.4f}{hint}")
    return f"IoU {value:.3f} (the mean of per-image IoUs would be {per_image:.3f})"


register(Exercise(
    id="07.3", title="Network Dissection's IoU, by hand", check=check_3, solution=solution_3, wrong=wrong_3,
    make_context=_ex3_context,
    answer="Upsample the maps (bilinear) to the image size, threshold, then add the intersections over all images and "
           "divide by the sum of the unions. Averaging per-image IoUs instead lets images where the channel is silent "
           "pull the score down (or up, for tiny masks).",
))
