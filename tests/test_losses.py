"""The auxiliary losses as pure functions: each term against a hand-made case."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from genvs_ns.model.losses import (
    RayRender,
    SilhouetteRays,
    TrainingOutputs,
    depth_l1,
    depth_prior,
    opacity_bce,
    training_losses,
    view_consistency,
)
from genvs_ns.model.training import depth_at, silhouette_pixels


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


def _outputs(other: RayRender | None) -> TrainingOutputs:
    torch.manual_seed(0)
    h = w = 2
    source = RayRender(torch.rand(1, 4, 3), torch.ones(1, 4), torch.ones(1, 4))
    return TrainingOutputs(
        features=torch.rand(1, 16, h, w),
        depth=torch.ones(1, 1, h, w),
        accumulation=torch.full((1, 1, h, w), 0.5),
        diffusion=torch.rand(2),
        target_rgb=torch.rand(1, 3, h, w),
        target_foreground=torch.ones(1, 1, h, w),
        closest_approach=torch.ones(1, 1, h, w),
        source=source,
        source_truth=torch.rand(1, 4, 3),
        other=other,
    )


def test_the_cross_view_rgb_loss_compares_the_other_volumes_render_with_source_view_0():
    weights = SimpleNamespace(
        diffusion_loss_mult=1.0, rgb_loss_mult=1.0, source_rgb_loss_mult=0.1, opacity_loss_mult=0.01,
        depth_prior_mult=0.01, consistency_loss_mult=0.1, cross_view_rgb_loss_mult=0.5, depth_loss_mult=0.0,
        object_radius=0.6,
    )  # fmt: skip
    other = RayRender(torch.rand(1, 4, 3), torch.ones(1, 4), torch.ones(1, 4))
    out = _outputs(other)
    losses = training_losses(out, weights)
    expected = 0.5 * F.mse_loss(other.rgb, out.source_truth)
    assert float(losses["cross_view_rgb_loss"]) == pytest.approx(float(expected), rel=1e-6)
    assert "cross_view_rgb_loss" not in training_losses(_outputs(None), weights)  # one source view: no other volume
    weights.cross_view_rgb_loss_mult = 0.0
    assert "cross_view_rgb_loss" not in training_losses(out, weights)


def test_the_depth_loss_counts_only_pixels_with_a_true_depth():
    depth = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    truth = torch.tensor([[[[1.5, 0.0], [2.0, 0.0]]]])  # right column: background or a silhouette
    assert float(depth_l1(depth, truth)) == pytest.approx((0.5 + 1.0) / 2)
    assert float(depth_l1(depth, torch.zeros_like(truth))) == 0.0


def test_true_depth_at_render_size_drops_pixels_that_straddle_a_silhouette():
    depth = torch.zeros(1, 1, 4, 4)
    depth[..., :2, :] = 2.0  # top half the object
    depth[..., 2, :2] = 4.0  # one more row under its left half
    small = depth_at(depth, (2, 2))
    torch.testing.assert_close(small, torch.tensor([[[[2.0, 2.0], [0.0, 0.0]]]]))
    depth[..., 2:, :2] = 4.0
    assert float(depth_at(depth, (2, 2))[0, 0, 1, 0]) == 4.0  # wholly the object: the area average


def test_silhouette_rays_are_drawn_within_the_band_of_the_outline_on_both_sides():
    mask = torch.zeros(2, 1, 16, 16)
    mask[0, :, 4:10, 5:12] = 1.0  # rows 4-9, columns 5-11; the second image has no object, so no outline
    uv = silhouette_pixels(mask, 2000, band=2, generator=torch.Generator().manual_seed(0))
    assert uv.shape == (2, 2000, 2)
    x, y = uv[0, :, 0], uv[0, :, 1]
    assert int(x.min()) == 3 and int(x.max()) == 13 and int(y.min()) == 2 and int(y.max()) == 11
    deep_inside = (x >= 7) & (x <= 9) & (y >= 6) & (y <= 7)  # more than 2 pixels from every edge
    assert not bool(deep_inside.any())
    on_object = mask[0, 0, y, x]
    assert 0.2 < float(on_object.mean()) < 0.8  # the band's inner and outer halves both drawn
    x, y = uv[1, :, 0], uv[1, :, 1]
    assert int(x.min()) == 0 and int(x.max()) == 15 and int(y.min()) == 0 and int(y.max()) == 15  # anywhere


def test_the_silhouette_loss_is_the_bce_of_the_outline_rays():
    weights = SimpleNamespace(
        diffusion_loss_mult=1.0, rgb_loss_mult=1.0, source_rgb_loss_mult=0.1, opacity_loss_mult=0.01,
        depth_prior_mult=0.01, consistency_loss_mult=0.1, cross_view_rgb_loss_mult=0.0, depth_loss_mult=0.0,
        silhouette_loss_mult=0.5, object_radius=0.6,
    )  # fmt: skip
    out = _outputs(None)
    assert "silhouette_loss" not in training_losses(out, weights)
    rays = SilhouetteRays(torch.tensor([[0.2, 0.9, 0.6]]), torch.tensor([[0.0, 1.0, 0.0]]))
    out.silhouette = rays
    expected = 0.5 * F.binary_cross_entropy(rays.accumulation, rays.foreground)
    assert float(training_losses(out, weights)["silhouette_loss"]) == pytest.approx(float(expected), rel=1e-5)
