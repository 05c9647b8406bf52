"""config.yml is read by a loader that builds configuration classes only: a shared run folder cannot run code."""

from __future__ import annotations

import shutil

import pytest
import yaml
from conftest import BIN, run

from genvs_ns.errors import DataError
from genvs_ns.scripts.run_config import read_config


@pytest.mark.parametrize("preset", ["genvs_trainer", "genvs_tiny_trainer"])
def test_every_config_a_preset_writes_loads_equal(preset, tmp_path):
    import genvs_ns.config

    config = getattr(genvs_ns.config, preset)()
    path = tmp_path / "config.yml"
    path.write_text(yaml.dump(config))  # as nerfstudio's TrainerConfig.save_config writes it
    assert read_config(path) == config


def test_the_config_ns_train_wrote_loads_as_nerfstudio_reads_it(tiny_run):
    loaded = read_config(tiny_run)
    assert loaded == yaml.load(tiny_run.read_text(), Loader=yaml.Loader)
    assert loaded.pipeline.model.view_pooling == "visible"


def _with(tmp_path, base_text: str, extra: str):
    path = tmp_path / "config.yml"
    path.write_text(base_text + "\n" + extra + "\n")
    return path


@pytest.mark.parametrize(
    "line, tag",
    [
        ("x: !!python/object/apply:os.system ['touch {marker}']", "!!python/object/apply:os.system"),
        ("x: !!python/object/new:os.system ['touch {marker}']", "!!python/object/new:os.system"),
        ("x: !!python/name:os.system ''", "!!python/name:os.system"),
        ("x: !!python/module:os", "!!python/module:os"),
        ("x: !!python/object:subprocess.Popen {{args: [touch, '{marker}']}}", "!!python/object:subprocess.Popen"),
        ("x: !!python/object/apply:nerfstudio.utils.scripts.run_command ['touch {marker}']", "run_command"),
        ("x: !!python/name:nerfstudio.utils.scripts.run_command ''", "run_command"),
        ("x: !!python/object:nerfstudio.utils.writer.LocalWriter {{}}", "LocalWriter"),
        ("x: !!python/object/apply:pathlib.PosixPath [!!python/object/apply:os.getcwd []]", "os.getcwd"),
        ("x: !local value", "!local"),
    ],
)
def test_tags_that_could_run_code_are_refused_in_one_line(line, tag, tmp_path):
    from genvs_ns.config import genvs_tiny_trainer

    marker = tmp_path / "pwned"
    path = _with(tmp_path, yaml.dump(genvs_tiny_trainer()), line.format(marker=marker))
    with pytest.raises(DataError) as err:
        read_config(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and tag in message and "refused" in message
    assert not marker.exists()


def test_not_a_trainer_config_is_refused(tmp_path):
    (tmp_path / "a.yml").write_text("method_name: genvs-tiny\n")
    with pytest.raises(DataError, match="not a trainer config"):
        read_config(tmp_path / "a.yml")
    (tmp_path / "b.yml").write_text("x: [unclosed\n")
    with pytest.raises(DataError, match="not readable YAML"):
        read_config(tmp_path / "b.yml")


@pytest.mark.parametrize("name, then, now", [("view_pooling", "mean", "visible"), ("encoder_norm", "frozen", "group")])
def test_a_config_from_before_a_setting_keeps_what_it_was_trained_with(name, then, now, tmp_path):
    from genvs_ns.config import genvs_tiny_trainer

    config = genvs_tiny_trainer()
    del config.pipeline.model.__dict__[name]
    text = yaml.dump(config)
    assert name not in text
    assert getattr(read_config(_with(tmp_path, text, "")).pipeline.model, name) == then
    assert getattr(genvs_tiny_trainer().pipeline.model, name) == now


@pytest.mark.slow
def test_genvs_sample_refuses_a_run_folder_whose_config_runs_a_command(tiny_run, tmp_path):
    """The measured attack: a run folder whose config.yml would `touch` a file when opened."""
    folder = tmp_path / "shared"
    shutil.copytree(tiny_run.parent, folder)
    marker = tmp_path / "pwned"
    text = (folder / "config.yml").read_text()
    assert "\nexperiment_name: e\n" in text
    attack = f"\nexperiment_name: !!python/object/apply:os.system ['touch {marker}']\n"
    (folder / "config.yml").write_text(text.replace("\nexperiment_name: e\n", attack))
    out = tmp_path / "out"
    res = run(BIN / "genvs-sample", "--load-config", folder / "config.yml", "--output-dir", out, "--num-frames", "1")
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1].startswith("genvs-sample: error:")
    assert "!!python/object/apply:os.system" in res.stderr and "config.yml" in res.stderr
    assert not marker.exists() and not out.exists()
