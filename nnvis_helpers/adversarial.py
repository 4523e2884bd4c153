"""Adversarial examples: the smallest changes of a photo that change the network's answer.

Every attack takes pixels in [0, 1] (the models of :func:`load_model` normalize inside) and
measures epsilon in the same units: ``epsilon=2/255`` moves each pixel by at most two grey
levels. They work in batches and on any device (the model's), keep the result inside the
epsilon ball and inside [0, 1], and leave the model exactly as they found it. DeepFool and
Carlini–Wagner have no ball: they search for the smallest change, and its size is the answer.

* :func:`fgsm` — one signed-gradient step (Goodfellow et al. 2014).
* :func:`bim` — many small FGSM steps, each projected back into the ball (Kurakin et al. 2016).
* :func:`pgd` — BIM from a random start, L-infinity or L2 ball (Madry et al. 2017).
* :func:`deepfool` — the smallest L2 step over the nearest linearized decision boundary
  (Moosavi-Dezfooli et al. 2016).
* :func:`carlini_wagner` — the smallest L2 change that beats the goal class by a margin of logits,
  found with Adam in tanh space (Carlini & Wagner 2017).

Untargeted attacks push away from ``labels`` (the model's own predictions when ``None``);
``target_class=`` pulls towards a class instead. ``return_info=True`` adds an
:class:`AttackInfo` with per-image success and perturbation norms.

Around them: :func:`evaluation_set` (the sample photos plus deterministic crops and flips),
:func:`accuracy_vs_epsilon`, :func:`amplify_perturbation` for pictures, and
:class:`JPEGCompression`, a JPEG round trip to put in front of a model as a naive "defence".
"""
from __future__ import annotations

import io
import math
import numbers
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .checks import check_images, check_model, check_number, check_target, class_scores, known_num_classes, prepare
from .datasets.photos import _cut, _photo_tensor, _random_square
from .images import _OFFLINE_PHOTOS, _resize_tensor, load_image, sample_images
from .layers import preserve_model_state

__all__ = [
    "AttackInfo",
    "fgsm",
    "bim",
    "pgd",
    "deepfool",
    "carlini_wagner",
    "evaluation_set",
    "accuracy_vs_epsilon",
    "amplify_perturbation",
    "JPEGCompression",
]

NORMS = ("linf", "l2")


@dataclass(frozen=True)
class AttackInfo:
    """What an attack achieved, one entry per image (tensors of shape (N,), on the CPU).

    ``success``: untargeted, the prediction left ``labels``; targeted, it reached the target.
    ``prediction``: the class predicted for the adversarial image.
    ``linf`` and ``l2``: the size of the perturbation, in pixel units.
    """

    success: torch.Tensor
    prediction: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor

    @property
    def success_rate(self) -> float:
        """The fraction of images on which the attack succeeded."""
        return float(self.success.float().mean())


# --------------------------------------------------------------------------------------------
# Input checks: everything is validated before the first forward pass.


def _check_epsilon(epsilon, norm: str, images: torch.Tensor) -> float:
    if isinstance(epsilon, torch.Tensor) and epsilon.numel() == 1:
        epsilon = epsilon.item()
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise TypeError(f"epsilon must be a number in pixel units such as 2/255, got {epsilon!r}.")
    epsilon = float(epsilon)
    if norm == "linf":
        largest, unit = 1.0, "pixel units (images are in [0, 1]): 8/255 is eight grey levels"
    else:
        # the L2 diameter of the [0, 1] cube of one image: no perturbation can be larger
        largest, unit = math.sqrt(images[0].numel()), "the L2 norm of the whole perturbation, in pixel units"
    if not math.isfinite(epsilon) or epsilon < 0 or epsilon > largest:
        hint = " It looks like 0-255 units: divide by 255 (epsilon=8/255)." if norm == "linf" and epsilon > 1 else ""
        raise ValueError(
            f"epsilon={epsilon!r} is out of range for the {norm} ball: it must lie in [0, {largest:.4g}], "
            f"measured in {unit}.{hint}"
        )
    return epsilon


def _check_norm(norm: str) -> str:
    key = str(norm).strip().lower().replace("-", "").replace("_", "")
    key = {"inf": "linf", "linfinity": "linf", "2": "l2"}.get(key, key)
    if key not in NORMS:
        raise ValueError(f"norm={norm!r} is not supported; use 'linf' (each pixel bounded) or 'l2' (total energy bounded).")
    return key


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}.")
    return int(steps)


def _check_alpha(alpha, epsilon: float, steps: int) -> float:
    if alpha is None:
        # the rule of thumb of the `robustness` library (Engstrom et al. 2019): the steps add up to 2.5 epsilon,
        # enough to cross the ball (diameter 2 epsilon) and move along its boundary
        return 2.5 * epsilon / steps
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha (the step size) must be a positive number in pixel units, got {alpha!r}.")
    return float(alpha)


@dataclass
class _Problem:
    """A validated attack problem: what to attack, towards or away from which classes."""

    images: torch.Tensor  # on the model's device
    goal: torch.Tensor | None  # classes to move away from (untargeted) or towards (targeted)
    goal_name: str  # how the user called them: "labels" or "target_class"
    targeted: bool
    device: torch.device
    input_device: torch.device


def _prepare(model, images, labels, target_class, targeted) -> _Problem:
    clean, _ = prepare(model, images)  # one checking path: module, images, device and dtype
    device = clean.device
    if targeted is None:
        targeted = target_class is not None
    if not isinstance(targeted, bool):
        raise TypeError(f"targeted must be True, False or None, got {targeted!r}.")
    if target_class is not None and not targeted:
        raise ValueError(
            "target_class was given with targeted=False. Leave targeted out (a target class makes the attack "
            "targeted), or drop target_class for an untargeted attack."
        )
    if targeted and target_class is None and labels is None:
        raise ValueError("a targeted attack needs the class to reach: pass target_class=... (an int or one per image).")
    batch_size = images.shape[0]
    # the number of classes of a model not made by load_model is checked on its first output
    num_classes = known_num_classes(model)
    if labels is not None:
        labels = check_target(labels, batch_size, num_classes, device, name="labels")
    if target_class is not None:
        target_class = check_target(target_class, batch_size, num_classes, device, name="target_class")
    goal = target_class if target_class is not None else labels  # targeted=True alone: labels are the targets
    return _Problem(clean, goal, "target_class" if target_class is not None else "labels", targeted, device, images.device)


def _predicted(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return class_scores(model(images)).argmax(dim=1)


def _finish(model, problem: _Problem, adversarial: torch.Tensor, reference_classes, return_info: bool):
    result = adversarial.detach().to(problem.input_device)
    if not return_info:
        return result
    prediction = _predicted(model, adversarial)
    success = prediction == problem.goal if problem.targeted else prediction != reference_classes
    delta = (adversarial - problem.images).flatten(1)
    info = AttackInfo(
        success=success.cpu(),
        prediction=prediction.cpu(),
        linf=delta.abs().amax(dim=1).cpu(),
        l2=delta.norm(p=2, dim=1).cpu(),
    )
    return result, info


def _loss_gradient(model: nn.Module, adversarial: torch.Tensor, goal: torch.Tensor, targeted: bool, name: str = "labels") -> torch.Tensor:
    """d loss / d input, where the attack climbs the loss: CE away from labels, minus CE to a target."""
    adversarial.requires_grad_(True)
    # mean over the batch, as torchattacks does: it rescales every image's gradient alike, so the
    # sign (L-infinity) and the direction (L2) of each image's step do not depend on the batch
    logits = class_scores(model(adversarial))
    class_scores(logits, goal, name=name)  # a class the model does not have fails here, under the name the user gave
    loss = F.cross_entropy(logits, goal)
    if targeted:
        loss = -loss
    (gradient,) = torch.autograd.grad(loss, adversarial)
    return gradient


def _progress(iterable, enabled: bool, description: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=description, leave=False)


# --------------------------------------------------------------------------------------------
# The attacks


def fgsm(
    model: nn.Module,
    images: torch.Tensor,
    labels=None,
    epsilon: float = 2 / 255,
    *,
    target_class=None,
    targeted: bool | None = None,
    return_info: bool = False,
):
    """Fast Gradient Sign Method: one step of size epsilon along the sign of the loss gradient.

    ``x' = clip_[0,1](x + epsilon * sign(grad_x CE(f(x), y)))``; targeted: ``x - epsilon * sign(grad_x CE(f(x), t))``.
    images (N, 3, H, W) in [0, 1] -> adversarial images (N, 3, H, W), on the images' device.
    ``labels``: the true classes (int, list or (N,) tensor); ``None`` uses the model's predictions.

    >>> adversarial = fgsm(model, load_image("chelsea"), epsilon=2/255)
    """
    epsilon = _check_epsilon(epsilon, "linf", check_images(images))
    problem = _prepare(model, images, labels, target_class, targeted)
    with preserve_model_state(model), torch.enable_grad():
        model.requires_grad_(False)  # gradients for the input only: no .grad on parameters, less work
        clean = problem.images
        reference = problem.goal if problem.goal is not None else _predicted(model, clean)
        adversarial = clean.clone()
        if epsilon > 0:
            gradient = _loss_gradient(model, adversarial, reference, problem.targeted, problem.goal_name)
            adversarial = torch.clamp(clean + epsilon * gradient.sign(), min=0, max=1)
        reference_classes = None if problem.targeted else reference
        return _finish(model, problem, adversarial.detach(), reference_classes, return_info)


def pgd(
    model: nn.Module,
    images: torch.Tensor,
    labels=None,
    epsilon: float = 2 / 255,
    *,
    norm: str = "linf",
    alpha: float | None = None,
    steps: int = 10,
    random_start: bool = True,
    seed: int | None = None,
    target_class=None,
    targeted: bool | None = None,
    eot_samples: int = 1,
    return_info: bool = False,
    progress: bool = False,
):
    """Projected Gradient Descent: repeated gradient steps, each projected back into the epsilon ball.

    L-infinity: ``x_{t+1} = Proj(x_t + alpha * sign(g_t))``; L2: ``x_{t+1} = Proj(x_t + alpha * g_t / ||g_t||_2)``,
    where ``g_t`` is the gradient of the loss and ``Proj`` clips to the ball around ``x`` and to [0, 1].
    ``random_start`` begins at a random point of the ball (reproducible with ``seed=``); ``alpha``
    defaults to ``2.5 * epsilon / steps``. ``eot_samples > 1`` averages the gradient over several
    forward passes, for models with a random input transformation (Expectation over Transformation).
    images (N, 3, H, W) in [0, 1] -> adversarial images (N, 3, H, W), on the images' device.

    >>> adversarial = pgd(model, images, epsilon=2/255, steps=10, seed=0)
    >>> adversarial, info = pgd(model, images, target_class=963, epsilon=8/255, return_info=True)
    """
    norm = _check_norm(norm)
    epsilon = _check_epsilon(epsilon, norm, check_images(images))
    steps = _check_steps(steps)
    alpha = _check_alpha(alpha, epsilon, steps)
    eot_samples = _check_steps(eot_samples)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}.")
    problem = _prepare(model, images, labels, target_class, targeted)
    with preserve_model_state(model), torch.enable_grad():
        model.requires_grad_(False)  # gradients for the input only: no .grad on parameters, less work
        clean = problem.images
        reference = problem.goal if problem.goal is not None else _predicted(model, clean)
        batch_size = clean.shape[0]
        adversarial = clean.clone()
        if epsilon > 0 and random_start:
            adversarial = torch.clamp(clean + _random_start(clean, epsilon, norm, seed), min=0, max=1)
        for _ in _progress(range(steps if epsilon > 0 else 0), progress, f"PGD-{norm}"):
            gradient = _loss_gradient(model, adversarial, reference, problem.targeted, problem.goal_name)
            for _ in range(eot_samples - 1):
                gradient += _loss_gradient(model, adversarial.detach(), reference, problem.targeted, problem.goal_name)
            with torch.no_grad():
                # The same arithmetic, in the same order, as torchattacks' PGD and PGDL2: the results
                # agree to the last bit; in-place operations save the temporaries.
                adversarial = adversarial.detach()
                if norm == "linf":
                    adversarial.add_(gradient.sign_(), alpha=alpha)
                    delta = adversarial.sub_(clean).clamp_(min=-epsilon, max=epsilon)
                else:
                    gradient_norms = gradient.view(batch_size, -1).norm(p=2, dim=1) + 1e-10
                    gradient /= gradient_norms.view(batch_size, 1, 1, 1)
                    adversarial.add_(gradient.mul_(alpha))
                    delta = adversarial.sub_(clean)
                    factor = torch.clamp(epsilon / delta.view(batch_size, -1).norm(p=2, dim=1), max=1.0)
                    delta.mul_(factor.view(batch_size, 1, 1, 1))
                adversarial = delta.add_(clean).clamp_(min=0, max=1)
        reference_classes = None if problem.targeted else reference
        return _finish(model, problem, adversarial.detach(), reference_classes, return_info)


def bim(
    model: nn.Module,
    images: torch.Tensor,
    labels=None,
    epsilon: float = 2 / 255,
    *,
    alpha: float | None = None,
    steps: int = 10,
    target_class=None,
    targeted: bool | None = None,
    return_info: bool = False,
    progress: bool = False,
):
    """Basic Iterative Method (I-FGSM): ``steps`` FGSM steps of size ``alpha``, clipped to the L-infinity ball.

    ``x_0 = x``, ``x_{t+1} = clip_{x, epsilon}(x_t + alpha * sign(g_t))``. It is :func:`pgd` with
    ``norm="linf"`` and no random start; ``alpha`` defaults to ``2.5 * epsilon / steps``.

    >>> adversarial = bim(model, images, epsilon=2/255, steps=10)
    """
    return pgd(
        model, images, labels, epsilon, norm="linf", alpha=alpha, steps=steps, random_start=False,
        target_class=target_class, targeted=targeted, return_info=return_info, progress=progress,
    )


def _random_start(clean: torch.Tensor, epsilon: float, norm: str, seed: int | None) -> torch.Tensor:
    # Drawn on the CPU, then moved: the same seed gives the same start on every device.
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    shape, batch_size = clean.shape, clean.shape[0]
    if norm == "linf":
        noise = torch.rand(shape, generator=generator, dtype=clean.dtype) * (2 * epsilon) - epsilon
    else:
        # a random direction, a radius uniform in [0, epsilon] (as torchattacks' PGDL2)
        direction = torch.randn(shape, generator=generator, dtype=clean.dtype)
        direction /= direction.view(batch_size, -1).norm(p=2, dim=1).view(batch_size, 1, 1, 1)
        radius = torch.rand(batch_size, generator=generator, dtype=clean.dtype) * epsilon
        noise = direction * radius.view(batch_size, 1, 1, 1)
    return noise.to(clean.device)


def deepfool(
    model: nn.Module,
    images: torch.Tensor,
    labels=None,
    *,
    num_candidates: int = 10,
    overshoot: float = 0.02,
    max_steps: int = 50,
    return_info: bool = False,
    progress: bool = False,
):
    """DeepFool: the smallest L2 perturbation that crosses the nearest (linearized) decision boundary.

    At each step, for the ``num_candidates`` most likely other classes k, the boundary with the current
    class is approximated by its tangent plane; the image moves to the nearest plane,
    ``r = |f_k - f_y| / ||w_k||^2 * w_k`` with ``w_k = grad(f_k - f_y)``, until the label changes.
    The total step is multiplied by ``1 + overshoot`` to land just past the boundary, and clipped to [0, 1].
    There is no epsilon: the size of the result is the answer (``return_info=True`` gives its norms).

    >>> adversarial, info = deepfool(model, images, return_info=True); info.l2
    """
    if isinstance(num_candidates, bool) or not isinstance(num_candidates, numbers.Integral) or num_candidates < 2:
        raise ValueError(f"num_candidates must be an int >= 2 (the true class and at least one other), got {num_candidates!r}.")
    if not isinstance(overshoot, numbers.Real) or not 0 <= overshoot <= 1:
        raise ValueError(f"overshoot must be a small non-negative number such as 0.02, got {overshoot!r}.")
    max_steps = _check_steps(max_steps)
    check_images(images)
    problem = _prepare(model, images, labels, None, False)
    with preserve_model_state(model), torch.enable_grad():
        model.requires_grad_(False)
        clean = problem.images
        with torch.no_grad():
            clean_logits = class_scores(model(clean))
        if problem.goal is not None:
            class_scores(clean_logits, problem.goal, name=problem.goal_name)
        reference = problem.goal if problem.goal is not None else clean_logits.argmax(dim=1)
        num_candidates = min(num_candidates, clean_logits.shape[1])
        # the true class first, then the most likely others (fixed at the start, as in the paper's code)
        others = clean_logits.scatter(1, reference[:, None], float("-inf")).topk(num_candidates - 1, dim=1).indices
        candidates = torch.cat([reference[:, None], others], dim=1)
        total = torch.zeros_like(clean)
        adversarial = clean.clone()
        active = torch.arange(clean.shape[0], device=clean.device)
        for _ in _progress(range(max_steps), progress, "DeepFool"):
            current = adversarial[active].clone().requires_grad_(True)
            logits = class_scores(model(current))
            still_correct = logits.argmax(dim=1) == reference[active]
            if not still_correct.any():
                break
            chosen = logits.gather(1, candidates[active])  # (n, k): true class in column 0
            f = chosen[:, 1:] - chosen[:, :1]  # (n, k-1): negative while the true class still wins
            # images are independent, so one backward pass per candidate serves the whole batch
            w = torch.stack(
                [
                    torch.autograd.grad(f[:, k].sum(), current, retain_graph=k < f.shape[1] - 1)[0]
                    for k in range(f.shape[1])
                ],
                dim=1,
            )  # (n, k-1, 3, H, W)
            with torch.no_grad():
                f = f.detach()
                w_norms = w.flatten(2).norm(p=2, dim=2) + 1e-8
                distances = f.abs() / w_norms
                nearest = distances.argmin(dim=1)
                rows = torch.arange(len(active), device=clean.device)
                step = ((f[rows, nearest].abs() + 1e-4) / w_norms[rows, nearest] ** 2).view(-1, 1, 1, 1) * w[rows, nearest]
                keep = still_correct.view(-1, 1, 1, 1)
                total[active] += torch.where(keep, step, torch.zeros_like(step))
                adversarial[active] = torch.clamp(clean[active] + (1 + overshoot) * total[active], 0, 1)
                active = active[still_correct]
        return _finish(model, problem, adversarial.detach(), reference, return_info)


def carlini_wagner(
    model: nn.Module,
    images: torch.Tensor,
    labels=None,
    *,
    target_class=None,
    targeted: bool | None = None,
    c: float = 1.0,
    kappa: float = 0.0,
    steps: int = 100,
    lr: float = 0.01,
    return_info: bool = False,
    progress: bool = False,
):
    """Carlini–Wagner L2: the smallest L2 change that beats the goal class by ``kappa`` logits, found with Adam.

    Minimizes ``||x' - x||_2^2 + c * f(x')`` over ``w``, where ``x' = (tanh(w) + 1) / 2`` is always in
    [0, 1] and ``Z`` are the logits: untargeted ``f = max(Z_y - max_{i != y} Z_i, -kappa)`` (y = labels),
    targeted ``f = max(max_{i != t} Z_i - Z_t, -kappa)`` (t = target_class). ``c`` trades fooling
    against staying close: a small c gives small changes that may not fool, a large c fools more often
    with larger changes (the paper finds c per image by binary search; here you choose it). ``kappa``
    is the margin the result must win by: 0 stops at the decision boundary, larger values give
    confident adversarials. ``steps`` Adam steps of rate ``lr`` on ``w``, fewer when the batch's total
    cost stops falling (checked ten times, as Carlini's code does); each image keeps the smallest x'
    that won by ``kappa``, or comes back unchanged if none did.
    images (N, 3, H, W) in [0, 1] -> adversarial images (N, 3, H, W), on the images' device.

    >>> adversarial, info = carlini_wagner(model, images, c=1.0, steps=100, return_info=True); info.l2
    """
    c = check_number(c, "c", low=0, hint="It weighs fooling the model against the size of the change; try 0.1 to 10.")
    kappa = check_number(kappa, "kappa", low=0, hint="It is a margin in logits; 0 stops at the decision boundary.")
    steps = _check_steps(steps)
    lr = check_number(lr, "lr", low=0, low_open=True, hint="It is Adam's learning rate on w, such as 0.01.")
    problem = _prepare(model, images, labels, target_class, targeted)
    with preserve_model_state(model), torch.enable_grad():
        model.requires_grad_(False)  # gradients for w only: no .grad on parameters, less work
        clean = problem.images
        reference = problem.goal if problem.goal is not None else _predicted(model, clean)
        batch_size = clean.shape[0]
        # The same start, cost, optimizer and update order as torchattacks' CW, so the two agree to
        # the last bit (a one-ulp change of the start can move a result by 1e-3 after 100 steps).
        # w = atanh(2x - 1), written out as torchattacks does, starts at x' = x; a pixel at exactly
        # 0 or 1 gets w = -inf or +inf, where tanh is flat, so it stays where it is (Carlini's own
        # code shrinks 2x - 1 by 0.999999 instead: such pixels can move, but only very slowly).
        centred = torch.clamp(clean * 2 - 1, min=-1, max=1)
        w = (0.5 * torch.log((1 + centred) / (1 - centred))).requires_grad_(True)
        optimizer = torch.optim.Adam([w], lr=lr)
        best = clean.clone()
        best_squared_l2 = torch.full((batch_size,), math.inf, dtype=clean.dtype, device=clean.device)
        # the margin as Carlini's code checks it: the goal's logit handicapped by kappa must still lose (win)
        handicap = torch.full(
            (batch_size, 1), -kappa if problem.targeted else kappa, dtype=clean.dtype, device=clean.device
        )
        previous_cost = math.inf
        check_every = max(steps // 10, 1)
        for step in _progress(range(steps), progress, "C&W L2"):
            adversarial = (torch.tanh(w) + 1) / 2
            squared_l2 = (adversarial - clean).flatten(1).pow(2).sum(dim=1)
            logits = class_scores(model(adversarial))
            goal_logit = class_scores(logits, reference, name=problem.goal_name)  # a class the model lacks fails here
            # max over the other classes: the goal's own logit masked out with -inf, so negative logits
            # count too (torchattacks' CW multiplies by a one-hot mask, which reads them as 0)
            other_logit = logits.scatter(1, reference[:, None], float("-inf")).max(dim=1).values
            margin = other_logit - goal_logit if problem.targeted else goal_logit - other_logit
            # summed over the batch: each image's gradient is its own, whatever the batch size
            cost = squared_l2.sum() + c * margin.clamp(min=-kappa).sum()
            (w.grad,) = torch.autograd.grad(cost, w)  # what cost.backward() would put there, and only there
            optimizer.step()
            with torch.no_grad():
                # keep, per image, the smallest x' of this step (before the update) that won by kappa
                prediction = logits.detach().scatter_add(1, reference[:, None], handicap).argmax(dim=1)
                success = prediction == reference if problem.targeted else prediction != reference
                better = success & (squared_l2 < best_squared_l2)
                best_squared_l2 = torch.where(better, squared_l2, best_squared_l2)
                best = torch.where(better.view(-1, 1, 1, 1), adversarial, best)
            # Stop when the total cost rose since the last of about ten checks (Carlini's "abort early"):
            # the whole batch stops together, so a result can depend on the rest of the batch.
            if step % check_every == 0:
                current_cost = cost.item()
                if current_cost > previous_cost:
                    break
                previous_cost = current_cost
        reference_classes = None if problem.targeted else reference
        return _finish(model, problem, best.detach(), reference_classes, return_info)


# --------------------------------------------------------------------------------------------
# Evaluation


def evaluation_set(
    names: Sequence[str] | None = None,
    views: int = 4,
    size: int = 224,
    seed: int = 0,
) -> tuple[torch.Tensor, list[str]]:
    """The sample photos plus augmented views of them: random crops and mirror images, all deterministic.

    Each photo gives ``views`` images: the photo itself (shorter side to ``size``, centre
    square), then crops of 45-90% of its area at seeded random places, every other one mirrored.
    Returns images (len(names) * views, 3, size, size) in [0, 1] and a name for each.

    >>> images, names = evaluation_set(views=2); names[:2]
    ['chelsea', 'chelsea (crop 1, mirrored)']
    """
    names = sample_images() if names is None else list(names)
    if not names:
        raise ValueError("evaluation_set needs at least one photo name; see sample_images().")
    views = _check_steps(views)
    generator = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for name in names:
        # full resolution, so crops stay sharp
        photo = _photo_tensor(name) if name in _OFFLINE_PHOTOS else load_image(name, size=None)[0]
        images.append(_resize_tensor(photo, size))
        labels.append(name)
        for view in range(1, views):
            box = _random_square(photo.shape[1], photo.shape[2], (0.45, 0.9), generator)
            mirrored = view % 2 == 1
            images.append(_cut(photo, box, size, mirrored))
            labels.append(f"{name} (crop {view}{', mirrored' if mirrored else ''})")
    return torch.stack(images), labels


def accuracy_vs_epsilon(
    model: nn.Module,
    images: torch.Tensor,
    labels=None,
    attack: Callable = fgsm,
    epsilons: Sequence[float] = (0, 0.5 / 255, 1 / 255, 2 / 255, 4 / 255),
    batch_size: int = 16,
    progress: bool = True,
    **options,
) -> list[float]:
    """The model's accuracy on ``attack(model, images, labels, epsilon, **options)``, for each epsilon.

    ``labels=None`` measures against the model's own clean predictions, so the accuracy is the
    fraction of images whose top-1 class survives the attack (1.0 at epsilon 0).

    >>> accuracy_vs_epsilon(model, images, attack=pgd, epsilons=[0, 1/255, 2/255], steps=10, seed=0)
    [1.0, 0.31, 0.02]
    """
    device, _ = check_model(model)
    check_images(images)
    if not callable(attack):
        raise TypeError(f"attack must be an attack function such as fgsm, bim or pgd, got {attack!r}.")
    batch_size = _check_steps(batch_size)
    epsilons = [float(e) for e in epsilons]
    with preserve_model_state(model):  # eval mode inside
        if labels is None:
            labels = torch.cat([_predicted(model, images[i : i + batch_size].to(device)) for i in range(0, len(images), batch_size)])
        else:
            labels = check_target(labels, images.shape[0], known_num_classes(model), device, name="labels")
        labels = labels.to(device)
        work = [(e, i) for e in epsilons for i in range(0, len(images), batch_size)]
        correct = dict.fromkeys(epsilons, 0)
        for epsilon, start in _progress(work, progress, f"{getattr(attack, '__name__', 'attack')} vs epsilon"):
            batch = images[start : start + batch_size].to(device)  # each attack casts to the model's dtype
            batch_labels = labels[start : start + batch_size]
            adversarial = batch if epsilon == 0 else attack(model, batch, batch_labels, epsilon, **options)
            correct[epsilon] += int((_predicted(model, adversarial) == batch_labels).sum())
        accuracies = [correct[e] / len(images) for e in epsilons]
    return accuracies


def amplify_perturbation(adversarial: torch.Tensor, images: torch.Tensor, gain: float | None = None) -> torch.Tensor:
    """The perturbation ``adversarial - images`` made visible: 0.5 + gain * delta, in [0, 1].

    ``gain=None`` scales each image's largest change to the full range (grey = unchanged).
    (N, 3, H, W) -> (N, 3, H, W).

    >>> show_images(amplify_perturbation(adversarial, images))
    """
    if adversarial.shape != images.shape:
        raise ValueError(f"adversarial {tuple(adversarial.shape)} and images {tuple(images.shape)} must have the same shape.")
    delta = (adversarial.detach() - images.detach().to(adversarial.device)).float()
    if gain is None:
        largest = delta.flatten(1).abs().amax(dim=1).clamp(min=1e-12).view(-1, *([1] * (delta.dim() - 1)))
        return (0.5 + 0.5 * delta / largest).clamp(0, 1)
    return (0.5 + gain * delta).clamp(0, 1)


# --------------------------------------------------------------------------------------------
# A naive "defence"


class _JPEGRoundTrip(torch.autograd.Function):
    @staticmethod
    def forward(ctx, images: torch.Tensor, quality: int) -> torch.Tensor:
        pixels = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        decoded = []
        for picture in pixels:
            buffer = io.BytesIO()
            Image.fromarray(picture).save(buffer, format="JPEG", quality=quality)
            decoded.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")))
        array = np.stack(decoded).astype(np.float32) / 255.0
        return torch.from_numpy(array).permute(0, 3, 1, 2).to(device=images.device, dtype=images.dtype)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor):
        # JPEG has no useful gradient; pretending it is the identity (BPDA, Athalye et al. 2018)
        # is close enough for an attacker, because the output looks like the input.
        return gradient, None


class JPEGCompression(nn.Module):
    """JPEG-compress and decompress images (N, 3, H, W) in [0, 1], as a layer to put in front of a model.

    The forward pass is a real JPEG round trip (Pillow, 8-bit); the backward pass lets the gradient
    through unchanged, so an attacker can still optimize through it (BPDA).

    >>> defended = torch.nn.Sequential(JPEGCompression(quality=75), model)
    """

    def __init__(self, quality: int = 75):
        super().__init__()
        if isinstance(quality, bool) or not isinstance(quality, numbers.Integral) or not 1 <= quality <= 95:
            raise ValueError(f"JPEG quality must be an int from 1 (worst) to 95 (best), got {quality!r}.")
        self.quality = int(quality)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return _JPEGRoundTrip.apply(images, self.quality)

    def extra_repr(self) -> str:
        return f"quality={self.quality}"
