"""The field's volume lookup: the CPU path that splits points among threads must equal one batched grid_sample."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genvs_ns.model.field import _sample_volumes


@pytest.mark.parametrize("volumes, points", [(1, 1001), (3, 4097)])
def test_points_split_among_threads_match_batched_grid_sample(monkeypatch, volumes, points):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    batch_sizes = []
    grid_sample = F.grid_sample

    def spy(input, grid, **kwargs):
        batch_sizes.append(input.shape[0])
        return grid_sample(input, grid, **kwargs)

    try:
        torch.manual_seed(0)
        vol = torch.randn(volumes, 4, 5, 6, 7, requires_grad=True)
        grid = torch.rand(volumes, points, 3) * 2.4 - 1.2  # some points outside the volume
        ref = F.grid_sample(vol, grid[:, :, None, None], align_corners=False).view(volumes, 4, points)
        weights = torch.randn_like(ref)
        (ref_grad,) = torch.autograd.grad((ref * weights).sum(), vol)
        monkeypatch.setattr(F, "grid_sample", spy)
        out = _sample_volumes(vol, grid)
        (out_grad,) = torch.autograd.grad((out * weights).sum(), vol)
    finally:
        torch.set_num_threads(threads)
    assert batch_sizes == [2] * volumes  # one call per volume, its points split in two
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out_grad, ref_grad)
