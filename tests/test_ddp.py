"""DDP correctness on a 2-process gloo group (the CPU stand-in for nerfstudio's multi-GPU launch)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_shard_objects_sync_gradients_and_stay_identical(toy32, tmp_path):
    out = tmp_path / "ddp.json"
    worker = Path(__file__).parent / "ddp_worker.py"
    res = subprocess.run(
        [sys.executable, str(worker), str(toy32), str(_free_port()), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rank0, rank1 = json.loads(out.read_text())
    assert set(rank0["objects"]).isdisjoint(rank1["objects"])  # each rank trains on its own objects
    assert sorted(rank0["objects"] + rank1["objects"]) == list(range(6))
    # Different batches per rank, yet all-reduced gradients and identical weights after every step.
    assert rank0["grad_sum"] == pytest.approx(rank1["grad_sum"], rel=1e-5, abs=1e-7)
    assert rank0["grad"] == pytest.approx(rank1["grad"], rel=1e-5)
    assert rank0["param_sum"] == pytest.approx(rank1["param_sum"], rel=1e-9, abs=1e-9)
    assert rank0["param_norm"] == pytest.approx(rank1["param_norm"], rel=1e-9)


@pytest.mark.slow
def test_a_non_finite_loss_on_one_rank_stops_every_rank_at_that_step(toy32, tmp_path):
    """Before, only the rank whose loss was NaN stopped; the other waited in the next all-reduce for 30 minutes."""
    out = tmp_path / "ddp.json"
    worker = Path(__file__).parent / "ddp_worker.py"
    res = subprocess.run(
        [sys.executable, str(worker), str(toy32), str(_free_port()), str(out), "nan"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rank0, rank1 = json.loads(out.read_text())
    assert rank0["stopped_at"] == rank1["stopped_at"] == 2
    assert rank1["error"].startswith("step 2: non-finite loss (rgb_loss nan)") and "\n" not in rank1["error"]
    assert rank0["error"].startswith("step 2: non-finite loss (on another DDP process)")
    assert abs(rank0["time"] - rank1["time"]) < 10
