import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genvs_ns.data.toy import generate


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    generate(tmp_path / "a", 4, 3, 16, seed=7)
    generate(tmp_path / "b", 4, 3, 16, seed=7)
    generate(tmp_path / "c", 4, 3, 16, seed=8)
    a, b, c = (_digest(tmp_path / x) for x in "abc")
    assert a == b
    assert len(a) == 4 * (3 * 2 + 1)
    # Objects differ in every image and pose; only intrinsics.txt (same resolution) may coincide.
    assert {v for k, v in a.items() if "intrinsics" not in k}.isdisjoint(c.values())


def test_layout_intrinsics_and_cameras(toy_root):
    splits = sorted(p.name for p in toy_root.iterdir())
    assert splits == ["cars_test", "cars_train", "cars_val"]
    assert [len(list((toy_root / s).iterdir())) for s in splits] == [1, 8, 1]
    inst = sorted((toy_root / "cars_train").iterdir())[0]
    lines = (inst / "intrinsics.txt").read_text().splitlines()
    assert lines[0].split()[:3] == ["32.812500", "16.000000", "16.000000"]
    assert lines[3] == "32 32"
    for pose in sorted((inst / "pose").iterdir()):
        c2w = np.loadtxt(pose)
        position = c2w[:3, 3]
        assert np.linalg.norm(position) == pytest.approx(1.3)
        assert position[2] > 0  # upper hemisphere, world z up
        # OpenCV: the camera's +z axis points at the origin.
        np.testing.assert_allclose(c2w[:3, 2], -position / 1.3, atol=1e-6)
    image = np.asarray(Image.open(inst / "rgb" / "000000.png"))
    assert image.shape == (32, 32, 3)
    assert (image == 255).all(axis=-1).mean() > 0.3  # white background
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 5  # not a flat silhouette


def test_depth_is_zero_exactly_on_background(toy_root):
    inst = sorted((toy_root / "cars_train").iterdir())[0]
    depth = np.load(inst / "depth" / "000000.npy")
    image = np.asarray(Image.open(inst / "rgb" / "000000.png"))
    background = (image == 255).all(axis=-1)
    assert (depth[background] == 0).all()
    assert ((depth[~background] > 0.8) & (depth[~background] < 1.8)).all()  # inside the cars near/far
