"""Seeing the architecture: a layer table with receptive fields, a layer map, a layer picker.

The receptive field of a unit is the box of input pixels that can change its value. For a
chain of convolutions and poolings it follows from three numbers per axis, composed layer by
layer (Araujo et al. 2019, "Computing receptive fields of convolutional neural networks"):

* ``size`` r: how many input pixels the unit sees,        r_out = r_in + (d (k - 1)) j_in
* ``jump`` j: how far apart neighbouring units look,      j_out = j_in s
* ``start``:  input pixel at the top-left of unit (0, 0), start_out = start_in - p j_in

for a kernel k, stride s, padding p (left/top side) and dilation d. Where branches meet
(``x + shortcut``, ``torch.cat``) the field is the union of the branches' fields, which for
centred branches is the field of the largest one.

:func:`layer_table` runs one forward pass and follows these numbers through every operation
(a ``TorchFunctionMode`` sees ``conv2d``, ``max_pool2d``, ``pad``, ``+``, ``cat`` ... even
when they are plain function calls inside a block's ``forward``), while forward hooks note
each module's output. No hook and no mode outlives the call.

The same pass counts what the network costs: the **multiply-adds** (MACs) of every convolution,
linear layer and matrix product, each credited to the module that ran it and to all its parents.
A convolution with C_in input and C_out output channels, kernel k_h x k_w and ``groups`` g makes
H_out W_out C_out (C_in / g) k_h k_w of them per image (a depthwise one, g = C_in, only
H_out W_out C_out k_h k_w); a linear layer in x out per row. Bias additions, normalization,
activations, pooling and residual sums are not multiply-adds and count 0 (the usual convention
of FLOP counters; ``torchinfo`` differs only by also counting biases and plain BatchNorm layers).
With ``images=`` a second pass measures how sparse each layer's output is on real photos: the
share of exactly-zero values, and the **dead channels**, zero on every photo at every position.
"""
from __future__ import annotations

import difflib
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .checks import check_images, check_model
from .layers import LayerNotFoundError, _probe_forward, get_layer, preserve_model_state, probe_size

__all__ = [
    "ReceptiveField",
    "LayerRow",
    "LayerTable",
    "layer_table",
    "receptive_field",
    "receptive_field_box",
    "crop_receptive_field",
    "describe_layer",
    "draw_layer_map",
    "LayerPicker",
    "layer_picker",
    "write_tensorboard_graph",
    "read_tensorboard_graph",
    "torchviz_graph",
]


# --------------------------------------------------------------------------------------------
# Receptive fields
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceptiveField:
    """Where the units of one layer look in the input, per axis (height, width), in pixels.

    Unit (y, x) sees rows ``start[0] + y * jump[0]`` to ``... + size[0] - 1`` and the matching
    columns. ``start`` is negative when padding lets the field hang over the image border.
    ``global_context`` is True after a gate computed from the whole image (squeeze-and-excitation):
    the box is still where the unit looks, but every pixel can nudge it a little.

    >>> field = receptive_field(vgg, "features.28")
    >>> field.size, field.jump, field.box(7, 7, image_size=224)
    ((196, 196), (16, 16), (14, 14, 210, 210))
    """

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[int, int]
    global_context: bool = False

    def center(self, y: int, x: int) -> tuple[float, float]:
        """The input coordinate (row, column) at the centre of unit (y, x)'s field."""
        return (
            self.start[0] + y * self.jump[0] + (self.size[0] - 1) / 2,
            self.start[1] + x * self.jump[1] + (self.size[1] - 1) / 2,
        )

    def box(self, y: int, x: int, image_size: int | tuple[int, int] | None = None) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of unit (y, x)'s field; bottom/right are exclusive.

        With ``image_size`` the box is clipped to the image, so ``image[..., top:bottom,
        left:right]`` is the patch the unit sees.
        """
        top = self.start[0] + y * self.jump[0]
        left = self.start[1] + x * self.jump[1]
        bottom, right = top + self.size[0], left + self.size[1]
        if image_size is not None:
            height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
            top, left = max(top, 0), max(left, 0)
            bottom, right = min(bottom, height), min(right, width)
        return int(top), int(left), int(bottom), int(right)

    @property
    def is_square(self) -> bool:
        return self.size[0] == self.size[1] and self.jump[0] == self.jump[1]

    def __str__(self) -> str:
        if self.is_square:
            text = f"{self.size[0]} px, stride {self.jump[0]}"
        else:
            text = f"{self.size[0]}x{self.size[1]} px, stride {self.jump[0]}x{self.jump[1]}"
        return text + (" + global context" if self.global_context else "")


_IDENTITY = ReceptiveField(size=(1, 1), jump=(1, 1), start=(0, 0))


class _Marker:
    """A field that is not a regular grid: the whole input, or not known."""

    def __init__(self, note: str):
        self.note = note

    def __repr__(self) -> str:
        return self.note


_WHOLE = _Marker("whole image")


def _unknown(operation: str) -> _Marker:
    return _Marker(f"unknown (after {operation})")


def _pair(value, name: str = "value") -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    values = tuple(int(v) for v in value)
    if len(values) == 1:
        return values[0], values[0]
    if len(values) != 2:
        raise ValueError(f"expected one or two {name}s, got {value!r}")
    return values  # type: ignore[return-value]


def _window(field: ReceptiveField, kernel, stride, padding, dilation=1) -> ReceptiveField:
    """The field after a sliding window (convolution or pooling) with these settings."""
    kernel, stride, padding, dilation = _pair(kernel), _pair(stride), _pair(padding), _pair(dilation)
    size, jump, start = [], [], []
    for axis in range(2):
        span = dilation[axis] * (kernel[axis] - 1) + 1
        size.append(field.size[axis] + (span - 1) * field.jump[axis])
        jump.append(field.jump[axis] * stride[axis])
        start.append(field.start[axis] - padding[axis] * field.jump[axis])
    return ReceptiveField(tuple(size), tuple(jump), tuple(start), field.global_context)  # type: ignore[arg-type]


def _union(fields: Sequence[ReceptiveField], global_context: bool = False) -> ReceptiveField | _Marker:
    """The field of a unit that combines several aligned branches (add, multiply, cat)."""
    if len({f.jump for f in fields}) > 1:
        return _unknown("merging branches with different strides")
    start = tuple(min(f.start[a] for f in fields) for a in range(2))
    end = tuple(max(f.start[a] + f.size[a] for f in fields) for a in range(2))
    size = tuple(e - s for s, e in zip(start, end))
    context = global_context or any(f.global_context for f in fields)
    return ReceptiveField(size, fields[0].jump, start, context)  # type: ignore[arg-type]


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item)]
    return []


def _argument(args, kwargs, index: int, name: str, default=None):
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


_CONVOLUTIONS = {"conv2d"}
_MAX_POOLS = {"max_pool2d", "_max_pool2d", "max_pool2d_with_indices"}
_AVG_POOLS = {"avg_pool2d", "lp_pool2d"}
_ADAPTIVE_POOLS = {
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "_adaptive_max_pool2d",
    "adaptive_max_pool2d_with_indices",
}
_PADS = {"pad", "_pad"}
_AXIS_MOVES = {"transpose", "swapaxes", "swapdims", "permute"}


_CONVOLUTION_PRODUCTS = {"conv1d", "conv2d", "conv3d"}
_TRANSPOSED_PRODUCTS = {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
_MATRIX_PRODUCTS = {"matmul", "__matmul__", "__rmatmul__", "mm", "bmm"}
_MATRIX_PRODUCTS_WITH_BIAS = {"addmm", "baddbmm"}
_COUNTED_PRODUCTS = (
    _CONVOLUTION_PRODUCTS | _TRANSPOSED_PRODUCTS | _MATRIX_PRODUCTS | _MATRIX_PRODUCTS_WITH_BIAS | {"linear"}
)
# Products done inside one opaque call, which the trace cannot see into: reported, not counted.
_UNCOUNTED_PRODUCTS = {"multi_head_attention_forward", "scaled_dot_product_attention", "einsum", "bilinear"}


def _multiply_adds(name: str, args, kwargs, output) -> int:
    """Multiply-adds of one call of a product (convolution, linear, matrix product), batch included.

    Each output value of a convolution is a sum over (C_in / groups) k_h k_w products, the size of one
    output channel's weight ``weight[0]``; each output of a linear layer or matrix product a sum over
    the shared (inner) dimension. A transposed convolution spreads every input value over
    (C_out / groups) k_h k_w outputs. Biases are additions, not counted.
    """
    result = _tensors(output)[0]
    if name in _CONVOLUTION_PRODUCTS:
        weight = _argument(args, kwargs, 1, "weight")
        return result.numel() * weight[0].numel()
    if name in _TRANSPOSED_PRODUCTS:
        source, weight = _argument(args, kwargs, 0, "input"), _argument(args, kwargs, 1, "weight")
        return source.numel() * weight[0].numel()
    if name == "linear":
        weight = _argument(args, kwargs, 1, "weight")
        return result.numel() * weight.shape[-1]
    if name in _MATRIX_PRODUCTS_WITH_BIAS:  # addmm(bias, a, b), baddbmm(bias, a, b)
        left = _argument(args, kwargs, 1, "mat1" if name == "addmm" else "batch1")
        return result.numel() * left.shape[-1]
    if name == "__rmatmul__":  # b.__rmatmul__(a) is a @ b: the inner size is b's rows
        right = args[0]
        return result.numel() * (right.shape[-2] if right.dim() > 1 else right.shape[0])
    left = _argument(args, kwargs, 0, "input")
    return result.numel() * left.shape[-1]


class _FieldTracer(TorchFunctionMode):
    """Follows the receptive field of every tensor through the torch functions a forward calls."""

    def __init__(self):
        super().__init__()
        # Strong references keep ids unique while the trace runs; dropped when it ends.
        self.fields: dict[int, tuple[torch.Tensor, Any]] = {}
        self.unsupported: set[str] = set()
        # Multiply-adds: the modules running now (outermost first), what each has computed, the total.
        self.running: list[str] = []
        self.macs: dict[str, int] = {}
        self.total_macs = 0
        self.uncounted: set[str] = set()

    def field_of(self, tensor: torch.Tensor):
        entry = self.fields.get(id(tensor))
        return entry[1] if entry is not None and entry[0] is tensor else None

    def set_field(self, tensor: torch.Tensor, field) -> None:
        self.fields[id(tensor)] = (tensor, field)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        if name in _COUNTED_PRODUCTS or name in _UNCOUNTED_PRODUCTS:
            self._count(name, args, kwargs, output)
        inputs = [(t, self.field_of(t)) for t in _tensors(args) + _tensors(kwargs)]
        inputs = [(t, f) for t, f in inputs if f is not None]
        if inputs:
            try:
                self._propagate(name, args, kwargs, inputs, output)
            except Exception as error:  # a field we cannot follow must not break the forward pass
                self.unsupported.add(f"{name} ({type(error).__name__})")
                for tensor in _tensors(output):
                    self.set_field(tensor, _unknown(name))
        return output

    def _count(self, name, args, kwargs, output) -> None:
        """Credit the multiply-adds of one product to every module running now."""
        if name in _UNCOUNTED_PRODUCTS:
            self.uncounted.add(name)
            return
        try:
            macs = _multiply_adds(name, args, kwargs, output)
        except Exception as error:  # counting must never break the forward pass
            self.uncounted.add(f"{name} ({type(error).__name__})")
            return
        self.total_macs += macs
        for module_name in self.running:
            self.macs[module_name] = self.macs.get(module_name, 0) + macs

    def _propagate(self, name, args, kwargs, inputs, output) -> None:
        first, field = inputs[0]
        outputs = _tensors(output)
        spatial = [t for t in outputs if t.dim() == 4]
        if name in _CONVOLUTIONS | _MAX_POOLS | _AVG_POOLS | _ADAPTIVE_POOLS | _PADS:
            if first is not args[0] or first.dim() != 4:
                self.unsupported.add(f"{name} on a {first.dim()}-D input")
                new = _unknown(name)
            elif not isinstance(field, ReceptiveField):
                new = field  # whole image (or unknown) stays so
            elif name in _CONVOLUTIONS:
                weight = _argument(args, kwargs, 1, "weight")
                kernel = tuple(weight.shape[-2:])
                stride = _argument(args, kwargs, 3, "stride", 1)
                padding = _argument(args, kwargs, 4, "padding", 0)
                dilation = _pair(_argument(args, kwargs, 5, "dilation", 1))
                if isinstance(padding, str):  # 'same' puts the odd pixel at the end, 'valid' none
                    padding = (0, 0) if padding == "valid" else tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel))
                new = _window(field, kernel, stride, padding, dilation)
            elif name in _MAX_POOLS or name in _AVG_POOLS:
                offset = 1 if name != "lp_pool2d" else 2  # lp_pool2d(input, norm_type, kernel, stride)
                kernel = _argument(args, kwargs, offset, "kernel_size")
                stride = _argument(args, kwargs, offset + 1, "stride", None) or kernel
                padding = 0 if name == "lp_pool2d" else _argument(args, kwargs, offset + 2, "padding", 0)
                dilation = _argument(args, kwargs, 4, "dilation", 1) if name in _MAX_POOLS else 1
                new = _window(field, kernel, stride, padding, dilation)
            elif name in _ADAPTIVE_POOLS:
                new = self._adaptive(field, tuple(first.shape[-2:]), tuple(spatial[0].shape[-2:]))
            else:  # pad: (left, right, top, bottom); negative values crop
                pad = list(_argument(args, kwargs, 1, "pad")) + [0, 0, 0, 0]
                left, top = pad[0], pad[2]
                new = ReceptiveField(
                    field.size,
                    field.jump,
                    (field.start[0] - top * field.jump[0], field.start[1] - left * field.jump[1]),
                    field.global_context,
                )
            for tensor in spatial:
                self.set_field(tensor, new)
            return
        if name in _AXIS_MOVES and not self._keeps_spatial_axes(name, args, kwargs, first.dim()):
            for tensor in outputs:  # e.g. NCHW -> NHWC: height and width are no longer the last two axes
                self.unsupported.add(name)
                self.set_field(tensor, _unknown(name))
            return
        # Any other operation: an output aligned with its inputs (same height and width) sees
        # the union of what they see; anything that mixes all positions sees the whole image.
        unknown = [f for _, f in inputs if isinstance(f, _Marker) and f is not _WHOLE]
        for tensor in outputs:
            if unknown:  # already lost upstream; report only where it was lost
                self.set_field(tensor, unknown[0])
                continue
            if tensor.dim() < 3:
                self.set_field(tensor, _WHOLE)
                continue
            aligned = [f for t, f in inputs if t.dim() >= 3 and t.shape[-2:] == tensor.shape[-2:]]
            # a (N, C, 1, 1) gate broadcast over the map, as in squeeze-and-excitation
            gated = tuple(tensor.shape[-2:]) != (1, 1) and any(
                t.dim() == tensor.dim() and tuple(t.shape[-2:]) == (1, 1) for t, _ in inputs
            )
            if aligned:
                markers = [f for f in aligned if isinstance(f, _Marker)]
                self.set_field(tensor, markers[0] if markers else _union(aligned, global_context=gated))
            elif tuple(tensor.shape[-2:]) == (1, 1):
                self.set_field(tensor, _WHOLE)
            else:
                self.unsupported.add(name)
                self.set_field(tensor, _unknown(name))

    @staticmethod
    def _keeps_spatial_axes(name, args, kwargs, ndim: int) -> bool:
        """Whether a transpose/permute leaves height and width as the last two axes (channel shuffle does)."""
        order = list(range(ndim))
        if name in ("transpose", "swapaxes", "swapdims"):
            first = _argument(args, kwargs, 1, "dim0")
            second = _argument(args, kwargs, 2, "dim1")
            first, second = first % ndim, second % ndim
            order[first], order[second] = order[second], order[first]
        else:  # permute(*dims) or permute(dims)
            dims = args[1:] if len(args) > 2 else (args[1] if len(args) > 1 else kwargs.get("dims"))
            order = [d % ndim for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
        return order[-2:] == [ndim - 2, ndim - 1]

    @staticmethod
    def _adaptive(field: ReceptiveField, size_in: tuple[int, int], size_out: tuple[int, int]):
        if any(i % o for i, o in zip(size_in, size_out)):
            return _unknown("adaptive pooling to a size that does not divide the input")
        kernel = tuple(i // o for i, o in zip(size_in, size_out))
        return _window(field, kernel, kernel, 0)


# --------------------------------------------------------------------------------------------
# The layer table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerRow:
    """One module of the network: what it is, what comes out of it, where its units look.

    ``receptive_field`` is ``None`` when the output is not a map of units on a regular grid;
    ``field_note`` then says why (``"whole image"`` after global pooling and linear layers).
    ``macs`` are the multiply-adds computed while this module ran (its children included, every
    call counted) for one forward pass of the table's ``input_size``. ``zero_fraction`` (the
    share of exactly-zero output values) and ``dead_channels`` (channels zero on every image at
    every position) are measured on the ``images`` given to :func:`layer_table` (first call of
    each module), else ``None``; ``dead_channels`` only for outputs (N, C, H, W) and (N, F).
    """

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    parameters: int
    depth: int
    details: str
    receptive_field: ReceptiveField | None
    field_note: str
    called: bool
    macs: int = 0
    zero_fraction: float | None = None
    dead_channels: int | None = None

    @property
    def channels(self) -> int | None:
        """Channels of a map (N, C, H, W), features of a vector (N, F), else None."""
        if not self.output_shape or len(self.output_shape) < 2:
            return None
        return int(self.output_shape[1])

    def field_text(self) -> str:
        return str(self.receptive_field) if self.receptive_field is not None else (self.field_note or "-")


class LayerTable(list):
    """The rows of :func:`layer_table`, in the order of ``print(model)``; ``print`` it for a table.

    ``total_macs`` is the multiply-adds of the whole forward pass of ``input_size``;
    ``measured_images`` how many images the zero shares were measured on (0: not measured).
    """

    def __init__(
        self,
        rows: Iterable[LayerRow],
        model_name: str,
        input_size: tuple[int, ...],
        unsupported: Sequence[str],
        total_macs: int = 0,
        measured_images: int = 0,
    ):
        super().__init__(rows)
        self.model_name = model_name
        self.input_size = tuple(input_size)
        self.unsupported = tuple(unsupported)
        self.total_macs = int(total_macs)
        self.measured_images = int(measured_images)
        self._by_name = {row.name: row for row in self}

    def row(self, name: str) -> LayerRow:
        """The row of layer ``name``; an unknown name raises an error listing the closest names."""
        if not isinstance(name, str):
            raise TypeError(f"a layer name is a string such as 'features.28', got {type(name).__name__}")
        if name in self._by_name:
            return self._by_name[name]
        close = difflib.get_close_matches(name, list(self._by_name), n=5, cutoff=0.5)
        hint = f" Closest valid names: {', '.join(repr(n) for n in close)}." if close else ""
        raise LayerNotFoundError(
            f"{self.model_name} has no layer {name!r}.{hint} print(model) or layer_names(model) shows all {len(self)}."
        )

    def names(self) -> list[str]:
        return [row.name for row in self]

    def leaves(self) -> list[LayerRow]:
        """The rows of modules without children (the layers that do the work, not the blocks)."""
        parents = {row.name.rsplit(".", 1)[0] for row in self if "." in row.name}
        return [row for row in self if row.name not in parents]

    def to_text(self, leaves_only: bool = False, max_depth: int | None = None) -> str:
        """A plain-text table: name, type, output shape, parameters, multiply-adds, receptive field,
        stride, start, and (when measured on images) the share of zeros and the dead channels."""
        leaves = {row.name for row in self.leaves()}
        rows = [
            row
            for row in self
            if (not leaves_only or row.name in leaves) and (max_depth is None or row.depth <= max_depth)
        ]
        header = ("name", "type", "output shape", "parameters", "mult-adds", "field (px)", "stride", "start")
        if self.measured_images:
            header += ("zeros", "dead ch")
        lines = []
        for row in rows:
            field = row.receptive_field
            line = (
                row.name,
                row.type,
                "x".join(map(str, row.output_shape)) if row.output_shape else "-",
                f"{row.parameters:,}",
                _count_text(row.macs),
                _axes_text(field.size) if field else (row.field_note or "-"),
                _axes_text(field.jump) if field else "",
                _axes_text(field.start) if field else "",
            )
            if self.measured_images:
                line += (
                    f"{row.zero_fraction:.0%}" if row.zero_fraction is not None else "-",
                    f"{row.dead_channels}/{row.channels}" if row.dead_channels is not None else "-",
                )
            lines.append(line)
        widths = [max(len(str(item)) for item in column) for column in zip(header, *lines)]
        out = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths)).rstrip()]
        out.append("  ".join("-" * width for width in widths))
        out += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"<LayerTable of {self.model_name}: {len(self)} layers, input {'x'.join(map(str, self.input_size))}>"


def _count_text(count: int) -> str:
    """12345678 -> '12.3M': three significant digits, '-' for none."""
    if not count:
        return "-"
    for size, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= size:
            value = count / size
            return f"{value:.3g}{unit}" if value < 1000 else f"{value:.0f}{unit}"
    return str(count)


def _axes_text(pair: tuple[int, int]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def _details(module: nn.Module) -> str:
    """Short settings of a layer: '3x3', '3x3 /2', '5x5 /2 dw', '1x1', '4096->1000'."""
    kernel = getattr(module, "kernel_size", None)
    if isinstance(module, nn.Linear):
        return f"{module.in_features}->{module.out_features}"
    if kernel is None or isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return ""
    kernel = _pair(kernel)
    stride = _pair(getattr(module, "stride", None) or kernel)
    text = f"{kernel[0]}x{kernel[1]}"
    if stride != (1, 1):
        text += f" /{_axes_text(stride)}"
    dilation = getattr(module, "dilation", 1)
    if _pair(dilation) != (1, 1):
        text += f" dil {_axes_text(_pair(dilation))}"
    groups = getattr(module, "groups", 1)
    if groups > 1 and groups == getattr(module, "in_channels", -1):
        text += " dw"
    elif groups > 1:
        text += f" g{groups}"
    return text


def _default_input_size(model: nn.Module) -> tuple[int, int, int, int]:
    return (1, 3, *probe_size(model))  # the model's fixed size (a ViT), its nominal size, else 224


def layer_table(
    model: nn.Module, input_size: Sequence[int] | None = None, images: torch.Tensor | None = None
) -> LayerTable:
    """Every module with its type, output shape, parameters, multiply-adds and receptive field.

    ``input_size`` is (N, 3, H, W), by default (1, 3, 224, 224) (or the model's own input size:
    ``probe_size``, or the size of ``images``). A network that takes one size only (a 32 px CIFAR
    net) needs it given. One forward pass (on zeros) gives shapes, fields and multiply-adds (per
    forward pass of ``input_size``: per image with the default batch of 1). With ``images``
    (N, 3, H, W) in [0, 1], a second pass measures each layer's share of exactly-zero outputs and
    its dead channels on them. The model is left exactly as it was: no hooks, same training
    flags, no gradients.

    >>> table = layer_table(vgg)
    >>> table.row("features.30").receptive_field
    ReceptiveField(size=(212, 212), jump=(32, 32), start=(-90, -90))
    >>> table.row("features.28").macs   # 14 x 14 x 512 x 512 x 3 x 3 multiply-adds
    462422016
    >>> layer_table(vgg, images=load_images()).row("features.29").zero_fraction
    >>> print(table)  # the whole table
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"layer_table needs a torch.nn.Module, got {type(model).__name__}")
    if images is not None:
        images = check_images(images)
    if input_size is None:
        input_size = (1, 3, *images.shape[2:]) if images is not None else _default_input_size(model)
    input_size = tuple(int(v) for v in input_size)
    if len(input_size) != 4 or min(input_size) < 1:
        raise ValueError(f"input_size must be (N, C, H, W) with positive sizes, e.g. (1, 3, 224, 224); got {input_size}")
    if images is not None and tuple(images.shape[1:]) != input_size[1:]:
        raise ValueError(
            f"the images are {tuple(images.shape[1:])} but input_size is {input_size[1:]}: shapes, fields and "
            f"multiply-adds would describe another size than the zeros measured. Leave input_size out "
            f"(it follows the images) or resize the images."
        )
    modules = [(name, module) for name, module in model.named_modules() if name]
    records: dict[str, tuple[tuple[int, ...] | None, Any]] = {}
    tracer = _FieldTracer()

    def before(name: str):
        def pre_hook(_module, _inputs):
            tracer.running.append(name)

        return pre_hook

    def recorder(name: str):
        def hook(_module, _inputs, output):
            if tracer.running and tracer.running[-1] == name:
                tracer.running.pop()
            if name in records:
                return  # a module called twice keeps its first call
            tensors = _tensors(output)
            if tensors:
                records[name] = (tuple(tensors[0].shape), tracer.field_of(tensors[0]))
            else:
                records[name] = (None, None)

        return hook

    device, dtype = check_model(model)
    zeros = torch.zeros(input_size, device=device, dtype=dtype)
    with preserve_model_state(model):
        handles = []
        try:
            for name, module in modules:
                handles.append(module.register_forward_pre_hook(before(name)))
                handles.append(module.register_forward_hook(recorder(name)))
            tracer.set_field(zeros, _IDENTITY)
            with torch.no_grad(), tracer:
                _probe_forward(model, zeros, "layer_table")
        finally:
            for handle in handles:
                handle.remove()
            fields, tracer.fields = tracer.fields, {}
            del fields
        sparsity = _measure_zeros(model, modules, images.to(device=device, dtype=dtype)) if images is not None else {}
    if tracer.unsupported:
        warnings.warn(
            "layer_table could not follow the receptive field through: "
            + ", ".join(sorted(tracer.unsupported))
            + ". Layers after these have field 'unknown'.",
            stacklevel=2,
        )
    if tracer.uncounted:
        warnings.warn(
            "layer_table could not count the multiply-adds inside: " + ", ".join(sorted(tracer.uncounted))
            + " (one opaque call each); they are missing from the multiply-adds.",
            stacklevel=2,
        )
    rows = []
    for name, module in modules:
        shape, field = records.get(name, (None, None))
        zero_fraction, dead = sparsity.get(name, (None, None))
        rows.append(
            LayerRow(
                name=name,
                type=type(module).__name__,
                output_shape=shape,
                parameters=sum(p.numel() for p in module.parameters()),
                depth=name.count(".") + 1,
                details=_details(module),
                receptive_field=field if isinstance(field, ReceptiveField) and shape and len(shape) == 4 else None,
                field_note=(
                    ""
                    if isinstance(field, ReceptiveField) and shape and len(shape) == 4
                    else (field.note if isinstance(field, _Marker) else ("whole image" if shape else "not called"))
                ),
                called=name in records,
                macs=tracer.macs.get(name, 0),
                zero_fraction=zero_fraction,
                dead_channels=dead,
            )
        )
    return LayerTable(
        rows,
        getattr(getattr(model, "info", None), "name", type(model).__name__),
        input_size,
        sorted(tracer.unsupported),
        total_macs=tracer.total_macs,
        measured_images=0 if images is None else images.shape[0],
    )


def _measure_zeros(
    model: nn.Module, modules: list[tuple[str, nn.Module]], images: torch.Tensor, batch_size: int = 8
) -> dict[str, tuple[float, int | None]]:
    """Per module: (share of exactly-zero output values, channels zero everywhere) over ``images``.

    Counted in the hook, before a later in-place operation (``ReLU(inplace=True)``) can change the
    output; only the first call of a module in each forward pass, as for the shapes. A tensor that
    the next modules return unchanged (an ``Identity``, a block and its last layer) is counted once.
    """
    nonzero: dict[str, torch.Tensor] = {}  # non-zero values per channel (or in total), summed over batches
    value_counts: dict[str, int] = {}
    per_channel: dict[str, bool] = {}
    seen: set[str] = set()
    recent: list[tuple[torch.Tensor, int, torch.Tensor]] = []  # the last few outputs: (tensor, version, counts)

    def measure(name: str):
        def hook(_module, _inputs, output):
            tensors = _tensors(output)
            if name in seen or not tensors or not tensors[0].is_floating_point():
                return
            seen.add(name)
            tensor = tensors[0]
            counts = next((c for t, v, c in recent if t is tensor and v == tensor._version), None)
            if counts is None:
                # (N, C, H, W) or (N, F): non-zero values per channel (reduced along the contiguous
                # last axis first, several times faster than over axes (0, 2, 3)); otherwise in total
                value = tensor.detach()
                if value.dim() == 4:
                    counts = torch.count_nonzero(value.flatten(2), dim=2).sum(0)
                elif value.dim() == 2:
                    counts = torch.count_nonzero(value, dim=0)
                else:
                    counts = torch.count_nonzero(value).reshape(1)
                recent.append((tensor, tensor._version, counts))
                del recent[:-4]
            per_channel[name] = tensor.dim() in (2, 4)
            nonzero[name] = counts if name not in nonzero else nonzero[name] + counts
            value_counts[name] = value_counts.get(name, 0) + tensor.numel()

        return hook

    handles = []
    try:
        for name, module in modules:
            handles.append(module.register_forward_hook(measure(name)))
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                seen.clear()
                _probe_forward(model, images[start : start + batch_size], "layer_table")
                recent.clear()
    finally:
        for handle in handles:
            handle.remove()
        recent.clear()
    results = {}
    for name, counts in nonzero.items():
        total = value_counts[name]
        dead = int((counts == 0).sum()) if per_channel[name] else None
        results[name] = ((total - int(counts.sum())) / max(total, 1), dead)
    return results


def _table_for(model: nn.Module, table: LayerTable | None, input_size) -> LayerTable:
    if table is not None:
        if not isinstance(table, LayerTable):
            raise TypeError("table must come from layer_table(model).")
        return table
    return layer_table(model, input_size)


def receptive_field(
    model: nn.Module, layer: str, input_size: Sequence[int] | None = None, table: LayerTable | None = None
) -> ReceptiveField:
    """The receptive field of the units of ``layer`` (size, jump = stride, start), in input pixels.

    >>> receptive_field(vgg, "features.16")  # pool3
    ReceptiveField(size=(44, 44), jump=(8, 8), start=(-18, -18))
    """
    get_layer(model, layer)  # a wrong name fails here, with the closest names
    row = _table_for(model, table, input_size).row(layer)
    if row.receptive_field is None:
        raise ValueError(
            f"layer {layer!r} ({row.type}) has no receptive field on a grid: its output "
            f"{row.output_shape} is {row.field_note or 'not a map'}. Pick a convolution, pooling or "
            "activation layer with an output (N, C, H, W)."
        )
    return row.receptive_field


def receptive_field_box(
    model: nn.Module,
    layer: str,
    y: int,
    x: int,
    input_size: Sequence[int] | None = None,
    table: LayerTable | None = None,
    clip: bool = True,
) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the input pixels unit (y, x) of ``layer`` sees (exclusive end).

    Clipped to the image unless ``clip=False``; crop with ``images[..., top:bottom, left:right]``.

    >>> receptive_field_box(vgg, "features.28", 0, 0)
    (0, 0, 106, 106)
    """
    table = _table_for(model, table, input_size)
    field = receptive_field(model, layer, table=table)
    shape = table.row(layer).output_shape
    for axis, value, label in ((2, y, "y"), (3, x, "x")):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < shape[axis]:
            raise ValueError(
                f"{label}={value!r} is outside layer {layer!r}, whose maps are {shape[2]}x{shape[3]} "
                f"(y from 0 to {shape[2] - 1}, x from 0 to {shape[3] - 1})."
            )
    return field.box(y, x, image_size=table.input_size[2:] if clip else None)


def crop_receptive_field(
    images: torch.Tensor, model: nn.Module, layer: str, y: int, x: int, table: LayerTable | None = None
) -> torch.Tensor:
    """The patch of ``images`` (N, 3, H, W) that unit (y, x) of ``layer`` sees, clipped to the image.

    >>> patch = crop_receptive_field(load_image("chelsea"), vgg, "features.28", 7, 7)  # (1, 3, 196, 196)
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a tensor (N, C, H, W), got {getattr(images, 'shape', type(images).__name__)}")
    size = (1, images.shape[1], images.shape[2], images.shape[3])
    if table is not None and tuple(table.input_size[2:]) != tuple(images.shape[2:]):
        raise ValueError(
            f"the table was made for {table.input_size[2]}x{table.input_size[3]} inputs but the images are "
            f"{images.shape[2]}x{images.shape[3]}; make it with layer_table(model, {size})."
        )
    top, left, bottom, right = receptive_field_box(model, layer, y, x, input_size=size, table=table)
    return images[..., top:bottom, left:right]


# --------------------------------------------------------------------------------------------
# Stages and blocks: what the layer map and the picker show
# --------------------------------------------------------------------------------------------

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass
class _Block:
    names: list[str]  # one name, or every name of a collapsed run
    rows: list[LayerRow]

    @property
    def first(self) -> LayerRow:
        return self.rows[0]

    @property
    def last(self) -> LayerRow:
        return self.rows[-1]

    def label(self) -> str:
        return self.names[0] if len(self.names) == 1 else f"{self.names[0]} … {self.names[-1]}"

    def contains(self, name: str) -> bool:
        return any(name == n or name.startswith(n + ".") for n in self.names)


@dataclass
class _Stage:
    title: str
    blocks: list[_Block]


def _signature(row: LayerRow) -> tuple:
    return (row.type, row.output_shape, row.parameters, row.details)


def _stages(model: nn.Module, table: LayerTable, max_per_row: int = 7, collapse: bool = True) -> list[_Stage]:
    """Group the network into stages of blocks, in the order of ``print(model)``.

    Containers (Sequential, ModuleList) are opened; other modules with children (a ResNet
    Bottleneck, an InvertedResidual) stay one block. A long run of plain layers (VGG's
    ``features``) is cut after each layer that lowers the resolution. Three or more identical
    consecutive blocks are collapsed into one.
    """
    items: list[tuple[str, str]] = []  # (name, parent)

    def expand(prefix: str, module: nn.Module, parent: str) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}.{child_name}" if prefix else child_name
            row = table._by_name.get(name)
            if row is None or not row.called:
                continue
            if isinstance(child, _CONTAINERS) and any(True for _ in child.children()):
                expand(name, child, name)
            else:
                items.append((name, parent))

    expand("", model, "")
    groups: list[tuple[str, list[str]]] = []
    for name, parent in items:
        if groups and groups[-1][0] == parent:
            groups[-1][1].append(name)
        else:
            groups.append((parent, [name]))

    stages: list[_Stage] = []
    n_containers = sum(1 for parent, _ in groups if parent)
    seen_containers = 0
    for parent, names in groups:
        rows = [table.row(n) for n in names]
        pieces = [rows]
        if len(rows) > max_per_row:  # cut after each downsampling layer
            pieces, current, previous_jump = [], [], None
            for row in rows:
                current.append(row)
                jump = row.receptive_field.jump if row.receptive_field else None
                if previous_jump is not None and jump is not None and jump[0] > previous_jump[0]:
                    pieces.append(current)
                    current = []
                previous_jump = jump or previous_jump
            if current:
                pieces.append(current)
        for piece in pieces:
            if parent:
                if len(pieces) == 1:
                    title = parent
                else:
                    title = f"{parent}.{piece[0].name.rsplit('.', 1)[1]}–{piece[-1].name.rsplit('.', 1)[1]}"
            elif len(pieces) == 1 and not seen_containers:
                title = "stem"
            elif len(pieces) == 1 and seen_containers == n_containers:
                title = "head"
            else:  # top-level layers between stages, or a long run of them (GoogLeNet): name its ends
                title = piece[0].name if len(piece) == 1 else f"{piece[0].name}–{piece[-1].name}"
            blocks = _collapse(piece) if collapse else [_Block([r.name], [r]) for r in piece]
            stages.append(_Stage(title, blocks))
        if parent:
            seen_containers += 1
    return stages


def _collapse(rows: list[LayerRow]) -> list[_Block]:
    blocks: list[_Block] = []
    index = 0
    while index < len(rows):
        end = index + 1
        while end < len(rows) and _signature(rows[end]) == _signature(rows[index]) and rows[index].parameters > 0:
            end += 1
        run = rows[index:end]
        if len(run) >= 3:
            blocks.append(_Block([r.name for r in run], run))
        else:
            blocks.extend(_Block([r.name], [r]) for r in run)
        index = end
    return blocks


def _shape_text(shape: tuple[int, ...] | None) -> str:
    if not shape:
        return "no output"
    if len(shape) == 4:
        return f"{shape[1]} ch · {shape[2]}x{shape[3]}"
    if len(shape) == 2:
        return f"{shape[1]} values"
    return "x".join(map(str, shape[1:]))


def _field_short(block: _Block) -> str:
    first, last = block.first.receptive_field, block.last.receptive_field
    if first is None or last is None:
        note = block.last.field_note or "-"
        return "sees the whole image" if note == "whole image" else note
    if len(block.rows) > 1 and first.size != last.size:
        text = f"field {_axes_text(first.size)}–{_axes_text(last.size)} · stride {_axes_text(last.jump)}"
    else:
        text = f"field {_axes_text(last.size)} · stride {_axes_text(last.jump)}"
    return text + (" +g" if last.global_context else "")


def _type_text(block: _Block) -> str:
    row = block.first
    kind = row.type + (f" {row.details}" if row.details else "")
    return f"{len(block.rows)} × {kind}" if len(block.rows) > 1 else kind


# --------------------------------------------------------------------------------------------
# The layer map
# --------------------------------------------------------------------------------------------

_KIND_COLORS = {
    "convolution": "#c6dbef",
    "pooling": "#fdd0a2",
    "normalization": "#e5e5e5",
    "activation": "#f2f2f2",
    "linear": "#c7e9c0",
    "block": "#dadaeb",
    "other": "#fafafa",
}


def _kind(row: LayerRow, module: nn.Module) -> str:
    if any(True for _ in module.children()) and not isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "block"
    name = row.type.lower()
    if "conv" in name:
        return "convolution"
    if "pool" in name:
        return "pooling"
    if "norm" in name:
        return "normalization"
    if isinstance(module, nn.Linear):
        return "linear"
    if any(word in name for word in ("relu", "silu", "gelu", "sigmoid", "tanh", "swish", "hardswish", "mish", "act")):
        return "activation"
    return "other"


def draw_layer_map(
    model: nn.Module,
    ax=None,
    table: LayerTable | None = None,
    input_size: Sequence[int] | None = None,
    highlight: str | None = None,
    max_per_row: int = 7,
    collapse: bool = True,
    title: str | None = None,
):
    """The network as rows of blocks, one row per stage, each block labelled with its exact name.

    Every block shows the name to pass to other helpers (bold), the layer type and settings,
    the output channels and resolution, and the receptive field (size and stride, in input
    pixels). Runs of 3+ identical blocks are collapsed ("layer3.1 … layer3.5, 5 × Bottleneck").
    ``highlight`` outlines the block that holds a layer. Returns the figure.

    >>> fig = draw_layer_map(load_model("efficientnet_lite0"), highlight="blocks.5.0")
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch, Patch

    table = _table_for(model, table, input_size)
    if highlight is not None:
        get_layer(model, highlight)
    if not isinstance(max_per_row, int) or max_per_row < 1:
        raise ValueError(f"max_per_row must be a positive int, got {max_per_row!r}")
    stages = _stages(model, table, max_per_row=max_per_row, collapse=collapse)
    if not stages:
        raise ValueError("this model has no layer that ran in the forward pass; nothing to draw.")
    lines: list[tuple[_Stage, list[_Block], bool]] = []  # long stages wrap onto continuation lines
    for stage in stages:
        for start in range(0, len(stage.blocks), max_per_row):
            lines.append((stage, stage.blocks[start : start + max_per_row], start == 0))

    # Data units are inches when we make the figure, so the fonts below fit the blocks as drawn.
    columns = max(len(blocks) for _, blocks, _ in lines)
    block_w, block_h, gap_x, gap_y = 1.75, 0.7, 0.22, 0.16
    label_w = max(1.3, 0.075 * max(len(stage.title) for stage in stages) + 0.2)
    width = label_w + columns * (block_w + gap_x) - gap_x + 0.05
    height = len(lines) * (block_h + gap_y) - gap_y + 0.1
    title_h, legend_h = 0.55, 0.35
    if ax is None:
        fig = plt.figure(figsize=(width, height + title_h + legend_h))
        total = height + title_h + legend_h
        ax = fig.add_axes((0, legend_h / total, 1, height / total))
    else:
        fig = ax.figure
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")

    boxes, names, bodies, labels = [], [], [], []
    kinds_used: list[str] = []
    for line_index, (stage, blocks, first_line) in enumerate(lines):
        top = 0.05 + line_index * (block_h + gap_y)
        if first_line:
            out = stage.blocks[-1].last.output_shape
            detail = f"{out[2]}x{out[3]}\n{out[1]} ch" if out and len(out) == 4 else _shape_text(out)
            labels.append(ax.text(0.04, top + 0.07, stage.title, ha="left", va="top", fontsize=8.5,
                                  fontweight="bold", color="#222222"))
            labels.append(ax.text(0.04, top + block_h - 0.06, detail, ha="left", va="bottom", fontsize=7.5,
                                  color="#444444", linespacing=1.2))
        for column, block in enumerate(blocks):
            left = label_w + column * (block_w + gap_x)
            kind = _kind(block.first, get_layer(model, block.first.name))
            if kind not in kinds_used:
                kinds_used.append(kind)
            hit = highlight is not None and block.contains(highlight)
            patch = FancyBboxPatch(
                (left, top), block_w, block_h, boxstyle="round,pad=0,rounding_size=0.06",
                facecolor=_KIND_COLORS[kind], edgecolor="#d62728" if hit else "#7f7f7f", linewidth=2.4 if hit else 0.7,
            )
            ax.add_patch(patch)
            boxes.append(patch)
            names.append(ax.text(left + 0.07, top + 0.07, block.label(), ha="left", va="top", fontsize=7.5,
                                 family="monospace", fontweight="bold", color="#000000"))
            body = f"{_type_text(block)}\n{_shape_text(block.last.output_shape)}\n{_field_short(block)}"
            bodies.append(ax.text(left + 0.07, top + block_h - 0.06, body, ha="left", va="bottom", fontsize=7,
                                  family="monospace", linespacing=1.2, color="#222222"))
            if column > 0:
                ax.annotate("", xy=(left, top + block_h / 2), xytext=(left - gap_x, top + block_h / 2),
                            arrowprops=dict(arrowstyle="->", color="#9e9e9e", lw=0.8))
    _fit_texts(fig, boxes, names, bodies)
    _fit_labels(fig, ax, labels, label_w - 0.08)
    handles = [Patch(facecolor=_KIND_COLORS[k], edgecolor="#7f7f7f", label=k) for k in _KIND_COLORS if k in kinds_used]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles), fontsize=7,
              frameon=False, handlelength=1.2, columnspacing=1.2)
    size = f"{table.input_size[2]}x{table.input_size[3]}"
    caption = "field = receptive field of one unit, in input pixels; stride = pixels between neighbouring units"
    if any(b.last.receptive_field and b.last.receptive_field.global_context for s in stages for b in s.blocks):
        caption += "\n+g = also gated by the whole image (squeeze-and-excitation)"
    ax.set_title((title or f"{table.model_name}: layer map, input {size}") + "\n" + caption, fontsize=8.5, loc="left", pad=6)
    return fig


def _fit_texts(fig, boxes, names, bodies) -> None:
    """Shrink the block labels until name and body fit inside their block without touching."""
    renderer = fig.canvas.get_renderer()
    for _ in range(5):
        worst = 1.0
        for patch, name, body in zip(boxes, names, bodies):
            box = patch.get_window_extent(renderer)
            name_box, body_box = name.get_window_extent(renderer), body.get_window_extent(renderer)
            wide = max(name_box.width, body_box.width)
            tall = name_box.height + body_box.height
            worst = min(worst, (box.width - 0.14 * fig.dpi) / max(wide, 1), (box.height - 0.14 * fig.dpi) / max(tall, 1))
        if worst >= 1.0:
            return
        for text in names + bodies:
            text.set_fontsize(text.get_fontsize() * worst * 0.97)


def _fit_labels(fig, ax, labels, width_data: float) -> None:
    """Shrink the stage labels to the label column."""
    renderer = fig.canvas.get_renderer()
    x0, x1 = ax.transData.transform([(0, 0), (width_data, 0)])[:, 0]
    for _ in range(5):
        widest = max((label.get_window_extent(renderer).width for label in labels), default=0)
        if widest <= x1 - x0:
            return
        for label in labels:
            label.set_fontsize(label.get_fontsize() * (x1 - x0) / widest * 0.97)


# --------------------------------------------------------------------------------------------
# Describing one layer, and picking one
# --------------------------------------------------------------------------------------------


def describe_layer(
    model: nn.Module, layer: str, table: LayerTable | None = None, input_size: Sequence[int] | None = None
) -> str:
    """A few lines about one layer: type, output, channels, parameters, receptive field, place in the map.

    >>> print(describe_layer(vgg, "features.28"))
    """
    get_layer(model, layer)
    table = _table_for(model, table, input_size)
    row = table.row(layer)
    stages = _stages(model, table)
    place = "not drawn in the map (it was not called in the forward pass)"
    for index, stage in enumerate(stages):
        for block_index, block in enumerate(stage.blocks):
            if block.contains(layer):
                inside = "" if layer in block.names else f", inside block {block.label()!r}"
                place = f"stage {index + 1} of {len(stages)} ({stage.title}), block {block_index + 1} of {len(stage.blocks)}{inside}"
    field = row.receptive_field
    if field is not None:
        field_text = (f"{_axes_text(field.size)} px, stride {_axes_text(field.jump)}, "
                      f"unit (0, 0) starts at pixel {field.start}")
        if field.global_context:
            field_text += " (plus global context: a gate computed from the whole image, e.g. squeeze-and-excitation)"
    else:
        field_text = row.field_note or "-"
    lines = [
        ("layer", f"{row.name!r}  (pass this name to the other helpers)"),
        ("type", f"{row.type}{' ' + row.details if row.details else ''}"),
        ("output shape", "x".join(map(str, row.output_shape)) if row.output_shape else "-"),
        ("channels", str(row.channels) if row.channels is not None else "-"),
        ("parameters", f"{row.parameters:,}"),
        ("multiply-adds", f"{row.macs:,} ({row.macs / max(table.total_macs, 1):.1%} of the network)"),
        ("receptive field", field_text),
        ("in the map", place),
    ]
    if row.zero_fraction is not None:
        dead = f", {row.dead_channels} of {row.channels} channels dead" if row.dead_channels is not None else ""
        lines.append(("zeros", f"{row.zero_fraction:.1%} of its outputs on {table.measured_images} images{dead}"))
    return "\n".join(f"{label:<16} {value}" for label, value in lines)


def widget_mimebundle(widget) -> dict:
    """The display data of an ipywidgets widget, for ipywidgets 8 and for 7.7 (what Colab ships).

    ipywidgets 8 gives it with ``_repr_mimebundle_``; 7.x displays through ``_ipython_display_`` only,
    so the same bundle is built from the widget's model id.
    """
    if hasattr(widget, "_repr_mimebundle_"):
        return widget._repr_mimebundle_()
    return {
        "text/plain": repr(widget),
        "application/vnd.jupyter.widget-view+json": {"version_major": 2, "version_minor": 0, "model_id": widget.model_id},
    }


def widget_or_text(text: str, make_widget) -> dict:
    """The display bundle of a widget with ``text`` as its plain-text fallback.

    ``make_widget()`` builds (or returns) the widget; without ipywidgets or a frontend the text is
    the whole story, so GitHub, nbconvert and CI show it instead.
    """
    bundle = {"text/plain": text}
    try:
        view = widget_mimebundle(make_widget())
    except Exception:  # no ipywidgets, or no frontend: the text is the whole story
        return bundle
    if isinstance(view, dict):
        bundle.update({key: value for key, value in view.items() if key != "text/plain"})
    return bundle


class LayerPicker:
    """A dropdown of layers; ``picker.value`` is the chosen name, a plain string.

    Shown in Jupyter/Colab as a widget that updates the description (and a small highlighted
    map with ``show_map=True``); where widgets do not render (GitHub, nbconvert, CI) the
    same description is shown as text.
    """

    def __init__(self, model: nn.Module, table: LayerTable, options: list[str], value: str, show_map: bool):
        self._model = model
        self._table = table
        self.options = options
        self._value = value
        self.show_map = show_map
        self.widget = None

    @property
    def value(self) -> str:
        if self.widget is not None:
            return self.widget.children[0].value
        return self._value

    def describe(self) -> str:
        return describe_layer(self._model, self.value, table=self._table)

    def _build_widget(self):
        import ipywidgets as widgets

        def label(name: str) -> str:
            row = self._table.row(name)
            channels = f"{row.channels} ch" if row.channels is not None else ""
            return f"{name}  ·  {row.type}  ·  {channels}  ·  {row.field_text()}"

        dropdown = widgets.Dropdown(
            options=[(label(n), n) for n in self.options], value=self._value, description="layer",
            layout=widgets.Layout(width="640px"),
        )
        output = widgets.Output()

        def refresh(_change=None):
            output.clear_output(wait=True)
            with output:
                print(describe_layer(self._model, dropdown.value, table=self._table))
                if self.show_map:
                    import matplotlib.pyplot as plt
                    from IPython.display import display

                    fig = draw_layer_map(self._model, table=self._table, highlight=dropdown.value)
                    display(fig)
                    plt.close(fig)  # shown once, inside the widget

        dropdown.observe(refresh, names="value")
        refresh()
        self.widget = widgets.VBox([dropdown, output])
        return self.widget

    def _repr_mimebundle_(self, include=None, exclude=None):
        text = self.describe() + "\n(static view: run the notebook in Jupyter or Colab to choose a layer)"
        return widget_or_text(text, lambda: self.widget or self._build_widget())

    def __repr__(self) -> str:
        return f"LayerPicker(value={self.value!r})"


def layer_picker(
    model: nn.Module,
    default: str | None = None,
    table: LayerTable | None = None,
    input_size: Sequence[int] | None = None,
    maps_only: bool = True,
    interactive: bool | None = None,
    show_map: bool = False,
) -> LayerPicker:
    """A layer chooser: a dropdown in Jupyter/Colab, printed text elsewhere; ``.value`` is the name.

    ``maps_only`` lists only layers whose output is a map (N, C, H, W) with a receptive field.
    ``interactive=False`` prints the static description now (what CI and nbconvert show).

    >>> picker = layer_picker(vgg, default="features.28")
    >>> picker            # a dropdown, or the description as text
    >>> layer = picker.value   # 'features.28', a plain string for the next cells
    """
    table = _table_for(model, table, input_size)
    options = [row.name for row in table if row.called and (not maps_only or row.receptive_field is not None)]
    if not options:
        raise ValueError("this model has no layer with a spatial output to pick; try maps_only=False.")
    if default is None:
        default = options[-1]
    else:
        get_layer(model, default)
        if default not in options:
            raise ValueError(
                f"layer {default!r} is not among the choices ({table.row(default).field_note or 'no map output'}); "
                "pass maps_only=False to list every layer."
            )
    picker = LayerPicker(model, table, options, default, show_map)
    if interactive is False:
        print(picker.describe())
    return picker


# --------------------------------------------------------------------------------------------
# TensorBoard and torchviz
# --------------------------------------------------------------------------------------------


def _check_tensor(images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"give an example input tensor such as torch.rand(1, 3, 224, 224), got {type(images).__name__}")
    return images


def write_tensorboard_graph(
    model: nn.Module, images: torch.Tensor | None = None, log_dir: str | Path | None = None
) -> Path:
    """Trace ``model`` on ``images`` and write its graph for TensorBoard; returns the log folder.

    ``log_dir`` defaults to a new temporary folder (never the repository). Open it with
    ``%tensorboard --logdir <folder>`` or ``tensorboard --logdir <folder>``.

    >>> log_dir = write_tensorboard_graph(model, torch.rand(1, 3, 224, 224))
    """
    from torch.utils.tensorboard import SummaryWriter

    device, dtype = check_model(model)
    images = torch.rand(_default_input_size(model), dtype=dtype) if images is None else _check_tensor(images)
    images = images.to(device)
    folder = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="nnvis_tensorboard_"))
    folder.mkdir(parents=True, exist_ok=True)
    with preserve_model_state(model), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        # add_graph runs torch.jit.trace, which torch 2.x marks deprecated; the notebook says so.
        warnings.filterwarnings("ignore", message=".*torch.jit.trace.*", category=FutureWarning)
        writer = SummaryWriter(log_dir=str(folder))
        try:
            writer.add_graph(model, images)
        finally:
            writer.close()
    return folder


def read_tensorboard_graph(log_dir: str | Path) -> list[tuple[str, str]]:
    """The (name, op) of every node of the graph in a TensorBoard log folder, read by tensorboard itself.

    >>> [op for _, op in read_tensorboard_graph(log_dir)].count("aten::_convolution")
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = Path(log_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"no TensorBoard log folder at {folder}; write one with write_tensorboard_graph().")
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    try:
        graph = accumulator.Graph()
    except ValueError as error:
        raise ValueError(f"the log folder {folder} holds no graph; write one with write_tensorboard_graph().") from error
    return [(node.name, node.op) for node in graph.node]


def torchviz_graph(
    model: nn.Module, images: torch.Tensor, show_parameters: bool = True, size: str | None = None
):
    """The autograd (backward) graph of one forward pass, drawn by torchviz; a ``graphviz.Digraph``.

    Each box is a backward function (``ConvolutionBackward0`` ...), blue boxes are tensors that
    would receive gradients. ``show_parameters=True`` lets the (frozen) weights appear with
    their names for this drawing only; the model is given back unchanged.

    >>> torchviz_graph(model, torch.rand(1, 3, 32, 32))  # renders inline in Jupyter (needs graphviz 'dot')
    """
    from torchviz import make_dot

    images = _check_tensor(images).to(check_model(model)[0])
    with preserve_model_state(model), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchviz 0.0.3 compares versions with distutils
        if show_parameters:
            model.requires_grad_(True)
        output = model(images.detach().clone().requires_grad_(True))
        if isinstance(output, (tuple, list)):
            output = output[0]
        params = dict(model.named_parameters()) if show_parameters else None
        dot = make_dot(output, params=params)
    if size is not None:
        dot.graph_attr.update(size=size)
    return dot
