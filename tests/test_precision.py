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


def test_autocast_context_runs_matmuls_in_the_chosen_dtype():
    a = torch.randn(4, 4)
    with precision.autocast(torch.bfloat16, "cpu"):
        assert (a @ a).dtype == torch.bfloat16
    with precision.autocast(None, "cpu"):
        assert (a @ a).dtype == torch.float32


def test_cpu_answer_agrees_with_onednn():
    assert precision.native_bf16("cpu") == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert precision.native_bf16("meta") is False
