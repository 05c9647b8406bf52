"""genvs-eval: every target view of the chosen objects, batched, written per object, resumable to the same numbers."""

from __future__ import annotations

import csv
import json

import pytest

from genvs_ns.sampling import SamplerFlags


def _args(tiny_run, out, objects: str, **kw):
    from genvs_ns.scripts.evaluate import EvalArgs

    return EvalArgs(
        load_config=tiny_run, output_dir=out, split="train", objects=[objects], target_views="3", batch_size=2,
        sampling=SamplerFlags(steps=2), consistency_objects=1, consistency_frames=3, **kw,
    )  # fmt: skip


def _assert_close(got, expected, rel: float = 1e-4) -> None:
    """Equal keys; numbers equal to ``rel`` (nested dicts too), everything else exactly."""
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, dict):
            _assert_close(got[key], value, rel)
        elif isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=rel, abs=1e-6), key
        else:
            assert got[key] == value, key


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_killed_and_rerun_evaluation_ends_with_the_numbers_of_one_that_ran_through(tiny_run, toy32, tmp_path):
    from genvs_ns.scripts.evaluate import main

    through = main(_args(tiny_run, tmp_path / "through", "3"))
    metrics = through["metrics"]
    assert metrics["objects"] == 3 and metrics["images"] == 9  # 3 target views each, in batches of 2 and 1
    for key in ("nerf_psnr", "nerf_crop_ssim", "sample_psnr", "sample_ssim_std", "input_psnr", "input_crop_psnr"):
        assert isinstance(metrics[key], float)
    # The input view scored as if it were the prediction: the baseline row.
    rows = _rows(tmp_path / "through" / "per_image.csv")
    assert {r["input_psnr"] for r in rows[:3]} != {r["nerf_psnr"] for r in rows[:3]}
    control = metrics["consistency_input_only"]  # the same path, every frame on the input alone
    assert control["paths"] == 1 and control["samples_first_third_psnr"] > 0
    assert metrics["consistency"]["samples_last_third_psnr"] > 0
    assert "lpips_skipped" in metrics or "nerf_lpips" in metrics
    consistency = metrics["consistency"]  # an autoregressive path along object 0's own views
    assert consistency["paths"] == 1 and 0 <= consistency["samples_tsed"] <= 1
    # Reprojection needs opaque pixels, which a 3-step field may not have yet: a number or None, never NaN.
    assert all(consistency[k] is None or consistency[k] >= 0 for k in consistency)
    # The toy data's depth maps lift the data set's own views consistently, unlike the same views shuffled.
    truth_l1, shuffled_l1 = (consistency[f"ground_truth_true_reprojection_l1{s}"] for s in ("", "_shuffled"))
    assert truth_l1 < 0.5 * shuffled_l1
    assert consistency["samples_true_reprojection_l1"] is not None
    assert (tmp_path / "through" / "images").is_dir() and json.loads(
        (tmp_path / "through" / "metrics.json").read_text()
    )

    resumed = tmp_path / "resumed"  # the same data named with --data: the same numbers
    main(_args(tiny_run, resumed, "1", data=toy32))
    # A kill while the second object was being written: its image rows are there, its object row is not.
    partial = _rows(tmp_path / "through" / "per_image.csv")[3:4]
    with open(resumed / "per_image.csv", "a", newline="") as f:
        csv.DictWriter(f, fieldnames=list(partial[0])).writerows(partial)
    again = main(_args(tiny_run, resumed, "3", data=toy32))
    # Object 0's last view was rendered in a batch of 1 by the first run and of 2 (with object 1's first) by the one
    # that ran through: the same draw from its own generator (test_denoiser.py), up to the batched kernels' rounding.
    _assert_close(again["metrics"], metrics)
    assert [r["object"] for r in _rows(resumed / "per_object.csv")] == [
        r["object"] for r in _rows(tmp_path / "through" / "per_object.csv")
    ]
    assert len(_rows(resumed / "per_image.csv")) == 9


def test_bad_eval_settings_fail_before_loading_anything(tmp_path):
    from genvs_ns.errors import DataError, GeNVSError
    from genvs_ns.scripts.evaluate import EvalArgs, main

    with pytest.raises(DataError, match="no such config"):
        main(EvalArgs(load_config=tmp_path / "none.yml", output_dir=tmp_path / "o"))
    config = tmp_path / "run" / "config.yml"
    (config.parent / "nerfstudio_models").mkdir(parents=True)
    (config.parent / "nerfstudio_models" / "step-000000001.ckpt").write_bytes(b"")
    config.write_text("method_name: genvs-tiny\n")
    with pytest.raises(DataError, match=r"elsewhere: no such data folder \(--data\)"):
        main(EvalArgs(load_config=config, output_dir=tmp_path / "o", data=tmp_path / "elsewhere"))
    with pytest.raises(GeNVSError, match="--target-views must be all or a positive number"):
        main(EvalArgs(load_config=config, output_dir=tmp_path / "o", target_views="some"))
    (tmp_path / "a_file").write_text("")
    with pytest.raises(DataError, match=r"a_file: is a file, not a folder \(--output-dir\)"):
        main(EvalArgs(load_config=config, output_dir=tmp_path / "a_file" / "o"))
    # A folder holding results of other settings is refused, and what it holds is left as it was.
    from genvs_ns.evaluation.results import claim_output_dir

    nerf = {"outputs": ["nerf"], "consistency_objects": 0}  # nothing sampled: the config is not read before the claim
    claim_output_dir(
        tmp_path / "o", EvalArgs(load_config=config, output_dir=tmp_path / "o", seed=1, **nerf).result_settings()
    )
    (tmp_path / "o" / "per_object.csv").write_text("results so far\n")
    with pytest.raises(DataError, match=r"holds results of other settings \(seed differ\)"):
        main(EvalArgs(load_config=config, output_dir=tmp_path / "o", seed=2, **nerf))
    assert (tmp_path / "o" / "per_object.csv").read_text() == "results so far\n"
    # Paths begun under another path policy (the sampler's defaults of the day) are not continued under this one.
    earlier = EvalArgs(load_config=config, output_dir=tmp_path / "p", seed=1, **nerf).result_settings()
    earlier["path_policy"]["fill_views"] = 0
    claim_output_dir(tmp_path / "p", earlier)
    with pytest.raises(DataError, match=r"holds results of other settings \(path_policy differ\)"):
        main(EvalArgs(load_config=config, output_dir=tmp_path / "p", seed=1, **nerf))
