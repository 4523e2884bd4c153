"""Exercises of notebook 04 (activation maximization): a lower learning rate, one fix alone, regularizers
instead of transforms, two units at once, probability vs logit.

Every check renders its own reference with the same settings (``render`` is seeded, so the same call gives
the same picture on the same device) and judges the learner's picture by what it measures: the share of
high-frequency power, the total variation, the channels' activations, the class logit.
"""
from __future__ import annotations

import functools

import torch

from ..featurevis import channel, class_logit, class_probability, evaluate, fourier, pixels, render, total_variation
from ..models import load_model
from . import Exercise, register


@functools.lru_cache(maxsize=1)
def _offline_model():
    return load_model("efficientnet_lite0", verbose=False)


def _context() -> dict:
    # Tiny on purpose: the tests run every check; the notebook passes its own LAYER, CHANNEL, SIZE, STEPS.
    return {"model": _offline_model(), "layer_name": "blocks.3", "channel_index": 11, "size": 48, "steps": 12}


def high_frequency_share(images: torch.Tensor) -> float:
    """Share of the image's power (mean removed) above 1/4 cycle per pixel: noise scores high, smooth pictures low."""
    images = images.detach().float().cpu()
    power = torch.fft.fft2(images - images.mean((2, 3), keepdim=True)).abs().pow(2).mean((0, 1))
    fy = torch.fft.fftfreq(power.shape[0])[:, None]
    fx = torch.fft.fftfreq(power.shape[1])[None, :]
    return (power[(fx**2 + fy**2).sqrt() > 0.25].sum() / power.sum()).item()


def _image(answer, what: str) -> torch.Tensor:
    assert isinstance(answer, torch.Tensor), f"return the rendered images (a tensor), got {type(answer).__name__}"
    assert answer.dim() == 4 and answer.shape[:2] == (1, 3), f"expected one image (1, 3, H, W), got {tuple(answer.shape)}: {what}"
    return answer


def _same_picture(answer, reference, what: str) -> None:
    assert answer.shape == reference.shape, f"expected shape {tuple(reference.shape)}, got {tuple(answer.shape)}"
    gap = (answer.to(reference.device) - reference).abs().max().item()
    assert gap < 1e-3, f"your picture differs from {what} by up to {gap:.3g} per pixel; check the settings (seed 0, size, steps)"


# --- 04.1 a lower learning rate -----------------------------------------------------------------------


def solution_1(model, layer_name, channel_index, size, steps):
    """The naive render (pixels, no transforms) with lr 0.01 instead of 0.05, and twice the steps."""
    return render(model, channel(layer_name, channel_index), param=pixels(), transforms=None,
                  lr=0.01, steps=2 * steps, image_size=size, progress=False)


def wrong_1_naive(model, layer_name, channel_index, size, steps):
    """The learning rate left at 0.05: the naive render as it was."""
    return render(model, channel(layer_name, channel_index), param=pixels(), transforms=None,
                  lr=0.05, steps=2 * steps, image_size=size, progress=False)


def check_1(answer, model, layer_name, channel_index, size, steps):
    answer = _image(answer, "the naive render with lr=0.01")
    objective = channel(layer_name, channel_index)
    slow = solution_1(model, layer_name, channel_index, size, steps)
    fast = render(model, objective, param=pixels(), transforms=None, lr=0.05, steps=steps, image_size=size, progress=False)
    _same_picture(answer, slow, "the naive render with lr=0.01 and 2 x steps (param=pixels(), transforms=None, lr=0.01, steps=2 * steps)")
    share_slow, share_fast = high_frequency_share(slow), high_frequency_share(fast)
    photo_like = 0.05  # a photo keeps only a few per cent of its power above 1/4 cycle per pixel
    assert share_slow > photo_like, "unexpected: the lower learning rate gave a smooth picture"
    return (f"high-frequency share {share_slow:.2f} at lr 0.01 vs {share_fast:.2f} at lr 0.05 (a photo: a few per cent): "
            "still noise. The learning rate sets how fast the pixels move, not which direction the gradient points.")


register(Exercise(
    id="04.1", title="Lower the learning rate", check=check_1, solution=solution_1, wrong=wrong_1_naive,
    make_context=_context,
    answer="No, it stays noise: the share of power at high frequencies stays far above a photo's. A smaller step "
           "follows the same pixel gradient, which is dominated by high frequencies; only a different "
           "parameterization or transforms change what the steps point at.",
))


# --- 04.2 only one fix --------------------------------------------------------------------------------


def solution_2(model, layer_name, channel_index, size, steps):
    """The Fourier parameterization (decorrelated colours) without any transforms."""
    return render(model, channel(layer_name, channel_index), param=fourier(), transforms=None,
                  steps=steps, image_size=size, progress=False)


def wrong_2_transforms_only(model, layer_name, channel_index, size, steps):
    """The other fix: transforms on pixels (stage 2 of the notebook), not the Fourier parameterization."""
    return render(model, channel(layer_name, channel_index), param=pixels(), transforms="standard",
                  steps=steps, image_size=size, progress=False)


def check_2(answer, model, layer_name, channel_index, size, steps):
    answer = _image(answer, "the Fourier render without transforms")
    objective = channel(layer_name, channel_index)
    reference = solution_2(model, layer_name, channel_index, size, steps)
    _same_picture(answer, reference, "render(..., param=fourier(), transforms=None)")
    naive = render(model, objective, param=pixels(), transforms=None, steps=steps, image_size=size, progress=False)
    share, share_naive = high_frequency_share(reference), high_frequency_share(naive)
    assert share < share_naive, "unexpected: the Fourier picture has more high-frequency power than the naive one"
    return (f"high-frequency share {share:.2f} with fourier() alone vs {share_naive:.2f} naive: the parameterization "
            "alone removes most of the static; the transforms then remove the patterns tied to one pixel grid.")


register(Exercise(
    id="04.2", title="Only one fix", check=check_2, solution=solution_2, wrong=wrong_2_transforms_only,
    make_context=_context,
    answer="fourier() alone already moves the power to low frequencies (a smaller high-frequency share than the "
           "naive picture); transforms alone keep pixel steps and so keep much of the static. Each fixes a "
           "different thing: the parameterization what one step can change, the transforms what pays off.",
))


# --- 04.3 regularizers instead of transforms ----------------------------------------------------------


def solution_3(model, layer_name, channel_index, size, steps):
    """The 2015-era fix: a total-variation penalty, subtracted from the objective; pixels, no transforms."""
    objective = channel(layer_name, channel_index) - 300 * total_variation()
    return render(model, objective, param=pixels(), transforms=None, steps=steps, image_size=size, progress=False)


def wrong_3_added(model, layer_name, channel_index, size, steps):
    """The penalty added instead of subtracted: it then rewards jagged images."""
    objective = channel(layer_name, channel_index) + 300 * total_variation()
    return render(model, objective, param=pixels(), transforms=None, steps=steps, image_size=size, progress=False)


def check_3(answer, model, layer_name, channel_index, size, steps):
    answer = _image(answer, "the render with a total-variation penalty")
    naive = render(model, channel(layer_name, channel_index), param=pixels(), transforms=None, steps=steps,
                   image_size=size, progress=False)
    variation = evaluate(model, answer, total_variation()).item()
    naive_variation = evaluate(model, naive, total_variation()).item()
    assert variation < 0.8 * naive_variation, (
        f"total variation {variation:.4f}, not below the naive picture's {naive_variation:.4f}: a penalty is "
        "subtracted from the objective (objective - 300 * total_variation()), since render maximizes"
    )
    value = evaluate(model, answer, channel(layer_name, channel_index)).item()
    start = evaluate(model, torch.full_like(answer, 0.5), channel(layer_name, channel_index)).item()
    assert value > start, f"the channel's activation {value:.2f} did not rise above a grey image's {start:.2f}"
    return (f"total variation {variation:.4f} vs {naive_variation:.4f} naive, channel activation {value:.2f}: "
            "smoother, still exciting the channel.")


register(Exercise(
    id="04.3", title="Regularizers instead of transforms", check=check_3, solution=solution_3, wrong=wrong_3_added,
    make_context=_context,
    answer="Subtracting lambda * total_variation() lowers the image's total variation well below the naive "
           "picture's while the channel still rises: smoother, but blurrier and less structured than stage 4, "
           "because a penalty only says 'be smooth', not 'be robust'.",
))


# --- 04.4 two units at once ---------------------------------------------------------------------------


def _two_context() -> dict:
    context = _context()
    context.pop("channel_index")
    context["channels"] = (11, 4)
    return context


def solution_4(model, layer_name, channels, size, steps):
    """One objective, the sum of the two channels' mean activations."""
    first, second = channels
    return render(model, channel(layer_name, first) + channel(layer_name, second), steps=steps, image_size=size,
                  progress=False)


def wrong_4_first_only(model, layer_name, channels, size, steps):
    """Only the first channel."""
    return render(model, channel(layer_name, channels[0]), steps=steps, image_size=size, progress=False)


def check_4(answer, model, layer_name, channels, size, steps):
    answer = _image(answer, "the render of the two channels together")
    first, second = channels
    alone = {k: render(model, channel(layer_name, k), steps=steps, image_size=size, progress=False) for k in channels}
    both = {k: evaluate(model, answer, channel(layer_name, k)).item() for k in channels}
    other = {first: evaluate(model, alone[second], channel(layer_name, first)).item(),
             second: evaluate(model, alone[first], channel(layer_name, second)).item()}
    for k in channels:
        assert both[k] > other[k] + 1e-3, (
            f"channel {k} is {both[k]:.2f} on your picture, not above {other[k]:.2f} on the picture of the other "
            "channel alone: the objective should be the sum channel(...) + channel(...)"
        )
    own = {k: evaluate(model, alone[k], channel(layer_name, k)).item() for k in channels}
    return (f"channel {first}: {both[first]:.2f} (alone {own[first]:.2f}), channel {second}: {both[second]:.2f} "
            f"(alone {own[second]:.2f}): the picture serves both, each a little less than its own picture.")


register(Exercise(
    id="04.4", title="Two units at once", check=check_4, solution=solution_4, wrong=wrong_4_first_only,
    make_context=_two_context,
    answer="The sum excites both channels more than the other channel's picture does, and each somewhat less "
           "than its own picture: the features are mixed (often side by side, in different regions), which is "
           "what Olah et al. 2017 call the interaction between neurons.",
))


# --- 04.5 probability vs logit ------------------------------------------------------------------------


def _class_context() -> dict:
    context = _context()
    for key in ("layer_name", "channel_index"):
        context.pop(key)
    context["class_name"] = "lemon"
    return context


def solution_5(model, class_name, size, steps):
    """Render each objective, then read the logit S_c (not the probability) on both pictures."""
    from_probability = render(model, class_probability(class_name), steps=steps, image_size=size, progress=False)
    from_logit = render(model, class_logit(class_name), steps=steps, image_size=size, progress=False)
    score = class_logit(class_name)
    return evaluate(model, from_probability, score).item(), evaluate(model, from_logit, score).item()


def wrong_5_probabilities(model, class_name, size, steps):
    """The probabilities p_c read on both pictures, instead of the logits S_c."""
    from_probability = render(model, class_probability(class_name), steps=steps, image_size=size, progress=False)
    from_logit = render(model, class_logit(class_name), steps=steps, image_size=size, progress=False)
    score = class_probability(class_name)
    return evaluate(model, from_probability, score).item(), evaluate(model, from_logit, score).item()


def check_5(answer, model, class_name, size, steps):
    assert isinstance(answer, (tuple, list)) and len(answer) == 2, "return two numbers: (S_c on the probability picture, S_c on the logit picture)"
    expected = solution_5(model, class_name, size, steps)
    for got, want, what in zip(answer, expected, ("probability", "logit")):
        assert abs(float(got) - want) <= 1e-3 * max(1.0, abs(want)), (
            f"S_c on the {what} picture: you give {float(got):.3f}, we measure {want:.3f}. Read the logit with "
            "evaluate(model, images, class_logit(name)), not the probability."
        )
    winner = "logit" if expected[1] > expected[0] else "probability"
    return (f"S_c = {expected[0]:.2f} on the probability picture, {expected[1]:.2f} on the logit picture: the {winner} "
            "objective gives more of the class itself.")


register(Exercise(
    id="04.5", title="Probability vs logit", check=check_5, solution=solution_5, wrong=wrong_5_probabilities,
    make_context=_class_context,
    answer="The logit picture reaches the higher S_c: maximizing p_c = softmax(f(x))_c can also lower the other "
           "classes' logits, so part of the effort goes into 'not the others' instead of into the class.",
))
