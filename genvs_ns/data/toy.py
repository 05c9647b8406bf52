"""Procedural toy objects in the SRN layout, rendered by an exact ray caster.

Two kinds: ``cars`` (body, cabin, four wheels) and ``mixed`` (chairs, tables, rings, lamps and mugs, one category per
object). Every object is a list of primitives (axis-aligned boxes, capped cylinders along a world axis that may be
hollow, spheres), each with its own paint: a colour and a pattern computed from the 3D hit point.

The toy data is the embedded default: tests, the demo and CI train on it, so it must be fast to make, byte-identical
for a seed, and geometrically exact (the geometry tests reproject pixels between views with its depth maps).

Conventions match SRN: ``rgb/000000.png``, ``pose/000000.txt`` (row-major 4x4 camera-to-world, OpenCV camera axes),
``intrinsics.txt`` (f cx cy 0. / 0. 0. 0. / 1. / H W), cameras on the upper hemisphere at radius 1.3 looking at the
origin, f = 131.25 * R / 128, pixel (u, v) centred at (u + 0.5, v + 0.5). World z is up.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from genvs_ns.errors import DataError, GeNVSError
from genvs_ns.geometry import look_at, pixel_centres, rays_through_pixels

CAMERA_RADIUS = 1.3
SRN_FOCAL_128 = 131.25
# A fixed world light makes Lambert shading view-independent, so a surface point has one colour in every view.
LIGHT_DIR = np.array([0.35, 0.45, 0.82]) / np.linalg.norm([0.35, 0.45, 0.82])
AMBIENT = 0.4
SPLIT_FRACTIONS = {"val": 0.1, "test": 0.1}

Kind = Literal["cars", "mixed"]
KINDS: tuple[Kind, ...] = ("cars", "mixed")
MIXED_CATEGORIES = ("chair", "table", "ring", "lamp", "mug")
# Mixed objects stand on this plane; with tops below z = 0.35 they stay within radius ~0.5 of the origin, like the cars,
# so every visible point lies inside the dataparser's near/far of 0.8/1.8 from cameras at radius 1.3.
FLOOR = -0.3
AXES = {"x": 0, "y": 1, "z": 2}
# The car draws its pattern as an integer in [0, 4): the first four names, in this order.
PATTERNS = ("plain", "stripes", "checker", "band", "dots")


@dataclass
class Hub:
    """A disc of another colour at the centre of a cylinder's caps (a wheel's hub)."""

    centre: np.ndarray
    radius: float
    axis: int
    colour: np.ndarray


@dataclass
class Paint:
    """Albedo of one part: a colour with an optional accent pattern.

    Everything depends only on the surface point and its normal, so a point has the same colour in every view.
    """

    colour: np.ndarray
    accent: np.ndarray | None = None
    pattern: str = "plain"  # one of PATTERNS
    freq: float = 10.0
    stripe_axis: int = 0
    band: tuple[float, float] = (0.0, 0.0)  # centre and half width of the band along world z
    top: np.ndarray | None = None  # colour of upward-facing faces (the car's roof)
    hub: Hub | None = None

    def __call__(self, p: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Colours [M, 3] of the points ``p`` [M, 3] with outward normals ``n`` [M, 3]."""
        out = np.empty_like(p)
        out[:] = self.colour
        if self.pattern != "plain":
            out[self._accent_mask(p, n)] = self.accent
        if self.top is not None:
            out[n[:, 2] > 0.5] = self.top
        if self.hub is not None:
            r0, r1 = (i for i in range(3) if i != self.hub.axis)
            r2 = (p[:, r0] - self.hub.centre[r0]) ** 2 + (p[:, r1] - self.hub.centre[r1]) ** 2
            out[(np.abs(n[:, self.hub.axis]) > 0.5) & (r2 < self.hub.radius**2)] = self.hub.colour
        return out

    def _accent_mask(self, p: np.ndarray, n: np.ndarray) -> np.ndarray:
        f = self.freq
        if self.pattern == "stripes":
            return np.sin(f * p[:, self.stripe_axis]) > 0.3
        if self.pattern == "checker":
            x, y, z = p[:, 0], p[:, 1], p[:, 2]
            return (np.floor(f * x / 3) + np.floor(f * y / 3) + np.floor(f * z / 3)) % 2 == 0
        if self.pattern == "band":
            return np.abs(p[:, 2] - self.band[0]) < self.band[1]
        if self.pattern == "dots":
            # Discs in the plane across the normal's main axis: a 3D lattice of balls would leave faces that pass
            # between the balls without any dots.
            cell = f * p / 3
            frac = cell - np.floor(cell) - 0.5
            across = np.abs(n).argmax(axis=1)
            r2 = (frac**2).sum(axis=1) - frac[np.arange(len(p)), across] ** 2
            return r2 < 0.3**2
        raise ValueError(f"unknown pattern {self.pattern!r}")


@dataclass
class Box:
    """Axis-aligned box."""

    lo: np.ndarray
    hi: np.ndarray
    paint: Paint

    def hit(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slab test. Returns entry distance (inf on miss) and the outward normal at the entry point."""
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / d
            t0 = (self.lo - o) * inv
            t1 = (self.hi - o) * inv
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


@dataclass
class Cylinder:
    """Capped cylinder along a world axis; with ``inner_radius`` > 0 a tube (a ring, a mug's wall, a lamp shade)."""

    centre: np.ndarray
    radius: float
    half_height: float
    axis: Literal["x", "y", "z"]
    paint: Paint
    inner_radius: float = 0.0

    def hit(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest positive hit (inf on miss) and its outward normal, for rays starting outside the solid.

        From outside, the first surface point is where the ray enters the solid: through the outer side, the cap
        facing the ray, or (for a tube) the inner wall, reached from the hole where the ray leaves the inner radius.
        """
        a = AXES[self.axis]
        r0, r1 = (i for i in range(3) if i != a)
        oc = o - self.centre
        qa = d[:, r0] ** 2 + d[:, r1] ** 2
        qb = 2 * (oc[:, r0] * d[:, r0] + oc[:, r1] * d[:, r1])
        c = oc[:, r0] ** 2 + oc[:, r1] ** 2 - self.radius**2
        disc = qb * qb - 4 * qa * c
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = (-qb - np.sqrt(np.maximum(disc, 0))) / (2 * qa)
        h_side = oc[:, a] + t_side * d[:, a]
        side_ok = (disc >= 0) & (qa > 1e-12) & (t_side > 1e-6) & (np.abs(h_side) <= self.half_height)
        t_side = np.where(side_ok, t_side, np.inf)
        # The caps: the near cap is the one facing the ray.
        with np.errstate(divide="ignore", invalid="ignore"):
            cap_h = -np.sign(d[:, a]) * self.half_height
            t_cap = (cap_h - oc[:, a]) / d[:, a]
        pu = oc[:, r0] + t_cap * d[:, r0]
        pv = oc[:, r1] + t_cap * d[:, r1]
        r2 = pu**2 + pv**2
        cap_ok = np.isfinite(t_cap) & (t_cap > 1e-6) & (r2 <= self.radius**2) & (r2 >= self.inner_radius**2)
        t_cap = np.where(cap_ok, t_cap, np.inf)
        t = np.minimum(t_side, t_cap)
        if self.inner_radius > 0:
            c_in = oc[:, r0] ** 2 + oc[:, r1] ** 2 - self.inner_radius**2
            disc_in = qb * qb - 4 * qa * c_in
            with np.errstate(divide="ignore", invalid="ignore"):
                t_in = (-qb + np.sqrt(np.maximum(disc_in, 0))) / (2 * qa)
            h_in = oc[:, a] + t_in * d[:, a]
            in_ok = (disc_in >= 0) & (qa > 1e-12) & (t_in > 1e-6) & (np.abs(h_in) <= self.half_height)
            t_in = np.where(in_ok, t_in, np.inf)
            inner_first = t_in < t
            t = np.minimum(t, t_in)
        p = oc + np.where(np.isfinite(t), t, 0)[:, None] * d
        radial = np.zeros_like(p)
        radial[:, r0], radial[:, r1] = p[:, r0], p[:, r1]
        n_side = radial / self.radius
        n_cap = np.zeros_like(p)
        n_cap[:, a] = np.sign(cap_h)
        normal = np.where((t_cap < t_side)[:, None], n_cap, n_side)
        if self.inner_radius > 0:
            # The inner wall faces the axis.
            normal = np.where(inner_first[:, None], -radial / self.inner_radius, normal)
        return t, normal


@dataclass
class Sphere:
    """Ball (a lamp's shade or bulb)."""

    centre: np.ndarray
    radius: float
    paint: Paint

    def hit(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest positive hit (inf on miss) and the outward normal there."""
        oc = o - self.centre
        qa = (d * d).sum(axis=1)
        qb = (oc * d).sum(axis=1)
        disc = qb * qb - qa * ((oc * oc).sum(axis=1) - self.radius**2)
        t = (-qb - np.sqrt(np.maximum(disc, 0))) / qa
        t = np.where((disc >= 0) & (t > 1e-6), t, np.inf)
        normal = (oc + np.where(np.isfinite(t), t, 0)[:, None] * d) / self.radius
        return t, normal


Primitive = Box | Cylinder | Sphere


@dataclass
class ToyObject:
    """What the ray caster draws: the nearest hit among the parts wins."""

    category: str  # "car" or one of MIXED_CATEGORIES
    parts: list[Primitive]


def random_car(rng: np.random.Generator) -> ToyObject:
    """Random proportions and colours, sized so the car lies within a sphere of radius ~0.5 about the origin."""
    length = rng.uniform(0.62, 0.86)
    width = rng.uniform(0.28, 0.40)
    body_h = rng.uniform(0.10, 0.18)
    clearance = rng.uniform(0.03, 0.07)
    bottom = -0.18
    body_lo = np.array([-length / 2, -width / 2, bottom + clearance])
    body_hi = np.array([length / 2, width / 2, bottom + clearance + body_h])
    cab_len = length * rng.uniform(0.35, 0.6)
    cab_off = rng.uniform(-0.15, 0.1) * length
    cab_w = width * rng.uniform(0.75, 0.95)
    cab_h = rng.uniform(0.08, 0.15)
    cab_lo = np.array([cab_off - cab_len / 2, -cab_w / 2, body_hi[2]])
    cab_hi = np.array([cab_off + cab_len / 2, cab_w / 2, body_hi[2] + cab_h])
    radius = rng.uniform(0.06, 0.09)
    half_w = rng.uniform(0.025, 0.04)
    axle_x = length / 2 - radius * rng.uniform(1.2, 1.8)
    wheel_centres = [
        np.array([sx * axle_x, sy * (width / 2 + half_w * 0.6), bottom + radius]) for sx in (-1, 1) for sy in (-1, 1)
    ]
    body_colour = rng.uniform(0.1, 0.95, size=3)
    accent = np.clip(1.0 - body_colour + rng.uniform(-0.2, 0.2, size=3), 0.05, 0.95)
    cabin_colour = rng.uniform(0.05, 0.35, size=3)
    body_paint = Paint(
        body_colour,
        accent,
        PATTERNS[int(rng.integers(0, 4))],
        float(rng.uniform(8.0, 20.0)),
        band=(0.5 * (body_lo[2] + body_hi[2]), 0.2 * (body_hi[2] - body_lo[2])),
    )
    # Lighter roof so the cabin is not a flat dark block.
    cabin_paint = Paint(cabin_colour, top=0.5 * (cabin_colour + body_colour))
    wheels = [
        Cylinder(c, radius, half_w, "y", Paint(np.full(3, 0.12), hub=Hub(c, 0.5 * radius, 1, np.full(3, 0.7))))
        for c in wheel_centres
    ]
    return ToyObject("car", [Box(body_lo, body_hi, body_paint), Box(cab_lo, cab_hi, cabin_paint), *wheels])


def _palette(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """``n`` colours of well-separated hues, so an object's parts differ in colour and not only in shading."""
    hues = (rng.uniform() + (np.arange(n) + rng.uniform(-0.25, 0.25, n)) / n) % 1.0
    sats = rng.uniform(0.4, 0.9, n)
    vals = rng.uniform(0.45, 0.95, n)
    return [np.array(colorsys.hsv_to_rgb(h, s, v)) for h, s, v in zip(hues, sats, vals)]


def _part_paint(rng: np.random.Generator, colour: np.ndarray, z0: float, z1: float) -> Paint:
    """A contrasting accent in one of the patterns (or plain), sized for parts a few pattern periods across."""
    accent = np.clip(1.0 - colour + rng.uniform(-0.2, 0.2, size=3), 0.05, 0.95)
    pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
    freq = float(rng.uniform(10.0, 24.0))
    return Paint(colour, accent, pattern, freq, int(rng.integers(3)), band=(0.5 * (z0 + z1), 0.2 * (z1 - z0)))


def _box(lo: tuple[float, float, float], hi: tuple[float, float, float], paint: Paint) -> Box:
    return Box(np.array(lo, dtype=float), np.array(hi, dtype=float), paint)


def _post(x: float, y: float, z0: float, z1: float, radius: float, paint: Paint, inner: float = 0.0) -> Cylinder:
    """Upright (z-axis) cylinder from height z0 to z1."""
    return Cylinder(np.array([x, y, 0.5 * (z0 + z1)]), radius, 0.5 * (z1 - z0), "z", paint, inner)


def _leg(x: float, y: float, z0: float, z1: float, half: float, round_: bool, paint: Paint) -> Primitive:
    if round_:
        return _post(x, y, z0, z1, half, paint)
    return _box((x - half, y - half, z0), (x + half, y + half, z1), paint)


def _chair(rng: np.random.Generator) -> list[Primitive]:
    """Seat, a solid or railed back along +y, four legs."""
    seat_c, back_c, leg_c = _palette(rng, 3)
    hx, hy = rng.uniform(0.17, 0.23), rng.uniform(0.16, 0.21)
    seat_top = rng.uniform(-0.08, 0.0)
    seat_bottom = seat_top - rng.uniform(0.03, 0.06)
    back_top = seat_top + rng.uniform(0.22, 0.35)
    back_t = rng.uniform(0.03, 0.05)
    leg = rng.uniform(0.016, 0.028)
    round_legs = bool(rng.uniform() < 0.5)
    parts: list[Primitive] = [
        _box((-hx, -hy, seat_bottom), (hx, hy, seat_top), _part_paint(rng, seat_c, seat_bottom, seat_top))
    ]
    back_paint = _part_paint(rng, back_c, seat_top, back_top)
    if rng.uniform() < 0.5:
        parts.append(_box((-hx, hy - back_t, seat_top), (hx, hy, back_top), back_paint))
    else:
        # Two posts carrying a top rail and a middle rail.
        rail = rng.uniform(0.03, 0.06)
        mid = 0.5 * (seat_top + back_top)
        parts += [
            _box((sx * hx - leg, hy - back_t, seat_top), (sx * hx + leg, hy, back_top), back_paint) for sx in (-1, 1)
        ]
        parts.append(_box((-hx, hy - back_t, back_top - rail), (hx, hy, back_top), back_paint))
        parts.append(_box((-hx, hy - back_t, mid - rail / 2), (hx, hy, mid + rail / 2), back_paint))
    leg_paint = Paint(leg_c)
    parts += [
        _leg(sx * (hx - leg), sy * (hy - leg), FLOOR, seat_bottom, leg, round_legs, leg_paint)
        for sx in (-1, 1)
        for sy in (-1, 1)
    ]
    return parts


def _table(rng: np.random.Generator) -> list[Primitive]:
    """A box or disc top on one to four legs, where one leg is a pedestal on a foot."""
    top_c, leg_c = _palette(rng, 2)
    top_z = rng.uniform(0.05, 0.18)
    under = top_z - rng.uniform(0.025, 0.05)
    top_paint = _part_paint(rng, top_c, under, top_z)
    if rng.uniform() < 0.5:
        r = rng.uniform(0.26, 0.4)
        top: Primitive = _post(0.0, 0.0, under, top_z, r, top_paint)
        # Legs go where a square inscribed in the disc has its corners.
        hx = hy = r / np.sqrt(2)
    else:
        hx, hy = rng.uniform(0.24, 0.35), rng.uniform(0.16, 0.25)
        top = _box((-hx, -hy, under), (hx, hy, top_z), top_paint)
    legs = int(rng.integers(1, 5))
    leg = rng.uniform(0.015, 0.03)
    # Thin legs stay plain: a pattern on them would be a few stray pixels. Pedestals and trestles are wide enough.
    leg_paint = _part_paint(rng, leg_c, FLOOR, under) if legs <= 2 else Paint(leg_c)
    if legs == 1:
        foot = rng.uniform(0.02, 0.04)
        support = [
            _post(0.0, 0.0, FLOOR, FLOOR + foot, rng.uniform(0.12, 0.18), leg_paint),
            _post(0.0, 0.0, FLOOR + foot, under, rng.uniform(0.03, 0.06), leg_paint),
        ]
    elif legs == 2:
        # Trestle: a slab under each end.
        support = [
            _box((sx * 0.7 * hx - leg, -0.7 * hy, FLOOR), (sx * 0.7 * hx + leg, 0.7 * hy, under), leg_paint)
            for sx in (-1, 1)
        ]
    elif legs == 3:
        angles = rng.uniform(0, 2 * np.pi) + np.arange(3) * 2 * np.pi / 3
        support = [_post(0.7 * hx * np.cos(a), 0.7 * hy * np.sin(a), FLOOR, under, leg, leg_paint) for a in angles]
    else:
        round_legs = bool(rng.uniform() < 0.5)
        support = [
            _leg(sx * (hx - 2 * leg), sy * (hy - 2 * leg), FLOOR, under, leg, round_legs, leg_paint)
            for sx in (-1, 1)
            for sy in (-1, 1)
        ]
    return [top, *support]


def _ring(rng: np.random.Generator) -> list[Primitive]:
    """A tube ring standing on a plinth (axis y), or a stack of two or three flat rings (axis z) of shrinking size."""
    colours = _palette(rng, 3)
    if rng.uniform() < 0.5:
        radius = rng.uniform(0.2, 0.3)
        half_w = rng.uniform(0.04, 0.09)
        plinth = rng.uniform(0.03, 0.06)
        # Sunk a little into the plinth so the ring does not touch it in a single point.
        centre = np.array([0.0, 0.0, FLOOR + plinth + radius - 0.01])
        ring = Cylinder(
            centre,
            radius,
            half_w,
            "y",
            _part_paint(rng, colours[0], centre[2] - radius, centre[2] + radius),
            radius * rng.uniform(0.55, 0.8),
        )
        base = _box(
            (-0.6 * radius, -1.8 * half_w, FLOOR), (0.6 * radius, 1.8 * half_w, FLOOR + plinth), Paint(colours[1])
        )
        return [ring, base]
    radius = rng.uniform(0.28, 0.4)
    half_h = rng.uniform(0.03, 0.06)
    ratio = rng.uniform(0.5, 0.75)
    parts: list[Primitive] = []
    for i in range(int(rng.integers(2, 4))):
        r = radius * (1 - 0.25 * i)
        z0 = FLOOR + 2 * half_h * i
        parts.append(
            _post(0.0, 0.0, z0, z0 + 2 * half_h, r, _part_paint(rng, colours[i], z0, z0 + 2 * half_h), ratio * r)
        )
    return parts


def _lamp(rng: np.random.Generator) -> list[Primitive]:
    """A disc base, a thin pole and a ball, a drum, or an open shade around a bulb."""
    base_c, pole_c, shade_c = _palette(rng, 3)
    base_r = rng.uniform(0.1, 0.17)
    base_top = FLOOR + rng.uniform(0.03, 0.06)
    pole_r = rng.uniform(0.014, 0.025)
    top = rng.uniform(0.22, 0.35)
    parts: list[Primitive] = [_post(0.0, 0.0, FLOOR, base_top, base_r, _part_paint(rng, base_c, FLOOR, base_top))]
    style = int(rng.integers(3))
    if style == 0:
        r = rng.uniform(0.09, 0.15)
        shade_centre = top - r
        parts.append(Sphere(np.array([0.0, 0.0, shade_centre]), r, _part_paint(rng, shade_c, top - 2 * r, top)))
    else:
        r = rng.uniform(0.12, 0.2)
        half_h = rng.uniform(0.07, 0.11)
        shade_centre = top - half_h
        # An open shade is a thin tube: from above one sees the bulb, the pole and the base inside it.
        inner = r - rng.uniform(0.008, 0.015) if style == 2 else 0.0
        parts.append(_post(0.0, 0.0, top - 2 * half_h, top, r, _part_paint(rng, shade_c, top - 2 * half_h, top), inner))
        if style == 2:
            parts.append(
                Sphere(np.array([0.0, 0.0, shade_centre]), rng.uniform(0.03, 0.045), Paint(np.array([1.0, 0.93, 0.6])))
            )
    parts.append(_post(0.0, 0.0, base_top, shade_centre, pole_r, Paint(pole_c)))
    return parts


def _mug(rng: np.random.Generator) -> list[Primitive]:
    """A tube wall filled with a drink, a ring handle (axis y) and sometimes a saucer."""
    body_c, handle_c, drink_c = _palette(rng, 3)
    r = rng.uniform(0.12, 0.19)
    wall = rng.uniform(0.02, 0.035)
    height = rng.uniform(0.28, 0.45)
    handle_r = min(rng.uniform(0.06, 0.1), 0.4 * height)
    # Centre the mug and its handle over the origin.
    x = -(handle_r - wall / 2)
    parts: list[Primitive] = []
    bottom = FLOOR
    if rng.uniform() < 0.4:
        bottom = FLOOR + 0.024
        parts.append(_post(x, 0.0, FLOOR, bottom, r * rng.uniform(1.4, 1.7), _part_paint(rng, handle_c, FLOOR, bottom)))
    top = bottom + height
    parts.append(_post(x, 0.0, bottom, top, r, _part_paint(rng, body_c, bottom, top), r - wall))
    # The drink fills the tube's hole exactly, so it doubles as the mug's bottom.
    parts.append(_post(x, 0.0, bottom, bottom + height * rng.uniform(0.5, 0.9), r - wall, Paint(drink_c)))
    # The handle is no thicker than the wall and touches the wall's inner face, so none of it shows inside the mug.
    centre = np.array([x + r - wall + handle_r, 0.0, bottom + height / 2])
    half_w = rng.uniform(0.012, 0.022)
    parts.append(Cylinder(centre, handle_r, half_w, "y", Paint(handle_c), handle_r - 0.9 * wall))
    return parts


_BUILDERS = {"chair": _chair, "table": _table, "ring": _ring, "lamp": _lamp, "mug": _mug}


def _draw_category(rng: np.random.Generator) -> str:
    return MIXED_CATEGORIES[int(rng.integers(len(MIXED_CATEGORIES)))]


def random_mixed(rng: np.random.Generator) -> ToyObject:
    """One object of a random category in MIXED_CATEGORIES, within radius ~0.5 of the origin, standing on FLOOR."""
    category = _draw_category(rng)
    return ToyObject(category, _BUILDERS[category](rng))


def render_rays(obj: ToyObject, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast the object. Returns RGB in [0, 1] (white background) and the ray parameter t (inf on background)."""
    hits = [part.hit(o, d) for part in obj.parts]
    ts = np.stack([h[0] for h in hits], axis=0)
    which = ts.argmin(axis=0)
    rows = np.arange(len(o))
    t = ts[which, rows]
    normals = np.stack([h[1] for h in hits], axis=0)[which, rows]
    p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
    albedo = np.empty_like(o)
    for i, part in enumerate(obj.parts):
        sel = which == i
        albedo[sel] = part.paint(p[sel], normals[sel])
    shade = AMBIENT + (1 - AMBIENT) * np.clip(normals @ LIGHT_DIR, 0, None)
    rgb = np.clip(albedo * shade[:, None], 0, 1)
    rgb[~np.isfinite(t)] = 1.0
    return rgb, t


def look_at_c2w_opencv(position: np.ndarray) -> np.ndarray:
    """Camera-to-world in OpenCV axes (x right, y down, z forward), as SRN's pose files hold it, for a camera looking
    at the origin, world z up: ``geometry.look_at`` (OpenGL axes) with its y and z axes flipped."""
    c2w_gl = look_at(torch.tensor(position, dtype=torch.float64), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    c2w = np.eye(4)
    c2w[:3] = c2w_gl.numpy() @ np.diag([1.0, -1.0, -1.0, 1.0])
    return c2w


def random_camera_positions(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform on the upper hemisphere, elevation kept within [4, 80] degrees so look-at is well defined."""
    azimuth = rng.uniform(0, 2 * np.pi, n)
    z = rng.uniform(np.sin(np.radians(4)), np.sin(np.radians(80)), n)
    r_xy = np.sqrt(1 - z**2)
    return CAMERA_RADIUS * np.stack([r_xy * np.cos(azimuth), r_xy * np.sin(azimuth), z], axis=1)


def pixel_rays(c2w: np.ndarray, focal: float, res: int) -> tuple[np.ndarray, np.ndarray]:
    """Rays through pixel centres (``geometry.rays_through_pixels`` of the OpenCV ``c2w``), their directions scaled
    to unit camera-z, so the ray parameter t equals z-depth."""
    K = torch.tensor([[focal, 0.0, res / 2], [0.0, focal, res / 2], [0.0, 0.0, 1.0]])
    c2w_gl = torch.from_numpy(c2w[:3] @ np.diag([1.0, -1.0, -1.0, 1.0]))
    o, d = rays_through_pixels(c2w_gl, K, pixel_centres(res, res))
    o, d = o.double().numpy(), d.double().numpy()
    forward = c2w[:3, 2]
    return o, d / (d @ forward)[:, None]


def write_object(folder: Path, rng: np.random.Generator, num_views: int, res: int, depth: bool, kind: Kind) -> None:
    obj = random_car(rng) if kind == "cars" else random_mixed(rng)
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
    rgb, t = render_rays(obj, o, d)
    rgb = rgb.reshape(num_views, res, res, 3)
    t = t.reshape(num_views, res, res)
    for i, c2w in enumerate(c2ws):
        name = f"{i:06d}"
        Image.fromarray(np.round(rgb[i] * 255).astype(np.uint8)).save(folder / "rgb" / f"{name}.png")
        (folder / "pose" / f"{name}.txt").write_text("\n".join(" ".join(f"{x:.9f}" for x in row) for row in c2w) + "\n")
        if depth:
            # z-depth along the camera's forward axis, 0 where the ray misses.
            np.save(folder / "depth" / f"{name}.npy", np.where(np.isfinite(t[i]), t[i], 0).astype(np.float32))


def depth_path(image: Path) -> Path:
    """Where ``write_object`` writes ``image``'s z-depth map: ``<instance>/depth/<stem>.npy``."""
    return Path(image).parent.parent / "depth" / f"{Path(image).stem}.npy"


def read_depth(image: Path) -> np.ndarray | None:
    """The z-depth map ``write_object`` wrote for ``image`` (``depth_path``), or None if there is none (data made
    without ``--depth``, or not toy data)."""
    path = depth_path(image)
    if not path.is_file():
        return None
    try:
        return np.load(path).astype(np.float32)
    except (OSError, ValueError) as exc:
        raise DataError(path, f"unreadable depth map ({exc})") from None


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
    return _draw_category(_object_rng(seed, index)[0])


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
