"""Parsed cameras agree with the toy renderer: pixels reprojected from view i into view j keep their colour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genvs_ns.data.images import load_rgb
from genvs_ns.data.srn_dataparser import SRNDataParserConfig
from genvs_ns.data.toy import generate


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy96")
    generate(root, num_objects=5, num_views=8, resolution=96, seed=11, depth=True)
    return SRNDataParserConfig(data=root).setup().get_dataparser_outputs(split="train")


def _project_opengl(points: torch.Tensor, c2w: torch.Tensor, fx, fy, cx, cy) -> tuple[torch.Tensor, torch.Tensor]:
    """Pinhole projection in nerfstudio's camera axes (x right, y up, camera looks along -z)."""
    local = (points - c2w[:3, 3]) @ c2w[:3, :3]
    z = -local[:, 2]
    return torch.stack([cx + fx * local[:, 0] / z, cy - fy * local[:, 1] / z], -1), z


def _reproject(out, i: int, j: int, flip_y: bool = False) -> tuple[int, int]:
    """Returns (points visible in both views, of which keep their colour)."""
    cams = out.cameras
    fi, fj = out.image_filenames[i], out.image_filenames[j]
    depth_i = torch.from_numpy(np.load(fi.parent.parent / "depth" / f"{fi.stem}.npy"))
    depth_j = torch.from_numpy(np.load(fj.parent.parent / "depth" / f"{fj.stem}.npy"))
    rgb_i, rgb_j = torch.from_numpy(load_rgb(fi)), torch.from_numpy(load_rgb(fj))

    rays = cams.generate_rays(camera_indices=i)  # [H, W] rays through pixel centres, unit directions
    forward = -cams.camera_to_worlds[i, :, 2]
    t = depth_i / (rays.directions @ forward)  # z-depth -> distance along the unit ray
    fg = depth_i > 0
    points = (rays.origins + rays.directions * t[..., None])[fg]
    c2w_j = cams.camera_to_worlds[j].clone()
    if flip_y:  # the classic OpenCV/OpenGL mix-up, as a control that this test can fail
        c2w_j[:, 1:3] *= -1
    uv, z = _project_opengl(points, c2w_j, cams.fx[j], cams.fy[j], cams.cx[j], cams.cy[j])
    # Only points landing near a pixel centre of j, whose colour there is not a blend across an edge.
    h, w = depth_j.shape
    keep = ((uv - uv.floor() - 0.5).abs() < 0.25).all(-1) & (z > 0)
    keep &= (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    px, z, colour_i = uv[keep].floor().long(), z[keep], rgb_i[fg][keep]
    seen_depth = depth_j[px[:, 1], px[:, 0]]
    visible = (seen_depth > 0) & ((seen_depth - z).abs() < 0.01)
    colour_j = rgb_j[px[visible, 1], px[visible, 0]]
    agree = (colour_j - colour_i[visible]).abs().max(-1).values < 0.04
    return int(visible.sum()), int(agree.sum())


def _nearby_pairs(out) -> list[tuple[int, int]]:
    """Each view with the other view of its object whose camera is closest (most overlap)."""
    pos = out.cameras.camera_to_worlds[:, :, 3]
    obj = out.metadata["object_index"]
    pairs = []
    for i in range(len(pos)):
        dist = (pos - pos[i]).norm(dim=-1)
        dist[(obj != obj[i]) | (torch.arange(len(pos)) == i)] = float("inf")
        pairs.append((i, int(dist.argmin())))
    return pairs


def test_reprojected_pixels_keep_their_colour(parsed):
    visible, agree = map(sum, zip(*(_reproject(parsed, i, j) for i, j in _nearby_pairs(parsed))))
    assert visible > 2000, "too few pixels seen from both views: geometry is off"
    assert agree / visible > 0.97, f"only {agree / visible:.1%} of reprojected pixels keep their colour"


def test_control_a_flipped_camera_fails_the_check(parsed):
    visible, agree = map(sum, zip(*(_reproject(parsed, i, j, flip_y=True) for i, j in _nearby_pairs(parsed))))
    assert visible < 500 or agree / visible < 0.8
