import pytest
import torch
from conftest import assert_untouched, snapshot

from nnvis_helpers import (
    LayerNotFoundError,
    capture_activations,
    capture_gradients,
    count_hooks,
    format_layer_table,
    get_layer,
    layer_names,
    list_layers,
    preserve_model_state,
)


def test_get_layer_by_printed_name(tiny_cnn):
    assert get_layer(tiny_cnn, "features.3") is tiny_cnn.features[3]
    assert "features.3" in layer_names(tiny_cnn)


def test_unknown_layer_lists_close_names(tiny_cnn):
    with pytest.raises(LayerNotFoundError, match="'features.3'") as info:
        get_layer(tiny_cnn, "feature.3")
    assert "layer_names" in str(info.value)
    with pytest.raises(LayerNotFoundError, match="features"):
        get_layer(tiny_cnn, "features.9")
    with pytest.raises(TypeError):
        get_layer(tiny_cnn, 3)


def test_list_layers_shapes(tiny_cnn):
    before = snapshot(tiny_cnn)
    rows = {row.name: row for row in list_layers(tiny_cnn, (1, 3, 16, 16))}
    assert rows["features.0"].output_shape == (1, 8, 16, 16)
    assert rows["features.2"].output_shape == (1, 8, 8, 8)
    assert rows["classifier"].output_shape == (1, 10)
    assert rows["features.0"].parameters == 8 * 3 * 9 + 8
    assert "features.5" in format_layer_table(list(rows.values()))
    assert_untouched(tiny_cnn, before)


def test_capture_activations_matches_manual_forward(tiny_cnn):
    x = torch.rand(2, 3, 16, 16)
    with capture_activations(tiny_cnn, ["features.0", "features.5"]) as acts:
        tiny_cnn(x)
    assert torch.allclose(acts["features.0"], tiny_cnn.features[0](x))
    assert acts["features.5"].shape == (2, 16, 4, 4) and not acts["features.5"].requires_grad
    assert count_hooks(tiny_cnn) == 0


def test_capture_gradients(tiny_cnn):
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    with capture_gradients(tiny_cnn, "features.5") as grads:
        tiny_cnn(x)[0, 3].backward()
    # The logit is linear in the pooled features: its gradient is the classifier row, reshaped.
    expected = tiny_cnn.classifier.weight[3].view(1, 16, 4, 4)
    assert torch.allclose(grads["features.5"], expected)
    assert count_hooks(tiny_cnn) == 0


def test_hooks_removed_after_an_exception(tiny_cnn):
    for manager in (capture_activations, capture_gradients):
        with pytest.raises(RuntimeError):
            with manager(tiny_cnn, ["features.0", "classifier"]):
                assert count_hooks(tiny_cnn) == 2
                raise RuntimeError("boom")
        assert count_hooks(tiny_cnn) == 0


def test_bad_layer_registers_nothing(tiny_cnn):
    with pytest.raises(LayerNotFoundError):
        with capture_activations(tiny_cnn, ["features.0", "nope"]):
            pass
    assert count_hooks(tiny_cnn) == 0


def test_preserve_model_state_undoes_everything(tiny_cnn):
    before = snapshot(tiny_cnn)
    with pytest.raises(KeyError):
        with preserve_model_state(tiny_cnn):
            tiny_cnn.train()
            tiny_cnn.requires_grad_(False)
            tiny_cnn.features[0].register_forward_hook(lambda *args: None)
            tiny_cnn.classifier.weight.grad = torch.ones_like(tiny_cnn.classifier.weight)
            raise KeyError("forced")
    assert_untouched(tiny_cnn, before)


def test_capture_gradients_before_an_inplace_relu(tiny_cnn):
    """The conv output is overwritten by ReLU(inplace=True); its gradient must still be d/d(conv output)."""
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    with capture_gradients(tiny_cnn, ["features.0", "features.1"]) as grads, capture_activations(
        tiny_cnn, "features.0"
    ) as acts:
        tiny_cnn(x)[0, 3].backward()
    relu_grad, conv_grad = grads["features.1"], grads["features.0"]
    assert torch.allclose(conv_grad, relu_grad * (acts["features.0"] > 0))
    assert (acts["features.0"] < 0).any(), "the stored activation must be the value before the ReLU"


def test_hundred_captures_do_not_leak(tiny_cnn):
    """Like pytorch-grad-cam's test: repeated use must not pile up hooks, tensors or closures."""
    import gc

    x = torch.rand(1, 3, 16, 16, requires_grad=True)

    def one_round():
        with capture_activations(tiny_cnn, "features.3") as acts, capture_gradients(tiny_cnn, "features.3") as grads:
            tiny_cnn(x)[0, 1].backward()
        x.grad = None
        return acts, grads

    for _ in range(5):
        one_round()
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(100):
        one_round()
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    assert count_hooks(tiny_cnn) == 0
