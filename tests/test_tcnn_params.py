"""Checkpoints load with either field MLP implementation: tiny-cuda-nn's flat parameter vector <-> torch layers.

tiny-cuda-nn cannot run here; ``tcnn_reference_forward`` states its network in plain torch, and ``_TcnnStandIn``
plays the tcnn module (a flat ``params`` vector, 2-D input only) so the loading path is the one a GPU takes.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genvs_ns.errors import GeNVSError
from genvs_ns.model.field import FrustumField
from genvs_ns.model.tcnn_params import MLPShape, linear_to_tcnn, tcnn_reference_forward, tcnn_to_linear

SHAPE = MLPShape(in_dim=16, width=64, num_layers=3, out_dim=17)  # FrustumField's sizes, "mean" pooling


class _TcnnStandIn(nn.Module):
    def __init__(self, shape: MLPShape) -> None:
        super().__init__()
        self.shape = shape
        self.params = nn.Parameter(torch.randn(shape.num_params(), dtype=torch.float16) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 2 and x.shape[1] == self.shape.in_dim
        return tcnn_reference_forward(self.params, x, self.shape).half()


def _torch_field(seed: int, pooling: str = "mean", implementation: str = "torch") -> FrustumField:
    torch.manual_seed(seed)
    return FrustumField(16, 64, 3, 16, implementation=implementation, colour_inputs=True, pooling=pooling)


def _tcnn_field(seed: int, pooling: str = "mean", shape: MLPShape = SHAPE) -> FrustumField:
    field = _torch_field(seed, pooling, implementation="tcnn")  # nerfstudio builds torch layers without tcnn
    del field.mlp.layers
    field.mlp.tcnn_encoding = _TcnnStandIn(shape)
    return field


def test_layout_sizes_follow_tcnn_padding():
    # 16*64 + 64*64 + 64*32: the 17 outputs are padded to 32 rows.
    assert SHAPE.num_params() == 7168
    assert MLPShape(16, 100, 2, 3).matrix_shapes() == [(100, 16), (8, 100)]  # CutlassMLP pads to 8
    with pytest.raises(GeNVSError, match="multiple of 16"):
        MLPShape(12, 64, 3, 17).num_params()


def test_torch_layers_to_tcnn_and_back_keep_the_function():
    torch.manual_seed(0)
    layers = [(torch.randn(64, 16), torch.zeros(64)), (torch.randn(64, 64), torch.zeros(64))]
    layers.append((torch.randn(17, 64), torch.zeros(17)))
    params = linear_to_tcnn(layers, SHAPE, torch.float32)
    x = torch.randn(50, 16)
    expected = torch.relu(torch.relu(x @ layers[0][0].T) @ layers[1][0].T) @ layers[2][0].T
    torch.testing.assert_close(tcnn_reference_forward(params, x, SHAPE), expected)
    for (weight, _), (back, back_bias) in zip(layers, tcnn_to_linear(params, SHAPE)):
        torch.testing.assert_close(back, weight)
        assert not back_bias.any()


def test_a_tcnn_checkpoint_loads_into_the_torch_field_with_equal_outputs():
    trained = _tcnn_field(seed=1)
    state = trained.state_dict()
    assert "mlp.tcnn_encoding.params" in state and not any(key.startswith("mlp.layers") for key in state)
    field = _torch_field(seed=2)
    field.load_state_dict(state)  # strict: no key missing or left over
    features = torch.rand(2, 300, 16)
    with torch.no_grad():
        for got, want in zip(field(features), trained(features)):
            torch.testing.assert_close(got, want, atol=2e-3, rtol=2e-3)  # the stand-in's output is fp16


def test_a_bias_free_torch_checkpoint_loads_into_the_tcnn_field_with_equal_outputs():
    trained = _torch_field(seed=3)
    with torch.no_grad():
        for layer in trained.mlp.layers:
            layer.bias.zero_()
    field = _tcnn_field(seed=4)
    field.load_state_dict(trained.state_dict())
    assert field.mlp.tcnn_encoding.params.dtype == torch.float16
    features = torch.rand(2, 300, 16)
    with torch.no_grad():
        for got, want in zip(field(features), trained(features)):
            torch.testing.assert_close(got, want, atol=5e-3, rtol=5e-3)  # fp16 parameters


def test_a_torch_checkpoint_with_biases_is_refused_for_tcnn_in_one_line():
    with pytest.raises(GeNVSError, match="mlp-implementation torch"):
        _tcnn_field(seed=5).load_state_dict(_torch_field(seed=6).state_dict())


def test_visible_pooling_pads_the_tcnn_input_with_zeros_and_still_converts():
    """The coverage input makes 17 features; tcnn would pad them itself, with ones or zeros depending on its version,
    so the field pads them with zeros to 32 for tcnn, and a tcnn checkpoint loads on a machine without it."""
    shape = MLPShape(in_dim=32, width=64, num_layers=3, out_dim=17)
    trained = _tcnn_field(seed=7, pooling="visible", shape=shape)
    assert trained.input_padding == 15 and _torch_field(8, "visible").input_padding == 0
    field = _torch_field(seed=8, pooling="visible", implementation="tcnn")
    assert field.mlp.layers[0].in_features == 32
    field.load_state_dict(trained.state_dict())
    volumes = torch.rand(1, 2, 16, 4, 5, 6)
    c2w = torch.eye(4)[:3][None, None].repeat(1, 2, 1, 1)
    c2w[0, :, 2, 3] = 2.0  # cameras on +z looking at the origin (OpenGL: looking down -z)
    K = torch.tensor([[5.0, 0, 3], [0, 5.0, 3], [0, 0, 1]])[None, None].repeat(1, 2, 1, 1)
    points = torch.rand(1, 100, 3) - 0.5
    features = field.lookup(volumes, points, c2w, K, (6, 6), 1.0)
    assert features.shape == (1, 100, 32) and not features[..., 17:].any() and features[..., 16].max() > 0
    with torch.no_grad():
        for got, want in zip(field(features), trained(features)):
            torch.testing.assert_close(got, want, atol=2e-3, rtol=2e-3)
