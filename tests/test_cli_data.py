"""Data CLIs in a subprocess: toy generation, data summary, and ns-train's handling of malformed SRN folders."""

from __future__ import annotations

import json

from conftest import BIN, run


def test_toy_data_and_data_info(tmp_path):
    res = run(BIN / "genvs-toy-data", tmp_path / "toy", "--num-objects", "5", "--num-views", "3", "--resolution", "16")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["objects"] == {"train": 3, "val": 1, "test": 1}
    again = run(BIN / "genvs-toy-data", tmp_path / "toy", "--num-objects", "5")
    assert again.returncode != 0 and "already exists" in again.stderr and "Traceback" not in again.stderr
    info = run(BIN / "genvs-data-info", tmp_path / "toy")
    assert info.returncode == 0, info.stderr
    summary = json.loads(info.stdout)
    assert summary["train"]["objects"] == 3 and summary["train"]["image_sizes"] == [[16, 16]]
