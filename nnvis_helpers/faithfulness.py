"""Which attribution should a learner believe? Faithfulness measured, from scratch.

An attribution map claims that some pixels matter more than others for the class score. These
metrics test the claim against the model itself, with no ground truth needed:

* :func:`perturbation_curve`, :func:`deletion_curve`, :func:`insertion_curve`: the deletion and
  insertion curves of RISE (Petsiuk, Das & Saenko 2018). Replace the pixels the map ranks
  highest by a baseline (deletion) or put them back into the baseline (insertion), step by step,
  and follow the class probability: a faithful map makes it fall fast (a small area under the
  deletion curve) and rise fast (a large area under the insertion curve).
* :func:`infidelity`: the expected squared error between the attributions times a small random
  perturbation I and the change of the score it causes, E_I[(I . phi - (f(x) - f(x - I)))^2]
  (Yeh et al. 2019, "On the (in)fidelity and sensitivity of explanations"). Equal to captum's
  ``captum.metrics.infidelity`` given the same perturbations.
* :func:`sensitivity_max`: how much the map changes when the image moves a little,
  max over d in a small L-infinity ball of ||phi(x + d) - phi(x)|| / ||phi(x)|| (Yeh et al. 2019).
  Equal to captum's ``captum.metrics.sensitivity_max`` given the same perturbed images.

The curves and infidelity need forward passes only (no gradients): the perturbed images of all
images and steps are built on the fly and go through the model ``batch_size`` at a time. Every
helper that takes a model leaves it as it found it: no hook, the same ``training`` flags and
``requires_grad``, no ``.grad`` on parameters, also when it raises.
"""
from __future__ import annotations

import difflib
import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .attribution import _progress, make_baseline
from .checks import check_images, check_number, check_target, class_scores, prepare
from .layers import preserve_model_state

__all__ = [
    "Curve",
    "perturbation_curve",
    "deletion_curve",
    "insertion_curve",
    "infidelity",
    "infidelity_noise",
    "sensitivity_max",
    "sensitivity_perturbations",
]

MODES = ("deletion", "insertion")
SCORES = ("probability", "logit")
CURVE_BASELINES = ("blur", "black", "grey")


# ----------------------------------------------------------------------------- shared checks


def _choice(value, allowed: tuple[str, ...], name: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}.{hint}")
    return value


def _check_finite(tensor: torch.Tensor, name: str) -> None:
    if tensor.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {tensor.dtype}.")
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} contains NaN or infinite values; check how they were computed.")


def _shape(value) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def _pixel_map(attributions: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Any accepted attributions -> one value per pixel (N, H, W), upsampled when coarser."""
    n, _, height, width = images.shape
    expected = (
        f"expected (N, 3, H, W) = {(n, 3, height, width)} (summed over colour), (N, 1, H, W) or (N, H, W), "
        f"or a coarser map (N, h, w) such as Grad-CAM's at its layer (upsampled to {height} x {width})"
    )
    if not isinstance(attributions, torch.Tensor):
        raise TypeError(f"attributions must be a torch.Tensor; {expected}; got {_shape(attributions)}.")
    attributions = attributions.detach()
    if attributions.dim() == 4 and attributions.shape[1] == 3:
        if tuple(attributions.shape) != (n, 3, height, width):
            raise ValueError(
                f"attributions has shape {_shape(attributions)} but the images are {tuple(images.shape)}; {expected}. "
                "A colour attribution has one value per pixel and channel: check it was computed for these images."
            )
        maps = attributions.sum(1)
    elif attributions.dim() == 4 and attributions.shape[1] == 1:
        maps = attributions[:, 0]
    elif attributions.dim() == 3:
        maps = attributions
    else:
        raise ValueError(f"attributions has shape {_shape(attributions)}; {expected}.")
    if len(maps) != n:
        raise ValueError(
            f"attributions holds {len(maps)} maps but there are {n} images (shape {_shape(attributions)}); "
            "give one map per image, in the same order."
        )
    if maps.shape[-2] > height or maps.shape[-1] > width or 0 in maps.shape[-2:]:
        raise ValueError(
            f"attributions has maps of {maps.shape[-2]} x {maps.shape[-1]} for images of {height} x {width}; {expected}. "
            "A map larger than the image belongs to other images."
        )
    _check_finite(maps, "attributions")
    if not maps.is_floating_point():  # integer ranks or a boolean mask rank as well
        maps = maps.float()
    if tuple(maps.shape[-2:]) != (height, width):
        maps = F.interpolate(maps[:, None].float(), size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    return maps


# ----------------------------------------------------------------------------- deletion and insertion


class Curve(NamedTuple):
    """A deletion or insertion curve for each image.

    ``fractions`` (steps + 1,): the fraction of pixels changed at each step, 0 to 1;
    ``scores`` (N, steps + 1): the class score there (on the CPU); ``auc`` (N,): the trapezoid
    area under ``scores`` over ``fractions``; ``mode``: ``"deletion"`` or ``"insertion"``;
    ``baseline``: its name (``"blur"``, ``"black"``, ``"grey"``), the number, or ``"tensor"``.
    """

    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor
    mode: str
    baseline: str


def _curve_baseline(images: torch.Tensor, baseline) -> tuple[torch.Tensor, str]:
    """Any accepted ``baseline`` -> (images (N, 3, H, W) in [0, 1], its name). ``images`` already checked."""
    if isinstance(baseline, str):
        name = _choice(baseline, CURVE_BASELINES, "baseline")
        if name == "blur":
            return make_baseline(images, "blur", blur_sigma=max(images.shape[-2:]) / 16), name
        return torch.full_like(images, 0.0 if name == "black" else 0.5), name
    if isinstance(baseline, torch.Tensor) and baseline.numel() > 1:
        n, channels, height, width = images.shape
        if baseline.dim() != 4 or baseline.shape[0] not in (1, n) or tuple(baseline.shape[1:]) != (channels, height, width):
            raise ValueError(
                f"baseline has shape {_shape(baseline)}; expected (N, 3, H, W) = {tuple(images.shape)} or "
                f"(1, 3, H, W) = {(1, channels, height, width)} for one baseline for all. "
                "make_baseline(images, 'blur', blur_sigma=5) builds one."
            )
        check_images(baseline, name="baseline")
        return baseline.detach().to(images).expand_as(images), "tensor"
    if isinstance(baseline, (int, float, torch.Tensor)) and not isinstance(baseline, bool):
        value = check_number(baseline, "baseline", low=0, high=1, hint="A constant baseline is a grey level in [0, 1].")
        return torch.full_like(images, value), f"{value:g}"
    raise TypeError(
        f"baseline must be one of {', '.join(map(repr, CURVE_BASELINES))}, a grey level in [0, 1] or images "
        f"(N or 1, 3, H, W) in [0, 1], got {type(baseline).__name__}."
    )


def _changed_counts(pixels: int, steps: int) -> list[int]:
    """How many pixels are changed at each step k = 0 .. steps: round(k * pixels / steps) (Python's round)."""
    return [round(k * pixels / steps) for k in range(steps + 1)]


def perturbation_curve(
    model: nn.Module,
    images: torch.Tensor,
    attributions: torch.Tensor,
    target,
    mode: str = "deletion",
    steps: int = 32,
    baseline="blur",
    score: str = "probability",
    batch_size: int = 64,
    progress: bool = True,
    patch: int = 1,
) -> Curve:
    """The deletion or insertion curve (Petsiuk, Das & Saenko 2018) of each image's attribution map.

    ``images`` (N, 3, H, W) in [0, 1]. ``attributions``: (N, 3, H, W) (summed over the colour
    channels to one value per pixel), (N, 1, H, W) or (N, H, W); a coarser map (N, h, w) or
    (N, 1, h, w), such as Grad-CAM at its layer, is upsampled bilinearly to (H, W) first. Pixels
    are ranked by that value, largest first (a stable sort: ties keep the order of the pixels).

    ``mode="deletion"``: at step k = 0 .. ``steps`` the top round(k * H * W / steps) pixels (all
    three channels) are replaced by the baseline's; ``"insertion"``: the image starts as the
    baseline and gets its top pixels back. Each pixel changes once along the curve; the last step
    is the baseline (deletion) or the image (insertion).

    ``baseline``: ``"blur"`` (the image under a Gaussian blur of sigma = max(H, W) / 16 pixels, via
    :func:`~nnvis_helpers.attribution.make_baseline`; for another sigma pass
    ``make_baseline(images, "blur", blur_sigma=5)``), ``"black"`` (zeros), ``"grey"``
    (0.5), a grey level in [0, 1], or images (N or 1, 3, H, W) in [0, 1].
    ``score``: ``"probability"`` (the softmax of the target class, as RISE) or ``"logit"``.
    ``patch`` > 1: rank and change square regions of ``patch`` x ``patch`` pixels instead of single
    pixels (Samek et al. 2017's region perturbation): the map is averaged over each region and
    ``fractions`` counts regions. Scattered single pixels make images unlike any photo, which a
    small network reads as noise whatever the map; regions keep the changed image closer to a photo.

    The (steps + 1) images of every curve are built on the fly and go through the model
    ``batch_size`` at a time, without gradients. Returns a :class:`Curve`.

    >>> curve = perturbation_curve(model, images, gradient_x_input(model, images, 281), 281, "deletion")
    >>> plt.plot(curve.fractions, curve.scores[0]); curve.auc
    """
    x, targets = prepare(model, images, target)
    maps = _pixel_map(attributions, images)
    mode = _choice(mode, MODES, "mode")
    score = _choice(score, SCORES, "score")
    height, width = images.shape[-2:]
    pixels = height * width
    patch = check_number(patch, "patch", low=1, high=min(height, width), integer=True,
                         hint="It is the side of the square regions that are ranked and changed together (1: pixels).")
    if patch > 1:  # regions: the map averaged over each (edge regions may be smaller)
        maps = F.avg_pool2d(maps[:, None].float(), patch, ceil_mode=True)[:, 0]
    units = maps.shape[-2] * maps.shape[-1]
    steps = check_number(steps, "steps", low=1, high=units, integer=True,
                         hint=f"It is the number of steps from 0 to all {units} {'regions' if patch > 1 else 'pixels'}, "
                              "at most one per step.")
    batch_size = check_number(batch_size, "batch_size", low=1, integer=True,
                              hint="It is how many perturbed images go through the model at once.")
    starts, name = _curve_baseline(images, baseline)
    starts = starts.to(x)

    n = len(x)
    # rank[i, p] = place of pixel p's region in image i's order (0 = largest attribution).
    order = torch.sort(maps.reshape(n, units).to(x.device), dim=1, descending=True, stable=True).indices
    unit_rank = torch.empty_like(order)
    unit_rank.scatter_(1, order, torch.arange(units, device=x.device).expand(n, -1))
    rows, columns = torch.arange(height, device=x.device) // patch, torch.arange(width, device=x.device) // patch
    unit_of_pixel = (rows[:, None] * maps.shape[-1] + columns[None, :]).flatten()
    rank = unit_rank[:, unit_of_pixel]
    counts = torch.tensor(_changed_counts(units, steps), device=x.device)
    # The changed pixels are taken from `changed_from`, the others from `kept`.
    kept, changed_from = (x, starts) if mode == "deletion" else (starts, x)
    curve_of = torch.arange(n, device=x.device).repeat_interleave(steps + 1)  # curve-major: image 0's steps first
    step_of = torch.arange(steps + 1, device=x.device).repeat(n)
    values = []
    with preserve_model_state(model), torch.no_grad(), _progress(
        math.ceil(len(curve_of) / batch_size), progress, f"{mode} curve"
    ) as bar:
        for first in range(0, len(curve_of), batch_size):
            curve, step = curve_of[first:first + batch_size], step_of[first:first + batch_size]
            changed = (rank[curve] < counts[step, None]).view(-1, 1, height, width)
            batch = torch.where(changed, changed_from[curve], kept[curve])
            outputs = class_scores(model(batch))
            if score == "probability":
                outputs = outputs.softmax(dim=1)
            values.append(class_scores(outputs, targets[curve]))
            bar.update()
    scores = torch.cat(values).view(n, steps + 1).cpu()
    fractions = (counts.double() / units).cpu()
    auc = torch.trapezoid(scores.double(), fractions, dim=1).to(scores.dtype)
    return Curve(fractions.to(scores.dtype), scores, auc, mode, name)


def deletion_curve(
    model: nn.Module,
    images: torch.Tensor,
    attributions: torch.Tensor,
    target,
    steps: int = 32,
    baseline="blur",
    score: str = "probability",
    batch_size: int = 64,
    progress: bool = True,
    patch: int = 1,
) -> Curve:
    """:func:`perturbation_curve` with ``mode="deletion"``: the top pixels go first; lower area = more faithful.

    >>> deletion_curve(model, images, attributions, 281).auc
    """
    return perturbation_curve(model, images, attributions, target, "deletion", steps, baseline, score, batch_size,
                              progress, patch)


def insertion_curve(
    model: nn.Module,
    images: torch.Tensor,
    attributions: torch.Tensor,
    target,
    steps: int = 32,
    baseline="blur",
    score: str = "probability",
    batch_size: int = 64,
    progress: bool = True,
    patch: int = 1,
) -> Curve:
    """:func:`perturbation_curve` with ``mode="insertion"``: the top pixels come back first; higher area = more faithful.

    >>> insertion_curve(model, images, attributions, 281).auc
    """
    return perturbation_curve(model, images, attributions, target, "insertion", steps, baseline, score, batch_size,
                              progress, patch)


# ----------------------------------------------------------------------------- infidelity


def infidelity_noise(images: torch.Tensor, n_perturb: int = 16, noise_std: float = 0.003, seed: int = 0) -> torch.Tensor:
    """The perturbations I that :func:`infidelity` uses, (N * n_perturb, 3, H, W), image-major.

    ``noise_std * torch.randn((N * n_perturb, 3, H, W), generator=torch.Generator().manual_seed(seed))``
    in the images' dtype, drawn on the CPU and moved to the images' device. Rows i * n_perturb to
    (i + 1) * n_perturb - 1 belong to image i: the order of captum's ``repeat_interleave``, so a
    captum ``perturb_func`` can return ``(noise, inputs - noise)`` and get the same numbers.

    >>> noise = infidelity_noise(images, 16)
    >>> captum.metrics.infidelity(model, lambda x: (noise, x - noise), images, attributions, target=281,
    ...                           n_perturb_samples=16)
    """
    check_images(images)
    n_perturb = check_number(n_perturb, "n_perturb", low=1, integer=True)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(images) * n_perturb, *images.shape[1:]), generator=generator, dtype=images.dtype)
    return (noise_std * noise).to(images.device)


def infidelity(
    model: nn.Module,
    images: torch.Tensor,
    attributions: torch.Tensor,
    target,
    n_perturb: int = 16,
    noise_std: float = 0.003,
    seed: int = 0,
    batch_size: int = 64,
    normalize: bool = False,
    progress: bool = True,
) -> torch.Tensor:
    """Infidelity (Yeh et al. 2019) of attributions (N, 3, H, W): E_I[(I . phi - (f(x) - f(x - I)))^2], shape (N,).

    f is the target logit, phi the attributions, I Gaussian noise of std ``noise_std`` in pixel
    units, ``n_perturb`` draws per image from a generator seeded with ``seed``
    (:func:`infidelity_noise` returns them). As captum: the perturbed image is x - I (not clipped
    to [0, 1]), and the expectation is the mean over the draws. ``normalize=True`` first scales
    the attributions by the best factor beta = E[(I . phi)(f(x) - f(x - I))] / E[(I . phi)^2], so
    the value no longer depends on the attributions' scale (a map and 10x that map score alike).
    Lower is better; 0 when I . phi predicts every change, as the gradient does for a linear model.

    The perturbed images go through the model ``batch_size`` at a time, without gradients.
    Equal to ``captum.metrics.infidelity(model, perturb_func, images, attributions, target=target,
    n_perturb_samples=n_perturb, normalize=normalize)`` with a ``perturb_func`` returning
    ``(noise, inputs - noise)`` for ``noise = infidelity_noise(images, n_perturb, noise_std, seed)``
    (captum's default ``max_examples_per_batch=None`` asks for all the draws in one call).

    >>> infidelity(model, images, vanilla_gradient(model, images, 281, abs=False, reduce=None), 281)
    """
    x, targets = prepare(model, images, target)
    if not isinstance(attributions, torch.Tensor) or tuple(attributions.shape) != tuple(images.shape):
        raise ValueError(
            f"attributions has shape {_shape(attributions)} but infidelity needs one value per pixel and colour, "
            f"the images' shape {tuple(images.shape)}: it compares I . phi with the score's change for noise I on "
            "every pixel value. Use a colour attribution (gradient_x_input, integrated_gradients, "
            "vanilla_gradient(..., abs=False, reduce=None))."
        )
    _check_finite(attributions, "attributions")
    n_perturb = check_number(n_perturb, "n_perturb", low=1, integer=True, hint="It is the number of noise draws per image.")
    noise_std = check_number(noise_std, "noise_std", low=0, low_open=True, hint="It is the noise's std in pixel units.")
    batch_size = check_number(batch_size, "batch_size", low=1, integer=True,
                              hint="It is how many perturbed images go through the model at once.")
    phi = attributions.detach().to(x)
    noise = infidelity_noise(x, n_perturb, noise_std, seed)
    n = len(x)
    image_of = torch.arange(n, device=x.device).repeat_interleave(n_perturb)
    predicted, changes = [], []
    with preserve_model_state(model), torch.no_grad():
        reference = class_scores(model(x), targets)
        with _progress(math.ceil(len(noise) / batch_size), progress, "infidelity") as bar:
            for first in range(0, len(noise), batch_size):
                image, perturbation = image_of[first:first + batch_size], noise[first:first + batch_size]
                perturbed = class_scores(model(x[image] - perturbation), targets[image])
                changes.append(reference[image] - perturbed)
                predicted.append((phi[image] * perturbation).view(len(image), -1).sum(1))
                bar.update()
    predicted = torch.cat(predicted).view(n, n_perturb)  # I . phi
    changes = torch.cat(changes).view(n, n_perturb)  # f(x) - f(x - I)
    if normalize:
        # The error of beta * (I . phi), expanded as captum does: beta^2 a^2 - 2 beta a b + b^2.
        squares, products, change_squares = predicted.pow(2).sum(1), (predicted * changes).sum(1), changes.pow(2).sum(1)
        beta = products / torch.where(squares != 0, squares, torch.ones_like(squares))
        values = beta * beta * squares - 2 * beta * products + change_squares
    else:
        values = (predicted - changes).pow(2).sum(1)
    return (values / n_perturb).to(images.device)


# ----------------------------------------------------------------------------- max-sensitivity


def sensitivity_perturbations(images: torch.Tensor, radius: float = 0.02, n_perturb: int = 8, seed: int = 0) -> torch.Tensor:
    """The perturbed images :func:`sensitivity_max` explains, (N * n_perturb, 3, H, W), image-major.

    ``clamp(x + radius * (2 * torch.rand(shape, generator=torch.Generator().manual_seed(seed)) - 1), 0, 1)``
    with the uniform draw in the images' dtype, on the CPU, and rows i * n_perturb ... for image i
    (captum's ``repeat_interleave`` order).

    >>> perturbed = sensitivity_perturbations(images, 0.02, 8)
    >>> captum.metrics.sensitivity_max(lambda x, target: (explain(x[0] if isinstance(x, tuple) else x, target),),
    ...                                images, lambda x, r: perturbed, n_perturb_samples=8, target=target)
    """
    check_images(images)
    n_perturb = check_number(n_perturb, "n_perturb", low=1, integer=True)
    generator = torch.Generator().manual_seed(seed)
    uniform = torch.rand((len(images) * n_perturb, *images.shape[1:]), generator=generator, dtype=images.dtype)
    offsets = (radius * (2 * uniform - 1)).to(images.device)
    return (images.detach().repeat_interleave(n_perturb, dim=0) + offsets).clamp(0, 1)


def _explained(explain: Callable, images: torch.Tensor, target: torch.Tensor, expected: int) -> torch.Tensor:
    maps = explain(images, target)
    if not isinstance(maps, torch.Tensor) or maps.dim() < 1 or len(maps) != expected:
        raise ValueError(
            f"explain(images, target) must return one attribution per image, a tensor with {expected} rows, got "
            f"{_shape(maps)}. Pass a function such as lambda x, t: vanilla_gradient(model, x, t)."
        )
    return maps.detach()


def sensitivity_max(
    explain: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    target,
    radius: float = 0.02,
    n_perturb: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """Max-sensitivity (Yeh et al. 2019): how far the map moves when the image moves a little, shape (N,).

    max over ``n_perturb`` draws d ~ U([-radius, radius]^(3 H W)) of
    ||phi(x + d) - phi(x)|| / ||phi(x)|| (Frobenius norms over each image's map; a map of zeros
    divides by 1), where phi = ``explain(images, target)``, any function returning one map per
    image (N, ...), e.g. ``lambda x, t: vanilla_gradient(model, x, t)``; ``target`` reaches it as a
    long tensor with one class per image. The draws come from a generator seeded with ``seed``;
    x + d is clamped to [0, 1], since the course's helpers check their images' range
    (:func:`sensitivity_perturbations` returns these images). ``explain`` is called once on the
    images and once per draw, on all N perturbed images together. Lower is more stable.

    Equal to ``captum.metrics.sensitivity_max(explanation_func, images, perturb_func, target=target,
    n_perturb_samples=n_perturb)`` (its default ``norm_ord="fro"``, which also divides by ||phi(x)||)
    with a ``perturb_func`` that returns these perturbed images (captum passes the images to
    ``explanation_func`` as a tuple ``(x,)`` and wants a tuple of maps back; see
    :func:`sensitivity_perturbations`). Captum's own default draws the same kind of noise from the
    global generator and does not clamp.

    >>> sensitivity_max(lambda x, t: vanilla_gradient(model, x, t), images, 281)
    """
    if not callable(explain):
        raise TypeError(
            f"explain must be a function explain(images, target) -> attributions, got {type(explain).__name__}; "
            "e.g. lambda x, t: vanilla_gradient(model, x, t)."
        )
    check_images(images)
    n = len(images)
    targets = check_target(target, n, None, images.device)
    radius = check_number(radius, "radius", low=0, low_open=True, hint="It is the L-infinity radius in pixel units.")
    n_perturb = check_number(n_perturb, "n_perturb", low=1, integer=True, hint="It is the number of draws per image.")
    perturbed = sensitivity_perturbations(images, radius, n_perturb, seed).view(n, n_perturb, *images.shape[1:])
    original = _explained(explain, images.detach(), targets, n).reshape(n, -1)
    norms = original.norm(dim=1)
    norms = torch.where(norms == 0, torch.ones_like(norms), norms)
    worst = None
    for draw in _progress(n_perturb, progress, "sensitivity max", range(n_perturb)):
        # Draw k of every image at once: each call of explain is as large as the first.
        moved = _explained(explain, perturbed[:, draw], targets, n).reshape(n, -1)
        if moved.shape != original.shape:
            raise ValueError(f"explain returned maps of {moved.shape[1]} values for the perturbed images but "
                             f"{original.shape[1]} for the images; it must return the same shape every time.")
        sensitivity = (moved - original).norm(dim=1) / norms
        worst = sensitivity if worst is None else torch.maximum(worst, sensitivity)
    return worst
