"""scripts/gpu_smoke.sh on a machine without CUDA: GPU checks say they were skipped; the CPU ones run and pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_smoke_runs_on_the_cpu_and_says_what_it_skipped():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the whole smoke check, minutes long")
    res = run(ROOT / "scripts" / "gpu_smoke.sh", cwd=ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    report = json.loads(res.stdout)
    assert report["failed"] == []
    assert report["device"]["cuda"] is False
    for pooling in ("visible", "mean"):  # two paths, not one twice
        assert report["trilinear"]["ok"] and report["trilinear"][pooling]["max_abs_diff_grads"] > 0
    for name in (
        "field_tcnn", "render_compile", "train", "train_eager", "losses_match", "train_8", "step_profile", "nonfinite",
        "mixed_precision", "sample", "evaluate", "max_batch",
    ):  # fmt: skip
        assert report[name]["status"] == "skipped: no CUDA device", name
