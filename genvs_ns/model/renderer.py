"""Volume rendering of the feature field: stratified + importance samples, nerfacc's batched compositing.

Only nerfacc's *batched* calls are used: its packed calls and estimators JIT-compile CUDA code, which fails on a CPU
machine (and leaves a stale build lock behind). Every sample is evaluated by the field exactly once: the importance
samples are added to the coarse ones, not re-evaluated together with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import nerfacc
import torch
from jaxtyping import Float
from torch import Tensor

from genvs_ns.geometry import depth_range

FieldFn = Callable[[Float[Tensor, "batch n 3"]], tuple[Float[Tensor, "batch n"], Float[Tensor, "batch n L"]]]


@dataclass(frozen=True)
class RenderSettings:
    radius: float  # of the sphere around the origin holding the object: rays are sampled through its depth range
    num_coarse: int  # stratified samples per ray
    num_importance: int  # samples drawn from the coarse weights
    stratified: bool  # jitter samples (training) or take bin centres / evenly spaced quantiles (evaluation)


@dataclass
class RenderOutputs:
    features: Float[Tensor, "batch rays L"]  # composited on ``background``
    depth: Float[Tensor, "batch rays"]  # expected depth of the visible surface (ray distance)
    accumulation: Float[Tensor, "batch rays"]


@dataclass
class RenderedImages:
    """``RenderOutputs`` of whole target images (``GeNVSNetwork.render_image``)."""

    features: Float[Tensor, "targets L h w"]
    depth: Float[Tensor, "targets 1 h w"]
    accumulation: Float[Tensor, "targets 1 h w"]


def _inverse_cdf(
    edges: Float[Tensor, "*rays bins+1"], weights: Float[Tensor, "*rays bins"], n: int, stratified: bool
) -> Float[Tensor, "*rays n"]:
    """Samples from the piecewise-constant pdf over bins given by ``weights``."""
    pdf = weights + 1e-5
    pdf = pdf / pdf.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), pdf.cumsum(dim=-1).clamp(max=1.0)], dim=-1)
    if stratified:
        u = (torch.arange(n, device=edges.device) + torch.rand(*pdf.shape[:-1], n, device=edges.device)) / n
    else:
        u = ((torch.arange(n, device=edges.device) + 0.5) / n).expand(*pdf.shape[:-1], n)
    idx = torch.searchsorted(cdf, u.contiguous(), right=True).clamp(1, pdf.shape[-1])
    cdf_lo, cdf_hi = cdf.gather(-1, idx - 1), cdf.gather(-1, idx)
    lo, hi = edges.gather(-1, idx - 1), edges.gather(-1, idx)
    frac = ((u - cdf_lo) / (cdf_hi - cdf_lo).clamp_min(1e-8)).clamp(0, 1)
    return lo + frac * (hi - lo)


def render_rays(
    field_fn: FieldFn,
    origins: Float[Tensor, "batch rays 3"],
    directions: Float[Tensor, "batch rays 3"],
    settings: RenderSettings,
    background: Float[Tensor, " L"],
) -> RenderOutputs:
    stratified, num_coarse, num_importance = settings.stratified, settings.num_coarse, settings.num_importance
    B, R, _ = origins.shape
    device = origins.device
    # From the ray's origin, as the source volumes' planes are (geometry.depth_range): every ray of one camera is
    # sampled between the same distances, wherever the camera is.
    near, far = (x[..., None] for x in depth_range(origins, settings.radius))

    def query(t: Tensor) -> tuple[Tensor, Tensor]:
        points = origins[:, :, None] + directions[:, :, None] * t[..., None]
        density, latent = field_fn(points.reshape(B, -1, 3))
        return density.view(B, R, -1), latent.view(B, R, t.shape[-1], -1)

    edges = near + (far - near) * torch.linspace(0, 1, num_coarse + 1, device=device)
    width = (far - near) / num_coarse
    jitter = (
        torch.rand(B, R, num_coarse, device=device)
        if stratified
        else torch.full((B, R, num_coarse), 0.5, device=device)
    )
    t = edges[..., :-1] + jitter * width
    density, latent = query(t)
    if num_importance > 0:
        with torch.no_grad():
            coarse_w, _, _ = nerfacc.render_weight_from_density(edges[..., :-1], edges[..., 1:], density.detach())
            t_fine = _inverse_cdf(edges, coarse_w, num_importance, stratified)
        density_f, latent_f = query(t_fine)
        t, order = torch.sort(torch.cat([t, t_fine], dim=-1), dim=-1)
        density = torch.cat([density, density_f], dim=-1).gather(-1, order)
        latent = torch.cat([latent, latent_f], dim=-2).gather(-2, order[..., None].expand(-1, -1, -1, latent.shape[-1]))
    # Each sample stands for the stretch of ray closer to it than to its neighbours.
    mids = 0.5 * (t[..., 1:] + t[..., :-1])
    starts = torch.cat([near.expand_as(t[..., :1]), mids], dim=-1)
    ends = torch.cat([mids, far.expand_as(t[..., :1])], dim=-1)
    weights, _, _ = nerfacc.render_weight_from_density(starts, ends, density)
    accumulation = nerfacc.accumulate_along_rays(weights, None)[..., 0]
    features = nerfacc.accumulate_along_rays(weights, latent) + (1 - accumulation[..., None]) * background
    depth = nerfacc.accumulate_along_rays(weights, t[..., None])[..., 0] / accumulation.clamp_min(1e-4)
    return RenderOutputs(features=features, depth=depth, accumulation=accumulation)
