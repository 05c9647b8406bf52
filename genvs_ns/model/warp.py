"""A known view's pixels carried into a new view at the new view's rendered depth: conditioning at full resolution.

The feature field sees the source views through a low-resolution frustum volume and renders at half resolution, so
the denoiser's conditioning is a blur of the input that the samples fill with detail of their own, while a copy of
the input (right textures, wrong places) beats them by LPIPS (issue 23). Warping puts the known view's own pixels where
the rendered geometry says they land, and a mask says where the known view really sees that surface (in its image,
opaque in both renders, not behind the surface it renders itself, not at a silhouette: ``warp_known_view``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from genvs_ns.geometry import image_rays, world_to_frustum

WARP_CHANNELS = 4  # RGB (zero where not visible) and the visibility mask
# Of the object's radius: how far behind the known view's rendered surface a point may lie and still count as seen.
WARP_TOLERANCE = 0.1


@torch.no_grad()
def warp_known_view(
    known_rgb: Float[Tensor, "batch 3 H W"],
    known_c2w: Float[Tensor, "batch 3 4"],
    known_K: Float[Tensor, "batch 3 3"],
    known_depth: Float[Tensor, "batch 1 h w"],
    known_accumulation: Float[Tensor, "batch 1 h w"],
    target_c2w: Float[Tensor, "batch 3 4"],
    target_K: Float[Tensor, "batch 3 3"],
    target_hw: tuple[int, int],
    target_depth: Float[Tensor, "batch 1 h2 w2"],
    target_accumulation: Float[Tensor, "batch 1 h2 w2"],
    tolerance: float,
    edge_margin: int = 0,
) -> Float[Tensor, "batch 4 H W"]:
    """The known view seen from the target camera, at the known image's size ``H x W``: RGB times the mask, then the
    mask, 1 where the target's surface is one the known view sees.

    Depths are distances along unit rays (the renderer's); ``target_K`` is in pixels of ``target_hw``, ``known_K`` in
    pixels of the known image. A target pixel counts as seen where both renders are opaque there (accumulation above
    a half: a surface, not background), its point is no farther from the known camera than the known view's own
    rendered depth plus ``tolerance`` (world units; farther is hidden behind that surface), and its 3x3 neighbourhood
    spans less than twice ``tolerance`` in depth: at silhouettes the rendered depth blends object and background, and
    warping there smeared the object's colours into the background (the first samples conditioned on it had coloured
    streaks around the object). ``edge_margin``: pixels of the known image next to its own silhouette (where its
    render is transparent) that count as unseen too: ``known_edge_margin``.
    """
    B, _, H, W = known_rgb.shape
    if edge_margin > 0:
        known_accumulation = known_edge_margin(known_accumulation, (H, W), edge_margin)

    def full(x: Tensor) -> Tensor:
        return F.interpolate(x.float(), size=(H, W), mode="bilinear", align_corners=False)

    depth, opacity = full(target_depth), full(target_accumulation)
    origins, directions = image_rays(target_c2w, target_K, target_hw, (H, W))
    points = origins + directions * depth.view(B, H * W, 1)
    # Normalised x, y in the known image; points behind the known camera come back at 2 (outside). z is not used.
    grid = world_to_frustum(points, known_c2w, known_K, (H, W), 0.0, 1.0)[..., :2].view(B, H, W, 2)
    inside = (grid.abs() <= 1).all(dim=-1)[:, None]

    def at_grid(x: Tensor) -> Tensor:
        return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)

    rgb, surface, seen_opacity = at_grid(known_rgb), at_grid(known_depth), at_grid(known_accumulation)
    distance = (points - known_c2w[:, None, :3, 3].float()).norm(dim=-1).view(B, 1, H, W)
    span = F.max_pool2d(depth, 3, 1, 1) + F.max_pool2d(-depth, 3, 1, 1)
    seen = inside & (distance <= surface + tolerance) & (opacity > 0.5) & (seen_opacity > 0.5) & (span < 2 * tolerance)
    mask = seen.float()
    return torch.cat([rgb * mask, mask], dim=1)


def known_edge_margin(
    accumulation: Float[Tensor, "batch 1 h w"], image_hw: tuple[int, int], margin: int
) -> Float[Tensor, "batch 1 H W"]:
    """The known view's opacity at its image size, eroded by ``margin`` pixels: its pixels that close to the
    silhouette count as transparent. For generated frames warped along a path: their edges are the sample's soft
    boundary against the white background, and a frame that keeps an earlier one's pixels kept that whitish rim too
    and passed it on, so the object paled frame by frame (docs/experiments.md: last-third PSNR 0.36 dB below frames
    sampled on the input alone, 0.09 with a margin of 2 pixels)."""
    full = F.interpolate(accumulation.float(), size=image_hw, mode="bilinear", align_corners=False)
    return -F.max_pool2d(-full, 2 * margin + 1, 1, margin)


def fill_holes(warps: Sequence[Float[Tensor, "batch 4 H W"]]) -> Float[Tensor, "batch 4 H W"]:
    """Several known views' warps (``warp_known_view``'s outputs, first view first) as one: the first view's pixels
    wherever it sees the surface, each later view's only where no view before it does; the mask where any does."""
    out = warps[0]
    for one in warps[1:]:
        out = out + (1 - out[:, 3:]) * one  # RGB is already times its mask: nothing is blended where a view sees
    return out
