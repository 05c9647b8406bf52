"""``genvs-toy-data --kind mixed``: categories, part colours, determinism, exact depth, and the srn dataparser on it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_geometry_reprojection import _nearby_pairs, _reproject

from genvs_ns.data.srn_dataparser import SRNDataParserConfig
from genvs_ns.data.toy import MIXED_CATEGORIES, generate, mixed_category, random_mixed
from genvs_ns.data.toy.objects import FLOOR
from genvs_ns.data.toy.primitives import AXES, Box, Cylinder, Paint, Sphere
from genvs_ns.data.toy.writer import _object_rng


@pytest.fixture(scope="module")
def mixed_root(tmp_path_factory) -> Path:
    """6 mixed objects (4/1/1), 3 views, 32 px, with depth."""
    root = tmp_path_factory.mktemp("mixed") / "srn"
    generate(root, num_objects=6, num_views=3, resolution=32, seed=2, depth=True, kind="mixed")
    return root


def _seed_of(category: str) -> int:
    """The first seed whose object 0 is of this category."""
    return next(s for s in range(1000) if mixed_category(s) == category)


def _far_points(part) -> np.ndarray:
    """Points among which a part's farthest point from the origin (and its lowest and highest) lies, to ~1e-4."""
    if isinstance(part, Box):
        return np.array(np.meshgrid(*zip(part.lo, part.hi))).reshape(3, -1).T
    if isinstance(part, Sphere):
        return part.centre + part.radius * np.concatenate(
            [np.eye(3), -np.eye(3), [part.centre / np.linalg.norm(part.centre)]]
        )
    a = AXES[part.axis]
    angle = np.linspace(0, 2 * np.pi, 256)
    rims = np.repeat(part.centre[None], 512, axis=0)
    rims[:, a] += np.repeat([-part.half_height, part.half_height], 256)
    r0, r1 = (i for i in range(3) if i != a)
    rims[:, r0] += part.radius * np.tile(np.cos(angle), 2)
    rims[:, r1] += part.radius * np.tile(np.sin(angle), 2)
    return rims


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_every_category_appears_and_mixed_category_matches_the_object():
    assert {mixed_category(s) for s in range(40)} == set(MIXED_CATEGORIES)
    for seed in range(10):
        rng, _ = _object_rng(seed, 3)
        assert random_mixed(rng).category == mixed_category(seed, 3)


def test_objects_fit_the_cameras_and_parts_have_their_own_colours():
    for seed in range(300):
        obj = random_mixed(_object_rng(seed, 0)[0])
        points = np.concatenate([_far_points(p) for p in obj.parts])
        # Within radius ~0.5, standing on the floor: inside near/far 0.8/1.8 from cameras at radius 1.3.
        assert np.linalg.norm(points, axis=1).max() < 0.52, obj.category
        assert points[:, 2].min() == pytest.approx(FLOOR) and points[:, 2].max() < 0.36, obj.category
        assert len({tuple(p.paint.colour) for p in obj.parts}) >= 2, obj.category


def test_tube_hits_outer_wall_caps_and_inner_wall_but_not_the_hole():
    tube = Cylinder(np.zeros(3), 0.3, 0.1, "z", Paint(np.ones(3)), inner_radius=0.2)
    o = np.array([[0, 0, 1.0], [0.25, 0, 1], [1, 0, 0], [0, 0, 1]])
    d = np.array([[0, 0, -1.0], [0, 0, -1], [-1, 0, 0], [0.2, 0, -1]])  # the last enters the hole, meets the wall
    t, normal = tube.hit(o, d)
    np.testing.assert_allclose(t, [np.inf, 0.9, 0.7, 1.0])
    np.testing.assert_allclose(normal[1:], [[0, 0, 1], [1, 0, 0], [-1, 0, 0]], atol=1e-12)
    t, normal = Sphere(np.array([0.0, 0, 0]), 0.5, Paint(np.ones(3))).hit(o[:1], d[:1])
    np.testing.assert_allclose(t, [0.5])
    np.testing.assert_allclose(normal, [[0, 0, 1]])


def test_images_have_coloured_foreground_of_several_part_colours(mixed_root):
    assert sorted(p.name for p in mixed_root.iterdir()) == ["mixed_test", "mixed_train", "mixed_val"]
    instances = sorted(mixed_root.glob("mixed_*/*"))
    assert len(instances) == 6
    for inst in instances:
        for png in sorted((inst / "rgb").iterdir()):
            image = np.asarray(Image.open(png)).reshape(-1, 3).astype(float)
            fg = image[(image < 255).any(axis=1)]
            assert len(fg) > 0.03 * len(image), png
            # Shading scales a colour, so chromaticity tells part colours apart; a few pixels per colour at least.
            bright = fg[fg.sum(axis=1) > 90]
            chroma, counts = np.unique(
                np.round(bright / bright.sum(axis=1, keepdims=True) / 0.04), axis=0, return_counts=True
            )
            common = chroma[counts >= 0.05 * len(bright)] * 0.04
            spread = np.abs(common[:, None] - common[None]).max()
            assert spread > 0.08, f"{png}: a single colour"


def test_depth_is_zero_exactly_on_background(mixed_root):
    for inst in sorted(mixed_root.glob("mixed_*/*")):
        depth = np.load(inst / "depth" / "000000.npy")
        image = np.asarray(Image.open(inst / "rgb" / "000000.png"))
        background = (image == 255).all(axis=-1)
        assert (depth[background] == 0).all()
        assert ((depth[~background] > 0.8) & (depth[~background] < 1.8)).all()  # inside the mixed near/far


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        generate(tmp_path / name, 3, 2, 16, seed=seed, depth=True, kind="mixed")
    a, b, c = (_digest(tmp_path / x) for x in "abc")
    assert a == b
    assert len(a) == 3 * (2 * 3 + 1)
    assert {v for k, v in a.items() if "intrinsics" not in k}.isdisjoint(c.values())


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown kind"):
        generate(tmp_path, 1, 1, 8, seed=0, kind="boats")


def test_dataparser_reads_a_mixed_root(mixed_root):
    parser = SRNDataParserConfig(data=mixed_root).setup()
    out = parser.get_dataparser_outputs(split="train")
    assert (out.metadata["near"], out.metadata["far"], out.metadata["category"]) == (0.8, 1.8, "mixed")
    assert len(out.metadata["object_ids"]) == 4 and len(out.image_filenames) == 4 * 3
    assert [len(parser.get_dataparser_outputs(split=s).metadata["object_ids"]) for s in ("val", "test")] == [1, 1]


@pytest.mark.parametrize("category", MIXED_CATEGORIES)
def test_reprojected_pixels_keep_their_colour(category, tmp_path):
    generate(tmp_path, num_objects=1, num_views=8, resolution=96, seed=_seed_of(category), depth=True, kind="mixed")
    out = SRNDataParserConfig(data=tmp_path).setup().get_dataparser_outputs(split="train")
    visible, agree = map(sum, zip(*(_reproject(out, i, j) for i, j in _nearby_pairs(out))))
    assert visible > 500, "too few pixels seen from both views: geometry is off"
    # Below the cars' 97%: thin tube rims, poles and dots put more pixels within a quarter pixel of a colour edge
    # (a wrong camera convention or depth leaves almost nothing visible in both views; see the control for cars).
    assert agree / visible > 0.93, f"only {agree / visible:.1%} of reprojected pixels keep their colour"
