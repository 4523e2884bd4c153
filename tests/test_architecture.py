"""Layer table, receptive fields, layer map, picker, TensorBoard and torchviz helpers."""
from __future__ import annotations

import copy
import itertools
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
import torch
import torchvision
from conftest import assert_untouched, snapshot
from torch import nn
from torch.nn import functional as F

from nnvis_helpers import LayerNotFoundError, count_hooks
from nnvis_helpers.architecture import (
    LayerPicker,
    ReceptiveField,
    crop_receptive_field,
    describe_layer,
    draw_layer_map,
    layer_picker,
    layer_table,
    read_tensorboard_graph,
    receptive_field,
    receptive_field_box,
    torchviz_graph,
    write_tensorboard_graph,
)


# ---------------------------------------------------------------------------------------------
# Networks built here
# ---------------------------------------------------------------------------------------------


class HandChecked(nn.Module):
    """Stride, padding, dilation, pooling with padding, an asymmetric pad and two branches.

    Fields worked out by hand (size r, jump j, start s; r' = r + (d(k-1)) j, j' = j stride,
    s' = s - pad j):
      conv   5x5 /2 pad 2        r=5   j=2  s=-2
      pool   3x3 /2 pad 1        r=9   j=4  s=-4
      conv   3x3 dil 2 pad 2     r=25  j=4  s=-12
      branch a: 1x1              r=25  j=4  s=-12
      branch b: 5x5 pad 2        r=41  j=4  s=-20    -> merge (a + b) = union: r=41 s=-20
      pad (left 0, right 1, top 0, bottom 1), then conv 3x3 /2 pad 0: r=49  j=8  s=-20
    """

    def __init__(self, pool: type[nn.Module] = nn.MaxPool2d):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 5, stride=2, padding=2)
        self.pool = pool(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.branch_a = nn.Conv2d(4, 4, 1)
        self.branch_b = nn.Conv2d(4, 4, 5, padding=2)
        self.conv3 = nn.Conv2d(4, 4, 3, stride=2)

    def forward(self, x):
        x = self.conv2(self.pool(self.conv1(x)))
        x = self.branch_a(x) + self.branch_b(x)
        return self.conv3(F.pad(x, (0, 1, 0, 1)))


HAND_FIELDS = {
    "conv1": ((5, 5), (2, 2), (-2, -2)),
    "pool": ((9, 9), (4, 4), (-4, -4)),
    "conv2": ((25, 25), (4, 4), (-12, -12)),
    "branch_a": ((25, 25), (4, 4), (-12, -12)),
    "branch_b": ((41, 41), (4, 4), (-20, -20)),
    "conv3": ((49, 49), (8, 8), (-20, -20)),
}


@pytest.fixture(scope="module")
def vgg16() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).eval()


@pytest.fixture(scope="module")
def vgg16_table(vgg16):
    return layer_table(vgg16)


@pytest.fixture(scope="module")
def offline_table(offline_model):
    return layer_table(offline_model)


@pytest.fixture(scope="module")
def resnet50() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval()


@pytest.fixture(scope="module")
def resnet50_table(resnet50):
    return layer_table(resnet50)


def _make_linear_positive(model: nn.Module) -> nn.Module:
    """A float64 copy whose output is a positive, linear function of every input pixel in its field.

    Activations become Identity, max pooling becomes average pooling with the same geometry,
    weights become 1 / fan-in and BatchNorm the identity. Then d unit / d input is non-zero
    exactly on the unit's theoretical receptive field (clipped to the image).
    """
    model = copy.deepcopy(model).double().eval()
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish)):
                setattr(module, child_name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                setattr(module, child_name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.zero_()
                module.running_var.fill_(1.0 - module.eps)
                if module.weight is not None:
                    module.weight.fill_(1.0)
                    module.bias.zero_()
    model.requires_grad_(False)
    return model


class _EnoughLayers(Exception):
    pass


def _gradient_boxes(model: nn.Module, units: list[tuple[str, int, int]], size: int) -> list[tuple[int, int, int, int]]:
    """For each unit (layer, y, x): (top, left, bottom, right) of the input pixels with non-zero gradient."""
    images = torch.rand(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    outputs = {}
    wanted = {layer for layer, _, _ in units}

    def keep(layer):
        def hook(_module, _inputs, output):
            outputs[layer] = output
            if set(outputs) == wanted:
                raise _EnoughLayers  # the rest of the network does not matter here

        return hook

    handles = [model.get_submodule(layer).register_forward_hook(keep(layer)) for layer in wanted]
    try:
        model(images)
    except _EnoughLayers:
        pass
    finally:
        for handle in handles:
            handle.remove()
    boxes = []
    for layer, y, x in units:
        (grad,) = torch.autograd.grad(outputs[layer][0, :, y, x].sum(), images, retain_graph=True)
        support = grad[0].abs().sum(0) > 0
        rows = torch.nonzero(support.any(1)).flatten()
        cols = torch.nonzero(support.any(0)).flatten()
        box = (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
        assert support[box[0] : box[2], box[1] : box[3]].all(), "the gradient support is not a full rectangle"
        boxes.append(box)
    return boxes


def _check_against_gradients(model: nn.Module, units: list[tuple[str, int, int]], size: int) -> None:
    table = layer_table(model, (1, 3, size, size))
    expected = [receptive_field_box(model, layer, y, x, table=table) for layer, y, x in units]
    assert _gradient_boxes(_make_linear_positive(model), units, size) == expected


def _text_boxes(fig):
    fig.canvas.draw()  # legends place their texts only when drawn
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in texts]


def _overlapping_texts(fig, tolerance: float = 0.5) -> list[tuple[str, str]]:
    boxes = _text_boxes(fig)
    overlaps = []
    for (text_a, a), (text_b, b) in itertools.combinations(boxes, 2):
        if a.x0 + tolerance < b.x1 and b.x0 + tolerance < a.x1 and a.y0 + tolerance < b.y1 and b.y0 + tolerance < a.y1:
            overlaps.append((text_a, text_b))
    return overlaps


def _model_state(model: nn.Module) -> dict:
    state = snapshot(model)
    state["buffers"] = [b.detach().clone() for b in model.buffers()]
    return state


def _assert_same_state(model: nn.Module, before: dict) -> None:
    assert_untouched(model, before)
    for a, b in zip(model.buffers(), before["buffers"]):
        assert torch.equal(a, b), "a buffer (BatchNorm statistics?) changed"
    assert torch._C._len_torch_function_stack() == 0, "a TorchFunctionMode was left active"


# ---------------------------------------------------------------------------------------------
# Receptive fields
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer, size, stride",
    [("features.0", 3, 1), ("features.16", 44, 8), ("features.28", 196, 16), ("features.29", 196, 16), ("features.30", 212, 32)],
)
def test_vgg16_known_receptive_fields(vgg16, vgg16_table, layer, size, stride):
    field = receptive_field(vgg16, layer, table=vgg16_table)
    assert field.size == (size, size) and field.jump == (stride, stride)


def test_vgg16_table_shapes_and_parameters(vgg16_table):
    assert vgg16_table.row("features.28").output_shape == (1, 512, 14, 14)
    assert vgg16_table.row("features.28").parameters == 512 * 512 * 9 + 512
    assert vgg16_table.row("features.28").details == "3x3"
    assert vgg16_table.row("features.30").details == "2x2 /2"
    assert vgg16_table.row("classifier.6").receptive_field is None
    assert vgg16_table.row("classifier.6").field_note == "whole image"
    text = str(vgg16_table)
    leaves = vgg16_table.to_text(leaves_only=True)
    assert "features.28 " in leaves and "\nfeatures " not in leaves and "\nclassifier " not in leaves
    assert re.search(r"features\.28\s+Conv2d\s+1x512x14x14\s+2,359,808\s+462M\s+196\s+16\s+-90", text)
    assert vgg16_table.row("features.28").macs == 14 * 14 * 512 * 512 * 9


def test_hand_checked_network():
    torch.manual_seed(0)
    net = HandChecked().eval()
    table = layer_table(net, (1, 3, 64, 64))
    for name, (size, jump, start) in HAND_FIELDS.items():
        assert table.row(name).receptive_field == ReceptiveField(size, jump, start), name
    assert table.row("conv3").output_shape == (1, 4, 8, 8)  # 64 /2 /2 = 16, pad 17, (17 - 3) // 2 + 1
    assert table.row("conv2").details == "3x3 dil 2"


def test_hand_checked_network_agrees_with_gradients():
    """Independent check: the pixels that influence a unit are exactly its computed box."""
    torch.manual_seed(0)
    units = [(layer, y, x) for layer in ("conv2", "branch_b", "conv3") for y, x in [(0, 0), (1, 2), (7, 7)]]
    _check_against_gradients(HandChecked(pool=nn.AvgPool2d).eval(), units, 64)


def test_resnet_fields_agree_with_gradients():
    """Residual blocks with strided shortcuts: the computed field is what the gradients reach."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    _check_against_gradients(net, [("maxpool", 5, 7), ("layer1.1", 0, 0), ("layer2.0", 6, 3), ("layer3.1", 2, 2)], 96)
    table = layer_table(net, (1, 3, 96, 96))
    # the shortcut 1x1 /2 conv sees less than the main branch: the block takes the larger one
    assert table.row("layer2.0.downsample").receptive_field.size < table.row("layer2.0").receptive_field.size
    assert table.row("layer2.0").receptive_field == table.row("layer2.0.bn2").receptive_field


def test_resnet50_field_values(resnet50_table):
    table = resnet50_table
    assert table.row("conv1").receptive_field.size == (7, 7)
    assert table.row("maxpool").receptive_field == ReceptiveField((11, 11), (4, 4), (-5, -5))
    assert table.row("layer4.2").receptive_field.size == (427, 427)
    assert table.row("layer4.2").receptive_field.jump == (32, 32)


def test_efficientnet_same_padding_agrees_with_gradients(offline_model):
    """TF 'same' padding (asymmetric F.pad inside Conv2dSame) shifts the field start exactly."""
    assert not layer_table(offline_model, (1, 3, 48, 48)).unsupported
    units = [("conv_stem", 0, 0), ("blocks.1.0", 3, 5), ("blocks.2.0", 2, 4)]  # 3x3 and 5x5 Conv2dSame /2
    _check_against_gradients(offline_model, units, 48)


def test_efficientnet_table(offline_model, offline_table):
    table = offline_table
    assert table.row("conv_stem").receptive_field == ReceptiveField((3, 3), (2, 2), (0, 0))  # TF 'same': no pad on top
    assert table.row("blocks.6.0").output_shape == (1, 320, 7, 7)
    assert table.row("blocks.6.0").receptive_field.jump == (32, 32)
    assert table.row("classifier").field_note == "whole image"
    assert table.model_name == "efficientnet_lite0"


def test_offline_model_untouched(offline_model):
    before = _model_state(offline_model)
    layer_table(offline_model, (1, 3, 32, 32))
    _assert_same_state(offline_model, before)


def test_box_and_crop(vgg16, vgg16_table):
    field = vgg16_table.row("features.28").receptive_field
    assert field.box(0, 0) == (-90, -90, 106, 106)
    assert receptive_field_box(vgg16, "features.28", 0, 0, table=vgg16_table) == (0, 0, 106, 106)
    assert receptive_field_box(vgg16, "features.28", 7, 7, table=vgg16_table) == (22, 22, 218, 218)
    assert field.center(7, 7) == (22 + 97.5, 22 + 97.5)
    images = torch.rand(2, 3, 224, 224)
    patch = crop_receptive_field(images, vgg16, "features.28", 7, 7, table=vgg16_table)
    assert patch.shape == (2, 3, 196, 196)
    assert torch.equal(patch, images[..., 22:218, 22:218])


def test_training_mode_model_is_given_back_unchanged():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).train()
    before = _model_state(net)
    layer_table(net, (1, 3, 64, 64))
    _assert_same_state(net, before)
    assert net.training and all(m.training for m in net.modules())


def test_unknown_operation_gives_unknown_field_and_warns():
    class Upsampler(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.after = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return self.after(F.interpolate(self.conv(x), scale_factor=2.0))

    net = Upsampler().eval()
    with pytest.warns(UserWarning, match="interpolate"):
        table = layer_table(net, (1, 3, 16, 16))
    assert table.row("conv").receptive_field.size == (3, 3)
    assert table.row("after").receptive_field is None
    assert "unknown" in table.row("after").field_note
    with pytest.raises(ValueError, match="no receptive field"):
        receptive_field(net, "after", table=table)


def test_channel_shuffle_keeps_the_field_and_channels_last_loses_it():
    class Shuffle(nn.Module):
        def __init__(self, channels_last: bool):
            super().__init__()
            self.channels_last = channels_last
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.after = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            x = self.conv(x)
            n, c, h, w = x.shape
            if self.channels_last:  # ConvNeXt-style NHWC detour
                x = x.permute(0, 2, 3, 1).permute(0, 3, 1, 2)
            else:  # ShuffleNet's channel shuffle: a 5-D view, a transpose of channel axes, back
                x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
            return self.after(x)

    assert layer_table(Shuffle(False).eval(), (1, 3, 16, 16)).row("after").receptive_field.size == (5, 5)
    with pytest.warns(UserWarning, match="permute"):
        table = layer_table(Shuffle(True).eval(), (1, 3, 16, 16))
    assert table.row("after").receptive_field is None and "permute" in table.row("after").field_note


def test_squeeze_and_excitation_adds_global_context():
    class SqueezeExcite(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.reduce = nn.Conv2d(8, 2, 1)
            self.expand = nn.Conv2d(2, 8, 1)
            self.after = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            x = self.conv(x)
            gate = self.expand(self.reduce(x.mean((2, 3), keepdim=True))).sigmoid()
            return self.after(x * gate)

    net = SqueezeExcite().eval()
    table = layer_table(net, (1, 3, 16, 16))
    assert not table.row("conv").receptive_field.global_context
    field = table.row("after").receptive_field
    assert field.size == (5, 5) and field.global_context, "the local box stays; the gate adds global context"
    assert "global context" in str(field) and "global context" in describe_layer(net, "after", table=table)
    fig = draw_layer_map(net, table=table)
    assert any("+g" in t for t, _ in _text_boxes(fig))
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_unknown_layer_names(vgg16, vgg16_table):
    for call in (
        lambda: receptive_field(vgg16, "features.31", table=vgg16_table),
        lambda: receptive_field_box(vgg16, "feature.28", 0, 0, table=vgg16_table),
        lambda: describe_layer(vgg16, "features.28x", table=vgg16_table),
        lambda: draw_layer_map(vgg16, table=vgg16_table, highlight="featurs.28"),
        lambda: layer_picker(vgg16, default="conv5_3", table=vgg16_table),
        lambda: layer_picker(vgg16, default="features.50", table=vgg16_table),
        lambda: vgg16_table.row("feature.28"),
    ):
        with pytest.raises(LayerNotFoundError, match="no layer"):
            call()
    assert count_hooks(vgg16) == 0


def test_bad_unit_positions_and_sizes(vgg16, vgg16_table, tiny_cnn):
    with pytest.raises(ValueError, match="14x14"):
        receptive_field_box(vgg16, "features.28", 14, 0, table=vgg16_table)
    with pytest.raises(ValueError, match="outside"):
        receptive_field_box(vgg16, "features.28", 0, -1, table=vgg16_table)
    with pytest.raises(ValueError, match="no receptive field"):
        receptive_field(vgg16, "classifier.0", table=vgg16_table)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        layer_table(tiny_cnn, (3, 32, 32))
    with pytest.raises(TypeError, match="nn.Module"):
        layer_table("vgg16")
    with pytest.raises(TypeError, match="torch.rand"):
        write_tensorboard_graph(tiny_cnn, [1, 2, 3])
    with pytest.raises(TypeError, match="torch.rand"):
        torchviz_graph(tiny_cnn, None)
    with pytest.raises(ValueError, match="made for 224x224"):
        crop_receptive_field(torch.rand(1, 3, 100, 100), vgg16, "features.28", 0, 0, table=vgg16_table)


# ---------------------------------------------------------------------------------------------
# Hooks and state, also after a forced error
# ---------------------------------------------------------------------------------------------


class Exploding(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_every_helper_leaves_the_model_untouched(tiny_cnn, tmp_path):
    tiny_cnn.features[3].requires_grad_(False)  # a mix of frozen and trainable parameters
    before = _model_state(tiny_cnn)
    images = torch.rand(1, 3, 32, 32)
    table = layer_table(tiny_cnn, (1, 3, 32, 32))
    receptive_field_box(tiny_cnn, "features.3", 4, 4, table=table)
    describe_layer(tiny_cnn, "features.3", table=table)
    plt.close(draw_layer_map(tiny_cnn, table=table, highlight="features.3"))
    layer_picker(tiny_cnn, table=table)._repr_mimebundle_()
    write_tensorboard_graph(tiny_cnn, images, tmp_path / "runs")
    torchviz_graph(tiny_cnn, images)
    _assert_same_state(tiny_cnn, before)


def test_helpers_clean_up_after_a_forced_error(tiny_cnn, tmp_path):
    tiny_cnn.features.append(Exploding())
    before = _model_state(tiny_cnn)
    images = torch.rand(1, 3, 32, 32)
    with pytest.raises(RuntimeError, match="boom"):
        layer_table(tiny_cnn, (1, 3, 32, 32))
    _assert_same_state(tiny_cnn, before)
    with pytest.raises(RuntimeError):
        write_tensorboard_graph(tiny_cnn, images, tmp_path / "runs")
    _assert_same_state(tiny_cnn, before)
    with pytest.raises(RuntimeError, match="boom"):
        torchviz_graph(tiny_cnn, images)
    _assert_same_state(tiny_cnn, before)


# ---------------------------------------------------------------------------------------------
# TensorBoard and torchviz
# ---------------------------------------------------------------------------------------------


def test_tensorboard_graph_written_and_read_back(tmp_path):
    torch.manual_seed(0)
    net = HandChecked().eval()
    before = _model_state(net)
    log_dir = write_tensorboard_graph(net, torch.rand(1, 3, 32, 32), tmp_path / "graph")
    _assert_same_state(net, before)
    assert list(log_dir.glob("events.out.tfevents.*"))
    nodes = read_tensorboard_graph(log_dir)
    convolutions = sorted(name.split("/")[1] for name, op in nodes if op == "aten::_convolution")
    assert convolutions == ["Conv2d[branch_a]", "Conv2d[branch_b]", "Conv2d[conv1]", "Conv2d[conv2]", "Conv2d[conv3]"]
    assert any(op == "aten::max_pool2d" for _, op in nodes)


def test_tensorboard_default_folder_is_temporary(tiny_cnn):
    log_dir = write_tensorboard_graph(tiny_cnn, torch.rand(1, 3, 32, 32))
    assert "nnvis_tensorboard_" in log_dir.name
    assert any(op == "aten::max_pool2d" for _, op in read_tensorboard_graph(log_dir))


def test_reading_a_folder_without_graph_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="write_tensorboard_graph"):
        read_tensorboard_graph(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no graph"):
        read_tensorboard_graph(tmp_path / "empty")


def test_torchviz_source_has_backward_operations(tiny_cnn):
    dot = torchviz_graph(tiny_cnn, torch.rand(1, 3, 32, 32))
    for op in ("ConvolutionBackward0", "ReluBackward0", "MaxPool2DWithIndicesBackward0", "AddmmBackward0"):
        assert op in dot.source, op
    assert "features.0.weight" in dot.source  # parameters appear with their printed names


def test_torchviz_on_frozen_model_keeps_it_frozen(offline_model):
    before = _model_state(offline_model)
    dot = torchviz_graph(offline_model.blocks[1], torch.rand(1, 16, 32, 32), show_parameters=False)
    assert "ConvolutionBackward0" in dot.source and "AddBackward0" in dot.source  # the residual add
    _assert_same_state(offline_model, before)


# ---------------------------------------------------------------------------------------------
# Layer map and picker
# ---------------------------------------------------------------------------------------------


def test_overlap_check_can_fail():
    fig, ax = plt.subplots()
    ax.text(0.5, 0.5, "features.28")
    ax.text(0.51, 0.5, "features.29")
    assert _overlapping_texts(fig)
    plt.close(fig)


@pytest.mark.parametrize("which", ["vgg16", "resnet50", "efficientnet_lite0"])
def test_layer_map_draws_without_overlapping_labels(
    which, vgg16, vgg16_table, resnet50, resnet50_table, offline_model, offline_table
):
    if which == "vgg16":
        model, table, highlight = vgg16, vgg16_table, "features.28"
    elif which == "resnet50":
        model, table, highlight = resnet50, resnet50_table, "layer3.2.conv2"
    else:
        model, table, highlight = offline_model, offline_table, "blocks.5.0"
    before = count_hooks(model)
    fig = draw_layer_map(model, table=table, highlight=highlight)
    assert count_hooks(model) == before
    overlaps = _overlapping_texts(fig)
    assert not overlaps, overlaps[:3]
    texts = [text for text, _ in _text_boxes(fig)]
    # every block carries its exact name; collapsing keeps the map short
    if which == "vgg16":
        assert {"features.0", "features.28", "features.29", "features.30", "classifier.6"} <= set(texts)
        assert any("field 196 · stride 16" in t for t in texts)
    elif which == "resnet50":
        assert "layer3.1 … layer3.5" in texts and any("5 × Bottleneck" in t for t in texts)
        assert not any(t == "layer3.2" for t in texts)
    else:
        assert {"conv_stem", "blocks.0.0", "blocks.6.0", "classifier"} <= set(texts)
    blocks = [p for p in fig.axes[0].patches if p.get_linewidth() > 2]
    assert len(blocks) == 1, "exactly one block is highlighted"
    # each block's labels lie inside its box
    renderer = fig.canvas.get_renderer()
    patches = fig.axes[0].patches
    for patch in patches:
        box = patch.get_window_extent(renderer)
        labels = [t for t in fig.axes[0].texts if t.get_text().strip()]
        inside = [t for t in labels if box.contains(*t.get_window_extent(renderer).p0)]
        assert inside, "a block without label"
        for text in inside:
            extent = text.get_window_extent(renderer)
            assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1
    assert len(texts) < 120, "the map should stay short"
    plt.close(fig)


def test_layer_map_into_given_axes(tiny_cnn):
    fig, ax = plt.subplots(figsize=(8, 3))
    assert draw_layer_map(tiny_cnn, ax=ax, input_size=(1, 3, 32, 32)) is fig
    assert not _overlapping_texts(fig)
    plt.close(fig)


def test_describe_layer_says_where_it_is(vgg16, vgg16_table):
    text = describe_layer(vgg16, "features.28", table=vgg16_table)
    assert "'features.28'" in text and "512" in text and "196 px, stride 16" in text
    assert "stage 5 of 7" in text


def test_picker_static_fallback(vgg16, vgg16_table, capsys):
    picker = layer_picker(vgg16, default="features.28", table=vgg16_table, interactive=False)
    printed = capsys.readouterr().out
    assert isinstance(picker, LayerPicker)
    assert picker.value == "features.28" and isinstance(picker.value, str)
    assert printed.strip() == describe_layer(vgg16, "features.28", table=vgg16_table)
    bundle = picker._repr_mimebundle_()
    assert "196 px, stride 16" in bundle["text/plain"]
    assert "classifier.0" not in picker.options  # only layers with maps and fields
    with pytest.raises(ValueError, match="maps_only=False"):
        layer_picker(vgg16, default="classifier.0", table=vgg16_table)


def test_picker_widget_value_is_the_chosen_name(vgg16, vgg16_table):
    pytest.importorskip("ipywidgets")
    picker = layer_picker(vgg16, default="features.28", table=vgg16_table)
    bundle = picker._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    picker.widget.children[0].value = "features.16"
    assert picker.value == "features.16"
    assert "44 px, stride 8" in picker.describe()


def test_picker_with_map_leaves_no_figure_open(tiny_cnn):
    pytest.importorskip("ipywidgets")
    open_before = len(plt.get_fignums())
    picker = layer_picker(tiny_cnn, input_size=(1, 3, 32, 32), show_map=True)
    picker._repr_mimebundle_()
    picker.widget.children[0].value = "features.0"
    assert picker.value == "features.0"
    assert len(plt.get_fignums()) == open_before, "the map drawn inside the widget must be closed"


# ---------------------------------------------------------------------------------------------
# What a network costs: multiply-adds, and the zeros it computes
# ---------------------------------------------------------------------------------------------


class CostNet(nn.Module):
    """Multiply-adds worked out by hand for a batch of one 8 x 8 image (C_out H W (C_in / groups) k k):

      stem.0  conv 3->4, 3x3 pad 1        4 x 8 x 8 x 3 x 9   = 6912   (+ bias 4 x 64 = 256 in torchinfo)
      stem.1  BatchNorm2d(4)              0                             (torchinfo: 2 x 4 = 8)
      depthwise 4->4, 3x3 /2, groups 4    4 x 4 x 4 x 1 x 9   =  576
      grouped 4->6, 1x1, groups 2         6 x 4 x 4 x 2 x 1   =  192   (+ bias 6 x 16 = 96 in torchinfo)
      head    Linear 96->10               96 x 10             =  960   (+ bias 10 in torchinfo)
                                                        total = 8640
    """

    HAND_MACS = {"stem.0": 6912, "stem.1": 0, "stem.2": 0, "depthwise": 576, "grouped": 192, "head": 960}
    TORCHINFO_EXTRA = 256 + 8 + 96 + 10  # what torchinfo adds per image: biases and BatchNorm's scale and shift

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
        self.depthwise = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, bias=False)
        self.grouped = nn.Conv2d(4, 6, 1, groups=2)
        self.head = nn.Linear(96, 10)

    def forward(self, x):
        return self.head(self.grouped(self.depthwise(self.stem(x))).flatten(1))


def test_multiply_adds_by_hand():
    torch.manual_seed(0)
    net = CostNet().eval()
    table = layer_table(net, (1, 3, 8, 8))
    for name, macs in CostNet.HAND_MACS.items():
        assert table.row(name).macs == macs, (name, table.row(name).macs, macs)
    assert table.row("stem").macs == 6912, "a block's row holds the multiply-adds of its layers"
    assert table.total_macs == sum(CostNet.HAND_MACS.values()) == 8640
    assert sum(row.macs for row in table.leaves()) == table.total_macs
    assert re.search(r"\nstem\.0\s+Conv2d\s+1x4x8x8\s+112\s+6\.91k\s", str(table)), str(table)
    batch = layer_table(net, (3, 3, 8, 8))
    assert batch.total_macs == 3 * 8640, "multiply-adds are for the whole batch of input_size"


def test_multiply_adds_match_torchinfo_up_to_biases_and_batchnorm():
    from torchinfo import summary

    torch.manual_seed(0)
    net = CostNet().eval()
    for batch in (1, 2):
        stats = summary(net, input_size=(batch, 3, 8, 8), verbose=0)
        ours = layer_table(net, (batch, 3, 8, 8)).total_macs
        assert stats.total_mult_adds - ours == batch * CostNet.TORCHINFO_EXTRA


def test_multiply_adds_of_functional_products_and_opaque_attention():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(7, 5))
            self.up = nn.Parameter(torch.ones(2, 3, 2, 2))

        def forward(self, x):
            up = F.conv_transpose2d(x[:, :2], self.up, stride=2)  # 2 x 4 x 5 inputs, each to 3 x 2 x 2 outputs: 480
            vector = x[:, 0, 0, :5]  # (1, 5)
            products = F.linear(vector, self.weight) + (vector @ self.weight.t()) + torch.mm(vector, self.weight.t())
            return up.sum() + products.sum() + torch.bmm(x[0, :2, :2, :2], x[0, :2, :2, :2]).sum()  # 8 outputs x 2 = 16

    table = layer_table(Functional(), (1, 3, 4, 5))
    assert table.total_macs == 480 + 3 * 35 + 16

    attention = nn.MultiheadAttention(8, 2, batch_first=True)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = attention

        def forward(self, x):
            tokens = x.flatten(2).transpose(1, 2)[..., :1].expand(-1, -1, 8)
            return self.attention(tokens, tokens, tokens)[0]

    with pytest.warns(UserWarning, match="could not count the multiply-adds"):
        layer_table(Attention(), (1, 3, 4, 4))


class _Sparse(nn.Module):
    """A 1x1 convolution whose outputs are known: red, -(r + g + b) - 1 (never positive), red - 0.5; then ReLU."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.relu = nn.ReLU(inplace=True)  # in place: the conv's own output must be measured before it
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, 0, 0], [-1, -1, -1], [1, 0, 0]]).view(3, 3, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, -1.0, -0.5]))

    def forward(self, x):
        return self.relu(self.conv(x))


def _half_red_images() -> torch.Tensor:
    """Two 4 x 4 images: the first red only on its right half, the second red everywhere."""
    torch.manual_seed(0)
    images = torch.rand(2, 3, 4, 4) * 0.9 + 0.05
    images[0, 0, :, :2], images[0, 0, :, 2:], images[1, 0] = 0.0, 1.0, 1.0
    return images


def test_zero_share_and_dead_channels_by_hand():
    net = _Sparse().eval()
    table = layer_table(net, images=_half_red_images())
    assert table.input_size == (1, 3, 4, 4) and table.measured_images == 2
    # conv: only channel 0 is exactly zero, where red is 0 (8 of 96 values); no channel zero everywhere
    assert table.row("conv").zero_fraction == pytest.approx(8 / 96, abs=0) and table.row("conv").dead_channels == 0
    # after ReLU: channel 0 has 8 zeros, channel 1 all 32 (dead), channel 2 the same 8 as channel 0
    assert table.row("relu").zero_fraction == pytest.approx(48 / 96, abs=0) and table.row("relu").dead_channels == 1
    only_first = layer_table(net, images=_half_red_images()[:1])
    assert only_first.row("relu").dead_channels == 1
    no_red = _half_red_images()[:1].clone()
    no_red[:, 0] = 0.0
    assert layer_table(net, images=no_red).row("relu").dead_channels == 3, "red 0 everywhere: channels 0 and 2 die too"
    text = str(table)
    assert re.search(r"relu\s+ReLU\s+1x3x4x4.*50%\s+1/3", text), text
    assert "zeros" in describe_layer(net, "relu", table=table)
    assert layer_table(net, (1, 3, 4, 4)).row("relu").zero_fraction is None, "not measured without images"
    assert "zeros" not in str(layer_table(net, (1, 3, 4, 4)))


def test_zero_share_in_batches_equals_one_batch():
    net = _Sparse().eval()
    images = torch.rand(19, 3, 4, 4)
    images[:, 0, :2] = 0.0
    table = layer_table(net, images=images)  # measured 8 images at a time
    relu = net.conv(images).clamp(min=0)
    assert table.row("relu").zero_fraction == int((relu == 0).sum()) / relu.numel()
    assert table.row("relu").dead_channels == int((relu == 0).all(dim=(0, 2, 3)).sum())


def test_layer_table_bad_images(tiny_cnn):
    with pytest.raises(TypeError, match="torch.Tensor"):
        layer_table(tiny_cnn, images=[[0.0]])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        layer_table(tiny_cnn, images=torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="divide by 255"):
        layer_table(tiny_cnn, images=torch.rand(1, 3, 32, 32) * 255)
    with pytest.raises(ValueError, match="unsqueeze"):
        layer_table(tiny_cnn, images=torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="input_size"):
        layer_table(tiny_cnn, (1, 3, 64, 64), images=torch.rand(1, 3, 32, 32))


def test_layer_table_with_images_leaves_the_model_untouched():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Dropout(0.5)).train()
    before = _model_state(net)
    images = torch.rand(3, 3, 16, 16, requires_grad=True)
    first = layer_table(net, images=images)
    again = layer_table(net, images=images)
    _assert_same_state(net, before)
    assert net.training and images.grad is None
    assert first.row("3").zero_fraction == again.row("3").zero_fraction == first.row("2").zero_fraction, (
        "measured in eval mode: Dropout is off, the result does not change between calls"
    )
    net.append(Exploding())
    before = _model_state(net)
    with pytest.raises(RuntimeError, match="boom"):
        layer_table(net, images=images)
    _assert_same_state(net, before)


def test_offline_model_costs(offline_model, offline_table):
    from torchinfo import summary

    stats = summary(offline_model, input_size=(1, 3, 224, 224), verbose=0)
    # torchinfo also counts the classifier's bias additions; timm's BatchNormAct2d is not a leaf for it
    assert stats.total_mult_adds - offline_table.total_macs == offline_model.classifier.bias.numel()
    assert offline_table.total_macs == sum(row.macs for row in offline_table.leaves())
    assert offline_table.row("blocks").macs == sum(offline_table.row(f"blocks.{i}").macs for i in range(7))
