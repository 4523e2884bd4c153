"""Exercises of notebook 01 (architecture), each with a self-check, our solution and a typical mistake.

* 01.1 The receptive field of an Inception block, by hand from its input's field and its branches.
* 01.2 VGG-16 at 320 px: which numbers of the layer table change, and by how much the multiply-adds grow.
* 01.3 The effective receptive field: the gradient of one unit stays inside its box, and mostly in its centre.
* 01.4 Where the multiply-adds are: the share of EfficientNet-Lite0's 1x1 convolutions, in compute and in parameters.
* 01.5 Dead channels counted by hand with ``capture_activations``, as ``layer_table(images=...)`` counts them.
"""
from __future__ import annotations

import numbers
from functools import lru_cache

import torch
from torch import nn

from ..architecture import layer_table, receptive_field, receptive_field_box
from ..layers import capture_activations
from . import Exercise, register

#: Sizes the tests use (the notebook passes its own 224 px photos and tables).
_TEST_SIZE = 128


@lru_cache(maxsize=1)
def _model():
    from ..models import load_model

    return load_model("efficientnet_lite0", verbose=False)


@lru_cache(maxsize=1)
def _googlenet():
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.googlenet(weights=None, init_weights=False, aux_logits=False).eval()
    return net, layer_table(net, (1, 3, _TEST_SIZE, _TEST_SIZE))


@lru_cache(maxsize=1)
def _vgg():
    import torchvision

    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).eval()
    return vgg, layer_table(vgg)


_TABLES_320: dict = {}


def _table_320(vgg: nn.Module):
    """VGG's table at 320 px, computed once per model (the check and a solution both need it)."""
    if id(vgg) not in _TABLES_320:
        _TABLES_320.clear()
        _TABLES_320[id(vgg)] = (vgg, layer_table(vgg, (1, 3, 320, 320)))
    return _TABLES_320[id(vgg)][1]


def _number(value, what: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    assert isinstance(value, numbers.Real) and not isinstance(value, bool), f"{what} should be a number, got {value!r}"
    return float(value)


# ----------------------------------------------------------------------------- 01.1 an Inception block

_INCEPTION = "inception4a"
_BRANCHES = tuple(f"{_INCEPTION}.branch{i}" for i in range(1, 5))


def _ex1_context():
    net, table = _googlenet()
    return {"net": net, "table": table}


def _ex1_solution(net, table):
    entering = receptive_field(net, "maxpool3", table=table)   # the field of what enters inception4a
    r, j = entering.size[0], entering.jump[0]
    fields = {
        "inception4a.branch1": r,                 # 1x1 only: the field does not grow
        "inception4a.branch2": r + (3 - 1) * j,   # 1x1, then 3x3: r + (k - 1) j
        "inception4a.branch3": r + (3 - 1) * j,   # torchvision uses 3x3 here (the paper: 5x5)
        "inception4a.branch4": r + (3 - 1) * j,   # 3x3 max pooling (stride 1), then 1x1
    }
    fields["inception4a"] = max(fields.values())  # torch.cat of the branches: the union of their fields
    return fields


def _ex1_wrong(net, table):
    # Branches treated as if they ran one after the other: their growths add up.
    fields = _ex1_solution(net, table)
    entering = receptive_field(net, "maxpool3", table=table).size[0]
    fields["inception4a"] = entering + sum(fields[name] - entering for name in _BRANCHES)
    return fields


def _ex1_check(value, net, table):
    assert isinstance(value, dict), f"return a dict {{layer name: field size in pixels}}, got {type(value).__name__}"
    wanted = (_INCEPTION, *_BRANCHES)
    missing = [name for name in wanted if name not in value]
    assert not missing, f"the dict needs the sizes of {', '.join(missing)}"
    for name in wanted:
        size = _number(value[name], f"the field of {name}")
        true = receptive_field(net, name, table=table).size[0]
        assert size == true, (
            f"{name}: you have {size:g} px, the table says {true} px. "
            + ("A block that concatenates its branches sees what its widest branch sees (the union), not the sum."
               if name == _INCEPTION else "Use r + (k - 1) j with the field of maxpool3 and the kernels in print(net.inception4a).")
        )
    return f"inception4a sees {value[_INCEPTION]:g} px: its widest branch; the 1x1 branch only {value[_BRANCHES[0]]:g} px."


register(Exercise(
    id="01.1", title="The receptive field of an Inception block",
    check=_ex1_check, solution=_ex1_solution, wrong=_ex1_wrong, make_context=_ex1_context,
    answer="""The units entering inception4a (after maxpool3) see 75 x 75 px, 16 px apart. The 1x1 branch keeps 75 px;
    each branch with a 3x3 kernel (convolution, or the stride-1 max pooling) adds (3 - 1) x 16 = 32 px: 107 px.
    torch.cat puts the branches side by side, so a unit of the block sees the union of what they see: 107 px, the
    widest branch, not the sum. describe_layer(net, "inception4a") says the same.""",
))


# ----------------------------------------------------------------------------- 01.2 VGG-16 at 320 px

_COLUMNS = ("output_shape", "receptive_field", "parameters", "macs")


def _ex2_context():
    vgg, table = _vgg()
    return {"vgg": vgg, "table_224": table}


def _ex2_solution(vgg, table_224):
    table_320 = layer_table(vgg, (1, 3, 320, 320))
    changed = set()
    for row_224 in table_224:
        if not row_224.name.startswith("features"):
            continue
        row_320 = table_320.row(row_224.name)
        for column in ("output_shape", "receptive_field", "parameters", "macs"):
            if getattr(row_224, column) != getattr(row_320, column):
                changed.add(column)
    ratio = table_320.row("features").macs / table_224.row("features").macs
    return {"changed": changed, "macs_ratio": ratio}


def _ex2_wrong(vgg, table_224):
    # "A bigger image, a bigger field": the field size does not depend on the image.
    return {"changed": {"output_shape", "receptive_field", "macs"}, "macs_ratio": 320 / 224}


def _ex2_check(value, vgg, table_224):
    assert isinstance(value, dict) and {"changed", "macs_ratio"} <= set(value), (
        "return {'changed': a set of column names, 'macs_ratio': a number}"
    )
    changed = set(value["changed"])
    unknown = changed - set(_COLUMNS)
    assert not unknown, f"unknown column names {sorted(unknown)}; choose among {list(_COLUMNS)}"
    table_320 = _table_320(vgg)
    true = {
        column
        for row in table_224
        if row.name.startswith("features")
        for column in _COLUMNS
        if getattr(row, column) != getattr(table_320.row(row.name), column)
    }
    assert changed == true, (
        f"for the layers of vgg.features you have {sorted(changed)}, the tables differ in {sorted(true)}. "
        "Sizes, strides and starts of a field follow from kernels, strides and paddings only."
    )
    ratio = _number(value["macs_ratio"], "macs_ratio")
    true_ratio = table_320.row("features").macs / table_224.row("features").macs
    assert abs(ratio - true_ratio) < 1e-9 * true_ratio, (
        f"the multiply-adds of vgg.features grow {true_ratio:.4f} times, you have {ratio:.4f}: "
        "each output value costs the same, and there are (320/224)^2 times more of them."
    )
    return f"only {sorted(true)} change; the convolutions cost {true_ratio:.3f} x more = (320/224)^2."


register(Exercise(
    id="01.2", title="VGG-16 at 320 px: which numbers change",
    check=_ex2_check, solution=_ex2_solution, wrong=_ex2_wrong, make_context=_ex2_context,
    answer="""In vgg.features only the output shapes and the multiply-adds change. The receptive field (size, stride,
    start) of a unit follows from the kernels, strides and paddings alone, so features.28 still sees 196 px, 16 px
    apart; there are just more units (20 x 20 instead of 14 x 14). Parameters do not depend on the image. Each output
    value costs the same, so the multiply-adds grow like the number of positions: (320/224)^2 = 2.04 times.""",
))


# ----------------------------------------------------------------------------- 01.3 the effective receptive field

_ERF_LAYER = "blocks.3.0"


def _ex3_context():
    from ..images import load_image

    return {"model": _model(), "image": load_image("chelsea", size=_TEST_SIZE)}


def _centre_gradient(model, image, whole_layer=False):
    image = image.detach().clone().requires_grad_(True)
    with capture_activations(model, _ERF_LAYER, detach=False) as activations:
        model(image)
    A = activations[_ERF_LAYER]
    i, j = A.shape[2] // 2, A.shape[3] // 2
    score = A[0].sum() if whole_layer else A[0, :, i, j].sum()
    (gradient,) = torch.autograd.grad(score, image)
    return gradient[0].abs().sum(0)


def _ex3_solution(model, image):
    image = image.detach().clone().requires_grad_(True)
    with capture_activations(model, "blocks.3.0", detach=False) as activations:
        model(image)
    A = activations["blocks.3.0"]                        # (1, 80, H/16, W/16)
    i, j = A.shape[2] // 2, A.shape[3] // 2              # the centre unit
    (gradient,) = torch.autograd.grad(A[0, :, i, j].sum(), image)
    return gradient[0].abs().sum(0)                      # |d unit / d pixel|, colours summed: (H, W)


def _ex3_wrong(model, image):
    # The whole layer's sum: every unit's gradient at once, no longer one unit's field.
    return _centre_gradient(model, image, whole_layer=True)


def _ex3_check(value, model, image):
    assert isinstance(value, torch.Tensor), f"return a tensor (H, W), got {type(value).__name__}"
    size = tuple(image.shape[-2:])
    assert tuple(value.shape) == size, f"the map should be (H, W) = {size}, got {tuple(value.shape)}"
    value = value.detach().to("cpu", torch.float64)
    true = _centre_gradient(model, image).to("cpu", torch.float64)
    table = layer_table(model, (1, 3, *size))
    H, W = table.row(_ERF_LAYER).output_shape[2:]
    top, left, bottom, right = receptive_field_box(model, _ERF_LAYER, H // 2, W // 2, table=table)
    outside = value.clone()
    outside[top:bottom, left:right] = 0
    assert outside.abs().max() == 0, (
        f"your map is non-zero outside the receptive field box {(top, left, bottom, right)} of the centre unit: "
        "take the gradient of that one unit (A[0, :, i, j].sum()), not of the whole layer."
    )
    assert torch.allclose(value, true, rtol=1e-3, atol=1e-6 * float(true.max())), (
        "inside the box your map differs from |d unit / d pixel| summed over the colours; "
        "did you take the absolute value before summing the three colour channels?"
    )
    field = receptive_field(model, _ERF_LAYER, table=table)
    cy, cx = field.center(H // 2, W // 2)
    quarter = field.size[0] / 4
    centre = value[max(int(cy - quarter), 0): int(cy + quarter) + 1, max(int(cx - quarter), 0): int(cx + quarter) + 1]
    share = float(centre.sum() / value.sum())
    return (f"all of the gradient lies in the {field.size[0]} px box, and {share:.0%} of it in its central "
            f"{field.size[0] // 2} px, a quarter of the area: the effective field is much smaller.")


register(Exercise(
    id="01.3", title="The effective receptive field",
    check=_ex3_check, solution=_ex3_solution, wrong=_ex3_wrong, make_context=_ex3_context,
    answer="""The gradient of the centre unit of blocks.3.0 is zero outside its 83 px receptive field box (the box is
    exact), but it is far from uniform inside: about 93 % of |d unit / d pixel| falls in the central half-size box,
    a quarter of the area. This is Luo et al.'s effective receptive field: paths through the centre are many more
    than paths to the border, so the centre pixels matter most.""",
))


# ----------------------------------------------------------------------------- 01.4 where the multiply-adds are


def _ex4_context():
    model = _model()
    return {"model": model, "table": layer_table(model)}


def _pointwise_shares(model, table, include_depthwise=False):
    total_parameters = sum(p.numel() for p in model.parameters())
    macs = parameters = 0
    for row in table.leaves():
        module = model.get_submodule(row.name)
        if isinstance(module, nn.Conv2d) and (module.kernel_size == (1, 1) or include_depthwise):
            macs += row.macs
            parameters += row.parameters
    return macs / table.total_macs, parameters / total_parameters


def _ex4_solution(model, table):
    total_parameters = sum(p.numel() for p in model.parameters())
    macs = parameters = 0
    for row in table.leaves():                           # leaves: a block's row already holds its layers
        module = model.get_submodule(row.name)
        if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1):
            macs += row.macs
            parameters += row.parameters
    return {"macs": macs / table.total_macs, "parameters": parameters / total_parameters}


def _ex4_wrong(model, table):
    # Every convolution counted, the depthwise 3x3 / 5x5 ones and the stem too.
    macs, parameters = _pointwise_shares(model, table, include_depthwise=True)
    return {"macs": macs, "parameters": parameters}


def _ex4_check(value, model, table):
    assert isinstance(value, dict) and {"macs", "parameters"} <= set(value), (
        "return {'macs': share of the multiply-adds, 'parameters': share of the parameters}, both in [0, 1]"
    )
    macs, parameters = _number(value["macs"], "macs"), _number(value["parameters"], "parameters")
    assert 0 <= macs <= 1 and 0 <= parameters <= 1, "shares are fractions in [0, 1] (0.5, not 50)"
    true_macs, true_parameters = _pointwise_shares(model, table)
    assert abs(macs - true_macs) < 1e-9, (
        f"the 1x1 convolutions make {true_macs:.1%} of the multiply-adds, you have {macs:.1%}. "
        "Count only Conv2d leaves with kernel_size (1, 1), and divide by table.total_macs."
    )
    assert abs(parameters - true_parameters) < 1e-9, (
        f"the 1x1 convolutions hold {true_parameters:.1%} of the parameters, you have {parameters:.1%}."
    )
    return f"the 1x1 convolutions do {true_macs:.0%} of the work and hold {true_parameters:.0%} of the parameters."


register(Exercise(
    id="01.4", title="Where the multiply-adds are: the 1x1 convolutions",
    check=_ex4_check, solution=_ex4_solution, wrong=_ex4_wrong, make_context=_ex4_context,
    answer="""In EfficientNet-Lite0 the 1x1 (pointwise) convolutions make about 88 % of the multiply-adds and hold
    about 68 % of the parameters; the depthwise convolutions, which make the receptive field grow, cost only about
    9 %, and the classifier holds 27 % of the parameters for 0.3 % of the work. Mixing channels is what costs.""",
))


# ----------------------------------------------------------------------------- 01.5 dead channels by hand

_DEAD_LAYER = "blocks.5.3.bn2.act"


@lru_cache(maxsize=1)
def _photos() -> torch.Tensor:
    from ..images import load_images

    return load_images(size=96)


def _ex5_context():
    return {"model": _model(), "photos": _photos().clone()}


def _dead_channels(model, photos, on_every_photo=True):
    with torch.no_grad(), capture_activations(model, _DEAD_LAYER) as activations:
        model(photos)
    zero = activations[_DEAD_LAYER] == 0                 # (N, C, H, W)
    if on_every_photo:
        return int(zero.all(dim=(0, 2, 3)).sum())
    return int(zero.all(dim=(2, 3)).any(dim=0).sum())


def _ex5_solution(model, photos):
    with torch.no_grad(), capture_activations(model, "blocks.5.3.bn2.act") as activations:
        model(photos)
    zero = activations["blocks.5.3.bn2.act"] == 0        # (N, C, H, W): exactly zero after ReLU6
    return int(zero.all(dim=(0, 2, 3)).sum())            # zero on every photo, at every position


def _ex5_wrong(model, photos):
    # Zero everywhere on *some* photo: that is a channel silent on one image, not a dead one.
    return _dead_channels(model, photos, on_every_photo=False)


def _ex5_check(value, model, photos):
    count = _number(value, "the number of dead channels")
    true = _dead_channels(model, photos)
    row = layer_table(model, images=photos).row(_DEAD_LAYER)
    assert true == row.dead_channels, "internal: capture_activations and layer_table disagree"
    assert count == true, (
        f"{_DEAD_LAYER} has {true} channels that are zero on all {photos.shape[0]} photos at every position; "
        f"you have {count:g}. A channel is dead when it is zero for every photo, not just for one."
    )
    return f"{true} of {row.channels} channels are dead on these {photos.shape[0]} photos, as layer_table(images=...) says."


register(Exercise(
    id="01.5", title="Dead channels, counted by hand",
    check=_ex5_check, solution=_ex5_solution, wrong=_ex5_wrong, make_context=_ex5_context,
    answer="""Capture the output of blocks.5.3.bn2.act (a ReLU6) on the photos; a channel is dead when all its
    values are exactly 0 on every photo and at every position: zero.all(dim=(0, 2, 3)). The count is what
    layer_table(model, images=photos) reports. Dead on 8 photos is not dead on ImageNet: with more, or other,
    photos some of these channels wake up, so the count can only fall as photos are added.""",
))
