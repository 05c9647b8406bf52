from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from genvs_ns.data.toy import generate


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory) -> Path:
    """The parse cache (and anything else keyed on XDG_CACHE_HOME) goes to a temporary folder, in this process and
    in the commands the tests start, never to the user's ~/.cache."""
    cache = tmp_path_factory.mktemp("xdg_cache")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory) -> Path:
    """A small SRN-layout root with depth maps: 10 objects (8/1/1), 6 views, 32 px. Read-only for tests."""
    root = tmp_path_factory.mktemp("toy") / "srn"
    generate(root, num_objects=10, num_views=6, resolution=32, seed=3, depth=True)
    return root


@pytest.fixture
def toy_copy(toy_root, tmp_path) -> Path:
    """A private copy of the toy root that a test may break."""
    dst = tmp_path / "srn"
    shutil.copytree(toy_root, dst)
    return dst


def first_instance(root: Path, split: str = "train") -> Path:
    return sorted((root / f"cars_{split}").iterdir())[0]


@pytest.fixture(scope="session")
def toy32(tmp_path_factory) -> Path:
    """Training-sized toy data for model tests: 8 objects (6/1/1), 8 views, 32 px, with depth maps."""
    root = tmp_path_factory.mktemp("toy32") / "srn"
    generate(root, num_objects=8, num_views=8, resolution=32, seed=5, depth=True)
    return root


def tiny_trainer_config(data: Path):
    """The genvs-tiny preset, shrunk further so a test step takes a fraction of a second."""
    from genvs_ns.config import genvs_tiny_trainer

    config = genvs_tiny_trainer()
    config.pipeline.datamanager.data = data
    config.pipeline.datamanager.objects_per_batch = 2
    config.pipeline.datamanager.eval_num_objects = 1
    config.pipeline.datamanager.num_workers = 0  # in-process tests build many pipelines: no idle worker processes
    model = config.pipeline.model
    model.volume_resolution, model.volume_depth, model.decoder_channels = 16, 8, 32
    model.num_coarse_samples, model.num_importance_samples, model.aux_num_rays = 8, 8, 64
    return config


BIN = Path(sys.executable).parent

# genvs-tiny shrunk through the CLI, as a user would, so a step takes a fraction of a second.
SMALL_FLAGS = [
    "--vis", "tensorboard",
    "--logging.steps-per-log", "1",
    "--pipeline.datamanager.objects-per-batch", "2",
    "--pipeline.model.volume-resolution", "16",
    "--pipeline.model.volume-depth", "8",
    "--pipeline.model.decoder-channels", "32",
    "--pipeline.model.num-coarse-samples", "8",
    "--pipeline.model.num-importance-samples", "8",
]  # fmt: skip


def run(
    *args, cwd: Path | None = None, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_run(toy32, tmp_path_factory) -> Path:
    """config.yml of a genvs-tiny run that ns-train trained for 3 steps (checkpoint step-000000002.ckpt)."""
    out = tmp_path_factory.mktemp("runs")
    res = run(
        BIN / "ns-train", "genvs-tiny", "--data", toy32, "--max-num-iterations", "3",
        "--output-dir", out, "--experiment-name", "e", "--timestamp", "t", *SMALL_FLAGS,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return out / "e" / "genvs-tiny" / "t" / "config.yml"
