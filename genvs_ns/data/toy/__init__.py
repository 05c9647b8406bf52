"""Procedural toy objects in the SRN layout, rendered by an exact ray caster.

Two kinds: ``cars`` (body, cabin, four wheels) and ``mixed`` (chairs, tables, rings, lamps and mugs, one category per
object): objects.py draws them from primitives.py's parts, which also holds the ray caster; cameras.py places SRN's
cameras; writer.py writes the folders.

The toy data is the embedded default: tests, the demo and CI train on it, so it must be fast to make, byte-identical
for a seed, and geometrically exact (the geometry tests reproject pixels between views with its depth maps).

Conventions match SRN: ``rgb/000000.png``, ``pose/000000.txt`` (row-major 4x4 camera-to-world, OpenCV camera axes),
``intrinsics.txt`` (f cx cy 0. / 0. 0. 0. / 1. / H W), cameras on the upper hemisphere at radius 1.3 looking at the
origin, f = 131.25 * R / 128, pixel (u, v) centred at (u + 0.5, v + 0.5). World z is up. With ``depth`` each view's
z-depth map is written beside it (depth_maps.py).
"""

from genvs_ns.data.toy.cameras import (
    CAMERA_RADIUS,
    SRN_FOCAL_128,
    look_at_c2w_opencv,
    pixel_rays,
    random_camera_positions,
)
from genvs_ns.data.toy.objects import MIXED_CATEGORIES, random_car, random_mixed
from genvs_ns.data.toy.primitives import ToyObject, render_rays
from genvs_ns.data.toy.writer import KINDS, Kind, generate, mixed_category, split_counts

__all__ = [
    "CAMERA_RADIUS",
    "KINDS",
    "MIXED_CATEGORIES",
    "SRN_FOCAL_128",
    "Kind",
    "ToyObject",
    "generate",
    "look_at_c2w_opencv",
    "mixed_category",
    "pixel_rays",
    "random_camera_positions",
    "random_car",
    "random_mixed",
    "render_rays",
    "split_counts",
]
