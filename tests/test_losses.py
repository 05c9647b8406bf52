"""The auxiliary losses as pure functions: each term against a hand-made case."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genvs_ns.model.losses import RayRender, depth_prior, opacity_bce, view_consistency


def test_opacity_bce_is_binary_cross_entropy_without_needing_it():
    accumulation = torch.tensor([0.0, 0.3, 0.9, 1.0]).view(1, 1, 2, 2)
    foreground = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 2, 2)
    expected = F.binary_cross_entropy(accumulation.clamp(1e-4, 1 - 1e-4), foreground)
    assert float(opacity_bce(accumulation, foreground)) == pytest.approx(float(expected), rel=1e-5)


def test_depth_prior_counts_only_foreground_depth_beyond_the_object_radius():
    closest = torch.full((1, 1, 1, 3), 1.3)
    depth = torch.tensor([1.3 + 0.5, 1.3 - 0.9, 1.3 + 3.0]).view(1, 1, 1, 3)  # inside, 0.3 beyond, background
    foreground = torch.tensor([1.0, 1.0, 0.0]).view(1, 1, 1, 3)
    assert float(depth_prior(depth, closest, foreground, object_radius=0.6)) == pytest.approx(0.3 / 2, rel=1e-5)
    assert float(depth_prior(depth, closest, torch.zeros_like(foreground), 0.6)) == 0.0  # empty mask: no NaN


def test_view_consistency_is_zero_for_agreeing_views_and_ignores_depth_where_transparent():
    own = RayRender(torch.zeros(1, 3, 3), torch.tensor([[1.0, 2.0, 5.0]]), torch.tensor([[0.9, 0.8, 0.1]]))
    assert float(view_consistency(own, own)) == 0.0
    other = RayRender(own.rgb, torch.tensor([[1.5, 2.0, 0.0]]), own.accumulation)
    # Depth gap 0.5 on one of the two opaque rays; the transparent third ray's depth does not count.
    assert float(view_consistency(own, other)) == pytest.approx(0.5 / 2, rel=1e-6)
    more_opaque = RayRender(own.rgb, own.depth, torch.tensor([[0.9, 0.8, 0.4]]))
    assert float(view_consistency(own, more_opaque)) == pytest.approx(0.3 / 3, rel=1e-5)
