"""Random toy objects: cars (body, cabin, four wheels) and the mixed kinds (chairs, tables, rings, lamps, mugs)."""

from __future__ import annotations

import colorsys

import numpy as np

from genvs_ns.data.toy.primitives import PATTERNS, Box, Cylinder, Hub, Paint, Primitive, Sphere, ToyObject

MIXED_CATEGORIES = ("chair", "table", "ring", "lamp", "mug")
# Mixed objects stand on this plane; with tops below z = 0.35 they stay within radius ~0.5 of the origin, like the cars,
# so every visible point lies inside the dataparser's near/far of 0.8/1.8 from cameras at radius 1.3.
FLOOR = -0.3


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


def draw_category(rng: np.random.Generator) -> str:
    """The first draw of a mixed object: its category."""
    return MIXED_CATEGORIES[int(rng.integers(len(MIXED_CATEGORIES)))]


def random_mixed(rng: np.random.Generator) -> ToyObject:
    """One object of a random category in MIXED_CATEGORIES, within radius ~0.5 of the origin, standing on FLOOR."""
    category = draw_category(rng)
    return ToyObject(category, _BUILDERS[category](rng))
