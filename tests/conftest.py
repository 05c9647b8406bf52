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
