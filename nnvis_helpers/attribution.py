"""Integrated gradients (Sundararajan, Taly & Yan 2017) and its relatives, from scratch.

The attribution of pixel i along the straight path from a baseline x' to the image x is

    IG_i(x) = (x_i - x'_i) * integral_0^1 dF(x' + a (x - x')) / dx_i  da,

approximated by a quadrature sum  sum_s w_s * grad F(x' + a_s (x - x')). All the path points
of every image go through the model in batches of ``batch_size`` (memory stays bounded, a GPU
stays busy); there is no Python loop over single steps. The quadrature points and weights are
captum's, so the two implementations can be compared number for number.

* :func:`integrated_gradients`: IG on the input pixels, one or several baselines per image.
* :func:`expected_gradients`: baselines drawn from a set of reference images (Erion et al. 2021).
* :func:`layer_integrated_gradients`: IG on a layer's units, like captum's ``LayerIntegratedGradients``.
* :func:`make_baseline`, :func:`noise_baselines`: black, white, noise and blurred baselines.
* :func:`path_profile`: the class score and its gradient along the path (the saturation demo).
* :func:`integration_points`: the points a_s and weights w_s of each method.
* ``method="adaptive"``: adaptive quadrature along the path. A forward-only scan cuts the path into
  segments whose exact integral F(b) - F(a) is known; the segments whose midpoint rule misses it most
  are cut into thirds, round after round, keeping every gradient taken (:func:`adaptive_rule` shows
  them). No IG library offers it.
"""
from __future__ import annotations

import difflib
import math
from contextlib import contextmanager
from typing import Iterator, NamedTuple

import numpy as np
import torch
from torch import nn

from .checks import check_images, check_number, class_scores, prepare
from .layers import capture_activations, get_layer, preserve_model_state

__all__ = [
    "METHODS",
    "BASELINES",
    "integration_points",
    "ADAPTIVE",
    "AdaptiveRule",
    "adaptive_rule",
    "make_baseline",
    "noise_baselines",
    "integrated_gradients",
    "expected_gradients",
    "layer_integrated_gradients",
    "completeness_delta",
    "PathProfile",
    "path_profile",
]

METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
ADAPTIVE = "adaptive"  # integrated_gradients only: the points depend on the path (adaptive_rule)
BASELINES = ("black", "white", "noise", "blur")


# ----------------------------------------------------------------------------- quadrature


def _check_method(method: str, allowed: tuple[str, ...] = METHODS) -> None:
    if method not in allowed:
        close = difflib.get_close_matches(str(method), allowed, n=1, cutoff=0.4)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown integration method {method!r}; use one of {', '.join(allowed)}.{hint}")


def _check_steps(n_steps: int, method: str) -> None:
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps must be a whole number >= 1 (points on the path), got {n_steps!r}.")
    if method == "riemann_trapezoid" and n_steps < 2:
        raise ValueError("riemann_trapezoid needs n_steps >= 2: it evaluates both ends of the path.")


def integration_points(method: str = "gausslegendre", n_steps: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """The points ``alphas`` in [0, 1] and weights of a quadrature rule, two float64 tensors (n_steps,).

    The same numbers as captum's ``approximation_parameters``: the Riemann rules put ``n_steps``
    evenly spaced points with weight 1/n (left, right or middle of each slice); ``gausslegendre``
    uses the Gauss-Legendre nodes moved from [-1, 1] to [0, 1]. Beware captum's
    ``riemann_trapezoid``: its points are ``linspace(0, 1, n)`` but its weights are 1/n with the
    two ends halved, so they sum to 1 - 1/n, not 1 (kept here, to stay comparable).

    >>> alphas, weights = integration_points("gausslegendre", 4)
    >>> float(weights.sum())
    1.0
    """
    _check_method(method)
    _check_steps(n_steps, method)
    n = int(n_steps)
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return torch.from_numpy(0.5 * (1 + nodes)), torch.from_numpy(0.5 * weights)
    weights = torch.full((n,), 1.0 / n, dtype=torch.float64)
    # captum builds the Riemann points with a float32 linspace; the same here, so they match bit for bit.
    if method == "riemann_left":
        alphas = torch.linspace(0, 1 - 1 / n, n)
    elif method == "riemann_right":
        alphas = torch.linspace(1 / n, 1, n)
    elif method == "riemann_middle":
        alphas = torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)
    else:  # riemann_trapezoid
        alphas = torch.linspace(0, 1, n)
        weights[0] /= 2
        weights[-1] /= 2
    return alphas.double(), weights


# ----------------------------------------------------------------------------- baselines


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    height, width = images.shape[-2:]
    size = 2 * math.ceil(3 * sigma) + 1
    size = min(size, 2 * (min(height, width) // 2) - 1)  # reflect padding needs a kernel smaller than the image
    if size < 3:
        return images.clone()
    return gaussian_blur(images, [size, size], [sigma, sigma])


def make_baseline(
    images: torch.Tensor,
    kind: str = "black",
    seed: int = 0,
    blur_sigma: float | None = None,
) -> torch.Tensor:
    """A baseline x' for each image, shape (N, 3, H, W) in [0, 1], like ``images``.

    ``kind``: ``"black"`` (zeros), ``"white"`` (ones), ``"noise"`` (uniform noise, seeded by
    ``seed``) or ``"blur"`` (the image under a Gaussian blur of ``blur_sigma`` pixels,
    by default 1/20 of the image side).

    >>> baseline = make_baseline(load_image("chelsea"), "blur")
    """
    check_images(images)
    if kind == "black":
        return torch.zeros_like(images)
    if kind == "white":
        return torch.ones_like(images)
    if kind == "noise":
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    if kind == "blur":
        sigma = blur_sigma if blur_sigma is not None else max(images.shape[-2:]) / 20
        if not sigma > 0:
            raise ValueError(f"blur_sigma must be a positive number of pixels, got {blur_sigma!r}.")
        return _gaussian_blur(images, float(sigma)).clamp(0, 1)
    raise ValueError(f"unknown baseline {kind!r}; use one of {', '.join(BASELINES)}, or pass a tensor.")


def noise_baselines(images: torch.Tensor, n: int = 8, seed: int = 0) -> torch.Tensor:
    """``n`` seeded uniform-noise baselines per image, shape (n, N, 3, H, W), to average IG over.

    >>> attributions = integrated_gradients(model, images, 281, baselines=noise_baselines(images, 8))
    """
    check_images(images)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (the number of baselines) must be an int >= 1, got {n!r}.")
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((n, *images.shape), generator=generator, dtype=images.dtype).to(images.device)


def _as_baselines(images: torch.Tensor, baselines) -> torch.Tensor:
    """Any accepted ``baselines`` -> a tensor (K, N, 3, H, W): K baselines for each image."""
    n, channels, height, width = images.shape
    if baselines is None:
        baselines = "black"
    if isinstance(baselines, str):
        return make_baseline(images, baselines).unsqueeze(0)
    if isinstance(baselines, (int, float)) and not isinstance(baselines, bool):
        if not 0 <= baselines <= 1:
            raise ValueError(f"a constant baseline must be a pixel value in [0, 1], got {baselines}.")
        return torch.full_like(images, float(baselines)).unsqueeze(0)
    if not isinstance(baselines, torch.Tensor):
        raise TypeError(
            f"baselines must be None, one of {BASELINES}, a number in [0, 1] or a tensor, got "
            f"{type(baselines).__name__}."
        )
    expected = (
        f"expected (N, 3, H, W) = {(n, channels, height, width)} or (1, 3, H, W) for one baseline per "
        f"image, or (K, N, 3, H, W) / (K, 1, 3, H, W) for K baselines to average over"
    )
    given = tuple(baselines.shape)
    if baselines.dim() == 4:
        baselines = baselines.unsqueeze(0)
    if baselines.dim() != 5 or baselines.shape[1] not in (1, n) or tuple(baselines.shape[2:]) != (channels, height, width):
        raise ValueError(f"baselines has shape {given}; {expected}. make_baseline() builds one.")
    if baselines.shape[0] < 1:
        raise ValueError("baselines holds no baseline (K = 0).")
    check_images(baselines.reshape(-1, channels, height, width), name="baselines")
    return baselines.detach().to(device=images.device, dtype=images.dtype).expand(-1, n, -1, -1, -1)


# ----------------------------------------------------------------------------- the engine


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size (path points per forward pass) must be an int >= 1, got {batch_size!r}.")
    return int(batch_size)


def _progress(total: int, progress: bool, description: str, iterable=None):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, disable=not progress or total <= 1, desc=description, leave=False)


def _scores(model: nn.Module, points: torch.Tensor, targets: torch.Tensor, batch_size: int) -> torch.Tensor:
    """F_target(points) without gradients, (P,), in batches."""
    with torch.no_grad():
        return torch.cat([
            class_scores(model(points[start:start + batch_size]), targets[start:start + batch_size])
            for start in range(0, len(points), batch_size)
        ])


def _delta(model: nn.Module, attributions: torch.Tensor, x: torch.Tensor, targets: torch.Tensor,
           baseline_images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """sum(attributions) - (F(x) - mean F(x')) per image, (N,); ``baseline_images`` (K * N, 3, H, W), baseline-major."""
    k = len(baseline_images) // len(x)
    f_images = _scores(model, x, targets, batch_size)
    f_baselines = _scores(model, baseline_images, targets.repeat(k), batch_size).view(k, len(x)).mean(0)
    return attributions.flatten(1).sum(1) - (f_images - f_baselines)


def _path_gradient_sums(
    model: nn.Module,
    starts: torch.Tensor,
    differences: torch.Tensor,
    targets: torch.Tensor,
    point_pair: torch.Tensor,
    point_alpha: torch.Tensor,
    point_weight: torch.Tensor,
    batch_size: int,
    progress: bool,
    description: str,
) -> torch.Tensor:
    """For each straight path p (from ``starts[p]`` along ``differences[p]``, class ``targets[p]``),
    the weighted sum of the gradients at its points: sum_s w_s grad F(start_p + a_s diff_p).

    The points of all paths are listed flat (``point_pair``, ``point_alpha``, ``point_weight``)
    and go through the model ``batch_size`` at a time, whatever path they belong to.
    """
    sums = torch.zeros_like(starts)
    view = (-1,) + (1,) * (starts.dim() - 1)
    with _progress(math.ceil(len(point_pair) / batch_size), progress, description) as bar:
        for first in range(0, len(point_pair), batch_size):
            pair = point_pair[first:first + batch_size]
            # x' + a (x - x') in captum's order of operations (not addcmul): the same bits as captum's points
            points = _path_points(starts, differences, pair, point_alpha[first:first + batch_size]).requires_grad_(True)
            with torch.enable_grad():
                score = class_scores(model(points), targets[pair]).sum()
                (gradient,) = torch.autograd.grad(score, points)
            sums.index_add_(0, pair, gradient.mul_(point_weight[first:first + batch_size].view(view)))
            bar.update()
    return sums


def _straight_path_points(n_paths: int, method: str, n_steps: int, device, dtype):
    """Every (path, alpha, weight) of ``n_paths`` paths with the same quadrature, listed flat."""
    alphas, weights = integration_points(method, n_steps)
    point_pair = torch.arange(n_paths, device=device).repeat_interleave(n_steps)
    return (
        point_pair,
        alphas.to(device=device, dtype=dtype).repeat(n_paths),
        weights.to(device=device, dtype=dtype).repeat(n_paths),
    )


class AdaptiveRule(NamedTuple):
    """The rule adaptive IG ended with, per path: its segments and their midpoints (P, S), NaN-padded."""

    starts: torch.Tensor  # segment starts in [0, 1]
    ends: torch.Tensor  # segment ends
    midpoints: torch.Tensor  # where the gradients were taken (one per segment, every gradient kept)
    scan: torch.Tensor  # the scan: F at scan_points + 1 evenly spaced points, (P, K + 1)


def _path_points(starts: torch.Tensor, differences: torch.Tensor, pair: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """start_p + a diff_p for flat lists of paths p and alphas a (float64 alphas cast to the images' dtype)."""
    view = (-1,) + (1,) * (starts.dim() - 1)
    return starts[pair] + alpha.to(starts.dtype).view(view) * differences[pair]


def _points_scores(model: nn.Module, starts: torch.Tensor, differences: torch.Tensor, targets: torch.Tensor,
                   pair: torch.Tensor, alpha: torch.Tensor, batch_size: int) -> torch.Tensor:
    """F at the points start_p + a diff_p, without gradients, built and scored a batch at a time: (Q,)."""
    with torch.no_grad():
        return torch.cat([
            class_scores(model(_path_points(starts, differences, pair[first:first + batch_size], alpha[first:first + batch_size])),
                         targets[pair[first:first + batch_size]])
            for first in range(0, len(pair), batch_size)
        ])


def _points_gradients(model: nn.Module, starts: torch.Tensor, differences: torch.Tensor, targets: torch.Tensor,
                      pair: torch.Tensor, alpha: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Gradient images of F at the points start_p + a diff_p, in batches: (Q, 3, H, W)."""
    gradients = []
    for first in range(0, len(pair), batch_size):
        chunk = pair[first:first + batch_size]
        points = _path_points(starts, differences, chunk, alpha[first:first + batch_size]).requires_grad_(True)
        with torch.enable_grad():
            (gradient,) = torch.autograd.grad(class_scores(model(points), targets[chunk]).sum(), points)
        gradients.append(gradient)
    return torch.cat(gradients)


def _adaptive_sums(model: nn.Module, starts: torch.Tensor, differences: torch.Tensor, targets: torch.Tensor,
                   n_steps: int, scan_points: int, batch_size: int, progress: bool) -> tuple[torch.Tensor, AdaptiveRule]:
    """Adaptive quadrature of the path integral of every path: sum_s h_s grad F(midpoint_s), and the rule used.

    1. Scan: F at K + 1 evenly spaced points (forward passes without gradients); the K intervals are the
       first segments, K = ``scan_points`` (one more or less if needed to make n_steps - K even).
    2. One gradient at each segment's midpoint. On a segment [a, b] the integral of dF/da is known exactly,
       F(b) - F(a), so |h * slope(midpoint) - (F(b) - F(a))| is the segment's error, not an estimate.
    3. Rounds: cut the segments with the largest errors into thirds. The middle third's midpoint is the
       parent's, so its gradient is kept; the outer thirds get one new gradient each, and F at the two new
       boundaries costs two forward passes without gradients. Until n_steps gradients are spent: every
       gradient taken is in the final sum.
    """
    n_paths = len(starts)
    device = starts.device
    k = min(scan_points, n_steps)
    if (n_steps - k) % 2:
        k += 1 if k < n_steps else -1
    scan = torch.linspace(0, 1, k + 1, device=device, dtype=torch.float64)
    scan_pair = torch.arange(n_paths, device=device).repeat_interleave(k + 1)
    scan_scores = _points_scores(model, starts, differences, targets, scan_pair, scan.repeat(n_paths),
                                 batch_size).view(n_paths, k + 1).double()
    # Segments of all paths as flat lists: path, a, b, F(a), F(b), midpoint, its slope, its gradient row, alive.
    seg_path = torch.arange(n_paths, device=device).repeat_interleave(k)
    seg_a, seg_b = scan[:-1].repeat(n_paths), scan[1:].repeat(n_paths)
    seg_fa, seg_fb = scan_scores[:, :-1].flatten(), scan_scores[:, 1:].flatten()
    gradient_rows: list[torch.Tensor] = []

    def evaluate(paths, middle):
        gradients = _points_gradients(model, starts, differences, targets, paths, middle, batch_size)
        gradient_rows.append(gradients)
        return (gradients * differences[paths]).flatten(1).sum(1).double()

    with _progress(n_steps, progress, "adaptive integrated gradients") as bar:
        seg_mid = (seg_a + seg_b) / 2
        seg_slope = evaluate(seg_path, seg_mid)
        seg_row = torch.arange(len(seg_path), device=device)
        alive = torch.ones(len(seg_path), dtype=torch.bool, device=device)
        spent, rounds = k, 8  # more rounds zoom in further, in smaller batches
        bar.update(k)
        while spent < n_steps:
            # every live segment holds one gradient, so a path has `spent` of them to choose from
            splits = min(max(1, math.ceil((n_steps - spent) / 2 / rounds)), (n_steps - spent) // 2, spent)
            rounds = max(1, rounds - 1)
            error = ((seg_b - seg_a) * seg_slope - (seg_fb - seg_fa)).abs()
            error = torch.where(alive, error, torch.full_like(error, -1.0))
            # the `splits` worst live segments of every path
            per_path = torch.full((n_paths, len(error)), -2.0, dtype=torch.float64, device=device)
            per_path[seg_path, torch.arange(len(error), device=device)] = error
            worst = per_path.topk(splits, dim=1)
            chosen = worst.indices.flatten()
            alive[chosen] = False
            paths, a, b = seg_path[chosen], seg_a[chosen], seg_b[chosen]
            third = (b - a) / 3
            cut1, cut2 = a + third, a + 2 * third
            if spent + 2 * splits < n_steps:
                f_cuts = _points_scores(model, starts, differences, targets, paths.repeat(2), torch.cat([cut1, cut2]),
                                        batch_size).double()
            else:  # the last round: no segment is chosen again, so its errors (and F at the cuts) are not needed
                f_cuts = torch.full((2 * len(paths),), float("nan"), dtype=torch.float64, device=device)
            outer_mid = torch.cat([a + third / 2, cut2 + third / 2])
            outer_slope = evaluate(paths.repeat(2), outer_mid)
            first_row = sum(len(rows) for rows in gradient_rows[:-1])
            # the three thirds: left (new gradient), middle (the parent's midpoint and gradient), right (new gradient)
            seg_path = torch.cat([seg_path, paths, paths, paths])
            seg_a = torch.cat([seg_a, a, cut1, cut2])
            seg_b = torch.cat([seg_b, cut1, cut2, b])
            seg_fa = torch.cat([seg_fa, seg_fa[chosen], f_cuts[:len(paths)], f_cuts[len(paths):]])
            seg_fb = torch.cat([seg_fb, f_cuts[:len(paths)], f_cuts[len(paths):], seg_fb[chosen]])
            seg_mid = torch.cat([seg_mid, outer_mid[:len(paths)], seg_mid[chosen], outer_mid[len(paths):]])
            seg_slope = torch.cat([seg_slope, outer_slope[:len(paths)], seg_slope[chosen], outer_slope[len(paths):]])
            new_rows = first_row + torch.arange(2 * len(paths), device=device)
            seg_row = torch.cat([seg_row, new_rows[:len(paths)], seg_row[chosen], new_rows[len(paths):]])
            alive = torch.cat([alive, torch.ones(3 * len(paths), dtype=torch.bool, device=device)])
            spent += 2 * splits
            bar.update(2 * splits)
    # Every gradient row belongs to exactly one live segment: weight each row by its segment's width, in place.
    view = (-1,) + (1,) * (starts.dim() - 1)
    n_rows = sum(len(gradients) for gradients in gradient_rows)
    row_weight = torch.empty(n_rows, dtype=torch.float64, device=device)
    row_path = torch.empty(n_rows, dtype=torch.long, device=device)
    row_weight[seg_row[alive]] = (seg_b - seg_a)[alive]
    row_path[seg_row[alive]] = seg_path[alive]
    sums = torch.zeros_like(starts)
    first = 0
    for gradients in gradient_rows:
        rows = slice(first, first + len(gradients))
        sums.index_add_(0, row_path[rows], gradients.mul_(row_weight[rows].to(starts.dtype).view(view)))
        first += len(gradients)
    counts = torch.bincount(seg_path[alive], minlength=n_paths)
    width = int(counts.max())
    rule = [torch.full((n_paths, width), float("nan"), dtype=torch.float64) for _ in range(3)]
    for path in range(n_paths):
        keep = (seg_path == path) & alive
        order = seg_a[keep].argsort()
        for tensor, values in zip(rule, (seg_a[keep], seg_b[keep], seg_mid[keep])):
            tensor[path, : int(keep.sum())] = values[order].cpu()
    return sums, AdaptiveRule(*rule, scan_scores.cpu())


def adaptive_rule(model: nn.Module, image: torch.Tensor, target, baseline=None, n_steps: int = 64, scan_points: int = 8,
                  batch_size: int = 32) -> AdaptiveRule:
    """The segments and gradient points that ``method="adaptive"`` ends with on one path, to draw them.

    >>> rule = adaptive_rule(model, photo, 281, "black", n_steps=64)
    >>> plt.plot(rule.midpoints[0], ...)
    """
    x, targets = prepare(model, image, target)
    if len(image) != 1:
        raise ValueError(f"adaptive_rule follows one path: give one image (1, 3, H, W), got {len(image)}.")
    _check_adaptive(n_steps, scan_points)
    batch_size = _check_batch_size(batch_size)
    stacked = _as_baselines(image, baseline)
    if stacked.shape[0] != 1:
        raise ValueError("adaptive_rule follows one path: give one baseline (1, 3, H, W).")
    start = stacked[0].to(x)
    with preserve_model_state(model):
        _, rule = _adaptive_sums(model, start, x - start, targets, n_steps, scan_points, batch_size, progress=False)
    return rule


def _check_adaptive(n_steps, scan_points) -> None:
    _check_steps(n_steps, "gausslegendre")
    if n_steps < 2:
        raise ValueError("method='adaptive' needs n_steps >= 2 (gradient points on the path).")
    check_number(scan_points, "scan_points", low=1, integer=True)


def completeness_delta(
    model: nn.Module,
    attributions: torch.Tensor,
    images: torch.Tensor,
    target,
    baselines=None,
    batch_size: int = 32,
) -> torch.Tensor:
    """sum(attributions) - (F(x) - F(x')) per image, (N,): zero for exact integrated gradients.

    With K baselines per image (K, N, 3, H, W), F(x') is their mean (IG averaged over them).

    >>> completeness_delta(model, attributions, images, 281)
    """
    x, targets = prepare(model, images, target)
    stacked = _as_baselines(images, baselines)
    batch_size = _check_batch_size(batch_size)
    if not isinstance(attributions, torch.Tensor) or attributions.shape != images.shape:
        shape = tuple(attributions.shape) if isinstance(attributions, torch.Tensor) else type(attributions).__name__
        raise ValueError(f"attributions must have the images' shape {tuple(images.shape)}, got {shape}.")
    with preserve_model_state(model):
        delta = _delta(model, attributions.to(x), x, targets, stacked.to(x).flatten(0, 1), batch_size)
    return delta.to(images.device)


def integrated_gradients(
    model: nn.Module,
    images: torch.Tensor,
    target,
    baselines=None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    batch_size: int = 32,
    return_delta: bool = False,
    progress: bool = True,
    scan_points: int = 8,
):
    """Integrated gradients of the class score ``target`` for images (N, 3, H, W) -> (N, 3, H, W).

    ``baselines``: None or ``"black"`` (zeros), ``"white"``, ``"noise"``, ``"blur"``, a number,
    a tensor (N or 1, 3, H, W), or (K, N or 1, 3, H, W) to average IG over K baselines.
    ``method``: one of :data:`METHODS`, with ``n_steps`` points on each path, or ``"adaptive"``:
    ``scan_points + 1`` forward passes without gradients along each path, then ``n_steps`` gradients
    spent where the error is (midpoints of segments cut into thirds where |h slope - (F(b) - F(a))| is
    largest, two more forward passes a cut; :func:`adaptive_rule` shows the segments). ``batch_size``
    path points go through the model at once (it changes speed and memory, not the result).
    ``return_delta=True`` also returns the completeness error
    ``sum(attributions) - (F(x) - F(x'))`` per image, shape (N,).

    >>> attributions, delta = integrated_gradients(model, load_image("chelsea"), 281, return_delta=True)
    """
    x, targets = prepare(model, images, target)
    device = x.device
    _check_method(method, METHODS + (ADAPTIVE,))
    adaptive = method == ADAPTIVE
    if adaptive:
        _check_adaptive(n_steps, scan_points)
    else:
        _check_steps(n_steps, method)
    batch_size = _check_batch_size(batch_size)
    stacked = _as_baselines(images, baselines)  # (K, N, 3, H, W)
    k, n = stacked.shape[:2]
    starts = stacked.to(x).reshape(k * n, *images.shape[1:])
    differences = x.repeat(k, 1, 1, 1) - starts
    with preserve_model_state(model):
        if adaptive:
            sums, _ = _adaptive_sums(model, starts, differences, targets.repeat(k), n_steps, scan_points, batch_size,
                                     progress)
        else:
            points = _straight_path_points(k * n, method, n_steps, device, x.dtype)
            sums = _path_gradient_sums(
                model, starts, differences, targets.repeat(k), *points, batch_size, progress, "integrated gradients"
            )
        attributions = (sums * differences).view(k, n, *images.shape[1:]).mean(0)
        if return_delta:
            delta = _delta(model, attributions, x, targets, starts, batch_size)
            return attributions.to(images.device), delta.to(images.device)
    return attributions.to(images.device)


def expected_gradients(
    model: nn.Module,
    images: torch.Tensor,
    target,
    references: torch.Tensor,
    n_samples: int = 64,
    seed: int = 0,
    batch_size: int = 32,
    return_delta: bool = False,
    progress: bool = True,
):
    """Expected gradients (Erion et al. 2021): IG with the baseline drawn from ``references``.

    E over x' ~ references and a ~ U(0, 1) of (x - x') * grad F(x' + a (x - x')), estimated with
    ``n_samples`` seeded draws per image (one gradient each). ``references``: (M, 3, H, W)
    images, e.g. other photos. ``return_delta=True`` also returns
    ``sum(attributions) - (F(x) - mean F(x'))`` over the drawn baselines: it only shrinks as
    ``n_samples`` grows, because each draw uses a single random point of its path.

    >>> attributions = expected_gradients(model, load_image("chelsea"), 281, load_images(["coffee", "rocket"]))
    """
    x, targets = prepare(model, images, target)
    device = x.device
    check_images(references, name="references")
    if references.shape[1:] != images.shape[1:]:
        raise ValueError(
            f"references have images of shape {tuple(references.shape[1:])} but the images are "
            f"{tuple(images.shape[1:])}; load them at the same size."
        )
    n_samples = check_number(n_samples, "n_samples", low=1, integer=True)
    batch_size = _check_batch_size(batch_size)
    n = len(images)
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randint(len(references), (n_samples, n), generator=generator)
    alphas = torch.rand((n_samples * n,), generator=generator, dtype=torch.float64)
    starts = references.detach().to(device=device, dtype=x.dtype)[chosen.flatten().to(device)]  # (n_samples * N, 3, H, W)
    differences = x.repeat(n_samples, 1, 1, 1) - starts
    pairs = torch.arange(n_samples * n, device=device)
    with preserve_model_state(model):
        sums = _path_gradient_sums(
            model, starts, differences, targets.repeat(n_samples), pairs,
            alphas.to(device=device, dtype=x.dtype), torch.ones(len(pairs), device=device, dtype=x.dtype),
            batch_size, progress, "expected gradients",
        )
        attributions = (sums * differences).view(n_samples, n, *images.shape[1:]).mean(0)
        if return_delta:
            delta = _delta(model, attributions, x, targets, starts, batch_size)
            return attributions.to(images.device), delta.to(images.device)
    return attributions.to(images.device)


# ----------------------------------------------------------------------------- layer IG


@contextmanager
def _replace_output(module: nn.Module, replacement: dict) -> Iterator[None]:
    """While inside, ``module`` returns ``replacement["value"]`` instead of its own output."""

    def hook(_module, _inputs, output):
        # A copy, so an in-place operation after the layer (ReLU(inplace=True)) cannot touch the leaf.
        return replacement["value"].clone()

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _layer_output(model: nn.Module, layer: str, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    parts = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            with capture_activations(model, layer) as activations:
                model(images[start:start + batch_size])
            if not isinstance(activations.get(layer), torch.Tensor):
                raise ValueError(f"layer {layer!r} did not output a tensor during the forward pass.")
            parts.append(activations[layer])
    return torch.cat(parts)


def layer_integrated_gradients(
    model: nn.Module,
    images: torch.Tensor,
    target,
    layer: str,
    baselines=None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    batch_size: int = 32,
    return_delta: bool = False,
    progress: bool = True,
):
    """Integrated gradients on the output units of ``layer`` (a name from ``print(model)``).

    The path runs straight from the layer's activation for the baseline, a(x'), to its
    activation for the image, a(x); the result has the layer's output shape, e.g.
    (N, 80, 14, 14). Same as captum's ``LayerIntegratedGradients``. Completeness
    (``return_delta``) holds when everything after the layer depends on the input only through
    it: choose a whole block, not a convolution inside a residual block.

    >>> attributions = layer_integrated_gradients(model, load_image("chelsea"), 281, "blocks.4")
    >>> heatmap = attributions.sum(1)   # (1, 14, 14): one value per position
    """
    x, targets = prepare(model, images, target)
    device = x.device
    _check_method(method)
    _check_steps(n_steps, method)
    batch_size = _check_batch_size(batch_size)
    module = get_layer(model, layer)
    stacked = _as_baselines(images, baselines)
    k, n = stacked.shape[:2]
    with preserve_model_state(model):
        image_units = _layer_output(model, layer, x, batch_size)
        starts = _layer_output(model, layer, stacked.to(x).flatten(0, 1), batch_size)
        differences = image_units.repeat(k, *([1] * (image_units.dim() - 1))) - starts
        point_pair, point_alpha, point_weight = _straight_path_points(k * n, method, n_steps, device, starts.dtype)
        path_images = x.repeat(k, 1, 1, 1)
        path_targets = targets.repeat(k)
        sums = torch.zeros_like(starts)
        view = (-1,) + (1,) * (starts.dim() - 1)
        replacement: dict = {}
        with _replace_output(module, replacement), _progress(
            math.ceil(len(point_pair) / batch_size), progress, "layer integrated gradients"
        ) as bar:
            for first in range(0, len(point_pair), batch_size):
                pair = point_pair[first:first + batch_size]
                units = starts[pair] + point_alpha[first:first + batch_size].view(view) * differences[pair]
                replacement["value"] = units.requires_grad_(True)
                with torch.enable_grad():
                    score = class_scores(model(path_images[pair]), path_targets[pair]).sum()
                    (gradient,) = torch.autograd.grad(score, units)
                sums.index_add_(0, pair, gradient.mul_(point_weight[first:first + batch_size].view(view)))
                bar.update()
        replacement.clear()
        attributions = (sums * differences).view(k, n, *starts.shape[1:]).mean(0)
        if return_delta:
            delta = _delta(model, attributions, x, targets, stacked.to(x).flatten(0, 1), batch_size)
            return attributions.to(images.device), delta.to(images.device)
    return attributions.to(images.device)


# ----------------------------------------------------------------------------- saturation


class PathProfile(NamedTuple):
    """What happens along the straight path x' + a (x - x'), for one image.

    ``alphas`` (n,), ``scores`` F(x' + a (x - x')) (n,), ``gradient_norms`` |grad F| (n,) and
    ``slopes`` dF/da = (x - x') . grad F (n,): the integrand of IG, whose integral is F(x) - F(x').
    """

    alphas: torch.Tensor
    scores: torch.Tensor
    gradient_norms: torch.Tensor
    slopes: torch.Tensor


def path_profile(
    model: nn.Module,
    image: torch.Tensor,
    target: int,
    baseline=None,
    n_points: int = 32,
    score: str = "logit",
    batch_size: int = 32,
    progress: bool = True,
) -> PathProfile:
    """The class score and its gradient at ``n_points`` evenly spaced points of the path, for one image.

    ``score="logit"`` (what IG explains) or ``"probability"`` (softmax). Shows saturation: the
    score climbs early on the path and flattens near the image, where the gradient is small.

    >>> profile = path_profile(model, load_image("chelsea"), 281)
    >>> plt.plot(profile.alphas, profile.scores)
    """
    x, targets = prepare(model, image, target)
    device = x.device
    if len(image) != 1:
        raise ValueError(f"path_profile takes one image (1, 3, H, W), got a batch of {len(image)}; index it first.")
    if score not in ("logit", "probability"):
        raise ValueError(f"score must be 'logit' or 'probability', got {score!r}.")
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 2:
        raise ValueError(f"n_points must be an int >= 2, got {n_points!r}.")
    batch_size = _check_batch_size(batch_size)
    stacked = _as_baselines(image, baseline)
    if stacked.shape[0] != 1:
        raise ValueError("path_profile follows one path: give one baseline (1, 3, H, W).")
    target_index = int(targets[0])
    start = stacked[0].to(x)
    difference = x - start
    alphas = torch.linspace(0, 1, n_points, dtype=torch.float64)
    scores, norms, slopes = [], [], []
    with preserve_model_state(model), _progress(math.ceil(n_points / batch_size), progress, "path profile") as bar:
        for first in range(0, n_points, batch_size):
            alpha = alphas[first:first + batch_size].to(device=device, dtype=x.dtype).view(-1, 1, 1, 1)
            points = (start + alpha * difference).requires_grad_(True)
            with torch.enable_grad():
                outputs = class_scores(model(points))
                class_scores(outputs, targets.expand(len(points)))  # a class the model does not have fails here
                if score == "probability":
                    outputs = outputs.softmax(dim=1)
                values = outputs[:, target_index]
                (gradient,) = torch.autograd.grad(values.sum(), points)
            scores.append(values.detach())
            norms.append(gradient.flatten(1).norm(dim=1))
            slopes.append((gradient * difference).flatten(1).sum(1))
            bar.update()
    return PathProfile(alphas.float(), torch.cat(scores).cpu(), torch.cat(norms).cpu(), torch.cat(slopes).cpu())
