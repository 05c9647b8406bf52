"""Write toy objects as SRN instance folders: images, poses, intrinsics, and depth maps if asked."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from genvs_ns.data.depth_maps import write_depth
from genvs_ns.data.toy.cameras import SRN_FOCAL_128, look_at_c2w_opencv, pixel_rays, random_camera_positions
from genvs_ns.data.toy.objects import draw_category, random_car, random_mixed
from genvs_ns.data.toy.primitives import render_rays
from genvs_ns.errors import GeNVSError

SPLIT_FRACTIONS = {"val": 0.1, "test": 0.1}

Kind = Literal["cars", "mixed"]
KINDS: tuple[Kind, ...] = ("cars", "mixed")


def write_object(folder: Path, rng: np.random.Generator, num_views: int, res: int, depth: bool, kind: Kind) -> None:
    obj = random_car(rng) if kind == "cars" else random_mixed(rng)
    focal = SRN_FOCAL_128 * res / 128
    (folder / "rgb").mkdir(parents=True)
    (folder / "pose").mkdir()
    (folder / "intrinsics.txt").write_text(f"{focal:.6f} {res / 2:.6f} {res / 2:.6f} 0.\n0. 0. 0.\n1.\n{res} {res}\n")
    positions = random_camera_positions(rng, num_views)
    c2ws = [look_at_c2w_opencv(p) for p in positions]
    rays = [pixel_rays(c2w, focal, res) for c2w in c2ws]
    o = np.concatenate([r[0] for r in rays])
    d = np.concatenate([r[1] for r in rays])
    rgb, t = render_rays(obj, o, d)
    rgb = rgb.reshape(num_views, res, res, 3)
    t = t.reshape(num_views, res, res)
    for i, c2w in enumerate(c2ws):
        name = f"{i:06d}"
        image = folder / "rgb" / f"{name}.png"
        Image.fromarray(np.round(rgb[i] * 255).astype(np.uint8)).save(image)
        (folder / "pose" / f"{name}.txt").write_text("\n".join(" ".join(f"{x:.9f}" for x in row) for row in c2w) + "\n")
        if depth:
            write_depth(image, t[i])


def split_counts(num_objects: int) -> dict[str, int]:
    held = {k: max(1, round(num_objects * f)) if num_objects >= 3 else 0 for k, f in SPLIT_FRACTIONS.items()}
    return {"train": num_objects - sum(held.values()), **held}


def _object_rng(seed: int, index: int) -> tuple[np.random.Generator, str]:
    """The generator of the ``index``-th object (train, then val, then test) and its instance id, its first draw."""
    # One generator per object keeps every object independent of the split sizes before it.
    rng = np.random.default_rng([seed, index])
    return rng, "".join(f"{b:02x}" for b in rng.integers(0, 256, size=16))


def mixed_category(seed: int, index: int = 0) -> str:
    """Category of the ``index``-th object that ``generate(..., seed, kind="mixed")`` writes, without rendering it."""
    return draw_category(_object_rng(seed, index)[0])


def generate(
    out: Path, num_objects: int, num_views: int, resolution: int, seed: int, depth: bool = False, kind: Kind = "cars"
) -> dict[str, int]:
    """Write ``out/{kind}_{train,val,test}/<id>/...``; returns objects per split."""
    if kind not in KINDS:
        raise GeNVSError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if num_objects < 1 or num_views < 1 or resolution < 4:
        raise GeNVSError("need at least one object, one view and a resolution of 4 px")
    counts = split_counts(num_objects)
    index = 0
    for split, count in counts.items():
        split_dir = out / f"{kind}_{split}"
        split_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            rng, instance_id = _object_rng(seed, index)
            write_object(split_dir / instance_id, rng, num_views, resolution, depth, kind)
            index += 1
    return counts
