"""Exercises of notebook 03 (integrated gradients), each with a self-check, our solution and a typical mistake.

* 03.1 Black or blurred baseline: the completeness error against m for each, and the dark pixels' share.
* 03.2 Saturation for the second class: does the runner-up class saturate too?
* 03.3 The trapezoid rule done right: weights 1/(m - 1), error falling like 1/m^2 on a smooth score.
* 03.4 The forgotten (x - x') factor: an IG that is right for every baseline, checked with one that is not black.
* 03.5 Another layer: layer IG completes on a whole stage, not on a layer inside a residual block.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from ..attribution import integrated_gradients, integration_points, layer_integrated_gradients, make_baseline, path_profile
from . import Exercise, register

#: The photo and size every exercise's test uses (the notebook passes its own photo instead).
_TEST_PHOTO, _TEST_SIZE = "chelsea", 64


@lru_cache(maxsize=1)
def _model():
    from ..models import load_model

    return load_model("efficientnet_lite0", verbose=False)


def _photo(size: int = _TEST_SIZE) -> torch.Tensor:
    from ..images import load_images

    return load_images([_TEST_PHOTO], size=size)


def _top_class(model, image) -> int:
    with torch.no_grad():
        return int(model(image)[0].argmax())


def _key(model, image, *rest):
    """A cache key for results that depend on the model, the image and a few plain values.

    The model counts by identity: the notebook's model and the tests' cached one live as long as the session.
    """
    return (id(model), tuple(image.shape), float(image.double().sum()), float((image.double() ** 2).sum()), *rest)


_CACHE: dict = {}


def _cached(key, compute):
    if key not in _CACHE:
        if len(_CACHE) > 256:
            _CACHE.clear()
        _CACHE[key] = compute()
    return _CACHE[key]


# ----------------------------------------------------------------------------- 03.1 black or blurred baseline


def _signed_error(model, image, target, kind, n_steps, batch_size=64):
    """Delta / (S_c(x) - S_c(x')) of Gauss-Legendre IG with ``n_steps`` points, with its sign, and the attributions."""

    def compute():
        baseline = make_baseline(image, kind)
        attributions, delta = integrated_gradients(model, image, target, baselines=baseline, n_steps=n_steps,
                                                   batch_size=batch_size, return_delta=True, progress=False)
        with torch.no_grad():
            gap = model(image)[0, target] - model(baseline)[0, target]
        return float(delta / gap), attributions

    return _cached(_key(model, image, "ig", target, kind, n_steps), compute)


def _relative_error(model, image, target, kind, n_steps, batch_size=64):
    """|Delta| / |S_c(x) - S_c(x')| of Gauss-Legendre IG with ``n_steps`` points, and the attributions."""
    error, attributions = _signed_error(model, image, target, kind, n_steps, batch_size)
    return abs(error), attributions


def _dark_share(attributions, image, share=0.1):
    """The fraction of sum |phi_i| (channels summed) that lands on the darkest ``share`` of the pixels."""
    brightness = image[0].mean(0)
    dark = brightness <= brightness.flatten().quantile(share)
    amount = attributions[0].abs().sum(0)
    return float(amount[dark].sum() / amount.sum())


def _ex1_context():
    model = _model()
    photo = _photo()
    return {"model": model, "image": photo, "target": _top_class(model, photo), "steps": (4, 16, 128)}


def _ex1_solution(model, image, target, steps):
    brightness = image[0].mean(0)
    dark = brightness <= brightness.flatten().quantile(0.1)              # the darkest 10 % of the pixels
    answer = {}
    for kind in ("black", "blur"):
        baseline = make_baseline(image, kind)
        with torch.no_grad():
            gap = model(image)[0, target] - model(baseline)[0, target]   # S_c(x) - S_c(x')
        errors = []
        for m in steps:
            attributions, delta = integrated_gradients(model, image, target, baselines=baseline, n_steps=m,
                                                       return_delta=True, progress=False)
            errors.append(float(delta.abs() / gap.abs()))
        amount = attributions[0].abs().sum(0)                            # at the largest m
        answer[kind] = {"errors": errors, "dark_share": float(amount[dark].sum() / amount.sum())}
    return answer


def _ex1_wrong(model, image, target, steps):
    # The absolute value forgotten: a negative Delta looks "below 1 %" at once. (The IG runs are the check's own,
    # cached: the mistake is in the bookkeeping, not in the integrals.)
    answer = {}
    for kind in ("black", "blur"):
        errors = [_signed_error(model, image, target, kind, m)[0] for m in steps]
        answer[kind] = {"errors": errors, "dark_share": _dark_share(_signed_error(model, image, target, kind, steps[-1])[1],
                                                                       image)}
    return answer


def _first_below(errors, steps, bound=0.01):
    return next((m for m, error in zip(steps, errors) if error < bound), None)


def _ex1_check(value, model, image, target, steps):
    assert isinstance(value, dict) and set(value) == {"black", "blur"}, (
        "return a dict {'black': {...}, 'blur': {...}}, one entry per baseline")
    found = {}
    for kind in ("black", "blur"):
        entry = value[kind]
        assert isinstance(entry, dict) and {"errors", "dark_share"} <= set(entry), (
            f"value[{kind!r}] should be {{'errors': [one per m], 'dark_share': a fraction}}")
        errors = [float(e) for e in entry["errors"]]
        assert len(errors) == len(steps), f"{kind}: give one error for each m in {tuple(steps)}"
        reference = [_relative_error(model, image, target, kind, m)[0] for m in steps]
        for m, error, expected in zip(steps, errors, reference):
            assert abs(error - expected) <= 1e-3 * expected + 1e-5, (
                f"{kind}, m = {m}: |Delta| / |S_c(x) - S_c(x')| is {expected:.3%}, not {error:.3%}. "
                "Take the absolute value of Delta and divide by the absolute gap.")
        share = _dark_share(_relative_error(model, image, target, kind, steps[-1])[1], image)
        assert abs(float(entry["dark_share"]) - share) < 0.01, (
            f"{kind}: the darkest 10 % of the pixels get {share:.1%} of sum |phi_i| at m = {steps[-1]}, "
            f"not {float(entry['dark_share']):.1%}")
        found[kind] = (_first_below(reference, steps), share)
    return "; ".join(f"{kind}: first below 1 % at m = {m}, darkest pixels {share:.1%}"
                     for kind, (m, share) in found.items())


register(Exercise(
    id="03.1",
    title="black or blurred baseline",
    check=_ex1_check,
    solution=_ex1_solution,
    wrong=_ex1_wrong,
    make_context=_ex1_context,
    answer="""For each m, |Delta| / |S_c(x) - S_c(x')| with Gauss-Legendre IG. The blurred baseline gets below 1 %
    at a smaller m than black (on the test photo at 64 px: m = 16 against m = 128): from black the score jumps
    within the first percent of the path, and a few points resolve that spike badly. Neither error falls
    steadily - the network is piecewise linear, so where the points land matters. The darkest 10 % of the pixels
    get about 5 % of sum |phi_i| from the black baseline (their x_i - x'_i is close to zero) and over 20 % from the
    blurred one, which has no such blind spot.""",
))


# ----------------------------------------------------------------------------- 03.2 saturation, second class


def _early_share(profile, until=0.15):
    last = int((profile.alphas <= until + 1e-6).nonzero().max())
    return float((profile.scores[last] - profile.scores[0]) / (profile.scores[-1] - profile.scores[0]))


def _ex2_context():
    model = _model()
    return {"model": model, "image": _photo(), "n_points": 21}


def _ex2_solution(model, image, n_points):
    with torch.no_grad():
        second = int(model(image)[0].topk(2).indices[1])             # the runner-up class
    profile = path_profile(model, image, second, n_points=n_points, progress=False)
    last = int((profile.alphas <= 0.15 + 1e-6).nonzero().max())      # the last point with alpha <= 0.15
    share = float((profile.scores[last] - profile.scores[0]) / (profile.scores[-1] - profile.scores[0]))
    return {"class": second, "early_share": share, "saturates": share > 0.5}


def _ex2_wrong(model, image, n_points):
    with torch.no_grad():
        first = int(model(image)[0].topk(2).indices[0])              # the top class, not the second
    share = _early_share(path_profile(model, image, first, n_points=n_points, progress=False))
    return {"class": first, "early_share": share, "saturates": share > 0.5}


def _ex2_check(value, model, image, n_points):
    assert isinstance(value, dict) and {"class", "early_share", "saturates"} <= set(value), (
        "return {'class': c, 'early_share': a fraction, 'saturates': True or False}")
    with torch.no_grad():
        ranking = model(image)[0].topk(2).indices.tolist()
    assert int(value["class"]) == ranking[1], (
        f"the second most probable class is {ranking[1]}, not {value['class']} (the top class is {ranking[0]}): "
        "logits[0].topk(2).indices[1]")
    share = _cached(_key(model, image, "profile", ranking[1], n_points),
                    lambda: _early_share(path_profile(model, image, ranking[1], n_points=n_points, progress=False)))
    assert abs(float(value["early_share"]) - share) < 0.02, (
        f"the logit of class {ranking[1]} rises by {share:.0%} of S_c(x) - S_c(x') up to alpha = 0.15, "
        f"not {float(value['early_share']):.0%}")
    assert bool(value["saturates"]) == (share > 0.5), (
        f"with {share:.0%} of the rise before alpha = 0.15, 'saturates' should be {share > 0.5}")
    return f"class {ranking[1]}: {share:.0%} of the rise before alpha = 0.15, saturates: {share > 0.5}"


register(Exercise(
    id="03.2",
    title="saturation for the second class",
    check=_ex2_check,
    solution=_ex2_solution,
    wrong=_ex2_wrong,
    make_context=_ex2_context,
    answer="""Take model(image)[0].topk(2).indices[1] and run path_profile for it. The runner-up class of the cat
    photo is another cat (tiger cat), and its logit saturates as well: on the test photo at 64 px it has risen by
    116 % of its final gain by alpha = 0.15 - it overshoots, then comes back - so its plain gradient at the photo
    misses its evidence too.""",
))


# ----------------------------------------------------------------------------- 03.3 the trapezoid rule done right


def smooth_completeness_error(alphas, weights, image) -> float:
    """|Delta| of IG with these points and weights for the smooth score S(x) = sum_i sin(x_i), baseline black.

    Along the straight path from 0 to x the slope is dS/d alpha = sum_i x_i cos(alpha x_i): smooth, so each rule
    keeps its textbook order (unlike a ReLU network, whose slope is a step function).
    """
    x = image.detach().double().flatten()
    alphas = torch.as_tensor(alphas, dtype=torch.float64).flatten()
    weights = torch.as_tensor(weights, dtype=torch.float64).flatten()
    gradients = torch.cos(alphas[:, None] * x[None, :])              # dS/dx_i at each path point
    attributions = x * (weights[:, None] * gradients).sum(0)         # phi_i = (x_i - 0) * sum_s w_s dS/dx_i
    return float((attributions.sum() - torch.sin(x).sum()).abs())


def _ex3_context():
    return {"image": _photo(), "steps": (8, 16, 32, 64)}


def _ex3_solution(image, steps):
    rules = {}
    for m in steps:
        alphas = torch.linspace(0, 1, m, dtype=torch.float64)        # both ends of the path
        weights = torch.full((m,), 1 / (m - 1), dtype=torch.float64)  # m points, m - 1 slices of width 1/(m - 1)
        weights[0] /= 2
        weights[-1] /= 2
        rules[m] = (alphas, weights)
    return rules


def _ex3_wrong(image, steps):
    # captum's riemann_trapezoid: weights 1/m with the ends halved, so they sum to 1 - 1/m
    return {m: integration_points("riemann_trapezoid", m) for m in steps}


def _ex3_check(value, image, steps):
    assert isinstance(value, dict) and set(value) == set(steps), (
        f"return a dict {{m: (alphas, weights)}} for every m in {tuple(steps)}")
    errors, left = [], []
    for m in steps:
        alphas, weights = (torch.as_tensor(t, dtype=torch.float64).flatten() for t in value[m])
        assert alphas.shape == weights.shape == (m,), f"m = {m}: expected {m} points and {m} weights"
        assert abs(float(alphas[0])) < 1e-12 and abs(float(alphas[-1]) - 1) < 1e-12, (
            f"m = {m}: the trapezoid rule uses both ends of the path, alpha = 0 and alpha = 1")
        assert torch.allclose(alphas.diff(), torch.full((m - 1,), 1 / (m - 1), dtype=torch.float64)), (
            f"m = {m}: the points should be evenly spaced, 1/(m - 1) apart")
        assert abs(float(weights.sum()) - 1) < 1e-12, (
            f"m = {m}: the weights sum to {float(weights.sum()):.6f}, not 1 (captum's trapezoid sums to 1 - 1/m: "
            "use 1/(m - 1), ends halved)")
        errors.append(smooth_completeness_error(alphas, weights, image))
        left.append(smooth_completeness_error(*integration_points("riemann_left", m), image))
    falls = [before / after for before, after in zip(errors, errors[1:])]
    left_falls = [before / after for before, after in zip(left, left[1:])]
    # Doubling m divides an O(h^2) error by about 4 (h = 1/(m - 1): exactly ((2m - 1)/(m - 1))^2, 4.6 at m = 8)
    # and an O(1/m) error by 2.
    assert all(3.5 < ratio < 5 for ratio in falls), (
        f"the error should fall about 4x each time m doubles (1/m^2); it falls {[round(r, 2) for r in falls]}")
    assert all(1.8 < ratio < 2.2 for ratio in left_falls), f"left Riemann rule: {left_falls}"  # the reference rule
    table = ", ".join(f"m={m}: {error:.1e}" for m, error in zip(steps, errors))
    return (f"|Delta| {table}; it falls {min(falls):.2f}-{max(falls):.2f}x per doubling of m (1/m^2), "
            f"the left Riemann rule {min(left_falls):.2f}-{max(left_falls):.2f}x (1/m)")


register(Exercise(
    id="03.3",
    title="the trapezoid rule done right",
    check=_ex3_check,
    solution=_ex3_solution,
    wrong=_ex3_wrong,
    make_context=_ex3_context,
    answer="""m points from alpha = 0 to 1 cut the path into m - 1 slices, so each weight is 1/(m - 1), the two ends
    halved; the weights then sum to 1. On the smooth score sum_i sin(x_i) the error of this rule falls 4x each time
    m doubles (1/m^2), while the left Riemann rule, and captum's trapezoid whose weights sum to 1 - 1/m, only
    halve it (1/m).""",
))


# ----------------------------------------------------------------------------- 03.4 the forgotten (x - x') factor


def _ex4_context():
    model = _model()
    photo = _photo()
    # Not black: with x' = 0 the bug below is invisible, and a check with a black baseline cannot fail.
    return {"model": model, "image": photo, "target": _top_class(model, photo),
            "baseline": make_baseline(photo, "noise", seed=0), "n_steps": 16}


def _ex4_solution(model, image, target, baseline, n_steps):
    alphas, weights = (t.to(image).view(-1, 1, 1, 1) for t in integration_points("gausslegendre", n_steps))
    path = baseline + alphas * (image - baseline)
    path.requires_grad_(True)
    score = model(path)[:, target].sum()
    (gradients,) = torch.autograd.grad(score, path)
    return (image - baseline) * (weights * gradients).sum(dim=0, keepdim=True)     # (x - x'), not x


def _ex4_wrong(model, image, target, baseline, n_steps):
    alphas, weights = (t.to(image).view(-1, 1, 1, 1) for t in integration_points("gausslegendre", n_steps))
    path = (baseline + alphas * (image - baseline)).requires_grad_(True)
    (gradients,) = torch.autograd.grad(model(path)[:, target].sum(), path)
    return image * (weights * gradients).sum(dim=0, keepdim=True)                  # the bug: x, not (x - x')


def _ex4_check(value, model, image, target, baseline, n_steps):
    assert isinstance(value, torch.Tensor) and value.shape == image.shape, (
        f"return the attributions, shape {tuple(image.shape)}")
    assert baseline.abs().amax() > 0, "this check needs a baseline that is not black: with x' = 0, x - x' = x"
    reference, delta = _cached(
        _key(model, image, "ex4", target, _key(model, baseline), n_steps),
        lambda: integrated_gradients(model, image, target, baselines=baseline, n_steps=n_steps,
                                     return_delta=True, progress=False))
    with torch.no_grad():
        gap = float(model(image)[0, target] - model(baseline)[0, target])
    error = float((value.detach() - reference).norm() / reference.norm())
    completeness = abs(float(value.detach().sum()) - gap - float(delta)) / abs(gap)
    assert error < 1e-4, (
        f"your attributions differ from integrated_gradients by {error:.1%} (relative); their sum misses "
        f"S_c(x) - S_c(x') by {completeness:.0%} more than the reference does. Multiply the averaged gradient by "
        "(image - baseline), not by image: the two agree only for a black baseline.")
    return f"equal to integrated_gradients to {error:.0e} with a noise baseline, where x - x' is not x"


register(Exercise(
    id="03.4",
    title="the forgotten (x - x') factor",
    check=_ex4_check,
    solution=_ex4_solution,
    wrong=_ex4_wrong,
    make_context=_ex4_context,
    answer="""Multiply the weighted sum of the gradients by (image - baseline). The buggy version multiplies by
    image; with a black baseline image - baseline = image, so every check with a black baseline passes. This
    check uses a noise baseline, where the two differ and the buggy sum misses S_c(x) - S_c(x') by far.""",
))


# ----------------------------------------------------------------------------- 03.5 another layer

_LAYERS = ("blocks.2", "blocks.5", "blocks.5.1.conv_pwl")


def _layer_relative_error(model, image, target, layer, n_steps):
    def compute():
        _, delta = layer_integrated_gradients(model, image, target, layer, n_steps=n_steps, batch_size=64,
                                              return_delta=True, progress=False)
        with torch.no_grad():
            gap = model(image)[0, target] - model(torch.zeros_like(image))[0, target]
        return float(delta.abs() / gap.abs())

    return _cached(_key(model, image, "layer", target, layer, n_steps), compute)


def _ex5_context():
    model = _model()
    photo = _photo()
    return {"model": model, "image": photo, "target": _top_class(model, photo), "layers": _LAYERS,
            "steps": (16, 64)}


def _ex5_solution(model, image, target, layers, steps):
    with torch.no_grad():
        gap = model(image)[0, target] - model(torch.zeros_like(image))[0, target]   # black baseline
    errors = {}
    for layer in layers:
        errors[layer] = []
        for m in steps:
            _, delta = layer_integrated_gradients(model, image, target, layer, n_steps=m, return_delta=True,
                                                  progress=False)
            errors[layer].append(float(delta.abs() / gap.abs()))
    broken = [layer for layer in layers if min(errors[layer]) > 0.5]     # no number of steps fixes these
    return {"errors": errors, "broken": broken}


def _ex5_wrong(model, image, target, layers, steps):
    # Completeness is a property of the pixels only, so every layer "should" complete: no layer is broken.
    answer = _ex5_solution(model, image, target, layers, steps)
    return {"errors": answer["errors"], "broken": []}


def _ex5_check(value, model, image, target, layers, steps):
    assert isinstance(value, dict) and {"errors", "broken"} <= set(value), (
        "return {'errors': {layer: [one relative error per m]}, 'broken': [layers]}")
    assert set(value["errors"]) == set(layers), f"give the errors of every layer of {layers}"
    lines, broken = [], []
    for layer in layers:
        reference = [_layer_relative_error(model, image, target, layer, m) for m in steps]
        given = [float(e) for e in value["errors"][layer]]
        assert len(given) == len(steps) and all(abs(g - r) <= 0.01 + 0.05 * r for g, r in zip(given, reference)), (
            f"{layer}: |Delta| / |S_c(x) - S_c(x')| is {[f'{r:.1%}' for r in reference]} for m = {tuple(steps)}, "
            f"not {given}")
        if min(reference) > 0.5:
            broken.append(layer)
        lines.append(f"{layer} " + " -> ".join(f"{r:.0%}" for r in reference))
    assert sorted(value["broken"]) == sorted(broken), (
        f"the layers whose completeness error stays above 50 % at every m are {broken}, not {value['broken']}: "
        "completeness of layer IG needs everything after the layer to see the image only through it")
    return "relative completeness errors " + ", ".join(lines) + f"; broken: {broken}"


register(Exercise(
    id="03.5",
    title="another layer",
    check=_ex5_check,
    solution=_ex5_solution,
    wrong=_ex5_wrong,
    make_context=_ex5_context,
    answer="""The whole stages blocks.2 and blocks.5 complete better as m grows: everything after them sees the
    image only through them, and what is left is quadrature error. blocks.5.1.conv_pwl sits inside a residual
    block: the skip connection carries the photo's features around it, so moving only its units from A(x') to
    A(x) does not move the score from S_c(x') to S_c(x). Its attributions miss the gap by about 100 % whatever m,
    so it is the broken one.""",
))
