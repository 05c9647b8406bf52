"""SRN's cameras for the toy data: positions on the upper hemisphere, poses in OpenCV axes, rays through pixels."""

from __future__ import annotations

import numpy as np
import torch

from genvs_ns.geometry import look_at, pixel_centres, rays_through_pixels

CAMERA_RADIUS = 1.3
SRN_FOCAL_128 = 131.25


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
