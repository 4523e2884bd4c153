"""What to maximize: objectives that read activations and return one number per image.

An objective is a small closure wrapped in :class:`Objective`. It knows which layers it
reads (so :func:`~nnvis_helpers.featurevis.render` hooks only those), whether it needs the
model's output (class objectives: no early stop), and how to check itself against the shapes
of a real forward pass (channel in range, pixel inside the map) before any optimization.

Objectives compose like numbers, as in Lucid::

    channel("blocks.3", 5) - 0.5 * channel("blocks.3", 7) + 10 * diversity("blocks.3")

``+`` and ``-`` between objectives (or with a number), ``*`` and ``/`` by a number. Anything
else (an objective times an objective, an objective plus a string) raises ``TypeError``.

Values are *maximized*. Regularizers (:func:`l1`, :func:`l2`, :func:`total_variation`,
:func:`blur`) return a positive penalty, so they are subtracted:
``channel("blocks.3", 5) - 0.05 * total_variation()``.
"""
from __future__ import annotations

import numbers
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "INPUT",
    "MODEL_OUTPUT",
    "Objective",
    "as_objective",
    "neuron",
    "channel",
    "layer",
    "class_logit",
    "class_probability",
    "direction",
    "diversity",
    "l1",
    "l2",
    "total_variation",
    "blur",
]

# Keys of the activation dict besides layer names. They contain characters no module name has.
INPUT = "<input image>"  # the image in [0, 1] before transforms
MODEL_OUTPUT = "<model output>"  # the logits

Activations = Mapping[str, torch.Tensor]
Check = Callable[[Mapping[str, tuple], int], None]  # (shapes by key, batch size) -> None or raise


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class Objective:
    """A function of the activations, returning one value per image (shape (N,)), to maximize.

    ``layers``: the layer names it reads; ``needs_output``: it reads the logits;
    ``checks``: functions ``(shapes, batch_size)`` that raise ``ValueError`` on a bad channel,
    class or position. Build your own::

        >>> mean_blocks3 = Objective(lambda acts: acts["blocks.3"].mean((1, 2, 3)), "mean", layers=["blocks.3"])
    """

    def __init__(
        self,
        function: Callable[[Activations], torch.Tensor],
        name: str = "objective",
        layers: Iterable[str] = (),
        needs_output: bool = False,
        checks: Sequence[Check] = (),
    ):
        if not callable(function):
            raise TypeError(f"an Objective wraps a function of the activations, got {type(function).__name__}")
        self.function = function
        self.name = name
        self.layers = tuple(dict.fromkeys(layers))  # ordered, without repeats
        self.needs_output = bool(needs_output)
        self.checks = tuple(checks)

    def __call__(self, activations: Activations) -> torch.Tensor:
        value = self.function(activations)
        if value.dim() == 0:  # a whole-batch number: the same for every image
            value = value.expand(activations[INPUT].shape[0])
        return value

    def check(self, shapes: Mapping[str, tuple], batch_size: int) -> None:
        """Raise ``ValueError`` if this objective does not fit activations of these shapes."""
        for check in self.checks:
            check(shapes, batch_size)

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    # Composition. A new Objective that reads the union of the layers of both sides.
    def _combine(self, other: "Objective", function, name: str) -> "Objective":
        return Objective(
            function,
            name,
            layers=self.layers + other.layers,
            needs_output=self.needs_output or other.needs_output,
            checks=self.checks + other.checks,
        )

    def __add__(self, other):
        if isinstance(other, Objective):
            return self._combine(other, lambda acts: self(acts) + other(acts), f"{self.name} + {other.name}")
        if _is_number(other):
            constant = float(other)
            return Objective(lambda acts: self(acts) + constant, f"{self.name} + {constant:g}",
                             self.layers, self.needs_output, self.checks)
        raise TypeError(_refuse("add", other))

    def __radd__(self, other):
        if _is_number(other):  # sum([...]) starts from 0
            return self.__add__(other)
        raise TypeError(_refuse("add", other))

    def __neg__(self):
        return -1.0 * self

    def __sub__(self, other):
        if isinstance(other, Objective) or _is_number(other):
            return self + (-1.0 * other)
        raise TypeError(_refuse("subtract", other))

    def __rsub__(self, other):
        if _is_number(other):
            return (-1.0 * self) + other
        raise TypeError(_refuse("subtract", other))

    def __mul__(self, other):
        if _is_number(other):
            factor = float(other)
            return Objective(lambda acts: factor * self(acts), f"{factor:g} * ({self.name})",
                             self.layers, self.needs_output, self.checks)
        if isinstance(other, Objective):
            raise TypeError(
                f"cannot multiply two objectives ({self.name} * {other.name}): only weighted sums "
                "are supported. Weight them with numbers instead, e.g. 0.5 * a + b."
            )
        raise TypeError(_refuse("multiply", other))

    __rmul__ = __mul__

    def __truediv__(self, other):
        if _is_number(other):
            if other == 0:
                raise ZeroDivisionError("cannot divide an objective by zero.")
            return self * (1.0 / other)
        raise TypeError(_refuse("divide", other))


def _refuse(verb: str, other) -> str:
    return (
        f"cannot {verb} an objective and a {type(other).__name__} ({other!r}). Objectives combine "
        "with other objectives (+, -) and with plain numbers (+, -, *, /), e.g. "
        "channel('blocks.3', 5) - 0.5 * channel('blocks.3', 7)."
    )


def as_objective(objective) -> Objective:
    """An :class:`Objective` as it is, or ``"layer:channel"`` as in Lucid (``"blocks.3:5"``)."""
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, str) and ":" in objective:
        name, _, index = objective.rpartition(":")
        if index.strip().isdigit():
            return channel(name.strip(), int(index))
    raise TypeError(
        f"expected an Objective such as channel('blocks.3', 5) or the string 'blocks.3:5', got {objective!r}."
    )


# --------------------------------------------------------------------------------------------
# Checks shared by the objectives below: they run on the shapes of one probe pass.

def _check_layer_shape(layer_name: str, index: int | None = None, x: int | None = None, y: int | None = None):
    def check(shapes, batch_size):
        shape = shapes.get(layer_name)
        if shape is None:
            raise ValueError(
                f"layer {layer_name!r} produced no tensor output during a forward pass (was it called?). "
                "Pick a layer whose output is an activation map, e.g. one listed by list_layers(model)."
            )
        if len(shape) < 2:
            raise ValueError(f"layer {layer_name!r} has output shape {tuple(shape)}; expected (N, C) or (N, C, H, W).")
        if index is not None and not 0 <= index < shape[1]:
            raise ValueError(
                f"channel {index} does not exist in layer {layer_name!r}: it has {shape[1]} channels, "
                f"valid choices are 0 to {shape[1] - 1}."
            )
        if (x is not None or y is not None) and len(shape) != 4:
            raise ValueError(f"layer {layer_name!r} has no spatial map (shape {tuple(shape)}); use channel() instead of neuron().")
        if len(shape) == 4:
            height, width = shape[2], shape[3]
            if x is not None and not 0 <= x < width:
                raise ValueError(
                    f"x={x} is outside layer {layer_name!r}, whose map is {height}x{width} at this image size; "
                    f"valid x are 0 to {width - 1} (None means the centre)."
                )
            if y is not None and not 0 <= y < height:
                raise ValueError(
                    f"y={y} is outside layer {layer_name!r}, whose map is {height}x{width} at this image size; "
                    f"valid y are 0 to {height - 1} (None means the centre)."
                )

    return check


def _check_batch(batch: int | None):
    def check(shapes, batch_size):
        if batch is not None and not 0 <= batch < batch_size:
            raise ValueError(
                f"batch={batch} names an image that does not exist: the batch has {batch_size} images "
                f"(0 to {batch_size - 1}). Render with batch_size={batch + 1} or more."
            )

    return check


def _check_class(index: int):
    def check(shapes, batch_size):
        shape = shapes.get(MODEL_OUTPUT)
        if shape is None or len(shape) != 2:
            raise ValueError(f"the model's output has shape {shape}; class objectives need logits of shape (N, classes).")
        if not 0 <= index < shape[1]:
            raise ValueError(
                f"class {index} does not exist: the model has {shape[1]} classes, valid choices are 0 to {shape[1] - 1}. "
                "imagenet_labels().index('tabby') finds an index by name."
            )

    return check


def _check_int(value, what: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")


def _check_layer_name(name) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"a layer is named by a string as print(model) shows it, e.g. 'blocks.3', got {name!r}")


def _select(values: torch.Tensor, batch: int | None) -> torch.Tensor:
    """Per-image values (N,), zero except image ``batch`` when one is given."""
    if batch is None:
        return values
    mask = torch.zeros_like(values)
    mask[batch] = 1.0
    return values * mask


def _spatial_mean(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.flatten(1).mean(1) if tensor.dim() > 1 else tensor


# --------------------------------------------------------------------------------------------
# Units of a layer.

def neuron(layer_name: str, channel_index: int, x: int | None = None, y: int | None = None, batch: int | None = None) -> Objective:
    """One unit: channel ``channel_index`` of ``layer_name`` at map position (``x``, ``y``), centre by default.

    >>> image = render(model, neuron("blocks.3", 5))
    """
    _check_layer_name(layer_name)
    _check_int(channel_index, "channel")
    _check_int(x, "x", allow_none=True)
    _check_int(y, "y", allow_none=True)

    def inner(acts):
        act = acts[layer_name][:, channel_index]
        # Transforms change the map's size a little from step to step: stay inside it.
        row = act.shape[1] // 2 if y is None else min(y, act.shape[1] - 1)
        column = act.shape[2] // 2 if x is None else min(x, act.shape[2] - 1)
        return _select(act[:, row, column], batch)

    return Objective(inner, f"neuron {layer_name}:{channel_index} @({x},{y})", [layer_name],
                     checks=[_check_layer_shape(layer_name, channel_index, x, y), _check_batch(batch)])


def channel(layer_name: str, channel_index: int, batch: int | None = None) -> Objective:
    """A whole feature map: mean of channel ``channel_index`` of ``layer_name`` over all positions.

    >>> image = render(model, channel("blocks.3", 5))
    """
    _check_layer_name(layer_name)
    _check_int(channel_index, "channel")
    return Objective(lambda acts: _select(_spatial_mean(acts[layer_name][:, channel_index]), batch),
                     f"channel {layer_name}:{channel_index}", [layer_name],
                     checks=[_check_layer_shape(layer_name, channel_index), _check_batch(batch)])


def layer(layer_name: str, batch: int | None = None) -> Objective:
    """A whole layer, as DeepDream does: the mean of the squared activations of ``layer_name``.

    This is DeepDream's objective: ``deepdream(model, photo, layer("blocks.4"))``.
    """
    _check_layer_name(layer_name)
    return Objective(lambda acts: _select(acts[layer_name].pow(2).flatten(1).mean(1), batch),
                     f"layer {layer_name}", [layer_name], checks=[_check_layer_shape(layer_name), _check_batch(batch)])


# --------------------------------------------------------------------------------------------
# Classes.

def _class_index(class_index) -> int:
    if isinstance(class_index, str):
        from ..models import imagenet_labels

        labels = imagenet_labels()
        if class_index not in labels:
            import difflib

            close = difflib.get_close_matches(class_index, labels, n=5)
            raise ValueError(f"no ImageNet class called {class_index!r}. Closest: {close}.")
        return labels.index(class_index)
    _check_int(class_index, "class index")
    return int(class_index)


def class_logit(class_index: int | str, batch: int | None = None) -> Objective:
    """The logit (score before softmax) of one class; an int index or an ImageNet label.

    >>> image = render(model, class_logit("goldfinch"))
    """
    index = _class_index(class_index)
    return Objective(lambda acts: _select(acts[MODEL_OUTPUT][:, index], batch), f"logit {index}",
                     needs_output=True, checks=[_check_class(index), _check_batch(batch)])


def class_probability(class_index: int | str, batch: int | None = None) -> Objective:
    """The softmax probability of one class. It can also rise by lowering the other classes.

    >>> image = render(model, class_probability(1))
    """
    index = _class_index(class_index)
    return Objective(lambda acts: _select(acts[MODEL_OUTPUT].softmax(1)[:, index], batch), f"probability {index}",
                     needs_output=True, checks=[_check_class(index), _check_batch(batch)])


# --------------------------------------------------------------------------------------------
# Directions and diversity.

def direction(
    layer_name: str,
    vector: torch.Tensor,
    cosine_power: float = 0.0,
    x: int | None = None,
    y: int | None = None,
    batch: int | None = None,
) -> Objective:
    """A direction in the activation space of ``layer_name`` (a vector with one entry per channel).

    Value: the dot product of the activation vector with ``vector``, averaged over positions
    (or at map position ``x``, ``y``). With ``cosine_power`` p > 0 it is multiplied by
    max(cos, 0.1)^p, as the activation atlas does (Carter et al. 2019), so the image must
    point *in* the direction, not only far along it.

    ``vector`` may also be a matrix (B, C): one direction per image, image b pulled towards
    row b, all in one batched optimization (render with ``batch_size=B``). This is what makes
    an activation atlas affordable: its hundreds of icons are one render, not hundreds.

    >>> image = render(model, direction("blocks.5", mean_activation, cosine_power=1, x=3, y=3))
    >>> icons = render(model, direction("blocks.5", cell_means, cosine_power=4), batch_size=len(cell_means))
    """
    _check_layer_name(layer_name)
    if not isinstance(vector, torch.Tensor):
        vector = torch.as_tensor(vector, dtype=torch.float32)
    if vector.dim() not in (1, 2) or not vector.is_floating_point():
        raise ValueError(
            "direction needs a 1-D float vector (one entry per channel), or a 2-D float matrix "
            f"(one row per image of the batch), got shape {tuple(vector.shape)} and dtype {vector.dtype}."
        )
    if not torch.isfinite(vector).all():
        raise ValueError("the direction contains NaN or infinite values; check how it was computed.")
    if not _is_number(cosine_power) or cosine_power < 0:
        raise ValueError(f"cosine_power must be a number >= 0, got {cosine_power!r}")
    _check_int(x, "x", allow_none=True)
    _check_int(y, "y", allow_none=True)
    per_image = vector.dim() == 2
    vectors_by_image = vector.detach() if per_image else vector.detach().unsqueeze(0)  # (B or 1, C)
    cache: dict = {}

    def inner(acts):
        act = acts[layer_name]
        key = (act.device, act.dtype)
        if key not in cache:  # move the vectors once, not every step
            cache.clear()
            cache[key] = vectors_by_image.to(device=act.device, dtype=act.dtype)
        v = cache[key]  # (B or 1, C)
        if act.dim() == 4:
            if x is not None or y is not None:
                row = act.shape[2] // 2 if y is None else min(y, act.shape[2] - 1)
                column = act.shape[3] // 2 if x is None else min(x, act.shape[3] - 1)
                vectors = act[:, :, row, column].unsqueeze(1)  # (N, 1, C)
            else:
                vectors = act.flatten(2).transpose(1, 2)  # (N, positions, C)
        else:
            vectors = act.unsqueeze(1)
        # (N, positions, C) . (B or 1, C) -> (N, positions): row n against direction n (or the one direction)
        dot = (vectors @ v.unsqueeze(2)).squeeze(2)
        if cosine_power:
            cosine = dot / (vectors.norm(dim=2) * v.norm(dim=1, keepdim=True) + 1e-6)
            dot = dot * cosine.clamp(min=0.1) ** cosine_power
        return _select(dot.mean(1), batch)

    def check_length(shapes, batch_size):
        shape = shapes.get(layer_name)
        if shape is not None and len(shape) >= 2 and shape[1] != vectors_by_image.shape[1]:
            raise ValueError(
                f"the direction has {vectors_by_image.shape[1]} entries but layer {layer_name!r} has {shape[1]} "
                "channels; give one entry per channel."
            )
        if per_image and vectors_by_image.shape[0] != batch_size:
            raise ValueError(
                f"the direction matrix has {vectors_by_image.shape[0]} rows (one per image) but the batch has "
                f"{batch_size} images; render with batch_size={vectors_by_image.shape[0]}."
            )

    name = f"direction {layer_name}" + (f" x{vectors_by_image.shape[0]}" if per_image else "")
    return Objective(inner, name, [layer_name],
                     checks=[_check_layer_shape(layer_name, None, x, y), check_length, _check_batch(batch)])


def diversity(layer_name: str) -> Objective:
    """How different the images of a batch are in ``layer_name`` (Lucid's diversity term).

    Per image: minus the mean cosine similarity of its Gram matrix (style, not position) with
    the Gram matrices of the other images. Add it with a weight to a unit objective and render
    a batch: ``channel("blocks.3", 5) + 10 * diversity("blocks.3")`` with ``batch_size=4``.
    """
    _check_layer_name(layer_name)

    def inner(acts):
        act = acts[layer_name]
        batch_size, channels = act.shape[:2]
        flat = act.reshape(batch_size, channels, -1)
        grams = F.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1)  # (N, C*C), unit length
        similarity = grams @ grams.T  # (N, N)
        off_diagonal = similarity.sum(1) - similarity.diagonal()
        return -off_diagonal / (batch_size - 1)

    def check_batch_size(shapes, batch_size):
        if batch_size < 2:
            raise ValueError("diversity compares the images of a batch: render with batch_size=2 or more.")

    return Objective(inner, f"diversity {layer_name}", [layer_name],
                     checks=[_check_layer_shape(layer_name), check_batch_size])


# --------------------------------------------------------------------------------------------
# Regularizers: penalties on the image itself (before transforms). Subtract them.

def l1(center: float = 0.5) -> Objective:
    """Mean absolute distance of the pixels from ``center`` (grey): subtract to keep colours calm."""
    return Objective(lambda acts: (acts[INPUT] - center).abs().flatten(1).mean(1), "L1")


def l2(center: float = 0.5) -> Objective:
    """Mean squared distance of the pixels from ``center`` (grey): subtract to keep colours calm."""
    return Objective(lambda acts: (acts[INPUT] - center).pow(2).flatten(1).mean(1), "L2")


def total_variation() -> Objective:
    """Mean absolute difference between neighbouring pixels: subtract it to smooth the image."""

    def inner(acts):
        image = acts[INPUT]
        down = (image[:, :, 1:, :] - image[:, :, :-1, :]).abs().flatten(1).mean(1)
        right = (image[:, :, :, 1:] - image[:, :, :, :-1]).abs().flatten(1).mean(1)
        return down + right

    return Objective(inner, "total variation")


def blur() -> Objective:
    """Mean squared distance of the image from its own 3x3 blur (held fixed): subtract it.

    Its gradient step moves each pixel towards the blurred image, as Lucid's
    ``blur_input_each_step`` does.
    """

    def inner(acts):
        image = acts[INPUT]
        blurred = F.avg_pool2d(F.pad(image.detach(), (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        return (image - blurred).pow(2).flatten(1).mean(1)

    return Objective(inner, "blur")
