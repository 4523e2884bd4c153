"""Optimize an image to maximize an objective (``render``), and DeepDream a photo (``deepdream``).

One step of :func:`render` is: make the image from the parameters, transform it, run the model,
read the objective, backpropagate, step Adam. To keep a step close to the cost of one forward
and backward pass of the model:

* hooks go only on the layers the objective reads, registered once per render (not per step)
  and removed in ``finally`` (also on an error or Ctrl-C);
* when the objective reads only inner layers, the forward pass stops right after the last one
  of them (a hook raises a private exception that we catch): the rest of the network never
  runs. Class objectives need the logits, so they get the full pass;
* the model's parameters are frozen for the duration, so no weight gradients are computed;
* nothing waits for the GPU inside the loop: the history is kept on the device.
"""
from __future__ import annotations

import random
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_images, check_model, class_scores
from ..config import pick
from ..layers import _first_tensor, _StopForward, fixed_input_size, get_layer, preserve_model_state
from .objectives import INPUT, MODEL_OUTPUT, Objective, as_objective
from .objectives import layer as layer_objective
from .param import ImageParam, _size_pair, as_param
from .transforms import as_transform, compose, resize

__all__ = ["render", "evaluate", "deepdream", "ActivationRunner"]


class ActivationRunner:
    """Runs ``model`` and returns the activations an objective reads; a context manager.

    On entry: checks every layer name (before any work), freezes the parameters, registers
    one forward hook per needed layer, puts the model in eval mode. ``runner(images)`` returns a
    dict with those layers, ``INPUT`` and, if needed, ``MODEL_OUTPUT``. On exit: hooks removed and
    the model exactly as it was (``preserve_model_state``), whatever happened inside.

    >>> with ActivationRunner(model, channel("blocks.3", 5)) as runner:
    ...     acts = runner(images)
    """

    def __init__(self, model: nn.Module, objective: Objective, early_stop: bool = True):
        self.device, self.dtype = check_model(model)
        self.model = model
        self.objective = as_objective(objective)
        # Every name is resolved now: a typo fails here, naming the closest valid layers.
        self.modules = {name: get_layer(model, name) for name in self.objective.layers}
        self.needs_forward = bool(self.modules) or self.objective.needs_output
        self.early_stop = early_stop and not self.objective.needs_output
        self._captured: dict[str, torch.Tensor] = {}
        self._calls: dict[str, int] = {}
        self._expected_calls: dict[str, int] | None = None  # learned on the first (probe) pass

    def __enter__(self) -> "ActivationRunner":
        self._state = preserve_model_state(self.model)
        self._state.__enter__()
        try:
            self.model.requires_grad_(False)  # gradients for the image only, none for the weights
            self._handles = [module.register_forward_hook(self._hook(name)) for name, module in self.modules.items()]
        except BaseException:
            self._state.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            for handle in self._handles:
                handle.remove()
        finally:
            self._state.__exit__(*exc_info)

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            tensor = _first_tensor(output)
            self._calls[name] = self._calls.get(name, 0) + 1
            expected = self._expected_calls
            done = (
                expected is not None
                and self.early_stop
                and all(self._calls.get(n, 0) >= expected[n] for n in expected)
            )
            # A later in-place op (ReLU(inplace=True)) would overwrite the values we read, so keep
            # a copy, except for the last layer when the pass stops right after it.
            self._captured[name] = tensor if done or tensor is None else tensor.clone()
            if done:
                raise _StopForward

        return hook

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self._captured = {}
        self._calls = {}
        activations: dict[str, torch.Tensor] = {INPUT: images}
        if not self.needs_forward:
            return activations
        try:
            output = self.model(images.to(self.dtype))
        except _StopForward:
            output = None
        if self._expected_calls is None:  # the probe: how often is each needed layer called?
            self._expected_calls = dict(self._calls)
        activations.update(self._captured)
        if output is not None and self.objective.needs_output:
            activations[MODEL_OUTPUT] = class_scores(output)  # a tuple or a dict gets a clear error
        return activations

    def check(self, images: torch.Tensor) -> None:
        """One forward pass without gradients that checks channels, positions and classes."""
        with torch.no_grad():
            try:
                activations = self(images)
            except RuntimeError as error:
                raise RuntimeError(
                    f"the model failed on images of shape {tuple(images.shape)}: {error}\nIf it needs another input "
                    "size (a 32 px CIFAR network, a ViT built for 64 px), pass image_size= to render, or images of "
                    "that size."
                ) from error
        shapes = {key: tuple(value.shape) for key, value in activations.items() if value is not None}
        self.objective.check(shapes, images.shape[0])


def _is_size_error(error: RuntimeError) -> bool:
    """Does the message say that an input of the wrong size reached a layer (a Linear head, a reshape)?"""
    message = str(error).lower()
    if "out of memory" in message:
        return False
    return any(words in message for words in ("mat1 and mat2", "shape", "size mismatch", "sizes of tensors", "dimension"))


def _default_steps() -> int:
    return pick(fast=24, cpu=256, full=512)


def _default_size() -> int:
    return pick(fast=64, cpu=160, full=224)


def render(
    model: nn.Module,
    objective: Objective | str,
    param=None,
    transforms="standard",
    steps: int | None = None,
    image_size: int | tuple[int, int] | None = None,
    batch_size: int = 1,
    lr: float = 0.05,
    optimizer=None,
    seed: int = 0,
    progress: bool = True,
    return_history: bool = False,
    early_stop: bool = True,
):
    """Images (batch_size, 3, H, W) in [0, 1] that maximize ``objective``, optimized with Adam.

    ``param``: ``fourier()`` (default, decorrelated colours), ``pixels()``, or a name.
    ``transforms``: ``"standard"`` (Lucid's), ``None`` for none, or a list such as
    ``[pad(8), jitter(4)]``. ``steps`` and ``image_size`` default to the course preset
    (fast 24 / 64 px, cpu 256 / 160 px, full 512 / 224 px), or to the model's own size when it
    accepts only one (a ViT: :func:`~nnvis_helpers.layers.fixed_input_size`). Transforms change
    the image's size; for a model that accepts one size only, they end with a resize back to it
    (found out on the first step for a CNN with a Linear head, with a warning). ``optimizer``: a function
    ``params -> torch.optim.Optimizer`` replacing Adam(lr). ``return_history=True`` also returns
    the objective value (mean over the batch, on the transformed image) of every step.

    The model runs on its own device, in eval mode, and is given back unchanged: no hooks, the
    same ``training`` flags, ``requires_grad`` and buffers, no ``.grad`` written.

    >>> images = render(model, channel("blocks.3", 5), steps=256)
    >>> images, history = render(model, class_logit("goldfinch"), return_history=True)
    """
    objective = as_objective(objective)
    steps = _default_steps() if steps is None else steps
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    fixed = fixed_input_size(model) if isinstance(model, nn.Module) else None
    size = _size_pair(image_size if image_size is not None else (fixed or _default_size()))
    recipe = as_param(param)
    transform = as_transform(transforms)
    if transform is not None and fixed is not None:
        transform = compose(transform, resize(fixed))
    generator = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)

    with ActivationRunner(model, objective, early_stop=early_stop) as runner:
        image_param: ImageParam = recipe(batch_size, size, runner.device, generator)
        with torch.no_grad():
            runner.check(image_param())  # a bad channel or class fails here, before any step
        make_optimizer = optimizer or (lambda params: torch.optim.Adam(params, lr=lr))
        opt = make_optimizer(list(image_param.parameters()))
        history = torch.empty(steps, device=runner.device)
        bar = _progress(steps, progress, objective.name)
        try:
            for step in range(steps):
                opt.zero_grad(set_to_none=True)
                images = image_param()
                state = rng.getstate()
                inputs = transform(images, rng) if transform is not None else images
                try:
                    activations = runner(inputs)
                except RuntimeError as error:
                    if step > 0 or inputs.shape[-2:] == images.shape[-2:] or not _is_size_error(error):
                        raise
                    # It ran at the image's size (runner.check) but not at the transformed size:
                    # a network for one input size. Resize the transformed images back, from now on.
                    warnings.warn(
                        f"this model accepts only {tuple(images.shape[-2:])} images, not the {tuple(inputs.shape[-2:])} "
                        "the transforms make: render resizes them back. Pass transforms=[..., featurevis.resize(size)] "
                        "to choose this yourself.", UserWarning, stacklevel=2)
                    transform = compose(transform, resize(tuple(images.shape[-2:])))
                    rng.setstate(state)
                    inputs = transform(images, rng)
                    activations = runner(inputs)
                activations[INPUT] = images  # regularizers judge the image, not its transformed copy
                value = objective(activations)
                (-value.sum()).backward()
                opt.step()
                history[step] = value.detach().mean()
                if bar is not None:
                    bar.update(1)
                    if step == steps - 1 or step % max(1, steps // 8) == 0:
                        bar.set_postfix(objective=f"{history[step].item():.3g}")
        finally:
            if bar is not None:
                bar.close()
        with torch.no_grad():
            result = image_param().detach()
    if return_history:
        return result, history.cpu()
    return result


def _progress(total: int, enabled: bool, description: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description[:40], leave=False)


def evaluate(model: nn.Module, images: torch.Tensor, objective: Objective | str) -> torch.Tensor:
    """The objective's value for each image (N,), on the images as they are, without gradients.

    >>> evaluate(model, images, channel("blocks.3", 5))
    tensor([12.3])
    """
    objective = as_objective(objective)
    check_images(images)
    with ActivationRunner(model, objective) as runner, torch.no_grad():
        images = images.to(runner.device)
        runner.check(images)
        return objective(runner(images)).detach().cpu()


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur each channel with a Gaussian of ``sigma`` pixels (separable, borders repeated outwards)."""
    radius = max(1, int(2 * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def deepdream(
    model: nn.Module,
    images: torch.Tensor,
    objective: Objective | str,
    octaves: int = 5,
    octave_scale: float = 1.4,
    steps: int | None = None,
    step_size: float = 0.02,
    jitter: int = 32,
    smooth: float = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """DeepDream (Mordvintsev et al. 2015): amplify what ``objective`` sees in a photo, at several scales.

    ``objective`` is usually ``layer("blocks.5")`` (mean of squared activations; a layer name
    alone means that). The photo is shrunk ``octaves - 1`` times by ``octave_scale``; starting
    from the smallest, each octave does ``steps`` gradient-ascent steps, then the details found
    are enlarged onto the next size. One step: roll the image by a random shift of up to
    ``jitter`` pixels (so no pattern can rely on one pixel grid), take the gradient, blur it with
    a Gaussian of ``smooth`` pixels (0: no blur; it removes the colour static a pixel gradient
    carries), divide it by its mean absolute value (the same step whatever the layer's scale)
    and add ``step_size`` times it. ``steps`` defaults to the preset (fast 4, cpu 30, full 50).
    The image stays in [0, 1]; the model runs on its own device and is given back unchanged.
    Returns images like ``images`` (N, 3, H, W) in [0, 1], on the model's device.

    >>> dream = deepdream(model, load_image("china", size=256), layer("blocks.5"))
    """
    if isinstance(objective, str) and ":" not in objective:
        objective = layer_objective(objective)
    objective = as_objective(objective)
    check_images(images)
    if octaves < 1 or octave_scale <= 1:
        raise ValueError(f"need octaves >= 1 and octave_scale > 1, got {octaves} and {octave_scale}")
    steps = pick(fast=4, cpu=30, full=50) if steps is None else steps
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if smooth < 0 or jitter < 0:
        raise ValueError(f"smooth and jitter must be >= 0, got {smooth} and {jitter}")
    rng = random.Random(seed)
    height, width = images.shape[-2:]
    sizes = [(max(8, round(height / octave_scale**k)), max(8, round(width / octave_scale**k)))
             for k in reversed(range(octaves))]

    with ActivationRunner(model, objective) as runner:
        original = images.detach().to(runner.device, torch.float32)
        runner.check(F.interpolate(original, size=sizes[0], mode="bilinear", align_corners=False, antialias=True))
        detail = torch.zeros_like(original[:, :, : sizes[0][0], : sizes[0][1]])
        bar = _progress(steps * octaves, progress, f"deepdream {objective.name}")
        try:
            for size in sizes:
                base = F.interpolate(original, size=size, mode="bilinear", align_corners=False, antialias=True)
                detail = F.interpolate(detail, size=size, mode="bilinear", align_corners=False)
                dream = (base + detail).clamp(0, 1)
                for _ in range(steps):
                    dream.requires_grad_(True)
                    shift = (rng.randint(-jitter, jitter), rng.randint(-jitter, jitter)) if jitter else (0, 0)
                    activations = runner(torch.roll(dream, shift, dims=(2, 3)))
                    activations[INPUT] = dream
                    (gradient,) = torch.autograd.grad(objective(activations).sum(), dream)
                    with torch.no_grad():
                        if smooth > 0:
                            gradient = _gaussian_blur(gradient, smooth)
                        # Normalized step: the same step size whatever the layer's scale.
                        scale = gradient.abs().flatten(1).mean(1).clamp(min=1e-8).view(-1, 1, 1, 1)
                        dream = (dream + step_size * gradient / scale).clamp(0, 1)
                    if bar is not None:
                        bar.update(1)
                detail = dream.detach() - base
        finally:
            if bar is not None:
                bar.close()
    return dream.detach()
