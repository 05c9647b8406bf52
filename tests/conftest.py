from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from genvs_ns.data.toy import generate


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
    """Training-sized toy data for model tests: 8 objects (6/1/1), 8 views, 32 px."""
    root = tmp_path_factory.mktemp("toy32") / "srn"
    generate(root, num_objects=8, num_views=8, resolution=32, seed=5)
    return root


def tiny_trainer_config(data: Path):
    """The genvs-tiny preset, shrunk further so a test step takes a fraction of a second."""
    from genvs_ns.config import genvs_tiny_trainer

    config = genvs_tiny_trainer()
    config.pipeline.datamanager.data = data
    config.pipeline.datamanager.objects_per_batch = 2
    config.pipeline.datamanager.eval_num_objects = 1
    model = config.pipeline.model
    model.volume_resolution, model.volume_depth, model.decoder_channels = 16, 8, 32
    model.num_coarse_samples, model.num_importance_samples, model.aux_num_rays = 8, 8, 64
    return config
