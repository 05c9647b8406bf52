"""Procedural car-like objects in the SRN layout, rendered by an exact ray caster.

The toy data is the embedded default: tests, the demo and CI train on it, so it must be fast to make, byte-identical
for a seed, and geometrically exact (the geometry tests reproject pixels between views with its depth maps).

Conventions match SRN: ``rgb/000000.png``, ``pose/000000.txt`` (row-major 4x4 camera-to-world, OpenCV camera axes),
``intrinsics.txt`` (f cx cy 0. / 0. 0. 0. / 1. / H W), cameras on the upper hemisphere at radius 1.3 looking at the
origin, f = 131.25 * R / 128, pixel (u, v) centred at (u + 0.5, v + 0.5). World z is up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CAMERA_RADIUS = 1.3
SRN_FOCAL_128 = 131.25
# A fixed world light makes Lambert shading view-independent, so a surface point has one colour in every view.
LIGHT_DIR = np.array([0.35, 0.45, 0.82]) / np.linalg.norm([0.35, 0.45, 0.82])
AMBIENT = 0.4
SPLIT_FRACTIONS = {"val": 0.1, "test": 0.1}


@dataclass
class Box:
    lo: np.ndarray
    hi: np.ndarray


@dataclass
class Wheel:
    """Cylinder whose axis is parallel to world y."""

    centre: np.ndarray
    radius: float
    half_width: float


@dataclass
class ToyCar:
    body: Box
    cabin: Box
    wheels: list[Wheel]
    body_colour: np.ndarray
    accent_colour: np.ndarray
    cabin_colour: np.ndarray
    pattern: int  # 0 plain, 1 stripes along the length, 2 checker, 3 band
    pattern_freq: float


def random_car(rng: np.random.Generator) -> ToyCar:
    """Random proportions and colours, sized so the car lies within a sphere of radius ~0.5 about the origin."""
    length = rng.uniform(0.62, 0.86)
    width = rng.uniform(0.28, 0.40)
    body_h = rng.uniform(0.10, 0.18)
    clearance = rng.uniform(0.03, 0.07)
    bottom = -0.18
    body = Box(
        lo=np.array([-length / 2, -width / 2, bottom + clearance]),
        hi=np.array([length / 2, width / 2, bottom + clearance + body_h]),
    )
    cab_len = length * rng.uniform(0.35, 0.6)
    cab_off = rng.uniform(-0.15, 0.1) * length
    cab_w = width * rng.uniform(0.75, 0.95)
    cab_h = rng.uniform(0.08, 0.15)
    cabin = Box(
        lo=np.array([cab_off - cab_len / 2, -cab_w / 2, body.hi[2]]),
        hi=np.array([cab_off + cab_len / 2, cab_w / 2, body.hi[2] + cab_h]),
    )
    radius = rng.uniform(0.06, 0.09)
    half_w = rng.uniform(0.025, 0.04)
    axle_x = length / 2 - radius * rng.uniform(1.2, 1.8)
    wheels = [
        Wheel(np.array([sx * axle_x, sy * (width / 2 + half_w * 0.6), bottom + radius]), radius, half_w)
        for sx in (-1, 1)
        for sy in (-1, 1)
    ]
    body_colour = rng.uniform(0.1, 0.95, size=3)
    accent = np.clip(1.0 - body_colour + rng.uniform(-0.2, 0.2, size=3), 0.05, 0.95)
    cabin_colour = rng.uniform(0.05, 0.35, size=3)
    return ToyCar(
        body=body,
        cabin=cabin,
        wheels=wheels,
        body_colour=body_colour,
        accent_colour=accent,
        cabin_colour=cabin_colour,
        pattern=int(rng.integers(0, 4)),
        pattern_freq=float(rng.uniform(8.0, 20.0)),
    )


def _hit_box(o: np.ndarray, d: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Slab test. Returns entry distance (inf on miss) and the outward normal at the entry point."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t0 = (box.lo - o) * inv
        t1 = (box.hi - o) * inv
    tmin = np.minimum(t0, t1)
    tmax = np.maximum(t0, t1)
    tmin = np.nan_to_num(tmin, nan=-np.inf)
    tmax = np.nan_to_num(tmax, nan=np.inf)
    t_enter = tmin.max(axis=1)
    t_exit = tmax.min(axis=1)
    hit = (t_enter <= t_exit) & (t_enter > 1e-6)
    axis = tmin.argmax(axis=1)
    normal = np.zeros_like(o)
    rows = np.arange(len(o))
    normal[rows, axis] = -np.sign(d[rows, axis])
    return np.where(hit, t_enter, np.inf), normal


def _hit_wheel(o: np.ndarray, d: np.ndarray, w: Wheel) -> tuple[np.ndarray, np.ndarray]:
    """Capped cylinder with axis along y. Returns the nearest positive hit (inf on miss) and its normal."""
    oc = o - w.centre
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = 2 * (oc[:, 0] * d[:, 0] + oc[:, 2] * d[:, 2])
    c = oc[:, 0] ** 2 + oc[:, 2] ** 2 - w.radius**2
    disc = b * b - 4 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    y_side = oc[:, 1] + t_side * d[:, 1]
    side_ok = (disc >= 0) & (a > 1e-12) & (t_side > 1e-6) & (np.abs(y_side) <= w.half_width)
    t_side = np.where(side_ok, t_side, np.inf)
    # The caps: the near cap is the one facing the ray.
    with np.errstate(divide="ignore", invalid="ignore"):
        cap_y = -np.sign(d[:, 1]) * w.half_width
        t_cap = (cap_y - oc[:, 1]) / d[:, 1]
    px = oc[:, 0] + t_cap * d[:, 0]
    pz = oc[:, 2] + t_cap * d[:, 2]
    cap_ok = np.isfinite(t_cap) & (t_cap > 1e-6) & (px**2 + pz**2 <= w.radius**2)
    t_cap = np.where(cap_ok, t_cap, np.inf)
    t = np.minimum(t_side, t_cap)
    p = oc + np.where(np.isfinite(t), t, 0)[:, None] * d
    n_side = np.stack([p[:, 0], np.zeros_like(t), p[:, 2]], axis=1) / w.radius
    n_cap = np.stack([np.zeros_like(t), np.sign(cap_y), np.zeros_like(t)], axis=1)
    normal = np.where((t_cap < t_side)[:, None], n_cap, n_side)
    return t, normal


def render_rays(car: ToyCar, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast the car. Returns RGB in [0, 1] (white background) and the ray parameter t (inf on background)."""
    hits = [_hit_box(o, d, car.body), _hit_box(o, d, car.cabin)] + [_hit_wheel(o, d, w) for w in car.wheels]
    ts = np.stack([h[0] for h in hits], axis=0)
    which = ts.argmin(axis=0)
    t = ts[which, np.arange(len(o))]
    normals = np.stack([h[1] for h in hits], axis=0)[which, np.arange(len(o))]
    p = o + np.where(np.isfinite(t), t, 0)[:, None] * d

    albedo = np.empty_like(o)
    body = which == 0
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    f = car.pattern_freq
    if car.pattern == 1:
        accent = np.sin(f * x) > 0.3
    elif car.pattern == 2:
        accent = (np.floor(f * x / 3) + np.floor(f * y / 3) + np.floor(f * z / 3)) % 2 == 0
    elif car.pattern == 3:
        mid = 0.5 * (car.body.lo[2] + car.body.hi[2])
        accent = np.abs(z - mid) < 0.2 * (car.body.hi[2] - car.body.lo[2])
    else:
        accent = np.zeros_like(x, dtype=bool)
    albedo[:] = car.body_colour
    albedo[body & accent] = car.accent_colour
    cabin = which == 1
    albedo[cabin] = car.cabin_colour
    # Lighter roof so the cabin is not a flat dark block.
    albedo[cabin & (normals[:, 2] > 0.5)] = 0.5 * (car.cabin_colour + car.body_colour)
    wheel = which >= 2
    albedo[wheel] = 0.12
    hub = np.zeros_like(wheel)
    for i, w in enumerate(car.wheels):
        sel = which == 2 + i
        r2 = (x - w.centre[0]) ** 2 + (z - w.centre[2]) ** 2
        hub |= sel & (np.abs(normals[:, 1]) > 0.5) & (r2 < (0.5 * w.radius) ** 2)
    albedo[hub] = 0.7

    shade = AMBIENT + (1 - AMBIENT) * np.clip(normals @ LIGHT_DIR, 0, None)
    rgb = np.clip(albedo * shade[:, None], 0, 1)
    rgb[~np.isfinite(t)] = 1.0
    return rgb, t


def look_at_c2w_opencv(position: np.ndarray) -> np.ndarray:
    """Camera-to-world in OpenCV axes (x right, y down, z forward) for a camera looking at the origin, world z up."""
    fwd = -position / np.linalg.norm(position)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, fwd, position
    return c2w


def random_camera_positions(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform on the upper hemisphere, elevation kept within [4, 80] degrees so look-at is well defined."""
    azimuth = rng.uniform(0, 2 * np.pi, n)
    z = rng.uniform(np.sin(np.radians(4)), np.sin(np.radians(80)), n)
    r_xy = np.sqrt(1 - z**2)
    return CAMERA_RADIUS * np.stack([r_xy * np.cos(azimuth), r_xy * np.sin(azimuth), z], axis=1)


def pixel_rays(c2w: np.ndarray, focal: float, res: int) -> tuple[np.ndarray, np.ndarray]:
    """Rays through pixel centres. Directions have unit camera-z, so the ray parameter t equals z-depth."""
    v, u = np.meshgrid(np.arange(res), np.arange(res), indexing="ij")
    c = res / 2
    d_cam = np.stack([(u + 0.5 - c) / focal, (v + 0.5 - c) / focal, np.ones_like(u, dtype=float)], -1).reshape(-1, 3)
    d = d_cam @ c2w[:3, :3].T
    o = np.broadcast_to(c2w[:3, 3], d.shape)
    return o, d


def write_object(folder: Path, rng: np.random.Generator, num_views: int, res: int, depth: bool) -> None:
    car = random_car(rng)
    focal = SRN_FOCAL_128 * res / 128
    (folder / "rgb").mkdir(parents=True)
    (folder / "pose").mkdir()
    if depth:
        (folder / "depth").mkdir()
    (folder / "intrinsics.txt").write_text(f"{focal:.6f} {res / 2:.6f} {res / 2:.6f} 0.\n0. 0. 0.\n1.\n{res} {res}\n")
    positions = random_camera_positions(rng, num_views)
    c2ws = [look_at_c2w_opencv(p) for p in positions]
    rays = [pixel_rays(c2w, focal, res) for c2w in c2ws]
    o = np.concatenate([r[0] for r in rays])
    d = np.concatenate([r[1] for r in rays])
    rgb, t = render_rays(car, o, d)
    rgb = rgb.reshape(num_views, res, res, 3)
    t = t.reshape(num_views, res, res)
    for i, c2w in enumerate(c2ws):
        name = f"{i:06d}"
        Image.fromarray(np.round(rgb[i] * 255).astype(np.uint8)).save(folder / "rgb" / f"{name}.png")
        (folder / "pose" / f"{name}.txt").write_text("\n".join(" ".join(f"{x:.9f}" for x in row) for row in c2w) + "\n")
        if depth:
            # z-depth along the camera's forward axis, 0 where the ray misses.
            np.save(folder / "depth" / f"{name}.npy", np.where(np.isfinite(t[i]), t[i], 0).astype(np.float32))


def split_counts(num_objects: int) -> dict[str, int]:
    held = {k: max(1, round(num_objects * f)) if num_objects >= 3 else 0 for k, f in SPLIT_FRACTIONS.items()}
    return {"train": num_objects - sum(held.values()), **held}


def generate(
    out: Path, num_objects: int, num_views: int, resolution: int, seed: int, depth: bool = False, category: str = "cars"
) -> dict[str, int]:
    """Write ``out/{category}_{train,val,test}/<id>/...``; returns objects per split."""
    if num_objects < 1 or num_views < 1 or resolution < 4:
        raise ValueError("need at least one object, one view and a resolution of 4 px")
    counts = split_counts(num_objects)
    index = 0
    for split, count in counts.items():
        split_dir = out / f"{category}_{split}"
        split_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            # One generator per object keeps every object independent of the split sizes before it.
            rng = np.random.default_rng([seed, index])
            instance_id = "".join(f"{b:02x}" for b in rng.integers(0, 256, size=16))
            write_object(split_dir / instance_id, rng, num_views, resolution, depth)
            index += 1
    return counts
