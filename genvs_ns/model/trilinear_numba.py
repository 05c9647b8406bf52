"""The CPU kernel of ``trilinear.py``: trilinear lookup and view pooling in numba, forward and backward.

Imported lazily (by ``trilinear._cpu_function``), so a missing numba or an unwritable kernel cache costs only speed:
nerfstudio imports every method's model when it lists them, and an exception here would break every ``ns-*`` command.
"""

from __future__ import annotations

import math
import threading

import numba
import numpy as np
import torch
from torch import Tensor

# numba runs the kernel on its OpenMP layer where it finds one (here), else on its workqueue layer, which must not be
# entered from two threads at once: the viewer renders in a thread of its own.
_kernel_lock = threading.Lock()
# fastmath without its no-NaN/no-inf assumptions: the test that keeps NaN and far-away points out of the volumes must
# not be optimised away (their indices would then address memory outside it).
_FASTMATH = {"contract", "reassoc", "nsz", "arcp"}


@numba.njit(fastmath=_FASTMATH, cache=True)
def _corners(xyz, D: int, H: int, W: int):  # pragma: no cover - compiled
    """The 8 trilinear corners of normalised (x, y, z) (align_corners=False) as flat voxel indices into D*H*W and
    weights; corners outside the volume get weight 0 (and a valid index). False where none is inside (and for NaN)."""
    fx = ((xyz[0] + 1.0) * W - 1.0) * 0.5
    fy = ((xyz[1] + 1.0) * H - 1.0) * 0.5
    fz = ((xyz[2] + 1.0) * D - 1.0) * 0.5
    inside = fx > -1.0 and fx < W and fy > -1.0 and fy < H and fz > -1.0 and fz < D
    if not inside:  # int() of NaN or of a huge value is undefined
        fx = fy = fz = 0.0
    x0, y0, z0 = int(math.floor(fx)), int(math.floor(fy)), int(math.floor(fz))
    ax, ay, az = fx - x0, fy - y0, fz - z0
    wx0, wx1 = (1.0 - ax) * (x0 >= 0), ax * (x0 + 1 < W)
    wy0, wy1 = (1.0 - ay) * (y0 >= 0), ay * (y0 + 1 < H)
    wz0, wz1 = (1.0 - az) * (z0 >= 0), az * (z0 + 1 < D)
    xa, xb = max(x0, 0), min(x0 + 1, W - 1)
    ya, yb = max(y0, 0) * W, min(y0 + 1, H - 1) * W
    za, zb = max(z0, 0) * H * W, min(z0 + 1, D - 1) * H * W
    voxels = (
        za + ya + xa,
        za + ya + xb,
        za + yb + xa,
        za + yb + xb,
        zb + ya + xa,
        zb + ya + xb,
        zb + yb + xa,
        zb + yb + xb,
    )
    weights = (
        wz0 * wy0 * wx0, wz0 * wy0 * wx1, wz0 * wy1 * wx0, wz0 * wy1 * wx1,
        wz1 * wy0 * wx0, wz1 * wy0 * wx1, wz1 * wy1 * wx0, wz1 * wy1 * wx1,
    )  # fmt: skip
    return inside, voxels, weights


@numba.njit(parallel=True, fastmath=_FASTMATH, cache=True)
def _kernel(
    volumes, coords, features, coverage, scales, view_weights, shape, views, threads, backward, visible
):  # pragma: no cover - compiled
    """Forward: ``features`` [B, N, C] = the pooled trilinear lookups of ``coords`` [B*V, N, 3] in ``volumes``
    [1, B*V, D*H*W, C]; ``coverage`` [B, N] = the summed weight of the corners inside a volume over the views;
    ``scales`` [B, N] = what the weighted sum was multiplied by. Backward: ``features`` holds their gradient,
    scattered into ``volumes``, which are then zeroed gradients, one per thread [threads, B*V, D*H*W, C] (points of
    different threads may share corners); ``scales`` are the forward's.
    Pooling (trilinear.py), with ``view_weights`` [B*V] (ones: unweighted): visible, the weighted sum / the weighted
    coverage * min(coverage, 1), which for equal weights is the sum / max(coverage, 1); mean, the weighted sum / the
    weights' sum.

    Each thread takes a contiguous run of points (ray samples, so neighbours share voxels) and does every view there.
    """
    D, H, W = shape
    C = volumes.shape[3]
    B, N = features.shape[0], features.shape[1]
    per_thread = (B * N + threads - 1) // threads
    for t in numba.prange(threads):
        vol = volumes[min(np.int64(t), volumes.shape[0] - 1)]  # forward: the one volume set; backward: this thread's
        acc = np.empty(C, np.float32)
        for i in range(t * per_thread, min(B * N, (t + 1) * per_thread)):
            b = i // N
            n = i - b * N
            scale = scales[b, n]
            for c in range(C):
                acc[c] = features[b, n, c] * scale if backward else 0.0
            seen = np.float32(0.0)
            seen_weighted = np.float32(0.0)
            total_weight = np.float32(0.0)
            for bv in range(b * views, (b + 1) * views):
                view_weight = view_weights[bv]
                total_weight += view_weight
                inside, voxels, weights = _corners(coords[bv, n], D, H, W)
                if not inside:
                    continue
                for k in range(8):
                    weight, voxel = np.float32(weights[k]), voxels[k]
                    seen += weight
                    seen_weighted += view_weight * weight
                    weight = weight * view_weight
                    if backward:
                        for c in range(C):
                            vol[bv, voxel, c] += weight * acc[c]
                    else:
                        for c in range(C):
                            acc[c] += weight * vol[bv, voxel, c]
            if not backward:
                coverage[b, n] = seen
                if visible:
                    scale = np.float32(min(seen, 1.0) / seen_weighted) if seen_weighted > 0 else np.float32(0.0)
                else:
                    scale = np.float32(1.0 / total_weight)
                scales[b, n] = scale
                for c in range(C):
                    features[b, n, c] = acc[c] * scale


def _threads() -> int:
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


# torch operators rather than an autograd.Function: torch.compile traces a render through them as one opaque call
# (their fake functions give the shapes), where a Function calling numba broke the compiled graph in two at every
# lookup (dynamo tried to trace numba's dispatcher, failed and fell back).
@torch.library.custom_op("genvs_ns::trilinear_pool_cpu", mutates_args=(), device_types="cpu")
def trilinear_pool_cpu(
    volumes: Tensor, coords: Tensor, visible: bool, view_weights: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """``trilinear.trilinear_pool`` on the CPU: (features [B, N, C], coverage [B, N], the scales the backward reads
    [B, N]); only the features have a gradient."""
    B, V, C, D, H, W = volumes.shape
    # [1, B*V, D*H*W, C]: a view of GeNVSNetwork.encode's channels-last volumes, a copy of any others.
    vol = volumes.detach().permute(0, 1, 3, 4, 5, 2).reshape(1, B * V, D * H * W, C).contiguous()
    flat = coords.detach().reshape(B * V, -1, 3).contiguous()
    out = vol.new_empty(B, flat.shape[1], C)
    coverage, scales = vol.new_empty(B, flat.shape[1]), vol.new_empty(B, flat.shape[1])
    weights = _flat_weights(view_weights, B * V, vol)
    arrays = (vol.numpy(), flat.numpy(), out.numpy(), coverage.numpy(), scales.numpy(), weights.numpy())
    with _kernel_lock:
        _kernel(*arrays, (D, H, W), V, _threads(), False, visible)
    return out, coverage, scales


@trilinear_pool_cpu.register_fake
def _(volumes: Tensor, coords: Tensor, visible: bool, view_weights: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    B, C, N = volumes.shape[0], volumes.shape[2], coords.shape[2]
    return volumes.new_empty(B, N, C), volumes.new_empty(B, N), volumes.new_empty(B, N)


@torch.library.custom_op("genvs_ns::trilinear_pool_cpu_backward", mutates_args=(), device_types="cpu")
def trilinear_pool_cpu_backward(
    grad: Tensor, coords: Tensor, scales: Tensor, view_weights: Tensor | None, volume_shape: list[int], visible: bool
) -> Tensor:
    """The volumes' gradient (channels-last, as GeNVSNetwork.encode makes them) from the features' ``grad``."""
    B, V, C, D, H, W = volume_shape
    threads = _threads()
    grads = grad.new_zeros(threads, B * V, D * H * W, C)
    features = grad.detach().float().contiguous().numpy()
    coverage = scales.new_empty(scales.shape)  # not read in the backward
    flat = coords.reshape(B * V, -1, 3).contiguous()
    weights = _flat_weights(view_weights, B * V, grads)
    arrays = (grads.numpy(), flat.numpy(), features, coverage.numpy(), scales.contiguous().numpy(), weights.numpy())
    with _kernel_lock:
        _kernel(*arrays, (D, H, W), V, threads, True, visible)
    total = grads[0]
    for extra in grads[1:]:
        total += extra
    return total.view(B, V, D, H, W, C).permute(0, 1, 5, 2, 3, 4)


@trilinear_pool_cpu_backward.register_fake
def _(
    grad: Tensor, coords: Tensor, scales: Tensor, view_weights: Tensor | None, volume_shape: list[int], visible: bool
) -> Tensor:
    B, V, C, D, H, W = volume_shape
    return grad.new_empty(B, V, D, H, W, C).permute(0, 1, 5, 2, 3, 4)


def _flat_weights(view_weights: Tensor | None, views: int, like: Tensor) -> Tensor:
    if view_weights is None:
        return like.new_ones(views)
    return view_weights.detach().float().reshape(views).contiguous()


def _setup_context(ctx, inputs, output) -> None:
    volumes, coords, visible, view_weights = inputs
    ctx.save_for_backward(coords, output[2], view_weights)
    ctx.volume_shape, ctx.visible = list(volumes.shape), visible


def _backward(ctx, grad: Tensor, _coverage: Tensor | None, _scales: Tensor | None):
    coords, scales, view_weights = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None, None, None, None
    return (
        trilinear_pool_cpu_backward(grad, coords, scales, view_weights, ctx.volume_shape, ctx.visible),
        None,
        None,
        None,
    )


trilinear_pool_cpu.register_autograd(_backward, setup_context=_setup_context)
