"""scripts/benchmark.py's step_profile sorts every copying .to() by what it copies: the issue's "dtype casts" were
all of them, and only tensor dtype casts are what autocast's weight casts cost a GPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch.profiler import profile

ROOT = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_to_copy_kinds_tells_dtype_casts_from_scalars_and_layouts():
    kinds = _benchmark()._to_copy_kinds
    x = torch.randn(2, 3, 4, 4)
    with profile(record_shapes=True) as prof:
        x.to(torch.bfloat16)  # a tensor dtype cast
        x.to(torch.float64)  # another
        _ = x * 0.5  # the Python number converted to float32: a scalar cast
        x.contiguous(memory_format=torch.channels_last).to(memory_format=torch.contiguous_format)  # layout copies
        with torch.autograd.profiler.record_function("Optimizer.step#outside-test"):
            x.to(torch.bfloat16)
    assert kinds(prof.events()) == {"tensor_dtype_casts": 3, "scalar_casts": 1, "layout_copies": 1}
    outside = {"tensor_dtype_casts": 2, "scalar_casts": 1, "layout_copies": 1}
    assert kinds(prof.events(), outside="Optimizer.step") == outside


def test_operators_are_counted_under_their_nearest_labelled_part():
    by_part = _benchmark()._operators_by_part
    x = torch.randn(4, 4, requires_grad=True)
    with profile() as prof:
        with torch.autograd.profiler.record_function("part: outer"):
            y = x.exp()
            with torch.autograd.profiler.record_function("part: inner"):
                y = y.relu()  # the inner part's, not the outer's
        y.sum().backward()
        with torch.autograd.profiler.record_function("Optimizer.step#test"):
            x.detach().add_(1)
    parts = by_part(prof.events())
    assert parts["outer"] == 1 and parts["inner"] >= 1  # aten::exp only; aten::relu and what it calls
    assert parts["backward"] > 0 and parts["optimizer step"] >= 2  # detach, add_
    assert parts.get("other", 0) >= 1  # aten::sum, outside every label
