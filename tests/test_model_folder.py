"""genvs-export's model folder: EMA weights as safetensors and settings as JSON, opened without pickle or YAML tags,
sampling exactly as the run it came from."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import yaml
from conftest import BIN, run
from PIL import Image

from genvs_ns.errors import DataError
from genvs_ns.scripts.model_folder import export_model, load_model_folder, load_pipeline_folder

FAST = ["--num-frames", "2", "--steps", "2"]


@pytest.fixture(scope="module")
def model_folder(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "model"
    export_model(tiny_run, out)
    return out


def test_the_folder_holds_safetensors_json_and_a_card(model_folder, tiny_run):
    assert sorted(p.name for p in model_folder.iterdir()) == [
        "README.md", "denoiser.json", "model.json", "model.safetensors",
    ]  # fmt: skip
    settings = json.loads((model_folder / "model.json").read_text())
    assert settings["method"] == "genvs-tiny" and settings["training"]["step"] == 2
    assert settings["model"]["view_pooling"] == "visible" and settings["model"]["volume_resolution"] == 16
    assert "!!python" not in (model_folder / "model.json").read_text()
    card = (model_folder / "README.md").read_text()
    assert "genvs-sample --load-model" in card and "| steps | 3 |" in card


def test_opening_it_unpickles_nothing_and_reads_no_yaml(model_folder, tiny_run, monkeypatch):
    from genvs_ns.scripts.checkpoint import load_model

    expected = load_model(tiny_run)

    def refused(*args, **kwargs):
        raise AssertionError("a model folder must open without pickle or YAML")

    monkeypatch.setattr(pickle, "load", refused)
    monkeypatch.setattr(pickle, "loads", refused)
    monkeypatch.setattr(pickle, "Unpickler", refused)
    monkeypatch.setattr(torch, "load", refused)
    monkeypatch.setattr(yaml, "load", refused)
    model = load_model_folder(model_folder)
    got, want = model.ema.state_dict(), expected.ema.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert torch.equal(model.net.field.mlp.layers[0].weight, want["field.mlp.layers.0.weight"])
    assert model.image_hw == expected.image_hw and torch.equal(model.world_up, expected.world_up)
    assert model.config.view_pooling == expected.config.view_pooling


def test_a_pipeline_over_a_data_set_scores_as_the_run_does(model_folder, tiny_run, toy32):
    from genvs_ns.sampling.views import render_pairs
    from genvs_ns.scripts.checkpoint import load_pipeline

    ours, theirs = load_pipeline_folder(model_folder, toy32), load_pipeline(tiny_run)
    assert ours.datamanager.eval_pairs == theirs.datamanager.eval_pairs
    batch = ours.datamanager.eval_batch(ours.datamanager.eval_pairs[:1])
    a, b = render_pairs(ours.model, batch), render_pairs(theirs.model, batch)
    torch.testing.assert_close(a.rgb, b.rgb)
    with pytest.raises(DataError, match="give --data"):
        load_pipeline_folder(model_folder, None)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 64), "not readable safetensors"),
        (lambda f: (f / "denoiser.json").unlink(), "missing from the model folder"),
        (lambda f: _edit(f, lambda s: s.update(format="other")), "not a genvs-ns model folder"),
        (lambda f: _edit(f, lambda s: s.update(version=99)), "format version 99"),
        (lambda f: _edit(f, lambda s: s["model"].update(warp_drive=True)), "unknown setting 'warp_drive'"),
        (lambda f: _edit(f, lambda s: s["model"].update(volume_channels=8)), "does not match model.json"),
        (lambda f: _edit(f, lambda s: s["model"].update(noise_draws=0)), "model.json: model.noise-draws"),
        (lambda f: (f / "model.json").write_text("{"), "not JSON"),
    ],
)
def test_a_damaged_folder_is_refused_in_one_line(model_folder, tmp_path, damage, message):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(model_folder, folder)
    damage(folder)
    with pytest.raises(Exception, match=message) as err:
        load_model_folder(folder)
    assert "\n" not in str(err.value)


def _edit(folder, change) -> None:
    settings = json.loads((folder / "model.json").read_text())
    change(settings)
    (folder / "model.json").write_text(json.dumps(settings))


def test_export_refuses_a_folder_that_holds_files(tiny_run, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        export_model(tiny_run, tmp_path / "x")
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_genvs_sample_from_the_folder_draws_the_runs_frames(tiny_run, toy32, tmp_path):
    """Through the CLIs: genvs-export, then genvs-sample --load-model on a picture and on a data set object."""
    folder = tmp_path / "shared"
    res = run(BIN / "genvs-export", tiny_run, folder)
    assert res.returncode == 0, res.stderr[-3000:]
    picture = next(toy32.rglob("rgb/*.png"))
    for source, name in ((["--load-config", tiny_run], "run"), (["--load-model", folder], "folder")):
        res = run(BIN / "genvs-sample", *source, "--image", picture, "--output-dir", tmp_path / name, *FAST)
        assert res.returncode == 0, res.stderr[-3000:]
    for frame in ("00000.png", "00001.png"):
        a = Image.open(tmp_path / "run" / "frames" / frame)
        b = Image.open(tmp_path / "folder" / "frames" / frame)
        assert a.tobytes() == b.tobytes()
    res = run(BIN / "genvs-sample", "--load-model", folder, "--output-dir", tmp_path / "obj", *FAST)
    assert res.returncode == 1 and "--data" in res.stderr.strip().splitlines()[-1]
    res = run(BIN / "genvs-sample", "--load-model", folder, "--data", toy32, "--output-dir", tmp_path / "obj", *FAST)
    assert res.returncode == 0, res.stderr[-3000:]
