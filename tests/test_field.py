"""The field's volume lookup: the CPU kernel must equal grid_sample (align_corners=False, zero padding) pooled over
views, in values, coverage and gradients; and the pooling must count only the views that see a point."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genvs_ns.model.trilinear import frustum_coverage, trilinear_pool


def _reference(volumes: torch.Tensor, coords: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """Pooling stated with grid_sample alone: a view's coverage is its lookup in a volume of ones."""
    B, V, C, D, h, w = volumes.shape
    grid = coords.reshape(B * V, -1, 1, 1, 3)
    out = F.grid_sample(volumes.reshape(B * V, C, D, h, w), grid, padding_mode="zeros", align_corners=False)
    out = out.view(B, V, C, -1)
    if pooling == "mean":
        return out.mean(dim=1).transpose(1, 2)
    ones = torch.ones(B * V, 1, D, h, w, dtype=volumes.dtype)
    coverage = F.grid_sample(ones, grid, padding_mode="zeros", align_corners=False).view(B, V, -1).sum(dim=1)
    return (out.sum(dim=1) / coverage.clamp_min(1)[:, None]).transpose(1, 2)


def _coords(batch: int, views: int, n: int) -> torch.Tensor:
    # Some points outside the volume, some exactly on its faces, and those world_to_frustum marks as behind.
    coords = torch.rand(batch, views, n, 3) * 2.4 - 1.2
    coords[:, :, :20] = torch.tensor([1.0, -1.0, 0.0])
    coords[0, 0, 20:30] = 2.0
    return coords


@pytest.mark.parametrize("pooling", ["visible", "mean"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch, views, channels_last", [(1, 1, True), (1, 3, True), (2, 2, False), (3, 3, True)])
def test_cpu_kernel_matches_grid_sample(pooling, threads, batch, views, channels_last):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        C, D, h, w, n = 16, 5, 6, 7, 1001
        volumes = torch.randn(batch * views, C, D, h, w)
        if channels_last:  # as GeNVSNetwork.encode lays them out
            volumes = volumes.contiguous(memory_format=torch.channels_last_3d)
        volumes = volumes.view(batch, views, C, D, h, w).requires_grad_()
        coords = _coords(batch, views, n)
        out, coverage = trilinear_pool(volumes, coords, pooling)
        ref = _reference(volumes, coords, pooling)
        weights = torch.randn_like(ref)
        (grad,) = torch.autograd.grad((out * weights).sum(), volumes)
        (ref_grad,) = torch.autograd.grad((ref * weights).sum(), volumes)
    finally:
        torch.set_num_threads(previous)
    assert out.shape == (batch, n, C) and coverage.shape == (batch, n)
    assert ref.abs().sum() > 0 and ref_grad.abs().sum() > 0
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(grad, ref_grad)
    torch.testing.assert_close(coverage, frustum_coverage(coords, (D, h, w)).sum(dim=1))


def test_coverage_is_the_lookup_of_a_volume_of_ones():
    torch.manual_seed(1)
    D, h, w = 3, 4, 5
    coords = torch.rand(1, 5000, 3) * 3 - 1.5
    ones = torch.ones(1, 1, D, h, w)
    want = F.grid_sample(ones, coords.view(1, -1, 1, 1, 3), padding_mode="zeros", align_corners=False).view(1, -1)
    got = frustum_coverage(coords, (D, h, w))
    torch.testing.assert_close(got, want)
    assert (got == 1).any() and (got == 0).any() and ((got > 0) & (got < 1)).any()


@pytest.mark.parametrize("device_path", ["kernel", "grid_sample"])
def test_a_point_seen_by_one_of_three_views_gets_that_views_features(device_path):
    torch.manual_seed(2)
    dtype = torch.float32 if device_path == "kernel" else torch.float64  # float64 takes the grid_sample path
    volumes = torch.randn(1, 3, 16, 4, 4, 4, dtype=dtype, requires_grad=True)
    coords = torch.full((1, 3, 3, 3), 5.0, dtype=dtype)  # outside every volume ...
    coords[0, 1, 0] = torch.tensor([0.1, -0.2, 0.3])  # ... but point 0 is inside view 1's
    coords[0, :, 1] = torch.tensor([0.1, -0.2, 0.3])  # point 1 inside all three
    out, coverage = trilinear_pool(volumes, coords, "visible")
    alone, _ = trilinear_pool(volumes[:, 1:2], coords[:, 1:2, :1], "visible")
    torch.testing.assert_close(out[0, 0], alone[0, 0])
    torch.testing.assert_close(out[0, 1], _reference(volumes, coords[:, :, 1:2], "mean")[0, 0])
    assert torch.equal(out[0, 2], torch.zeros(16, dtype=dtype))  # seen by none: empty
    torch.testing.assert_close(coverage[0], torch.tensor([1.0, 3.0, 0.0], dtype=dtype))
    # The plain mean gives a third of view 1's features.
    mean, _ = trilinear_pool(volumes, coords, "mean")
    torch.testing.assert_close(mean[0, 0], alone[0, 0] / 3)
    # Views that miss a point get no gradient from it.
    (grad,) = torch.autograd.grad(out[0, 0].sum(), volumes)
    assert grad[0, 1].abs().sum() > 0 and not grad[0, [0, 2]].any()


def test_non_finite_and_far_points_are_empty_space():
    volumes = torch.randn(1, 2, 16, 4, 4, 4)
    coords = torch.zeros(1, 2, 4, 3)
    coords[0, 0, 0] = float("nan")
    coords[0, 1, 1] = float("inf")
    coords[0, :, 2] = -float("inf")
    coords[0, :, 3] = 1e30  # beyond any integer voxel index
    centre = torch.zeros(1, 1, 1, 3)
    for pooling, share in (("mean", 0.5), ("visible", 1.0)):
        out, coverage = trilinear_pool(volumes, coords, pooling)
        torch.testing.assert_close(out[0, 0], _reference(volumes[:, 1:], centre)[0, 0] * share)
        torch.testing.assert_close(out[0, 1], _reference(volumes[:, :1], centre)[0, 0] * share)
        assert torch.equal(out[0, 2:], torch.zeros(2, 16)) and torch.equal(coverage[0], torch.tensor([1.0, 1, 0, 0]))
    assert torch.equal(frustum_coverage(coords, (4, 4, 4)).sum(1)[0], torch.tensor([1.0, 1, 0, 0]))


@pytest.mark.parametrize("pooling", ["visible", "mean"])
def test_other_dtypes_take_grid_sample(pooling):
    torch.manual_seed(0)
    volumes = torch.randn(2, 3, 4, 5, 6, 7, dtype=torch.float64)
    coords = torch.rand(2, 3, 50, 3, dtype=torch.float64) * 2.4 - 1.2
    torch.testing.assert_close(trilinear_pool(volumes, coords, pooling)[0], _reference(volumes, coords, pooling))


def test_gradients_for_points_are_refused():
    with pytest.raises(ValueError, match="points"):
        trilinear_pool(torch.randn(1, 1, 2, 3, 3, 3), torch.zeros(1, 1, 4, 3, requires_grad=True))


def test_without_numba_the_lookup_falls_back_to_grid_sample_with_a_warning(monkeypatch):
    """numba is loaded on first use: a machine without it (or with a kernel cache it cannot write) still trains."""
    import sys

    from genvs_ns.model import trilinear

    trilinear._cpu_kernel.clear()
    monkeypatch.setitem(sys.modules, "genvs_ns.model.trilinear_numba", None)  # import fails as without numba
    try:
        with pytest.warns(RuntimeWarning, match="grid_sample"):
            assert trilinear._cpu_function() is None
        torch.manual_seed(0)
        volumes = torch.randn(1, 2, 16, 4, 5, 6, requires_grad=True)
        coords = torch.rand(1, 2, 30, 3) * 2.4 - 1.2
        for pooling in ("visible", "mean"):
            out, _ = trilinear_pool(volumes, coords, pooling)
            ref = _reference(volumes, coords, pooling)
            torch.testing.assert_close(out, ref)
            grads = [torch.autograd.grad(x.sum(), volumes)[0] for x in (out, ref)]
            torch.testing.assert_close(*grads)
        coords[0, :, 0] = float("nan")
        coords[0, :, 1] = 1e30
        assert torch.equal(trilinear_pool(volumes, coords)[0][0, :2], torch.zeros(2, 16))
    finally:
        trilinear._cpu_kernel.clear()


def test_importing_the_lookup_does_not_import_numba():
    import subprocess
    import sys

    code = "import sys, genvs_ns.model.trilinear; print('numba' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "False", res.stderr[-2000:]


@pytest.mark.parametrize("pooling", ["visible", "mean"])
@pytest.mark.parametrize("device_path", ["kernel", "grid_sample"])
def test_view_weights(pooling, device_path):
    """Weights set views against each other: a point seen by views 0 (weight 1) and 1 (weight 1/4) gets
    (f0 + f1 / 4) / 1.25; equal weights give the unweighted pooling; both paths agree in values and gradients."""
    torch.manual_seed(3)
    dtype = torch.float32 if device_path == "kernel" else torch.float64
    volumes = torch.randn(2, 3, 16, 4, 5, 6, dtype=dtype)
    coords = (torch.rand(2, 3, 300, 3) * 2.4 - 1.2).to(dtype)
    coords[:, 2, :50] = 5.0  # outside view 2
    weights = torch.tensor([[1.0, 0.25, 0.25], [1.0, 1.0, 1.0]], dtype=dtype)
    out, coverage = trilinear_pool(volumes, coords, pooling, weights)
    plain, plain_coverage = trilinear_pool(volumes, coords, pooling)
    torch.testing.assert_close(out[1], plain[1])  # equal weights
    torch.testing.assert_close(coverage, plain_coverage)
    inside = torch.zeros(1, 2, 1, 3, dtype=dtype)  # the centre, seen by views 0 and 1 only
    pair, _ = trilinear_pool(volumes[:1, :2], inside, pooling, weights[:1, :2])
    f = [_reference(volumes[:1, v : v + 1], inside)[0, 0] for v in (0, 1)]
    torch.testing.assert_close(pair[0, 0], (f[0] + 0.25 * f[1]) / 1.25)
    # Against the weighted pooling stated with grid_sample alone, values and gradients.
    leaf = volumes.clone().requires_grad_()
    got, _ = trilinear_pool(leaf, coords, pooling, weights)
    grid = coords.reshape(6, -1, 1, 1, 3)
    looked = F.grid_sample(leaf.reshape(6, 16, 4, 5, 6), grid, padding_mode="zeros", align_corners=False).view(
        2, 3, 16, -1
    )
    ones = torch.ones(6, 1, 4, 5, 6, dtype=dtype)
    cov = F.grid_sample(ones, grid, padding_mode="zeros", align_corners=False).view(2, 3, -1)
    w = weights[:, :, None]
    summed = (looked * w[:, :, None]).sum(1)
    if pooling == "visible":
        seen = (cov * w).sum(1)
        scale = torch.where(seen > 0, cov.sum(1).clamp(max=1) / seen.clamp_min(1e-12), torch.zeros_like(seen))
    else:
        scale = (1 / w.sum(1)).expand(-1, summed.shape[-1])
    want = (summed * scale[:, None]).transpose(1, 2)
    torch.testing.assert_close(got, want)
    g = torch.randn_like(want)
    torch.testing.assert_close(
        torch.autograd.grad((got * g).sum(), leaf)[0], torch.autograd.grad((want * g).sum(), leaf)[0]
    )


@pytest.mark.parametrize("weighted", [False, True])
def test_the_cpu_kernel_is_an_operator_torch_compile_can_trace(weighted):
    """torch.library's own checks of the numba operators: schema, fake (shape and stride) functions against the
    kernel's outputs, autograd registration, and tracing by AOTAutograd (what torch.compile does with a render)."""
    from genvs_ns.model.trilinear_numba import trilinear_pool_cpu, trilinear_pool_cpu_backward

    torch.manual_seed(0)
    volumes = torch.randn(4, 16, 5, 6, 7).contiguous(memory_format=torch.channels_last_3d).view(2, 2, 16, 5, 6, 7)
    weights = torch.tensor([[1.0, 0.3], [0.5, 2.0]]) if weighted else None
    coords = _coords(2, 2, 101)
    torch.library.opcheck(trilinear_pool_cpu, (volumes.requires_grad_(), coords, True, weights))
    _, _, scales = trilinear_pool_cpu(volumes.detach(), coords, True, weights)
    backward_args = (torch.randn(2, 101, 16), coords, scales, weights, list(volumes.shape), True)
    torch.library.opcheck(trilinear_pool_cpu_backward, backward_args)
