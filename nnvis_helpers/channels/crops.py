"""What one unit sees and what in it made the unit fire.

* :func:`field_crops` — the receptive-field crop of one unit per image (notebook 01's
  :func:`~nnvis_helpers.architecture.receptive_field`), always the full field size: where the
  field hangs over the image border the crop shows a checkerboard, and a mask says so.
* :func:`unit_deconvolution` — the deconvnet (Zeiler & Fergus 2014) or guided backpropagation
  (Springenberg et al. 2014) image of a single unit: notebook 02's rules for every ReLU, started
  from one unit of a layer instead of a class score. Zero outside the unit's receptive field.
* :func:`effective_boxes` — where in its crop a unit really looks: the square around the field's
  centre that holds most of its backprop signal (the effective receptive field, Luo et al. 2016).
* :func:`display_signed` — a signed image scaled for display, 0 shown as mid-grey.
"""
from __future__ import annotations

import torch
from torch import nn

from ..architecture import layer_table, receptive_field
from ..checks import check_images
from ..layers import _StopForward, capture_activations, get_layer, preserve_model_state
from ..saliency import _rectifier_backward_rule

__all__ = ["field_crops", "crop_fields", "layer_maps", "effective_boxes", "unit_deconvolution", "display_signed", "checkerboard"]


def checkerboard(height: int, width: int, square: int = 4) -> torch.Tensor:
    """A light grey checkerboard (3, height, width): the 'no image here' of every crop."""
    rows = torch.arange(height)[:, None] // square
    columns = torch.arange(width)[None, :] // square
    return (0.78 + 0.12 * ((rows + columns) % 2)).float().expand(3, height, width).clone()


def _positions(positions, count: int, map_size: tuple[int, int]) -> torch.Tensor:
    positions = torch.as_tensor(positions).long().reshape(-1, 2)
    if len(positions) == 1 and count > 1:
        positions = positions.expand(count, 2)
    if len(positions) != count:
        raise ValueError(f"give one (row, column) per image: {count} images but {len(positions)} positions.")
    bad = (positions < 0).any(1) | (positions[:, 0] >= map_size[0]) | (positions[:, 1] >= map_size[1])
    if bad.any():
        row, column = positions[bad][0].tolist()
        raise ValueError(
            f"position ({row}, {column}) is outside the layer's {map_size[0]}x{map_size[1]} map "
            f"(rows 0 to {map_size[0] - 1}, columns 0 to {map_size[1] - 1})."
        )
    return positions


def field_crops(model: nn.Module, layer: str, images: torch.Tensor, positions, table=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The receptive field of unit ``positions[n]`` of ``layer`` in image n: (crops (N, 3, R, R'), inside (N, 1, R, R')).

    ``positions`` (N, 2) map (row, column), or one pair for all. Every crop has the field's full
    size R x R'; the part beyond the image border (padding, which the unit sees as zeros after
    normalization) is a checkerboard in ``crops`` and False in ``inside``. Along an axis where
    the field is larger than the image (late layers), the crop is the whole image.

    >>> crops, inside = field_crops(model, "blocks.3", images, top.of(5)[2])
    """
    check_images(images, "images")
    return crop_fields(model, layer, images, positions, table)


def crop_fields(model: nn.Module, layer: str, images: torch.Tensor, positions, table=None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`field_crops` for any tensor (N, C, H, W), signed maps too: no check of the value range."""
    size = (1, images.shape[1], images.shape[2], images.shape[3])
    get_layer(model, layer)
    table = layer_table(model, size) if table is None else table
    field = receptive_field(model, layer, table=table)
    map_size = table.row(layer).output_shape[2:]
    positions = _positions(positions, images.shape[0], map_size)
    image_size = tuple(images.shape[2:])
    # A field larger than the image (late layers) is shown as the whole image: a canvas of mostly
    # padding would hide the picture. Smaller fields keep their full size, padding and all.
    height, width = (min(side, limit) for side, limit in zip(field.size, image_size))
    crops = checkerboard(height, width).repeat(images.shape[0], 1, 1, 1).to(images)
    inside = torch.zeros(images.shape[0], 1, height, width, dtype=torch.bool, device=images.device)
    for n, (row, column) in enumerate(positions.tolist()):
        top, left = _canvas_origin(field, row, column, height, width)
        clipped = field.box(row, column, image_size=image_size)
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            continue  # the field lies wholly in the padding
        y0, x0 = clipped[0] - top, clipped[1] - left
        y1, x1 = y0 + clipped[2] - clipped[0], x0 + clipped[3] - clipped[1]
        crops[n, :, y0:y1, x0:x1] = images[n, :, clipped[0] : clipped[2], clipped[1] : clipped[3]]
        inside[n, :, y0:y1, x0:x1] = True
    return crops, inside


def _canvas_origin(field, row: int, column: int, height: int, width: int) -> tuple[int, int]:
    """Where a crop of ``height`` x ``width`` starts in the image: the field's corner, or 0 along an axis cut to the image."""
    top, left, _, _ = field.box(row, column)  # may hang over the border
    return (top if height == field.size[0] else 0), (left if width == field.size[1] else 0)


def effective_boxes(model: nn.Module, layer: str, maps: torch.Tensor, positions, share: float = 0.9, table=None) -> torch.Tensor:
    """The effective receptive field of each unit, in the coordinates of its crop: (N, 4) (top, left, bottom, right).

    ``maps`` (N, 3, H, W): what :func:`unit_deconvolution` gives for unit ``positions[n]``. The box is
    the smallest square centred on the unit's field that holds ``share`` of the map's total |value|:
    where the unit really looks, usually far inside its traced field (Luo et al. 2016). Bottom and
    right are exclusive; the box is clipped to the crop that :func:`field_crops` makes.
    """
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], e.g. 0.9 for the square that holds 90% of the signal, got {share!r}.")
    size = (1, maps.shape[1], maps.shape[2], maps.shape[3])
    table = layer_table(model, size) if table is None else table
    field = receptive_field(model, layer, table=table)
    positions = _positions(positions, maps.shape[0], table.row(layer).output_shape[2:])
    height, width = (min(side, limit) for side, limit in zip(field.size, maps.shape[2:]))
    mass = maps.detach().abs().sum(1).float().cpu()  # (N, H, W)
    rows = torch.arange(maps.shape[2], dtype=torch.float32)[:, None]
    columns = torch.arange(maps.shape[3], dtype=torch.float32)[None, :]
    boxes = []
    for n, (row, column) in enumerate(positions.tolist()):
        centre_y, centre_x = field.center(row, column)
        distance = torch.maximum((rows - centre_y).abs(), (columns - centre_x).abs()).flatten()
        order = distance.argsort()
        total = mass[n].sum()
        if total <= 0:
            boxes.append((0, 0, height, width))
            continue
        reached = torch.cumsum(mass[n].flatten()[order], 0) >= share * total
        radius = float(distance[order][int(reached.nonzero()[0, 0])])
        top, left = _canvas_origin(field, row, column, height, width)
        y0, x0 = int(round(centre_y - radius)) - top, int(round(centre_x - radius)) - left
        y1, x1 = int(round(centre_y + radius)) + 1 - top, int(round(centre_x + radius)) + 1 - left
        boxes.append((max(y0, 0), max(x0, 0), min(y1, height), min(x1, width)))
    return torch.tensor(boxes, dtype=torch.long)


def unit_deconvolution(
    model: nn.Module, images: torch.Tensor, layer: str, channel: int, positions, rule: str = "deconvnet"
) -> torch.Tensor:
    """d unit / d image with notebook 02's backward rule, one unit per image: (N, 3, H, W).

    Unit n is channel ``channel`` of ``layer`` at map position ``positions[n]`` (row, column),
    or one pair for all. ``rule``: ``"deconvnet"`` (Zeiler & Fergus 2014: every ReLU passes
    the positive part of the signal back) or ``"guided"`` (guided backpropagation: also only
    where the unit was on) or ``"gradient"`` (the plain gradient). The images are independent
    (eval mode), so one backward pass serves the whole batch. Only pixels inside the unit's
    receptive field can be non-zero.

    >>> maps = unit_deconvolution(model, images, "blocks.3", 5, positions)
    """
    if rule not in ("deconvnet", "guided", "gradient"):
        raise ValueError(f"rule={rule!r}: use 'deconvnet', 'guided' (guided backpropagation) or 'gradient'.")
    check_images(images, "images")
    get_layer(model, layer)
    if isinstance(channel, bool) or not isinstance(channel, int) or channel < 0:
        raise ValueError(f"channel must be a non-negative int, got {channel!r}.")
    device = next((p.device for p in model.parameters()), images.device)
    inputs = images.detach().to(device).requires_grad_(True)
    with preserve_model_state(model):
        output = layer_maps(model, layer, inputs, rule=None if rule == "gradient" else rule, detach=False)
        if channel >= output.shape[1]:
            raise ValueError(f"channel {channel} is out of range: layer {layer!r} has {output.shape[1]} channels (0 to {output.shape[1] - 1}).")
        positions = _positions(positions, images.shape[0], tuple(output.shape[2:])).to(device)
        batch = torch.arange(images.shape[0], device=device)
        units = output[batch, channel, positions[:, 0], positions[:, 1]]
        (gradient,) = torch.autograd.grad(units.sum(), inputs)
    return gradient.detach()


def layer_maps(model: nn.Module, layer: str, inputs: torch.Tensor, rule: str | None = None, detach: bool = True) -> torch.Tensor:
    """The maps (N, C, H, W) of ``layer`` for ``inputs``; the forward pass stops right after the layer.

    ``rule`` ("guided" or "deconvnet"): every rectifier on the way follows that backward rule;
    ``detach=False`` keeps the graph, to backpropagate from a unit. The caller holds
    :func:`preserve_model_state`.
    """
    module = get_layer(model, layer)
    with capture_activations(model, layer, detach=detach) as acts:
        stop = module.register_forward_hook(_stop_after)  # after the capture's hook: nothing past the layer is needed
        try:
            if rule is None:
                _forward(model, inputs)
            else:
                with _rectifier_backward_rule(model, rule, f"unit_deconvolution({rule!r})"):
                    _forward(model, inputs)
        finally:
            stop.remove()
    maps = acts[layer]
    if not isinstance(maps, torch.Tensor) or maps.dim() != 4:
        got = tuple(maps.shape) if isinstance(maps, torch.Tensor) else "no tensor"
        raise ValueError(f"layer {layer!r} gives {got}; a unit needs feature maps (N, C, H, W). Pick a convolution layer or block.")
    return maps


def _stop_after(_module, _inputs, _output):
    raise _StopForward


def _forward(model: nn.Module, inputs: torch.Tensor) -> None:
    try:
        model(inputs)
    except _StopForward:
        pass


def display_signed(maps: torch.Tensor, inside: torch.Tensor | None = None, percentile: float = 99.5) -> torch.Tensor:
    """Signed maps (N, 3, H, W) -> pictures in [0, 1]: zero is grey 0.5, each map scaled by its own
    ``percentile`` of |value| (brighter than the maximum would give: a few pixels saturate).

    ``inside`` (N, 1, H, W) bool: where it is False the picture shows the checkerboard.
    """
    magnitude = maps.flatten(1).abs().float()
    scale = torch.quantile(magnitude, percentile / 100, dim=1).clamp_min(1e-12)[:, None, None, None]
    pictures = (0.5 + 0.5 * maps / scale).clamp(0, 1)
    if inside is not None:
        board = checkerboard(maps.shape[2], maps.shape[3]).to(maps)
        pictures = torch.where(inside, pictures, board)
    return pictures
