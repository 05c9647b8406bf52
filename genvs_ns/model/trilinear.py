"""Trilinear lookup of points in frustum volumes, averaged over the source views.

Semantics are ``grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)`` on 5-D input,
averaged over views. On CUDA that is what runs. On the CPU, PyTorch's 3-D grid_sampler is a scalar loop parallelised
over the batch only, and its backward was 40% of a paper-size field+render step; the numba kernel (trilinear_numba.py,
loaded on first use; grid_sample with a warning where numba is missing or cannot compile) does the same
arithmetic on channels-last volumes (a voxel's 16 features are one 64-byte line) and averages the views in the same
pass. The lookups of that step (3 views x 524k points in 16 x 64^3 volumes), forward and backward, on 2 cores:
0.47 s -> 0.16 s.

Only the volumes get gradients: the points come from cameras and ray samples, which nothing here learns.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


@functools.cache
def _cpu_function() -> type[torch.autograd.Function] | None:
    """The numba kernel's autograd Function, or None (grid_sample, ~3x slower) where numba cannot load or compile."""
    try:
        from genvs_ns.model.trilinear_numba import TrilinearMeanCPU
    except Exception as exc:  # noqa: BLE001 - ImportError, or numba's RuntimeError for a kernel cache it cannot write
        warnings.warn(
            f"genvs-ns: the numba volume lookup is unavailable ({type(exc).__name__}: {exc}); using grid_sample, "
            "which is about 3x slower on the CPU",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return TrilinearMeanCPU


def trilinear_mean(
    volumes: Float[Tensor, "batch views C D h w"], coords: Float[Tensor, "batch views n 3"]
) -> Float[Tensor, "batch n C"]:
    """Each point's trilinear features in every view's volume (zero outside it), averaged over the views.

    ``coords`` are normalised (x, y, z) in [-1, 1] as ``world_to_frustum`` gives them (x, y: the image's outer edges;
    z: near and far).
    """
    if coords.requires_grad:
        raise ValueError("trilinear_mean: gradients with respect to the points are not supported")
    B, V, C, D, h, w = volumes.shape
    if volumes.device.type == "cpu" and volumes.dtype == torch.float32 and (kernel := _cpu_function()) is not None:
        return kernel.apply(volumes, coords.float())
    n = coords.shape[2]
    # The kernel reads NaN and far-away points as empty space; grid_sample would turn them into undefined indices.
    grid = coords.nan_to_num(2.0, 2.0, -2.0).clamp(-2.0, 2.0).reshape(B * V, n, 1, 1, 3).to(volumes.dtype)
    out = F.grid_sample(volumes.reshape(B * V, C, D, h, w), grid, padding_mode="zeros", align_corners=False)
    return out.view(B, V, C, n).mean(dim=1).transpose(1, 2)
