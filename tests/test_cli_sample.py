"""``genvs-sample`` and ``genvs-contact-sheet`` through their real CLIs on a checkpoint ns-train wrote."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import BIN, run
from PIL import Image

from genvs_ns.errors import GeNVSError

FAST = ["--steps", "3", "--num-frames", "3"]


def _frames(folder):
    return [np.asarray(Image.open(p)) for p in sorted((folder / "frames").iterdir())]


@pytest.mark.slow
def test_sample_writes_frames_videos_and_is_seeded(tiny_run, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed, extra in [(a, "1", []), (b, "1", []), (c, "2", ["--formats", "gif", "mp4", "--video-scale", "2"])]:
        res = run(BIN / "genvs-sample", "--load-config", tiny_run, "--output-dir", out, "--seed", seed, *FAST, *extra)
        assert res.returncode == 0, res.stderr[-3000:]
    # The animation for pages: input | sample | NeRF RGB side by side, every frame, upscaled 2x.
    turntable = Image.open(c / "turntable.gif")
    assert turntable.n_frames == 3 and turntable.size == (2 * (3 * 32 + 4), 2 * 32)
    assert (c / "samples.gif").is_file() and (c / "turntable.mp4").is_file()
    assert sorted(p.name for p in (a / "frames").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    for name in ("samples.mp4", "nerf_rgb.mp4"):
        assert iio.improps(a / name, plugin="pyav").shape == (3, 32, 32, 3)
    assert all(np.array_equal(x, y) for x, y in zip(_frames(a), _frames(b)))
    assert not all(np.array_equal(x, y) for x, y in zip(_frames(a), _frames(c)))
    run_json = json.loads((a / "run.json").read_text())
    assert run_json["frames"] == 3 and run_json["sampling"]["sampler"] == "euler_ancestral"  # the model's default
    assert run_json["settings"]["sampling"]["sampler"] is None  # what was asked: nothing
    # Autoregressive: frame 2 sees the input, frame 0 and the previous frame 1; genvs-tiny warps the input into each,
    # and the earlier frames where the input does not see.
    context = run_json["context"]
    assert context[:2] == [["input0", "warped:input0"], ["input0", "frame0", "warped:input0", "warped:frame0"]]
    assert context[2][:4] == ["input0", "frame0", "frame1", "warped:input0"]
    assert sorted(context[2][4:]) == ["warped:frame0", "warped:frame1"]
    # Autoregressive output gets both consistency scores, for the samples and for the NeRF RGB as the reference.
    scores = json.loads((a / "consistency.json").read_text())
    for name in ("samples", "nerf_rgb"):
        assert 0 <= run_json["consistency"][name]["tsed"] <= 1 and run_json["consistency"][name]["tsed_pairs"] == 2
        assert {"reprojection", "reprojection_shuffled"} <= set(scores[name])
        assert isinstance(run_json["consistency"][name]["reprojection_points"], int)
    sheet = Image.open(a / "contact_sheet.png")
    assert sheet.size[0] > 3 * 32 and sheet.size[1] > 3 * 32  # input row, samples row, NeRF row


@pytest.mark.slow
def test_sample_dataset_trajectory_non_autoregressive_with_progress(tiny_run, tmp_path):
    out = tmp_path / "d"
    res = run(
        BIN / "genvs-sample", "--load-config", tiny_run, "--output-dir", out, "--trajectory", "dataset",
        "--no-autoregressive", "--sampler", "dpmpp_2m", "--save-progress", "--input-views", "0", "3", *FAST,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    run_json = json.loads((out / "run.json").read_text())
    # Each frame warps in whichever of the two inputs is nearer it, then the other where the first does not see.
    assert all(names[:2] == ["input0", "input1"] and sorted(names[2:]) == ["warped:input0", "warped:input1"]
               for names in run_json["context"]) and len(run_json["context"]) == 3  # fmt: skip
    assert 0 <= run_json["consistency"]["ground_truth"]["tsed"] <= 1  # the data set's own views, as a reference
    assert Image.open(out / "progress" / "00000.png").size == (3 * 32, 32)  # one denoised estimate per step


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["--load-config", "/nonexistent/config.yml"], "no such config"),
        (["--object", "99"], "--object 99 out of range"),
        (["--image", "/nonexistent.png"], "/nonexistent.png: no such file (--image)"),
    ],
)
def test_sample_errors_are_one_line(tiny_run, tmp_path, args, message):
    base = ["--load-config", tiny_run] if "--load-config" not in args else []
    res = run(BIN / "genvs-sample", *base, "--output-dir", tmp_path / "x", *FAST, *args)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0], res.stderr[-2000:]


@pytest.mark.parametrize(
    "flag, value", [("--sampler", "nope"), ("--sampler", "dpm_fast"), ("--split", "tset"), ("--trajectory", "spirl")]
)
def test_sample_choices_are_tyros(flag, value, capsys):
    """--sampler, --split and --trajectory are choices: tyro lists them in --help and refuses a typo itself."""
    import tyro

    from genvs_ns.scripts.sample import SampleArgs

    with pytest.raises(SystemExit):
        tyro.cli(SampleArgs, args=["--load-config", "c.yml", "--output-dir", "o", flag, value])
    assert f"invalid choice '{value}' for argument '{flag}'" in " ".join(capsys.readouterr().err.split())


def test_sampler_choices_are_k_diffusions_samplers_with_a_schedule():
    import typing

    from genvs_ns.sampling import SamplerName
    from genvs_ns.sampling.diffusion import SAMPLERS

    assert list(typing.get_args(SamplerName)) == SAMPLERS


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"sampler": "dpm_fast"}, "sampler 'dpm_fast' takes no noise schedule"),
        ({"steps": 0}, "--steps must be at least 1"),
        ({"guidance_scale": -1.0}, "--guidance-scale must be at least 0"),
    ],
)
def test_sample_refuses_bad_sampler_settings_before_loading_anything(tiny_run, tmp_path, settings, message):
    from genvs_ns.errors import GeNVSError
    from genvs_ns.sampling import SamplerFlags
    from genvs_ns.scripts.sample import SampleArgs, main

    args = SampleArgs(load_config=tiny_run, output_dir=tmp_path / "x", sampling=SamplerFlags(**settings))
    with pytest.raises(GeNVSError, match=message):
        main(args)


@pytest.mark.slow
def test_sample_rejects_another_methods_config_and_unreadable_image(tiny_run, tmp_path):
    other = tmp_path / "config.yml"
    other.write_text(tiny_run.read_text().replace("method_name: genvs-tiny", "method_name: nerfacto"))
    res = run(BIN / "genvs-sample", "--load-config", other, "--output-dir", tmp_path / "x", *FAST)
    assert res.returncode != 0 and "'nerfacto' checkpoint, not genvs" in res.stderr
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    res = run(BIN / "genvs-sample", "--load-config", tiny_run, "--output-dir", tmp_path / "y", "--image", broken, *FAST)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert f"{broken}: unreadable or truncated image" in res.stderr


@pytest.mark.slow
def test_sample_own_image_without_the_training_data(tiny_run, toy32, tmp_path):
    """A checkpoint copied away from its data set still samples a user's picture: the camera facts travel with it."""
    moved = tmp_path / "moved"
    shutil.copytree(tiny_run.parent, moved)
    config = moved / "config.yml"
    text = config.read_text()
    assert f"\n- {toy32.name}\n" in text  # pathlib parts, one per line
    config.write_text(text.replace(f"\n- {toy32.name}\n", f"\n- {toy32.name}-not-here\n"))
    picture = next(toy32.rglob("rgb/*.png"))
    out = tmp_path / "own"
    res = run(BIN / "genvs-sample", "--load-config", config, "--output-dir", out, "--image", picture, *FAST)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list((out / "frames").iterdir())) == 3
    assert Image.open(out / "frames" / "00000.png").size == (32, 32)  # the training image size, from the checkpoint
    # Data set objects do need the data: one line says which folder is missing.
    res = run(BIN / "genvs-sample", "--load-config", config, "--output-dir", tmp_path / "obj", *FAST)
    assert res.returncode != 0 and "Traceback" not in res.stderr and f"{toy32.name}-not-here" in res.stderr


def test_relative_data_is_found_from_another_working_directory(toy32, tmp_path, monkeypatch):
    """ns-train --data D (relative) records D relative to where it ran; loading from elsewhere still finds it."""
    from genvs_ns.config import genvs_tiny_trainer
    from genvs_ns.scripts.checkpoint import locate_data

    work = tmp_path / "work"
    run_dir = work / "outputs" / "e" / "genvs-tiny" / "t"
    run_dir.mkdir(parents=True)
    (work / "data").symlink_to(toy32, target_is_directory=True)
    config = genvs_tiny_trainer()
    config.output_dir, config.experiment_name, config.timestamp = Path("outputs"), "e", "t"
    config.pipeline.datamanager.data = Path("data")
    monkeypatch.chdir(tmp_path)  # not where training ran
    locate_data(config, Path("work/outputs/e/genvs-tiny/t/config.yml"))
    assert config.pipeline.datamanager.data == work.resolve() / "data"
    # Nothing there: left as it was, for the data parser's one-line error.
    config.pipeline.datamanager.data = Path("elsewhere")
    locate_data(config, run_dir / "config.yml")
    assert config.pipeline.datamanager.data == Path("elsewhere")


@pytest.mark.slow
def test_export_nerfstudio_makes_a_data_set_that_nerfacto_trains_on(tiny_run, tmp_path):
    """One picture to a 3D scene: the input view and the samples (rings over the upper hemisphere by default) as
    nerfstudio-data, read by nerfstudio's own dataparser and trained on by ns-train nerfacto."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    from genvs_ns.sampling import SamplerFlags
    from genvs_ns.scripts.sample import SampleArgs, main

    scene = tmp_path / "scene"
    args = SampleArgs(
        load_config=tiny_run, output_dir=tmp_path / "out", num_frames=6, export_nerfstudio=scene,
        sampling=SamplerFlags(steps=2),
    )  # fmt: skip
    run_json = main(args)
    assert run_json["settings"]["trajectory"] == "rings" and str(scene / "transforms.json") in run_json["outputs"]
    parsed = NerfstudioDataParserConfig(data=scene, eval_mode="all").setup().get_dataparser_outputs("train")
    assert len(parsed.image_filenames) == 7  # the input view and 6 samples
    assert int(parsed.cameras.width[0]) == 32 and float(parsed.cameras.fx[0]) == pytest.approx(131.25 / 4)
    # ns-train nerfacto, except that its evaluation-only LPIPS metric, which downloads AlexNet weights when built
    # (impossible here), is replaced by a stand-in: training itself is nerfacto's.
    ns_train = (
        "import sys, torch, torchmetrics.image.lpip as m\n"
        "class NoLPIPS(torch.nn.Module):\n"
        "    def __init__(self, *a, **k): super().__init__()\n"
        "    def forward(self, a, b): return torch.zeros(())\n"
        "m.LearnedPerceptualImagePatchSimilarity = NoLPIPS\n"
        "from nerfstudio.scripts.train import entrypoint\n"
        "sys.argv[0] = 'ns-train'\n"
        "entrypoint()\n"
    )
    res = run(
        sys.executable, "-c", ns_train, "nerfacto", "--data", scene, "--output-dir", tmp_path / "nerfacto",
        "--vis", "tensorboard", "--max-num-iterations", "3", "--machine.device-type", "cpu",
        "--pipeline.datamanager.train-num-rays-per-batch", "256", "--pipeline.model.eval-num-rays-per-chunk", "256",
        "nerfstudio-data", "--eval-mode", "all",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert list((tmp_path / "nerfacto").rglob("step-*.ckpt"))
    with pytest.raises(GeNVSError, match="already holds a transforms.json"):
        main(args)
