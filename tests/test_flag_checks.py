"""Every numeric and path setting is checked where it is read, before any long work: one line naming the flag and
what it accepts. The table below is the list of bad values tried as a new user would (issue 25); each row must be
refused, and the CLI rows show the wiring: exit status 1, one line, nothing written."""

from __future__ import annotations

import pytest
import tyro
from conftest import BIN, SMALL_FLAGS, run

from genvs_ns.errors import GeNVSError

SAMPLE = [
    (["--max-earlier-frames", "-1"], "--max-earlier-frames must be at least 0"),
    (["--fps", "0"], "--fps must be between 1 and 240"),
    (["--radius", "0"], "--radius must be a finite number greater than 0"),
    (["--focal", "-5"], "--focal must be a finite number greater than 0"),
    (["--elevation", "100"], "--elevation must be between -90 and 90"),
    (["--azimuth", "nan"], "--azimuth must be a finite number"),
    (["--num-frames", "0"], "--num-frames must be at least 1"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--s-noise", "-1"], "--s-noise must be at least 0"),
    (["--eta", "-0.5"], "--eta must be at least 0"),
    (["--churn", "-1"], "--churn must be at least 0"),
    (["--sigma-min", "-0.1"], "--sigma-min must be a finite number greater than 0"),
    (["--sigma-min", "5", "--sigma-max", "1"], "--sigma-min (5.0) must be below --sigma-max (1.0)"),
    (["--guidance-scale", "-1"], "--guidance-scale must be at least 0"),
    (["--seed", "-1"], "--seed must be between 0 and 2^63 - 1"),
    (["--input-views", "1", "2", "3", "4"], "give 1 to 3 --input-views"),
    (["--input-views", "-1"], "--input-views must be view indices of 0 or more"),
    (["--object", "-2"], "--object must be at least 0"),
    (["--generated-frame-weight", "0"], "--generated-frame-weight must be in (0, 1]"),
    (["--image", "/nonexistent.png"], "no such file (--image)"),
    (["--data", "/nonexistent"], "no such folder (--data)"),
    (["--load-model", "/nonexistent"], "no such model folder (--load-model)"),
    (["--load-model", "/tmp", "--load-config", "c.yml"], "give exactly one of --load-config"),
]
EVAL = [
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--consistency-frames", "0"], "--consistency-frames must be at least 1"),
    (["--consistency-objects", "-1"], "--consistency-objects must be at least 0"),
    (["--objects", "0"], "--objects must be all, a number of at least 1"),
    (["--source-views", "-1"], "--source-views must be view indices of 0 or more"),
    (["--target-views", "0"], "--target-views must be all or a positive number"),
    (["--seed", "-1"], "--seed must be between 0 and 2^63 - 1"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--data", "/nonexistent"], "no such data folder (--data)"),
]
CONTACT_SHEET = [
    (["--num-rows", "0"], "--num-rows must be at least 1"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--seed", "-1"], "--seed must be between 0 and 2^63 - 1"),
    (["--data", "/nonexistent"], "no such folder (--data)"),
]
TOY_DATA = [
    (["--num-objects", "0"], "--num-objects must be at least 1"),
    (["--num-views", "0"], "--num-views must be at least 1"),
    (["--resolution", "2"], "--resolution must be at least 4"),
    (["--seed", "-1"], "--seed must be between 0 and 2^63 - 1"),
]
TRAIN = [
    (["--pipeline.model.render-downscale", "0"], "--pipeline.model.render-downscale must be at least 1"),
    (["--pipeline.model.noise-draws", "0"], "--pipeline.model.noise-draws must be at least 1"),
    (["--pipeline.model.joint-views", "0"], "--pipeline.model.joint-views must be at least 1"),
    (
        ["--pipeline.model.warp-known-view", "--pipeline.model.joint-views", "2"],
        "--pipeline.model.warp-known-view needs --pipeline.model.joint-views 1",
    ),
    (
        # genvs-tiny warps with its residual based on the warp: both off, so that the fill has nothing to fill.
        ["--pipeline.model.no-warp-known-view", "--pipeline.model.residual-base", "render",
         "--pipeline.model.warp-fill-views", "1"],
        "--pipeline.model.warp-fill-views needs --pipeline.model.warp-known-view",
    ),  # fmt: skip
    (["--pipeline.model.warp-fill-views", "-1"], "--pipeline.model.warp-fill-views must be at least 0"),
    (["--pipeline.model.noise-std", "0"], "--pipeline.model.noise-std must be a finite number greater than 0"),
    (["--pipeline.model.noise-mean", "inf"], "--pipeline.model.noise-mean must be a finite number"),
    (["--pipeline.model.uncond-prob", "1.5"], "--pipeline.model.uncond-prob must be between 0 and 1"),
    (["--pipeline.model.num-coarse-samples", "0"], "--pipeline.model.num-coarse-samples must be at least 1"),
    (["--pipeline.model.num-importance-samples", "-1"], "--pipeline.model.num-importance-samples must be at least 0"),
    (["--pipeline.model.latent-channels", "2"], "--pipeline.model.latent-channels must be at least 3"),
    (["--pipeline.model.volume-channels", "3"], "--pipeline.model.volume-channels must be at least 4"),
    (["--pipeline.model.aux-num-rays", "0"], "--pipeline.model.aux-num-rays must be at least 1"),
    (["--pipeline.model.ema-max-decay", "2"], "--pipeline.model.ema-max-decay must be between 0 and 1"),
    (["--pipeline.model.rgb-loss-mult", "-1"], "--pipeline.model.rgb-loss-mult must be at least 0"),
    (["--pipeline.model.object-radius", "0"], "--pipeline.model.object-radius must be a finite number greater than 0"),
    (["--pipeline.model.aspp-rates", "0", "2"], "--pipeline.model.aspp-rates must be one or more dilation rates"),
    (["--pipeline.model.backbone-weights", "/nonexistent.pth"], "no such file (--pipeline.model.backbone-weights)"),
    # Any existing file passes the path check; group norms (the default) cannot take batch-norm statistics.
    (["--pipeline.model.backbone-weights", "/etc/passwd"],
     "--pipeline.model.backbone-weights holds batch-norm statistics: pass --pipeline.model.encoder-norm frozen"),
    (["--pipeline.datamanager.objects-per-batch", "0"], "--pipeline.datamanager.objects-per-batch must be at least 1"),
    (["--pipeline.datamanager.min-source-views", "0"], "--pipeline.datamanager.min-source-views must be at least 1"),
    (["--pipeline.datamanager.max-source-views", "1", "--pipeline.datamanager.min-source-views", "2"],
     "--pipeline.datamanager.max-source-views must be at least 2"),
    (["--pipeline.datamanager.num-workers", "-1"], "--pipeline.datamanager.num-workers must be at least 0"),
    (["--pipeline.datamanager.image-cache-size", "-1"], "--pipeline.datamanager.image-cache-size must be at least 0"),
    (["--pipeline.datamanager.seed", "-1"], "--pipeline.datamanager.seed must be between 0 and 2^63 - 1"),
    (["--pipeline.eval-all-sample-steps", "-1"], "--pipeline.eval-all-sample-steps must be at least 0"),
    (["--pipeline.renders.sample-steps", "-1"], "--pipeline.renders.sample-steps must be at least 0"),
    (["--max-num-iterations", "0"], "--max-num-iterations must be at least 1"),
    (["--machine.seed", "-1"], "--machine.seed must be between 0 and 2^63 - 1"),
]  # fmt: skip


def _refused(check, message: str) -> str:
    with pytest.raises(GeNVSError) as err:  # DataError is one too
        check()
    text = str(err.value)
    assert message in text and "\n" not in text, text
    return text


@pytest.mark.parametrize("args, message", SAMPLE)
def test_genvs_sample_flags(args, message, tiny_run, tmp_path):
    from genvs_ns.scripts.sample import SampleArgs

    load = [] if "--load-model" in args else ["--load-config", str(tiny_run)]  # rows naming a model give their own
    parsed = tyro.cli(SampleArgs, args=[*load, "--output-dir", str(tmp_path / "o"), *args])
    _refused(parsed.check, message)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", EVAL)
def test_genvs_eval_flags(args, message, tiny_run, tmp_path):
    from genvs_ns.scripts.evaluate import EvalArgs

    parsed = tyro.cli(EvalArgs, args=["--load-config", str(tiny_run), "--output-dir", str(tmp_path / "o"), *args])
    _refused(parsed.check, message)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", CONTACT_SHEET)
def test_genvs_contact_sheet_flags(args, message, tiny_run, tmp_path):
    from genvs_ns.scripts.contact_sheet import ContactSheetArgs

    parsed = tyro.cli(
        ContactSheetArgs, args=["--load-config", str(tiny_run), "--output", str(tmp_path / "s.png")] + args
    )
    _refused(parsed.check, message)


@pytest.mark.parametrize("args, message", TOY_DATA)
def test_genvs_toy_data_flags(args, message, tmp_path):
    from genvs_ns.scripts.toy_data import ToyDataArgs

    _refused(tyro.cli(ToyDataArgs, args=[str(tmp_path / "d"), *args]).check, message)
    assert not (tmp_path / "d").exists()


def test_genvs_data_info_flags(toy32, tmp_path):
    from genvs_ns.scripts.data_info import summarise

    _refused(lambda: summarise(tmp_path / "missing"), "no such folder (DATA)")
    _refused(lambda: summarise(toy32, 0), "--downscale-factor must be at least 1")


@pytest.mark.parametrize("args, message", TRAIN)
def test_ns_train_genvs_flags(args, message, toy32, tmp_path, capsys):
    """What ns-train runs first: the config, as tyro builds it from the flags, refuses to be written."""
    from genvs_ns.config import genvs_tiny_trainer

    config = tyro.cli(
        type(genvs_tiny_trainer()), default=genvs_tiny_trainer(), args=["--output-dir", str(tmp_path), *args]
    )
    config.pipeline.datamanager.data = toy32
    config.set_timestamp()
    with pytest.raises(SystemExit) as exit_:
        config.save_config()
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip()
    assert message in " ".join(err.split()) and len(err.splitlines()) == 1, err
    assert not any(tmp_path.iterdir())


def test_the_presets_pass_their_own_checks():
    from genvs_ns.config import genvs_tiny_trainer, genvs_trainer

    for preset in (genvs_trainer(), genvs_tiny_trainer()):
        preset.pipeline.check()


@pytest.mark.slow
def test_bad_values_through_the_clis_are_one_line_and_write_nothing(tiny_run, toy32, tmp_path):
    cases = [
        (["genvs-sample", "--load-config", tiny_run, "--output-dir", tmp_path / "s", "--fps", "0"], "--fps"),
        (["genvs-toy-data", tmp_path / "t", "--resolution", "2"], "--resolution"),
        (["ns-train", "genvs-tiny", "--data", toy32, "--output-dir", tmp_path / "r", *SMALL_FLAGS,
          "--pipeline.model.noise-draws", "0"], "--pipeline.model.noise-draws"),
    ]  # fmt: skip
    for (command, *args), flag in cases:
        res = run(BIN / command, *args)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
        assert lines[-1].startswith(f"{command}: error:") and flag in lines[-1], res.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == []
