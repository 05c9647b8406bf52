"""``ns-train genvs-tiny`` through nerfstudio's real CLI: trains, logs every loss, checkpoints, resumes, and rejects
malformed data with one line."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from conftest import BIN, SMALL_FLAGS, first_instance, run


@pytest.mark.slow
def test_train_checkpoint_resume_and_logged_losses(toy32, tiny_run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "e" / "genvs-tiny" / "t"
    shutil.copytree(tiny_run.parent, run_dir)  # the session's run stays untouched for the other tests
    assert sorted(p.name for p in (run_dir / "nerfstudio_models").iterdir()) == ["step-000000002.ckpt"]
    common = ["--output-dir", tmp_path, "--experiment-name", "e", "--timestamp", "t", *SMALL_FLAGS]

    # nerfstudio resumes at the checkpoint's step + 1 and runs --max-num-iterations more steps; here with an
    # all-images evaluation at step 3 (its logged dict once carried the reasons LPIPS and FID were skipped as strings,
    # which the tensorboard writer refused: the run died there).
    second = run(
        BIN / "ns-train", "genvs-tiny", "--data", toy32, "--max-num-iterations", "2",
        "--load-dir", run_dir / "nerfstudio_models", "--steps-per-eval-all-images", "3",
        "--pipeline.eval-all-sample-steps", "2", *common,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    assert re.search(
        r"Done loading Nerfstudio checkpoint from\s+\S*step-000000002\.ckpt", second.stdout.replace("\n", "")
    )
    assert sorted(p.name for p in (run_dir / "nerfstudio_models").iterdir()) == ["step-000000004.ckpt"]

    tags = set()
    for events in run_dir.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    losses = {"diffusion_loss", "rgb_loss", "source_rgb_loss", "opacity_loss", "depth_prior_loss", "silhouette_loss"}
    assert {f"Train Loss Dict/{name}" for name in losses} <= tags
    assert "Train Metrics Dict/psnr" in tags
    assert {"Eval Images Metrics Dict (all images)/psnr", "Eval Images Metrics Dict (all images)/sample_psnr"} <= tags
    if not any(t.endswith("_lpips") for t in tags):  # without VGG-16 weights on disk: said once, as text
        assert "not computed: lpips_skipped" in second.stdout.replace("\n", "")


@pytest.mark.slow
def test_ns_train_genvs_on_malformed_data_prints_one_line(toy32, tmp_path):
    data = tmp_path / "srn"
    shutil.copytree(toy32, data)
    pose = first_instance(data) / "pose" / "000001.txt"
    m = np.loadtxt(pose)
    m[0, 0] = 3.0
    np.savetxt(pose, m)
    res = run(BIN / "ns-train", "genvs-tiny", "--data", data, "--output-dir", tmp_path / "out", *SMALL_FLAGS)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr + res.stdout
    errors = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(errors) == 1
    assert errors[0].startswith(f"ns-train: error: {pose}: malformed pose: rotation is not orthonormal")
