"""The one source of truth for camera geometry: rays through pixels and world points into frustum volumes.

Conventions (nerfstudio's): camera-to-world matrices in OpenGL camera axes (x right, y up, the camera looks along -z);
intrinsics in pixels of the image the camera was calibrated for, pixel (u, v) spanning [u, u + 1) so its centre is at
u + 0.5. A frustum volume of any resolution covers the whole image (its normalised x, y of -1 and +1 are the image's
outer edges, matching ``grid_sample(align_corners=False)``) and depth planes split [near, far] of camera z-depth into
equal slabs (the normalised z of -1 and +1 are near and far).
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch
from jaxtyping import Float
from torch import Tensor

F = TypeVar("F", bound=Callable)


def _fp32(fn: F) -> F:
    """Geometry in float32 whatever the caller's autocast: under bf16, points of a 64 px source view landed up to
    0.4 pixel and 0.7 depth plane (of 64) away from where they belong. Viewer camera paths arrive in float64."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next(a.device for a in args if isinstance(a, Tensor))
        args = tuple(a.float() if isinstance(a, Tensor) and a.is_floating_point() else a for a in args)
        with torch.autocast(device_type=device.type, enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _times(vectors: Float[Tensor, "*batch n 3"], matrix: Float[Tensor, "*batch 3 3"]) -> Float[Tensor, "*batch n 3"]:
    """``vectors @ matrix`` as elementwise multiply-adds: on a GPU a float32 matmul may run in TF32 (10 mantissa bits;
    ``torch.backends.cuda.matmul.allow_tf32`` or TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1), the loss ``_fp32`` prevents."""
    return (
        vectors[..., 0:1] * matrix[..., None, 0, :]
        + vectors[..., 1:2] * matrix[..., None, 1, :]
        + vectors[..., 2:3] * matrix[..., None, 2, :]
    )


def intrinsics_matrix(fx: Tensor, fy: Tensor, cx: Tensor, cy: Tensor) -> Float[Tensor, "*batch 3 3"]:
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    return torch.stack([fx, zero, cx, zero, fy, cy, zero, zero, one], dim=-1).reshape(*fx.shape, 3, 3)


def look_at(position: Float[Tensor, "3"], up: Float[Tensor, "3"]) -> Float[Tensor, "3 4"]:
    """Camera-to-world (OpenGL axes: the camera looks along -z) at ``position`` looking at the origin."""
    back = position / position.norm()
    right = torch.linalg.cross(up, back)
    if right.norm() < 1e-6:  # looking straight along up: any right vector will do
        right = torch.linalg.cross(torch.tensor([1.0, 0.0, 0.0], dtype=back.dtype), back)
    right = right / right.norm()
    cam_up = torch.linalg.cross(back, right)
    return torch.stack([right, cam_up, back, position], dim=1)


def pixel_centres(height: int, width: int, device=None) -> Float[Tensor, "height*width 2"]:
    """(u, v) of every pixel centre, row-major."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32) + 0.5,
        torch.arange(width, device=device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1).reshape(-1, 2)


@_fp32
def rays_through_pixels(
    c2w: Float[Tensor, "*batch 3 4"], K: Float[Tensor, "*batch 3 3"], uv: Float[Tensor, "*batch rays 2"]
) -> tuple[Float[Tensor, "*batch rays 3"], Float[Tensor, "*batch rays 3"]]:
    """World-space origins and unit directions of the rays through image points ``uv`` (pixel units)."""
    x = (uv[..., 0] - K[..., None, 0, 2]) / K[..., None, 0, 0]
    y = (uv[..., 1] - K[..., None, 1, 2]) / K[..., None, 1, 1]
    # OpenCV pixel axes (y down, looking along +z) expressed in OpenGL camera axes.
    d_cam = torch.stack([x, -y, -torch.ones_like(x)], dim=-1)
    directions = _times(d_cam, c2w[..., :3, :3].transpose(-1, -2))
    directions = directions / directions.norm(dim=-1, keepdim=True)
    origins = c2w[..., None, :3, 3].expand_as(directions)
    return origins, directions


@_fp32
def image_rays(
    c2w: Float[Tensor, "*batch 3 4"], K: Float[Tensor, "*batch 3 3"], image_hw: tuple[int, int], out_hw: tuple[int, int]
) -> tuple[Float[Tensor, "*batch rays 3"], Float[Tensor, "*batch rays 3"]]:
    """Rays through the pixel centres of an ``out_hw`` grid laid over an image of ``image_hw`` pixels."""
    (H, W), (h, w) = image_hw, out_hw
    uv = pixel_centres(h, w, device=c2w.device) * torch.tensor([W / w, H / h], device=c2w.device)
    return rays_through_pixels(c2w, K, uv.expand(*c2w.shape[:-2], -1, -1))


def ray_distance(z_depth: Float[Tensor, "frames H W"], K: Float[Tensor, "frames 3 3"]) -> Float[Tensor, "frames H W"]:
    """Camera z-depth (toy data's ``depth/*.npy``, 0 on background) -> distance along each pixel's unit ray, the
    depth the renderer composites (and ``reprojection_consistency`` reads)."""
    n, H, W = z_depth.shape
    # In camera axes (identity c2w) a unit ray's z component is the cosine between it and the optical axis.
    camera = torch.eye(3, 4).expand(n, 3, 4)
    _, directions = rays_through_pixels(camera, K.float(), pixel_centres(H, W).expand(n, -1, -1))
    return z_depth.float() / directions[..., 2].abs().view(n, H, W)


def depth_range(
    position: Float[Tensor, "*batch 3"], radius: float
) -> tuple[Float[Tensor, "*batch"], Float[Tensor, "*batch"]]:
    """Near and far of a camera at ``position`` looking at the sphere of ``radius`` around the origin that holds the
    object: its distance to the origin minus and plus the radius (near at least radius / 20, for a camera inside the
    sphere).

    With fixed planes, a camera farther out than the data's (a zoomed-out viewer, a wider camera path, a photo taken
    from farther away) sampled empty space in front of the object; following the camera, SRN's cameras (all at one
    distance) get the planes they were trained with.
    """
    distance = position.float().norm(dim=-1)
    return (distance - radius).clamp_min(radius / 20), distance + radius


@_fp32
def world_to_frustum(
    points: Float[Tensor, "*batch n 3"],
    c2w: Float[Tensor, "*batch 3 4"],
    K: Float[Tensor, "*batch 3 3"],
    image_hw: tuple[int, int],
    near: float | Float[Tensor, "*batch"],
    far: float | Float[Tensor, "*batch"],
) -> Float[Tensor, "*batch n 3"]:
    """Normalised (x, y, z) in [-1, 1]^3 of world points inside a camera's frustum volume, for ``grid_sample``.

    Points behind the camera get coordinates outside [-1, 1], so zero padding samples them as empty space rather than
    smearing edge features along them.
    """
    H, W = image_hw
    R, t = c2w[..., :3, :3], c2w[..., :3, 3]
    local = _times(points - t[..., None, :], R)
    depth = -local[..., 2]
    safe = depth.clamp_min(1e-6)
    u = K[..., None, 0, 0] * local[..., 0] / safe + K[..., None, 0, 2]
    v = -K[..., None, 1, 1] * local[..., 1] / safe + K[..., None, 1, 2]
    x = 2 * u / W - 1
    y = 2 * v / H - 1
    if isinstance(near, Tensor):
        near, far = near[..., None], far[..., None]
    z = 2 * (depth - near) / (far - near) - 1
    behind = depth <= 1e-6
    return torch.stack([x, y, z], dim=-1).masked_fill(behind[..., None], 2.0)


def fundamental_matrix(
    c2w_a: Float[Tensor, "*batch 3 4"],
    K_a: Float[Tensor, "*batch 3 3"],
    c2w_b: Float[Tensor, "*batch 3 4"],
    K_b: Float[Tensor, "*batch 3 3"],
) -> Float[Tensor, "*batch 3 3"]:
    """F with ``x_b^T F x_a = 0`` for homogeneous pixel points (u, v, 1) of one world point seen by cameras a and b.

    Pixel coordinates are this module's (pixel (u, v) spans [u, u + 1)); OpenCV keypoints, whose pixel centres are
    integers, need 0.5 added first. Computed in float64: it is a product of five matrices, and a float64 matmul never
    runs in TF32.
    """
    # OpenGL camera axes -> OpenCV's (y down, looking along +z), where x_cam = K^-1 (u, v, 1) up to scale.
    flip = torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64, device=c2w_a.device)
    R_a, R_b = c2w_a[..., :3, :3].double() * flip, c2w_b[..., :3, :3].double() * flip
    R = R_b.transpose(-1, -2) @ R_a  # camera a's axes in camera b's
    t = (R_b.transpose(-1, -2) @ (c2w_a[..., :3, 3:] - c2w_b[..., :3, 3:]).double())[..., 0]
    zero = torch.zeros_like(t[..., 0])
    t_cross = torch.stack(
        [zero, -t[..., 2], t[..., 1], t[..., 2], zero, -t[..., 0], -t[..., 1], t[..., 0], zero], dim=-1
    ).reshape(*t.shape[:-1], 3, 3)
    return torch.linalg.inv(K_b.double()).transpose(-1, -2) @ t_cross @ R @ torch.linalg.inv(K_a.double())


def estimate_up(camera_positions: Float[Tensor, "n 3"]) -> Float[Tensor, "3"]:
    """SRN and the toy data put cameras on the upper hemisphere: their mean direction is the world's up."""
    mean = (camera_positions / camera_positions.norm(dim=-1, keepdim=True)).mean(dim=0)
    if mean.norm() < 0.2:
        return torch.tensor([0.0, 0.0, 1.0])
    return mean / mean.norm()
