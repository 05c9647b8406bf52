"""The renderer on hand-made fields: compositing against closed forms, importance samples, and cameras anywhere."""

from __future__ import annotations

import math

import torch

from genvs_ns.geometry import depth_range, image_rays, intrinsics_matrix
from genvs_ns.model.renderer import RenderSettings, _inverse_cdf, render_rays

BALL = 0.3  # radius of the hand-made object at the origin


def _ball(density: float = 200.0):
    """An opaque ball at the origin whose latent is its points' height, so that depth and features can be checked."""

    def field_fn(points):
        inside = points.norm(dim=-1) < BALL
        return density * inside.float(), points[..., 2:3].expand(-1, -1, 2)

    return field_fn


def _camera_at(distance: float) -> torch.Tensor:
    """OpenGL c2w on the +x axis looking at the origin (camera z = +x, y = +z)."""
    R = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return torch.cat([R, torch.tensor([[distance], [0.0], [0.0]])], dim=1)


def _render(distance: float, hw: int = 48):
    K = intrinsics_matrix(*(torch.tensor([v]) for v in (60.0, 60.0, hw / 2, hw / 2)))
    origins, directions = image_rays(_camera_at(distance)[None], K, (hw, hw), (hw, hw))
    settings = RenderSettings(radius=0.5, num_coarse=32, num_importance=32, stratified=False)
    return render_rays(_ball(), origins, directions, settings, torch.ones(2)), hw


def test_depth_range_follows_the_camera_and_gives_the_data_its_planes():
    near, far = depth_range(torch.tensor([[0.0, 1.3, 0.0], [0.0, 0.0, 2.5], [0.1, 0.0, 0.0]]), 0.5)
    torch.testing.assert_close(near, torch.tensor([0.8, 2.0, 0.025]))  # SRN cars: 0.8 to 1.8 at 1.3
    torch.testing.assert_close(far, torch.tensor([1.8, 3.0, 0.6]))


def test_constant_density_composites_to_the_closed_form():
    """A ray through uniform density sigma over its whole sampled stretch L: accumulation 1 - exp(-sigma L), expected
    depth near + (1/sigma - L e^{-sigma L} / (1 - e^{-sigma L})), features the background beyond it."""
    sigma = 1.5
    origins = torch.tensor([[[0.0, 0.0, 1.3]]])
    directions = torch.tensor([[[0.0, 0.0, -1.0]]])

    def field_fn(points):
        return torch.full(points.shape[:-1], sigma), torch.zeros(*points.shape[:-1], 2)

    settings = RenderSettings(radius=0.5, num_coarse=64, num_importance=64, stratified=False)
    out = render_rays(field_fn, origins, directions, settings, torch.ones(2))
    L = 1.0
    acc = 1 - math.exp(-sigma * L)
    depth = 0.8 + (1 / sigma - L * math.exp(-sigma * L) / acc)
    assert abs(float(out.accumulation) - acc) < 1e-4
    assert abs(float(out.depth) - depth) < 5e-3
    torch.testing.assert_close(out.features[0, 0], torch.full((2,), 1 - acc), atol=1e-4, rtol=0)


def test_inverse_cdf_puts_samples_where_the_weight_is_like_nerfstudios_pdf_sampler():
    """All weight in bin 2 of 4: every sample lands in that bin, evenly spread (deterministic: bin quantiles)."""
    edges = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    weights = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    t = _inverse_cdf(edges, weights, 4, stratified=False)
    assert ((t > 2.0) & (t < 3.0)).all()
    torch.testing.assert_close(t, torch.tensor([[2.125, 2.375, 2.625, 2.875]]), atol=2e-4, rtol=0)
    t = _inverse_cdf(edges, weights, 1000, stratified=True)
    assert ((t >= 2.0) & (t <= 3.0)).float().mean() > 0.99


def test_an_object_seen_from_farther_away_has_the_same_silhouette_scaled():
    """From 2.5 instead of SRN's 1.3 the ball must still be there, smaller by the ratio of its apparent sizes (with
    fixed near/far planes, 0.8 to 1.8, rays from 2.5 stopped before reaching it and the image was empty)."""
    near_view, hw = _render(1.3)
    far_view, _ = _render(2.5)

    def silhouette_radius(out) -> float:
        area = float((out.accumulation > 0.5).sum())
        return math.sqrt(area / math.pi)

    def apparent_radius(distance: float) -> float:  # pixels: focal x tan of the ball's angular radius
        return 60.0 * math.tan(math.asin(BALL / distance))

    assert abs(silhouette_radius(near_view) - apparent_radius(1.3)) < 1.0
    assert abs(silhouette_radius(far_view) - apparent_radius(2.5)) < 1.0
    # Expected depth at the image centre: the ball's front surface.
    centre = (hw // 2) * hw + hw // 2
    assert abs(float(far_view.depth[0, centre]) - (2.5 - BALL)) < 0.03
