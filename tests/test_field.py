"""The field's volume lookup: the CPU kernels must equal grid_sample (align_corners=False, zero padding), averaged
over views, in values and in gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genvs_ns.model.trilinear import trilinear_mean


def _reference(volumes: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    B, V, C, D, h, w = volumes.shape
    grid = coords.reshape(B * V, -1, 1, 1, 3)
    out = F.grid_sample(volumes.reshape(B * V, C, D, h, w), grid, padding_mode="zeros", align_corners=False)
    return out.view(B, V, C, -1).mean(dim=1).transpose(1, 2)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch, views, channels_last", [(1, 1, True), (1, 3, True), (2, 2, False), (3, 3, True)])
def test_cpu_kernels_match_grid_sample(threads, batch, views, channels_last):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        C, D, h, w, n = 16, 5, 6, 7, 1001
        volumes = torch.randn(batch * views, C, D, h, w)
        if channels_last:  # as GeNVSNetwork.encode lays them out
            volumes = volumes.contiguous(memory_format=torch.channels_last_3d)
        volumes = volumes.view(batch, views, C, D, h, w).requires_grad_()
        # Some points outside the volume, some exactly on its faces, and those world_to_frustum marks as behind.
        coords = torch.rand(batch, views, n, 3) * 2.4 - 1.2
        coords[:, :, :20] = torch.tensor([1.0, -1.0, 0.0])
        coords[0, 0, 20:30] = 2.0
        out = trilinear_mean(volumes, coords)
        ref = _reference(volumes, coords)
        weights = torch.randn_like(ref)
        (grad,) = torch.autograd.grad((out * weights).sum(), volumes)
        (ref_grad,) = torch.autograd.grad((ref * weights).sum(), volumes)
    finally:
        torch.set_num_threads(previous)
    assert out.shape == (batch, n, C)
    assert ref.abs().sum() > 0 and ref_grad.abs().sum() > 0
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(grad, ref_grad)


def test_non_finite_and_far_points_are_empty_space():
    volumes = torch.randn(1, 2, 16, 4, 4, 4)
    coords = torch.zeros(1, 2, 4, 3)
    coords[0, 0, 0] = float("nan")
    coords[0, 1, 1] = float("inf")
    coords[0, :, 2] = -float("inf")
    coords[0, :, 3] = 1e30  # beyond any integer voxel index
    out = trilinear_mean(volumes, coords)
    centre = _reference(volumes, torch.zeros(1, 2, 1, 3))[0, 0]
    torch.testing.assert_close(out[0, 0], _reference(volumes[:, 1:], torch.zeros(1, 1, 1, 3))[0, 0] / 2)
    torch.testing.assert_close(out[0, 1], _reference(volumes[:, :1], torch.zeros(1, 1, 1, 3))[0, 0] / 2)
    assert torch.equal(out[0, 2:], torch.zeros(2, 16))
    assert not torch.equal(centre, torch.zeros(16))


def test_other_dtypes_take_grid_sample():
    torch.manual_seed(0)
    volumes = torch.randn(2, 3, 4, 5, 6, 7, dtype=torch.float64)
    coords = torch.rand(2, 3, 50, 3, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(trilinear_mean(volumes, coords), _reference(volumes, coords))


def test_gradients_for_points_are_refused():
    with pytest.raises(ValueError, match="points"):
        trilinear_mean(torch.randn(1, 1, 2, 3, 3, 3), torch.zeros(1, 1, 4, 3, requires_grad=True))


def test_without_numba_the_lookup_falls_back_to_grid_sample_with_a_warning(monkeypatch):
    """numba is loaded on first use: a machine without it (or with a kernel cache it cannot write) still trains."""
    import sys

    from genvs_ns.model import trilinear

    trilinear._cpu_function.cache_clear()
    monkeypatch.setitem(sys.modules, "genvs_ns.model.trilinear_numba", None)  # import fails as without numba
    try:
        with pytest.warns(RuntimeWarning, match="grid_sample"):
            assert trilinear._cpu_function() is None
        torch.manual_seed(0)
        volumes = torch.randn(1, 2, 16, 4, 5, 6)
        coords = torch.rand(1, 2, 30, 3) * 2.4 - 1.2
        torch.testing.assert_close(trilinear_mean(volumes, coords), _reference(volumes, coords))
        coords[0, :, 0] = float("nan")
        coords[0, :, 1] = 1e30
        assert torch.equal(trilinear_mean(volumes, coords)[0, :2], torch.zeros(2, 16))
    finally:
        trilinear._cpu_function.cache_clear()


def test_importing_the_lookup_does_not_import_numba():
    import subprocess
    import sys

    code = "import sys, genvs_ns.model.trilinear; print('numba' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "False", res.stderr[-2000:]
