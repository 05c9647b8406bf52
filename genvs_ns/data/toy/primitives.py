"""The toy objects' parts and the ray caster that draws them.

Every object is a list of primitives (axis-aligned boxes, capped cylinders along a world axis that may be hollow,
spheres), each with its own paint: a colour and a pattern computed from the 3D hit point, so a surface point has one
colour in every view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

# A fixed world light makes Lambert shading view-independent, so a surface point has one colour in every view.
LIGHT_DIR = np.array([0.35, 0.45, 0.82]) / np.linalg.norm([0.35, 0.45, 0.82])
AMBIENT = 0.4
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
