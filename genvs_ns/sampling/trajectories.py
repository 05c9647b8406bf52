"""Camera paths for generation: orbits around the object, starting at the input camera, in nerfstudio (OpenGL) axes."""

from __future__ import annotations

import math
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from genvs_ns.geometry import look_at

Trajectory = Literal["spiral", "circle", "rings", "dataset"]


def _basis(up: Tensor) -> tuple[Tensor, Tensor]:
    helper = torch.tensor([1.0, 0.0, 0.0]) if abs(float(up[0])) < 0.9 else torch.tensor([0.0, 1.0, 0.0])
    e1 = helper - (helper @ up) * up
    e1 = e1 / e1.norm()
    return e1, torch.linalg.cross(up, e1)


def spherical(position: Float[Tensor, "3"], up: Float[Tensor, "3"]) -> tuple[float, float, float]:
    """(radius, elevation, azimuth) in radians about ``up``."""
    e1, e2 = _basis(up)
    radius = float(position.norm())
    elevation = math.asin(max(-1.0, min(1.0, float(position @ up) / radius)))
    azimuth = math.atan2(float(position @ e2), float(position @ e1))
    return radius, elevation, azimuth


def from_spherical(radius: float, elevation: float, azimuth: float, up: Float[Tensor, "3"]) -> Float[Tensor, "3"]:
    e1, e2 = _basis(up)
    horizontal = math.cos(elevation) * (math.cos(azimuth) * e1 + math.sin(azimuth) * e2)
    return radius * (horizontal + math.sin(elevation) * up)


def orbit(
    start_c2w: Float[Tensor, "3 4"],
    up: Float[Tensor, "3"],
    num_frames: int,
    kind: Literal["spiral", "circle", "rings"] = "spiral",
    elevation_amplitude_deg: float = 15.0,
) -> Float[Tensor, "frames 3 4"]:
    """A full turn around the object that starts one step away from the input camera and moves away gradually.

    ``circle`` keeps the input's elevation; ``spiral`` also swings the elevation by +-amplitude (kept in [5, 80] deg);
    ``rings`` covers the upper hemisphere for a 3D reconstruction: a turn at the input's elevation, then one 25 deg
    higher and one 15 deg lower (each ring starts beside the frames before it, for autoregressive sampling).
    """
    radius, elevation, azimuth = spherical(start_c2w[:, 3], up)
    if kind == "rings":
        per_ring = [num_frames - 2 * (num_frames // 3), num_frames // 3, num_frames // 3]
        poses = []
        for count, offset_deg in zip(per_ring, (0.0, 25.0, -15.0)):
            elev = min(max(elevation + math.radians(offset_deg), math.radians(5)), math.radians(80))
            first = 1 if offset_deg == 0 else 0  # the input camera itself is not generated again
            phases = [2 * math.pi * (i + first) / (count + first) for i in range(count)]
            poses += [look_at(from_spherical(radius, elev, azimuth + phase, up), up) for phase in phases]
        return torch.stack(poses)
    poses = []
    for i in range(1, num_frames + 1):
        phase = 2 * math.pi * i / (num_frames + 1)
        elev = elevation
        if kind == "spiral":
            elev = elevation + math.radians(elevation_amplitude_deg) * math.sin(phase)
            elev = min(max(elev, math.radians(5)), math.radians(80))
        poses.append(look_at(from_spherical(radius, elev, azimuth + phase, up), up))
    return torch.stack(poses)


def nearest_first(start_c2w: Float[Tensor, "3 4"], candidates: Float[Tensor, "n 3 4"], num_frames: int) -> list[int]:
    """Indices of up to ``num_frames`` candidate cameras spread over all of them, ordered from nearest the start."""
    n = len(candidates)
    picks = torch.linspace(0, n - 1, min(num_frames, n)).round().long().unique().tolist() if n else []
    start = start_c2w[:, 3] / start_c2w[:, 3].norm()
    dirs = candidates[picks, :, 3] / candidates[picks, :, 3].norm(dim=-1, keepdim=True)
    order = torch.argsort(-(dirs @ start)).tolist()
    return [picks[i] for i in order]
