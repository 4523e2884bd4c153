"""Exercises of notebook 05 (adversarial examples): each with a self-check, our solution and a typical mistake.

The contexts are small (two or three photos at 96 px, a few attack steps) so that every check runs in seconds
on a CPU; the notebook passes its own model and photos, and the checks recompute their reference on those.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from . import Exercise, register

SIZE = 64  # small photos: the checks recompute a reference attack


@functools.lru_cache(maxsize=1)
def _model():
    from ..models import load_model

    return load_model("efficientnet_lite0", verbose=False)


def _photos(names=("chelsea", "coffee")):
    from ..images import load_images

    return load_images(list(names), size=SIZE)


def _predictions(model, images):
    with torch.no_grad():
        return model(images).argmax(dim=1)


# --------------------------------------------------------------------------------------------
# 05.1 — the accuracy curve of the L2 PGD

L2_EPSILONS = (0.0, 0.005, 0.02, 0.1)


def _l2_curve_context():
    return {"model": _model(), "images": _photos(), "epsilons": list(L2_EPSILONS)}


def _l2_curve_solution(model, images, epsilons):
    from nnvis_helpers.adversarial import accuracy_vs_epsilon, pgd

    return accuracy_vs_epsilon(model, images, attack=pgd, epsilons=epsilons, norm="l2", steps=5, seed=0, progress=False)


def _l2_curve_wrong(model, images, epsilons):
    # the L2 radius read as an L-infinity bound: 0.3 is then 76 grey levels per pixel
    from nnvis_helpers.adversarial import accuracy_vs_epsilon, pgd

    return accuracy_vs_epsilon(model, images, attack=pgd, epsilons=epsilons, steps=5, seed=0, progress=False)


def _l2_curve_check(value, model, images, epsilons):
    accuracies = [float(a) for a in value]
    assert len(accuracies) == len(epsilons), f"one accuracy per epsilon: {len(epsilons)} expected, got {len(accuracies)}"
    assert all(0 <= a <= 1 for a in accuracies), f"accuracies are fractions in [0, 1], got {accuracies}"
    reference = _l2_curve_solution(model, images, epsilons)
    # the same attack (5 steps, seed 0) gives the same accuracies: no slack
    assert all(abs(a - r) < 1e-9 for a, r in zip(accuracies, reference)), (
        f"your accuracies {accuracies} vs ours {[round(r, 2) for r in reference]} (PGD, norm='l2', 5 steps, seed 0). "
        "Did you pass norm='l2'? Without it the radius is read as an L-infinity bound, a far larger ball."
    )
    return f"accuracies {[round(a, 2) for a in accuracies]} at L2 radii {list(epsilons)}"


register(
    Exercise(
        id="05.1",
        title="The L2 PGD accuracy curve",
        check=_l2_curve_check,
        solution=_l2_curve_solution,
        wrong=_l2_curve_wrong,
        make_context=_l2_curve_context,
        answer="""accuracy_vs_epsilon passes norm='l2' on to pgd. The accuracy is 1 at radius 0 and falls to 0 at
        an L2 radius far below the L2 length of the 2/255 L-infinity corner (epsilon * sqrt(3 H W): 0.87 at 64 px,
        2.17 at 160 px): the nearest wrong class is much closer than the corner of the cube, as DeepFool showed.""",
    )
)


# --------------------------------------------------------------------------------------------
# 05.2 — random restarts

RESTART_EPSILON = 0.25 / 255  # small, so that the seeds give different losses
RESTART_SEEDS = (0, 1, 2, 3, 4)


def _losses(model, adversarial, labels):
    with torch.no_grad():
        return F.cross_entropy(model(adversarial), labels, reduction="none")


def _restarts_context():
    model, images = _model(), _photos()
    return {"model": model, "images": images, "labels": _predictions(model, images),
            "epsilon": RESTART_EPSILON, "seeds": list(RESTART_SEEDS)}


def _restarts_solution(model, images, labels, epsilon, seeds):
    from nnvis_helpers.adversarial import pgd

    best, best_loss = images.clone(), torch.full((len(images),), -float("inf"))
    for seed in seeds:
        adversarial = pgd(model, images, labels, epsilon, steps=3, seed=seed)
        with torch.no_grad():
            loss = F.cross_entropy(model(adversarial), labels, reduction="none")
        better = loss > best_loss  # per image: keep the run with the highest loss
        best[better], best_loss[better] = adversarial[better], loss[better]
    return best


def _restarts_wrong(model, images, labels, epsilon, seeds):
    # keeps the last run instead of the best one per image
    from nnvis_helpers.adversarial import pgd

    return pgd(model, images, labels, epsilon, steps=3, seed=seeds[-1])


def _restarts_check(value, model, images, labels, epsilon, seeds):
    from nnvis_helpers.adversarial import pgd

    assert isinstance(value, torch.Tensor) and value.shape == images.shape, (
        f"return the adversarial images, shape {tuple(images.shape)}"
    )
    value = value.to(images.device)
    assert (value - images).abs().max() <= epsilon + 1e-6, "an image left the epsilon ball"
    runs = torch.stack([_losses(model, pgd(model, images, labels, epsilon, steps=3, seed=seed), labels) for seed in seeds])
    best = runs.max(dim=0).values
    yours = _losses(model, value, labels)
    assert (yours >= best - 1e-4).all(), (
        f"per image the loss of your images is {yours.tolist()}, but the best of the {len(seeds)} runs reached "
        f"{best.tolist()}: keep, for each image separately, the run with the highest loss."
    )
    gain = (best - runs[0]).mean().item()
    return f"the best of {len(seeds)} restarts raises the loss by {gain:.3f} on average over the first run"


register(
    Exercise(
        id="05.2",
        title="Random restarts",
        check=_restarts_check,
        solution=_restarts_solution,
        wrong=_restarts_wrong,
        make_context=_restarts_context,
        answer="""Run pgd once per seed and keep, per image, the run with the highest cross-entropy. Restarts help
        most when the budget is small and the loss surface is bumpy; at 2/255 one run already fools the network, so
        the gain is small there: a restart is cheap insurance when evaluating a defence, not a new attack.""",
    )
)


# --------------------------------------------------------------------------------------------
# 05.3 — easy and hard targets

TARGET_RANKS = (1, 10, 100, 999)  # 1: the second most likely class; 999: the least likely


def _targets_context():
    model = _model()
    cat = _photos(("chelsea",))
    with torch.no_grad():
        ranking = model(cat)[0].argsort(descending=True)
    return {"model": model, "cat": cat, "targets": [int(ranking[rank]) for rank in TARGET_RANKS], "epsilon": 1 / 255}


def _targets_solution(model, cat, targets, epsilon):
    from nnvis_helpers.adversarial import pgd

    reached = []
    for target in targets:
        adversarial = pgd(model, cat, None, epsilon, steps=5, seed=0, target_class=target)
        with torch.no_grad():
            reached.append(torch.softmax(model(adversarial), dim=1)[0, target].item())
    return reached  # p_t(x + delta), one per target


def _targets_wrong(model, cat, targets, epsilon):
    # the probabilities before the attack: the predictor, not the outcome
    with torch.no_grad():
        return [torch.softmax(model(cat), dim=1)[0, target].item() for target in targets]


def _targets_check(value, model, cat, targets, epsilon):
    reached = [float(p) for p in value]
    assert len(reached) == len(targets), f"one probability per target: {len(targets)} expected"
    reference = _targets_solution(model, cat, targets, epsilon)
    close = all(abs(a - b) <= 0.02 + 0.05 * b for a, b in zip(reached, reference))
    assert close, (
        f"p_t after the attack: yours {[round(p, 3) for p in reached]}, ours {[round(p, 3) for p in reference]} "
        "(targeted pgd, 5 steps, seed 0). Did you attack (target_class=...) before measuring p_t?"
    )
    order = sorted(range(len(targets)), key=lambda k: -reference[k])
    return f"p_t after the attack {[round(p, 3) for p in reached]}; easiest to hardest: targets {[targets[k] for k in order]}"


register(
    Exercise(
        id="05.3",
        title="Easy and hard targets",
        check=_targets_check,
        solution=_targets_solution,
        wrong=_targets_wrong,
        make_context=_targets_context,
        answer="""With the same budget the attack reaches the classes the model already ranks high (the second most
        likely class, a neighbour of 'cat') almost surely, and the least likely class hardly at all: the rank before
        the attack predicts the outcome. The distance to a class's region grows with how unlike the photo it is.""",
    )
)


# --------------------------------------------------------------------------------------------
# 05.4 — a stronger JPEG "defence"


def _jpeg_context():
    model = _model()
    return {"model": model, "images": _photos(("chelsea", "coffee", "rocket")), "quality": 20, "epsilon": 1 / 255}


def _jpeg_solution(model, images, quality, epsilon):
    from nnvis_helpers.adversarial import JPEGCompression, pgd

    pipeline = torch.nn.Sequential(JPEGCompression(quality=quality), model)
    with torch.no_grad():
        bare, defended = model(images).argmax(dim=1), pipeline(images).argmax(dim=1)
    cost = (defended != bare).float().mean().item()  # clean predictions JPEG changes
    adversarial = pgd(pipeline, images, defended, epsilon, steps=5, seed=0)  # through JPEG: BPDA
    with torch.no_grad():
        fooled = (pipeline(adversarial).argmax(dim=1) != defended).float().mean().item()
    return cost, fooled


def _jpeg_wrong(model, images, quality, epsilon):
    # the attack made on the bare model and only tested through JPEG: the non-adaptive attacker
    from nnvis_helpers.adversarial import JPEGCompression, pgd

    pipeline = torch.nn.Sequential(JPEGCompression(quality=quality), model)
    with torch.no_grad():
        bare, defended = model(images).argmax(dim=1), pipeline(images).argmax(dim=1)
    adversarial = pgd(model, images, bare, epsilon, steps=5, seed=0)
    with torch.no_grad():
        fooled = (pipeline(adversarial).argmax(dim=1) != defended).float().mean().item()
    return (defended != bare).float().mean().item(), fooled


def _jpeg_check(value, model, images, quality, epsilon):
    cost, fooled = (float(v) for v in value)
    reference_cost, reference_fooled = _jpeg_solution(model, images, quality, epsilon)
    assert abs(cost - reference_cost) < 1e-9, (
        f"JPEG {quality} changes {reference_cost:.0%} of the clean predictions, you found {cost:.0%}: compare the "
        "pipeline's predictions on the clean photos with the bare model's."
    )
    assert abs(fooled - reference_fooled) < 1e-9, (
        f"the adaptive attack (pgd on the whole pipeline, BPDA) fools {reference_fooled:.0%}, you found {fooled:.0%}. "
        "Attack the pipeline itself, not the bare model."
    )
    return f"JPEG {quality}: costs {cost:.0%} of the clean predictions, and the attack through it still fools {fooled:.0%}"


register(
    Exercise(
        id="05.4",
        title="A stronger JPEG 'defence'",
        check=_jpeg_check,
        solution=_jpeg_solution,
        wrong=_jpeg_wrong,
        make_context=_jpeg_context,
        answer="""Quality 20 changes more clean predictions than quality 50 (on the three 64-px photos of the test: 2 of 3
        against 1 of 3), and the attack made through it (BPDA) still fools most photos (2 of 3 at 1/255 and 5 steps; 3 of 3
        at quality 50). The coarser the JPEG, the worse BPDA's identity approximation, so the attacker needs a few more
        steps or a little more budget, while the clean predictions are already ruined: no quality buys robustness.""",
    )
)


# --------------------------------------------------------------------------------------------
# 05.5 — an ensemble to attack


def _ensemble_context():
    from torchvision.transforms import GaussianBlur

    model = _model()
    # offline there is one network: a blurred-input pipeline plays the second model (in Colab, use VGG-16 or ResNet-50)
    other = torch.nn.Sequential(GaussianBlur(5, sigma=1.0), model)
    return {"first": model, "second": other, "images": _photos(("chelsea", "coffee"))}


def _ensemble_solution(first, second, images):
    class Ensemble(torch.nn.Module):
        def __init__(self, first, second):
            super().__init__()
            self.first, self.second = first, second

        def forward(self, images):
            return (self.first(images) + self.second(images)) / 2  # the mean of the logits

    return Ensemble(first, second)


def _ensemble_wrong(first, second, images):
    class ProbabilityEnsemble(torch.nn.Module):
        def __init__(self, first, second):
            super().__init__()
            self.first, self.second = first, second

        def forward(self, images):  # averages probabilities: pgd's cross-entropy then reads them as logits
            return (self.first(images).softmax(dim=1) + self.second(images).softmax(dim=1)) / 2

    return ProbabilityEnsemble(first, second)


def _ensemble_check(value, first, second, images):
    from nnvis_helpers.adversarial import pgd

    assert isinstance(value, torch.nn.Module), "return a torch.nn.Module (pgd needs a model)"
    with torch.no_grad():
        output = value(images)
        expected = (first(images) + second(images)) / 2
    assert output.shape == expected.shape, f"the ensemble should return logits {tuple(expected.shape)}, got {tuple(output.shape)}"
    assert torch.allclose(output, expected, atol=1e-4, rtol=1e-4), (
        "the ensemble's output should be the mean of the two models' logits (not of their probabilities: "
        "pgd's cross-entropy applies the softmax itself)"
    )
    with torch.no_grad():
        labels = expected.argmax(dim=1)
    adversarial = pgd(value, images, labels, 2 / 255, steps=3, seed=0)
    with torch.no_grad():
        fooled = [(member(adversarial).argmax(dim=1) != member(images).argmax(dim=1)).float().mean().item()
                  for member in (first, second)]
    return f"mean of logits; PGD 2/255 on the ensemble fools the two members on {fooled[0]:.0%} and {fooled[1]:.0%} of the photos"


register(
    Exercise(
        id="05.5",
        title="An ensemble to attack",
        check=_ensemble_check,
        solution=_ensemble_solution,
        wrong=_ensemble_wrong,
        make_context=_ensemble_context,
        answer="""A module whose forward returns the mean of the members' logits; pgd attacks it like any model,
        and its cross-entropy applies the softmax itself (averaging probabilities and feeding them to the
        cross-entropy treats them as logits). Perturbations that fool several models at once transfer better to a
        model none of them is (Liu et al. 2017, Delving into Transferable Adversarial Examples).""",
    )
)
