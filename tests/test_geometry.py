"""The world -> frustum-volume mapping, proven against nerfstudio's own ``Cameras.generate_rays``."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras

from genvs_ns.data.toy import look_at_c2w_opencv, random_camera_positions
from genvs_ns.geometry import image_rays, intrinsics_matrix, world_to_frustum

NEAR, FAR = 0.8, 1.8


def _cameras(n: int = 3, width: int = 20, height: int = 16) -> Cameras:
    rng = np.random.default_rng(0)
    c2w = np.stack([look_at_c2w_opencv(p) @ np.diag([1, -1, -1, 1]) for p in random_camera_positions(rng, n)])
    # Off-centre principal points and unequal focal lengths catch swapped axes.
    return Cameras(
        camera_to_worlds=torch.tensor(c2w[:, :3], dtype=torch.float32),
        fx=torch.tensor([[21.0], [19.0], [23.0]])[:n],
        fy=torch.tensor([[18.0], [22.0], [20.0]])[:n],
        cx=torch.tensor([[9.0], [11.5], [10.0]])[:n],
        cy=torch.tensor([[8.5], [7.0], [8.0]])[:n],
        width=width,
        height=height,
    )


def _K(cams: Cameras) -> torch.Tensor:
    return intrinsics_matrix(cams.fx[:, 0], cams.fy[:, 0], cams.cx[:, 0], cams.cy[:, 0])


def test_rays_match_nerfstudio_generate_rays():
    cams = _cameras()
    origins, directions = image_rays(cams.camera_to_worlds, _K(cams), (16, 20), (16, 20))
    for i in range(len(cams)):
        rays = cams.generate_rays(camera_indices=i)  # [H, W] through pixel centres
        torch.testing.assert_close(directions[i], rays.directions.reshape(-1, 3), atol=1e-5, rtol=0)
        torch.testing.assert_close(origins[i], rays.origins.reshape(-1, 3), atol=1e-6, rtol=0)


def test_a_pixels_ray_at_depth_d_maps_back_to_that_pixel_and_depth():
    cams = _cameras()
    H, W = 16, 20
    depth = torch.linspace(NEAR, FAR, 7)
    for i in range(len(cams)):
        rays = cams.generate_rays(camera_indices=i)
        forward = -cams.camera_to_worlds[i, :, 2]
        cos = rays.directions @ forward  # z-depth d lies at ray distance d / cos
        points = rays.origins[..., None, :] + rays.directions[..., None, :] * (depth / cos[..., None])[..., None]
        coords = world_to_frustum(points.reshape(-1, 3), cams.camera_to_worlds[i], _K(cams)[i], (H, W), NEAR, FAR)
        coords = coords.view(H, W, len(depth), 3)
        v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
        torch.testing.assert_close(coords[..., 0], (2 * u / W - 1)[..., None].expand(-1, -1, 7), atol=1e-4, rtol=0)
        torch.testing.assert_close(coords[..., 1], (2 * v / H - 1)[..., None].expand(-1, -1, 7), atol=1e-4, rtol=0)
        expected_z = (2 * (depth - NEAR) / (FAR - NEAR) - 1).expand(H, W, -1)
        torch.testing.assert_close(coords[..., 2], expected_z, atol=1e-4, rtol=0)


def test_voxel_centres_sample_exactly_their_voxel_and_outside_is_empty():
    """With align_corners=False, the world point at pixel (i, j)'s centre and plane k's centre reads voxel (k, j, i)."""
    cams = _cameras(n=1, width=8, height=6)
    D, h, w = 5, 6, 8
    volume = torch.zeros(1, 1, D, h, w)
    k, j, i = 3, 2, 6
    volume[0, 0, k, j, i] = 1.0
    rays = cams.generate_rays(camera_indices=0)
    forward = -cams.camera_to_worlds[0, :, 2]
    d = NEAR + (k + 0.5) * (FAR - NEAR) / D
    point = rays.origins[j, i] + rays.directions[j, i] * d / (rays.directions[j, i] @ forward)
    behind = cams.camera_to_worlds[0, :, 3] - 0.5 * forward  # behind the camera
    coords = world_to_frustum(torch.stack([point, behind]), cams.camera_to_worlds[0], _K(cams)[0], (6, 8), NEAR, FAR)
    samples = F.grid_sample(volume, coords.view(1, 2, 1, 1, 3), padding_mode="zeros", align_corners=False)
    torch.testing.assert_close(samples.flatten(), torch.tensor([1.0, 0.0]))
    assert (coords[1].abs() > 1).any()


def test_geometry_stays_float32_under_bf16_autocast_and_float64_inputs():
    """The model runs under bf16 autocast and viewer camera paths arrive in float64: neither may move a point."""
    cams = _cameras()
    c2w, K = cams.camera_to_worlds, _K(cams)
    origins, directions = image_rays(c2w, K, (16, 20), (16, 20))
    points = origins + 1.3 * directions
    expected = world_to_frustum(points, c2w, K, (16, 20), NEAR, FAR)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        o, d = image_rays(c2w, K, (16, 20), (16, 20))
        coords = world_to_frustum(points, c2w, K, (16, 20), NEAR, FAR)
    assert d.dtype == coords.dtype == torch.float32
    assert torch.allclose(d, directions, atol=1e-6) and torch.allclose(coords, expected, atol=1e-5)
    o64, d64 = image_rays(c2w.double(), K.double(), (16, 20), (16, 20))
    assert d64.dtype == torch.float32 and torch.allclose(d64, directions, atol=1e-6)


def test_geometry_uses_no_matmul_which_a_gpu_may_run_in_tf32():
    """cuBLAS may run float32 matmuls in TF32 (10 mantissa bits): the transforms are written as multiply-adds."""
    from torch.overrides import TorchFunctionMode

    from genvs_ns.geometry import image_rays, world_to_frustum

    class Record(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.calls.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    c2w = torch.cat([torch.linalg.qr(torch.randn(2, 3, 3))[0], torch.randn(2, 3, 1)], dim=-1)
    K = torch.tensor([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]]).expand(2, 3, 3)
    with Record() as record:
        origins, directions = image_rays(c2w, K, (32, 32), (8, 8))
        coords = world_to_frustum(origins + 1.3 * directions, c2w, K, (32, 32), 0.8, 1.8)
    used = {name for name in record.calls if any(m in name for m in ("matmul", "bmm", "einsum", "linear", "mm"))}
    assert not used, used
    assert torch.isfinite(coords).all()  # correctness against nerfstudio's rays: the tests above


def test_fundamental_matrix_holds_for_a_point_projected_into_two_cameras():
    """x_b^T F x_a = 0 for the pixels world_to_frustum gives one point in cameras a and b; not for a and a swapped."""
    from genvs_ns.geometry import fundamental_matrix

    cams = _cameras()
    H, W = 16, 20
    K = _K(cams)
    points = torch.randn(50, 3, generator=torch.Generator().manual_seed(0)) * 0.2

    def pixels(i: int) -> torch.Tensor:
        xy = world_to_frustum(points, cams.camera_to_worlds[i], K[i], (H, W), NEAR, FAR)[:, :2]
        uv = (xy + 1) / 2 * torch.tensor([W, H])
        return torch.cat([uv, torch.ones(len(uv), 1)], dim=-1).double()

    for a, b in [(0, 1), (1, 2), (2, 0)]:
        F_ab = fundamental_matrix(cams.camera_to_worlds[a], K[a], cams.camera_to_worlds[b], K[b])
        line = pixels(a) @ F_ab.T  # epipolar lines in b, normalised to pixel distances
        distance = ((pixels(b) * line).sum(-1) / line[:, :2].norm(dim=-1)).abs()
        assert distance.max() < 1e-3, distance.max()
        wrong = pixels(b) @ F_ab.T  # the same F applied the other way round
        assert ((pixels(a) * wrong).sum(-1) / wrong[:, :2].norm(dim=-1)).abs().median() > 0.1
