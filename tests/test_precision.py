"""Autocast dtype per device: bf16 only where the hardware has it (an AVX2-only CPU ran bf16 matmuls 360x slower)."""

from __future__ import annotations

import torch

from genvs_ns.model import precision


def test_auto_takes_bf16_only_where_native(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert precision.autocast_dtype("auto", "cpu") is None
    assert precision.autocast_dtype("bf16", "cpu") is torch.bfloat16  # asked for explicitly: obeyed
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert precision.autocast_dtype("auto", "cpu") is torch.bfloat16
    assert precision.autocast_dtype("fp32", "cpu") is None


def test_the_models_autocast_runs_its_networks_in_bf16_and_its_geometry_in_fp32(toy32):
    """The model's own autocast (its precision setting) over its own parts: the field MLP computes in bf16, the
    world -> frustum mapping in float32 (geometry.py's guard), and with fp32 the MLP stays float32."""
    from conftest import tiny_trainer_config

    from genvs_ns.geometry import world_to_frustum

    points = torch.rand(1, 50, 3) - 0.5
    c2w = torch.eye(4)[:3][None].clone()
    c2w[0, 2, 3] = 2.0
    K = torch.tensor([[[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]]])
    dtypes = {}
    for name in ("bf16", "fp32"):
        config = tiny_trainer_config(toy32)
        config.pipeline.model.precision = name
        model = config.pipeline.setup(device="cpu", test_mode="val").model
        features = torch.rand(50, model.net.field.mlp.in_dim)
        with model.autocast():
            dtypes[name] = (
                model.net.field.mlp(features).dtype,
                world_to_frustum(points, c2w, K, (32, 32), 1.0, 3.0).dtype,
            )
    assert dtypes == {"bf16": (torch.bfloat16, torch.float32), "fp32": (torch.float32, torch.float32)}


def test_cpu_answer_agrees_with_onednn():
    assert precision.native_bf16("cpu") == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert precision.native_bf16("meta") is False
