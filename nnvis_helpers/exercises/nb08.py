"""Exercises of notebook 08 (the building blocks of interpretability), each with a self-check, our solution and a typical mistake.

* 08.1 One semantic-dictionary entry, by hand: the top channels at one position.
* 08.2 Gradient x activation at a layer, by hand: the one-point version of spatial attribution.
* 08.3 Splitting an attribution among neuron groups, by hand.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from ..layers import capture_activations, get_layer
from . import Exercise, register

#: The sizes the tests use (the notebook passes its own photo).
_TEST_SIZE = 96
_LAYER = "blocks.4.0.bn2"


@lru_cache(maxsize=1)
def _model():
    from ..models import load_model

    return load_model("efficientnet_lite0", verbose=False)


@lru_cache(maxsize=1)
def _photo() -> torch.Tensor:
    from ..images import load_image

    return load_image("chelsea", _TEST_SIZE)[0]


@lru_cache(maxsize=1)
def _activations() -> torch.Tensor:
    from ..blocks import layer_view

    return layer_view(_model(), _photo(), _LAYER).activations


# ----------------------------------------------------------------------------- 08.1 one dictionary entry


def _ex1_context():
    return {"activations": _activations(), "row": 2, "column": 3, "k": 4}


def solution_1(activations, row, column, k):
    """The k most active channels at (row, column), most active first, and their values."""
    values, channels = activations[:, row, column].topk(k)
    return channels, values


def wrong_1(activations, row, column, k):
    """Rows and columns swapped: the entry of another place."""
    values, channels = activations[:, column, row].topk(k)
    return channels, values


def check_1(answer, activations, row, column, k):
    assert isinstance(answer, (tuple, list)) and len(answer) == 2, "return two tensors: (channels, values)"
    channels, values = (torch.as_tensor(part).reshape(-1).cpu() for part in answer)
    assert len(channels) == k and len(values) == k, f"return {k} channels and {k} values, got {len(channels)} and {len(values)}"
    expected_values, expected_channels = activations[:, row, column].topk(k)
    if not torch.equal(channels.long(), expected_channels):
        swapped = activations[:, column, row].topk(k).indices
        hint = " — these are the channels at (column, row): activations[:, row, column] indexes rows first" if torch.equal(
            channels.long(), swapped) else " — sort the channels by their activation there, largest first"
        raise AssertionError(f"expected channels {expected_channels.tolist()}, got {channels.long().tolist()}{hint}")
    assert torch.allclose(values.float(), expected_values, atol=1e-5), "the channels are right but not their values"
    return f"channels {channels.long().tolist()}: the entry semantic_dictionary keeps for this place"


register(Exercise(
    id="08.1", title="a dictionary entry, by hand", check=check_1, solution=solution_1, wrong=wrong_1,
    make_context=_ex1_context,
    answer="activations[:, row, column] is the place's activation vector (one value per channel); topk(k) gives its k "
           "largest values and their channel indices, largest first — one entry of the semantic dictionary.",
))


# ----------------------------------------------------------------------------- 08.2 gradient x activation


def _ex2_context():
    model = _model()
    with torch.no_grad():
        target = int(model(_photo()[None]).argmax())
    return {"model": model, "image": _photo(), "layer": _LAYER, "target": target}


def solution_2(model, image, layer, target):
    """A * dS_target/dA at ``layer``, shape (C, H, W), for one photo (3, S, S)."""
    stored = {}

    def keep(_module, _inputs, output):
        stored["A"] = output.detach().requires_grad_(True)   # the weights are frozen: A must ask for its gradient itself
        return stored["A"]

    handle = get_layer(model, layer).register_forward_hook(keep)
    try:
        with torch.enable_grad():
            score = model(image[None].to(next(model.parameters()).device))[0, target]
            (gradient,) = torch.autograd.grad(score, stored["A"])
    finally:
        handle.remove()
    return (stored["A"] * gradient)[0].detach().cpu()


def wrong_2(model, image, layer, target):
    """The gradient alone, without multiplying by the activation."""
    with torch.no_grad(), capture_activations(model, layer) as acts:
        model(image[None].to(next(model.parameters()).device))
    activation = acts[layer][0].cpu()
    product = solution_2(model, image, layer, target)
    return torch.where(activation != 0, product / activation.where(activation != 0, torch.ones_like(activation)), product)


def check_2(answer, model, image, layer, target):
    from ..blocks import spatial_attribution

    expected, delta = spatial_attribution(model, image, layer, target, n_steps=1, method="riemann_right", return_delta=True)
    answer = torch.as_tensor(answer).detach().float().cpu()
    assert answer.shape == expected.shape, f"expected shape {tuple(expected.shape)} (C, H, W), got {tuple(answer.shape)}"
    with torch.no_grad(), capture_activations(model, layer) as acts:
        model(image[None].to(next(model.parameters()).device))
    if not torch.allclose(answer, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item()):
        gradient_only = (answer * acts[layer][0].cpu() - expected).abs().max() <= 1e-4 * expected.abs().max()
        hint = " — this looks like the gradient alone: multiply it by the activation A" if gradient_only else ""
        raise AssertionError(f"largest difference {(answer - expected).abs().max():.2e} from A * dS/dA{hint}")
    gap = expected.sum().item() - delta
    return (f"A * dS/dA, summed: {answer.sum():.2f} against the gap S(A) - S(0) = {gap:.2f} "
            f"({abs(answer.sum().item() - gap) / abs(gap):.0%} off: the network is not linear in A)")


register(Exercise(
    id="08.2", title="gradient x activation at a layer, by hand", check=check_2, solution=solution_2, wrong=wrong_2,
    make_context=_ex2_context, takes_function=False,
    answer="A forward hook keeps the layer's output A; autograd.grad of the class logit with respect to A gives dS/dA; "
           "their product is gradient x activation, IG's integral evaluated at its end point only.",
))


# ----------------------------------------------------------------------------- 08.3 attribution split among groups


def _ex3_context():
    from ..blocks import neuron_groups, spatial_attribution

    groups = neuron_groups(_activations(), 3)
    attributions = spatial_attribution(_model(), _photo(), _LAYER, 281, n_steps=4)
    return {"maps": groups.maps, "directions": groups.directions, "attributions": attributions}


def solution_3(maps, directions, attributions):
    """Each unit's attribution split among the groups by their share of its reconstruction; summed per group."""
    parts = torch.einsum("ghw,gc->gchw", maps, directions)        # every group's part of every unit
    total = parts.sum(0)
    shares = torch.where(total > 0, parts / total.clamp(min=1e-12), torch.zeros_like(parts))
    return (shares * attributions).sum((1, 2, 3))


def wrong_3(maps, directions, attributions):
    """Weighting by the spatial map alone: a group gets the whole vector wherever it is strongest."""
    weights = maps / maps.sum(0, keepdim=True).clamp(min=1e-12)
    return torch.einsum("ghw,chw->g", weights, attributions)


def check_3(answer, maps, directions, attributions):
    from ..blocks import NeuronGroups, group_attribution

    answer = torch.as_tensor(answer).detach().float().reshape(-1).cpu()
    k = len(maps)
    assert len(answer) == k, f"return one number per group ({k}), got {len(answer)}"
    reconstruction = torch.einsum("ghw,gc->chw", maps, directions)
    groups = NeuronGroups(layer="", maps=maps, directions=directions, reconstruction=reconstruction, relative_error=0.0)
    expected = group_attribution(groups, attributions)
    scale = attributions.abs().sum().item()
    if not torch.allclose(answer, expected, atol=1e-4 * scale):
        raise AssertionError(f"expected {expected.numpy().round(3).tolist()}, got {answer.numpy().round(3).tolist()} — "
                             "share each unit (c, i, j) by W[ij, g] H[g, c] over the reconstruction, not by the map alone")
    covered = attributions[reconstruction > 0].sum().item()
    return f"the {k} groups carry {answer.sum():.3f} of {attributions.sum():.3f} ({covered:.3f} on units the groups reconstruct)"


register(Exercise(
    id="08.3", title="splitting an attribution among groups, by hand", check=check_3, solution=solution_3, wrong=wrong_3,
    make_context=_ex3_context,
    answer="einsum('ghw,gc->gchw') gives every group's part of every unit; divide by their sum (where it is positive) to "
           "get shares that add to one, multiply by the attribution and add up per group. The groups' numbers then add "
           "up to the attribution of every unit the factorization reconstructs.",
))
