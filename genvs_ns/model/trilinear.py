"""Trilinear lookup of points in frustum volumes, pooled over the source views.

Each view's lookup is ``grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)`` on
5-D input. Pooling (``ViewPooling``):
- ``visible``: the sum over views divided by max(coverage, 1), where a view's coverage is the trilinear weight of its
  corners inside its volume (1 inside the frustum, 0 outside, a ramp over the half voxel at its faces). A point seen
  by one of three views gets that view's features, not a third of them: with the plain mean the field could not tell
  "one view sees f" from "three views see f/3", and the colour skip's base colour darkened wherever a view missed the
  point. The summed coverage comes back too, so the field can tell empty space from a point no view sees.
- ``mean``: the mean over all views, zeros of views that miss the point included (checkpoints trained before).

On CUDA grid_sample runs. On the CPU, PyTorch's 3-D grid_sampler is a scalar loop parallelised over the batch only,
and its backward was 40% of a paper-size field+render step; the numba kernel (trilinear_numba.py, loaded on first
use; grid_sample with a warning where numba is missing or cannot compile) does the same arithmetic on channels-last
volumes (a voxel's 16 features are one 64-byte line) and pools the views in the same pass. The lookups of that step
(3 views x 524k points in 16 x 64^3 volumes), forward and backward, on 2 cores: 0.47 s -> 0.16 s.

Only the volumes get gradients: the points come from cameras and ray samples, which nothing here learns.
"""

from __future__ import annotations

import warnings
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

ViewPooling = Literal["visible", "mean"]


# Looked up once: [the operator or None]. A plain list rather than functools.cache, which torch.compile would trace
# through (with a warning) when a compiled render reaches the lookup.
_cpu_kernel: list[Callable[..., tuple[Tensor, Tensor, Tensor]] | None] = []


def _cpu_function() -> Callable[..., tuple[Tensor, Tensor, Tensor]] | None:
    """The numba kernel's operator, or None (grid_sample, ~3x slower) where numba cannot load or compile."""
    if not _cpu_kernel:
        _cpu_kernel.append(_load_cpu_kernel())
    return _cpu_kernel[0]


def _load_cpu_kernel() -> Callable[..., tuple[Tensor, Tensor, Tensor]] | None:
    try:
        from genvs_ns.model.trilinear_numba import trilinear_pool_cpu
    except Exception as exc:  # noqa: BLE001 - ImportError, or numba's RuntimeError for a kernel cache it cannot write
        warnings.warn(
            f"genvs-ns: the numba volume lookup is unavailable ({type(exc).__name__}: {exc}); using grid_sample, "
            "which is about 3x slower on the CPU",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    return trilinear_pool_cpu


def frustum_coverage(coords: Float[Tensor, "*batch 3"], volume_shape: tuple[int, int, int]) -> Float[Tensor, " *batch"]:
    """The summed trilinear weight of a point's corners inside a (D, h, w) volume (align_corners=False): 1 inside,
    0 beyond half a voxel outside, a linear ramp between; 0 for NaN. The pure-torch reference of the CPU kernel's."""
    coverage = torch.ones(coords.shape[:-1], dtype=coords.dtype, device=coords.device)
    for axis, size in enumerate(reversed(volume_shape)):  # x: width, y: height, z: depth
        f = ((coords[..., axis].nan_to_num(-3.0, 3.0, -3.0) + 1) * size - 1) * 0.5  # voxel-centre units
        coverage = coverage * torch.minimum(f + 1, size - f).clamp(0, 1)
    return coverage


def trilinear_pool(
    volumes: Float[Tensor, "batch views C D h w"],
    coords: Float[Tensor, "batch views n 3"],
    pooling: ViewPooling = "visible",
    view_weights: Float[Tensor, "batch views"] | None = None,
) -> tuple[Float[Tensor, "batch n C"], Float[Tensor, "batch n"]]:
    """Each point's trilinear features in every view's volume (zero outside it), pooled over the views, and the
    summed coverage of the views (how many see the point).

    ``coords`` are normalised (x, y, z) in [-1, 1] as ``world_to_frustum`` gives them (x, y: the image's outer edges;
    z: near and far). ``view_weights`` weigh the views against each other where several see a point (an input view
    above generated frames, sampling/context.py): visible pooling becomes the weighted mean of the views that see it,
    faded at the frustum's faces as without weights; equal weights give the unweighted result.
    """
    if coords.requires_grad:
        raise ValueError("trilinear_pool: gradients with respect to the points are not supported")
    B, V, C, D, h, w = volumes.shape
    if volumes.device.type == "cpu" and volumes.dtype == torch.float32 and (kernel := _cpu_function()) is not None:
        features, coverage, _ = kernel(volumes, coords.float(), pooling == "visible", view_weights)
        return features, coverage.detach()  # the coverage has no gradient
    n = coords.shape[2]
    # The kernel reads NaN and far-away points as empty space; grid_sample would turn them into undefined indices.
    grid = coords.nan_to_num(2.0, 2.0, -2.0).clamp(-2.0, 2.0).reshape(B * V, n, 1, 1, 3).to(volumes.dtype)
    out = F.grid_sample(volumes.reshape(B * V, C, D, h, w), grid, padding_mode="zeros", align_corners=False)
    per_view = frustum_coverage(coords.detach(), (D, h, w)).to(volumes.dtype)  # [B, V, n]
    coverage = per_view.sum(dim=1)
    out = out.view(B, V, C, n)
    # The CPU kernel's arithmetic: the weighted sum over the views, scaled by min(coverage, 1) / the weighted coverage
    # (visible; for equal weights 1 / max(coverage, 1)) or by 1 / the weights' sum (mean).
    if view_weights is None:
        summed, seen, total = out.sum(dim=1), coverage, float(V)
    else:
        weights = view_weights.detach().to(volumes.dtype)[:, :, None]  # [B, V, 1]
        summed, seen, total = (out * weights[..., None]).sum(dim=1), (per_view * weights).sum(dim=1), weights.sum(1)
    if pooling == "visible":
        scale = torch.where(seen > 0, coverage.clamp(max=1) / seen.clamp_min(1e-12), torch.zeros_like(seen))
    else:
        scale = (1 / total) * torch.ones_like(coverage)
    return (summed * scale[:, None]).transpose(1, 2), coverage
