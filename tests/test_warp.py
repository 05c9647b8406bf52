"""A known view warped into a new one at the new view's rendered depth (model config warp_known_view): the geometry
against an analytic scene, the occlusion test, and the model's training and sampling with the extra channels."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_trainer_config

from genvs_ns.errors import GeNVSError
from genvs_ns.geometry import intrinsics_matrix, look_at, pixel_centres, rays_through_pixels
from genvs_ns.model.warp import fill_holes, warp_known_view
from genvs_ns.sampling import SamplerSettings
from genvs_ns.sampling.context import ContextPolicy

SIZE = 48


def _plane_view(position: tuple[float, float, float]) -> tuple[torch.Tensor, ...]:
    """A camera looking at the origin and what it sees of the textured plane z = 0: image, c2w, K, ray distance."""
    c2w = look_at(torch.tensor(position), torch.tensor([0.0, 1.0, 0.0]))
    K = intrinsics_matrix(*(torch.tensor(v) for v in (50.0, 50.0, SIZE / 2, SIZE / 2)))
    origins, directions = rays_through_pixels(c2w, K, pixel_centres(SIZE, SIZE))
    t = -origins[:, 2] / directions[:, 2]
    points = origins + directions * t[:, None]
    x, y = points[:, 0], points[:, 1]
    rgb = torch.stack([0.5 + 0.5 * torch.sin(4 * x), 0.5 + 0.5 * torch.cos(3 * y), 0.5 + 0.25 * torch.sin(2 * x + y)])
    return rgb.view(3, SIZE, SIZE), c2w, K, t.view(1, SIZE, SIZE)


def _warp(known, target, tolerance=0.05, known_depth=None, opacity=None, known_opacity=None, edge_margin=0):
    rgb, c2w, K, depth = known
    _, t_c2w, t_K, t_depth = target
    ones = torch.ones_like(t_depth)
    return warp_known_view(
        rgb[None], c2w[None], K[None], (depth if known_depth is None else known_depth)[None],
        (ones if known_opacity is None else known_opacity)[None],
        t_c2w[None], t_K[None], (SIZE, SIZE), t_depth[None], (ones if opacity is None else opacity)[None], tolerance,
        edge_margin,
    )[0]  # fmt: skip


def test_a_known_view_warped_at_the_true_depth_is_the_new_view():
    known, target = _plane_view((0.3, -0.4, 1.5)), _plane_view((-0.5, 0.2, 1.4))
    warped = _warp(known, target)
    seen = warped[3] > 0.5
    assert 0.5 < seen.float().mean() < 1  # most of the target sees what the known view saw, not all of it
    # Bilinear resampling of a smooth texture: within about a level of 255 where the known view saw the point.
    assert (warped[:3] - target[0])[:, seen].abs().mean() < 0.005
    assert (warped[:3, ~seen] == 0).all()  # no colour where the mask says nothing is known
    identity = _warp(known, known)
    # Itself, except where the plane recedes so steeply that neighbouring pixels' depths differ like a silhouette's.
    kept = identity[3] > 0
    assert kept.float().mean() > 0.95
    torch.testing.assert_close(identity[:3][:, kept], known[0][:, kept], atol=1e-4, rtol=0)


def test_points_hidden_from_the_known_view_or_outside_it_are_masked():
    known, target = _plane_view((0.3, -0.4, 1.5)), _plane_view((-0.5, 0.2, 1.4))
    # The known view's surface 0.2 nearer than the plane: every target point lies behind it.
    assert (_warp(known, target, known_depth=known[3] - 0.2)[3] == 0).all()
    assert (_warp(known, target, known_depth=known[3] - 0.2, tolerance=0.3)[3] > 0).any()  # within tolerance: seen
    # The known camera turned half round about its y axis, looking away from the plane: every point is behind it.
    away = known[1].clone()
    away[:, :3] *= torch.tensor([-1.0, 1.0, -1.0])
    assert (_warp((known[0], away, known[2], known[3]), target)[3] == 0).all()
    # Only surfaces: where the target's render is transparent, or its point lands where the known view's is.
    half = torch.ones_like(target[3])
    half[..., : SIZE // 2] = 0
    assert (_warp(known, target, opacity=half)[3][:, : SIZE // 2] == 0).all()
    assert (_warp(known, target, known_opacity=torch.zeros_like(half))[3] == 0).all()
    # A silhouette: the target's depth jumps by 0.5 between two columns; the pixels beside the jump are not trusted,
    # those a few pixels away are.
    step = target[3].clone()
    step[..., SIZE // 2 :] += 0.5
    mask = _warp(known, (*target[:3], step), known_depth=known[3] + 1)[3]
    assert (mask[:, SIZE // 2 - 1 : SIZE // 2 + 1] == 0).all()
    assert mask[:, SIZE // 2 - 4].sum() > SIZE // 2 and mask[:, SIZE // 2 + 3].sum() > SIZE // 2


def test_a_later_known_view_fills_only_where_no_earlier_one_sees():
    target = _plane_view((-0.5, 0.2, 1.4))
    first, second = _plane_view((0.3, -0.4, 1.5)), _plane_view((-0.4, 0.1, 1.45))
    second = (1 - second[0], *second[1:])  # its own colours, to tell whose pixels land where
    left = torch.ones_like(first[3])
    left[..., SIZE // 2 :] = 0  # the first view's render is opaque on its left half only
    a, b = _warp(first, target, known_opacity=left), _warp(second, target)
    both = fill_holes([a[None], b[None]])[0]
    seen_a, seen_b = a[3] > 0, b[3] > 0
    holes = seen_b & ~seen_a
    assert seen_a.float().mean() > 0.2 and holes.float().mean() > 0.2
    assert torch.equal(both[:, seen_a], a[:, seen_a])  # the first view's pixels, unblended, wherever it sees
    assert torch.equal(both[:, holes], b[:, holes])
    assert torch.equal(both[3] > 0, seen_a | seen_b) and (both[:3, both[3] == 0] == 0).all()
    assert torch.equal(fill_holes([a[None]])[0], a)


def test_an_edge_margin_leaves_out_the_known_views_pixels_next_to_its_silhouette():
    known = _plane_view((0.3, -0.4, 1.5))
    left = torch.ones_like(known[3])
    left[..., SIZE // 2 :] = 0  # the known view's render is opaque on its left half only
    plain = _warp(known, known, known_opacity=left)[3]
    assert plain[:, SIZE // 2 - 1].sum() > SIZE // 2 and (plain[:, SIZE // 2 :] == 0).all()
    # Warped onto itself, pixel for pixel: its two columns nearest the silhouette are out, the rest as without.
    margin = _warp(known, known, known_opacity=left, edge_margin=2)[3]
    assert (margin[:, SIZE // 2 - 2 :] == 0).all()
    assert torch.equal(margin[:, : SIZE // 2 - 2], plain[:, : SIZE // 2 - 2])
    # On a half-resolution render (the renderer's usual size) the margin is still in pixels of the known image.
    half = left[:, ::2, ::2]
    assert torch.equal(_warp(known, known, known_opacity=half, edge_margin=2)[3], margin)


def _warp_pipeline(data, test_mode: str, fill_views: int = 0):
    torch.manual_seed(0)
    config = tiny_trainer_config(data)
    config.pipeline.model.warp_known_view = True
    config.pipeline.model.warp_fill_views = fill_views
    config.pipeline.datamanager.min_source_views = 3  # every step has views to fill with
    return config.pipeline.setup(device="cpu", test_mode=test_mode)


def test_a_warp_model_trains_and_samples_with_its_known_view(toy32):
    from genvs_ns.sampling.autoregressive import generate_path
    from genvs_ns.sampling.views import render_views

    pipeline = _warp_pipeline(toy32, "val")
    model = pipeline.model
    unet_input = model.net.denoiser.denoiser.inner_model.proj_in.in_channels
    assert unet_input == 3 + model.config.latent_channels + 4  # the noisy image, the features, the warp
    pipeline.train()
    loss = sum(pipeline.get_train_loss_dict(step=0)[1].values())
    loss.backward()
    assert torch.isfinite(loss)
    pipeline.eval()

    ds = pipeline.datamanager.eval_dataset
    views = ds.object_images[0]
    images = torch.stack([ds.image(v) for v in views])
    cond = model.encode(images[None, :1], ds.c2w[views[:1]][None], ds.K[views[:1]][None])
    with pytest.raises(GeNVSError, match="warped into each new one"):
        render_views(model, cond, ds.c2w[views[1:2]], ds.K[views[1:2]], sampling=SamplerSettings(steps=2))

    args = (images[:1], ds.c2w[views[:1]], ds.K[views[:1]], ds.c2w[views[1:4]], ds.K[views[1:4]])
    # The known view is warped in whatever the joint setting says: the model was trained with it.
    path = generate_path(model, *args, SamplerSettings(steps=2), ContextPolicy(joint=False, fill_views=0))
    assert path.context[0] == ["input0", "warped:input0"] and path.samples.shape == (3, 3, 32, 32)
    assert all(len([n for n in names if n.startswith("warped:")]) == 1 for names in path.context)


def test_a_fill_model_trains_on_its_other_source_views_and_fills_a_path_from_earlier_frames(toy32, monkeypatch):
    from genvs_ns.model.network import GeNVSNetwork
    from genvs_ns.sampling.autoregressive import generate_path

    pipeline = _warp_pipeline(toy32, "val", fill_views=2)
    model = pipeline.model
    warped_counts = []
    warp_known = GeNVSNetwork.warp_known

    def counting(self, cond, known, *args):
        warped_counts.append(known.shape[1])
        return warp_known(self, cond, known, *args)

    monkeypatch.setattr(GeNVSNetwork, "warp_known", counting)
    pipeline.train()
    loss = sum(pipeline.get_train_loss_dict(step=0)[1].values())
    loss.backward()
    assert torch.isfinite(loss) and warped_counts == [3]  # the input and the step's two other source views
    pipeline.eval()

    ds = pipeline.datamanager.eval_dataset
    views = ds.object_images[0]
    images = torch.stack([ds.image(v) for v in views])
    args = (images[:1], ds.c2w[views[:1]], ds.K[views[:1]], ds.c2w[views[1:5]], ds.K[views[1:5]])
    path = generate_path(model, *args, SamplerSettings(steps=2), ContextPolicy(known_views="nearest", fill_views=2))
    warped = [[n for n in names if n.startswith("warped:")] for names in path.context]
    # Up to three known views a frame; the policy puts the nearest first, and the default keeps the input first.
    assert [len(w) for w in warped] == [1, 2, 3, 3] and warped[0] == ["warped:input0"]
    path = generate_path(model, *args, SamplerSettings(steps=2), ContextPolicy(fill_views=2))
    assert all(names.index("warped:input0") == len(names) - 3 for names in path.context[2:])
    assert path.samples.shape == (4, 3, 32, 32)


def test_a_path_fills_from_earlier_frames_as_asked_and_leaves_out_their_edges(toy32, monkeypatch):
    from genvs_ns.model.network import GeNVSNetwork
    from genvs_ns.sampling.autoregressive import generate_path

    pipeline = _warp_pipeline(toy32, "test")  # trained without fill views: a path can still fill from earlier frames
    pipeline.eval()
    margins = []
    warp_known = GeNVSNetwork.warp_known

    def recording(self, *args):
        margins.append(tuple(args[-1]))
        return warp_known(self, *args)

    monkeypatch.setattr(GeNVSNetwork, "warp_known", recording)
    ds = pipeline.datamanager.eval_dataset
    views = ds.object_images[0]
    images = torch.stack([ds.image(v) for v in views])
    args = (images[:1], ds.c2w[views[:1]], ds.K[views[:1]], ds.c2w[views[1:5]], ds.K[views[1:5]])
    path = generate_path(
        pipeline.model, *args, SamplerSettings(steps=2), ContextPolicy(fill_views=2, known_views="nearest")
    )
    warped = [[n for n in names if n.startswith("warped:")] for names in path.context]
    assert [len(w) for w in warped] == [1, 2, 3, 3]
    # The input's pixels up to its silhouette; an earlier frame's only from the policy's margin inwards.
    assert margins == [tuple(0 if name == "warped:input0" else 2 for name in w) for w in warped]
    margins.clear()
    generate_path(pipeline.model, *args, SamplerSettings(steps=2), ContextPolicy())  # the input first, then 4 frames
    assert margins == [(0,), (0, 2), (0, 2, 2), (0, 2, 2, 2)]
    margins.clear()
    generate_path(pipeline.model, *args, SamplerSettings(steps=2), ContextPolicy(fill_views=0))
    assert margins == [(0,)] * 4
    with pytest.raises(GeNVSError, match="--fill-views must be at least 0"):
        ContextPolicy(fill_views=-1).check()


def test_the_residual_base_is_the_warped_view_where_it_sees_the_surface_and_the_render_elsewhere():
    from genvs_ns.model.denoiser import ConditionedDenoiser

    den = ConditionedDenoiser("denoiser_tiny.json", 16, residual=True, extra_channels=4, warp_base=True)
    cond = torch.rand(2, 20, 8, 8)
    cond[:, 19] = (torch.rand(2, 8, 8) > 0.5).float()
    cond[:, 16:19] *= cond[:, 19:20]  # warp.py's RGB is zero where the mask is
    base = den.prior_mean(cond, torch.tensor([0.0, 1.0]))
    seen = cond[0, 19] > 0
    torch.testing.assert_close(base[0][:, seen], cond[0, 16:19][:, seen] * 2 - 1)
    torch.testing.assert_close(base[0][:, ~seen], cond[0, :3][:, ~seen] * 2 - 1)
    assert (base[1] == 0).all()  # unconditional rows: no base


def _warp_cond(seen_share: float = 0.5, size: int = 32) -> torch.Tensor:
    """Features, then a warped view (RGB times mask) and its mask, as warp.py gives them to the U-Net."""
    cond = torch.rand(2, 20, size, size)
    cond[:, 19] = (torch.rand(2, size, size) < seen_share).float()
    cond[:, 16:19] *= cond[:, 19:20]
    return cond


def test_keeping_the_warped_pixels_keeps_them_where_the_view_sees_and_nothing_else():
    from genvs_ns.model.denoiser import ConditionedDenoiser
    from genvs_ns.sampling.diffusion import WarpKeeper

    torch.manual_seed(0)
    den = ConditionedDenoiser("denoiser_tiny.json", 16, residual=True, extra_channels=4, warp_base=True).eval()
    cond, x, sigma = _warp_cond(), torch.randn(2, 3, 32, 32), torch.tensor([1.0, 1.0])
    uncond = torch.tensor([0.0, 1.0])
    with torch.no_grad():
        free = den(x, sigma, cond, uncond)
        kept = WarpKeeper(den, 1.0)(x, sigma, cond, uncond)
        half = WarpKeeper(den, 0.5)(x, sigma, cond, uncond)
    seen = cond[0, 19] > 0
    assert free[0][:, seen].sub(cond[0, 16:19][:, seen] * 2 - 1).abs().max() > 1e-3  # the U-Net does repaint them
    torch.testing.assert_close(kept[0][:, seen], cond[0, 16:19][:, seen] * 2 - 1)
    torch.testing.assert_close(kept[0][:, ~seen], free[0][:, ~seen])
    torch.testing.assert_close(half[0], (free[0] + kept[0]) / 2)
    torch.testing.assert_close(kept[1], free[1])  # unconditional rows: their features (and mask) are noise


def test_samples_keep_the_warped_pixels_by_default_and_repaint_them_at_zero():
    from genvs_ns.model.denoiser import ConditionedDenoiser
    from genvs_ns.sampling.diffusion import sample

    torch.manual_seed(0)
    den = ConditionedDenoiser("denoiser_tiny.json", 16, residual=True, extra_channels=4, warp_base=True).eval()
    cond = _warp_cond()
    seen = (cond[:, 19:20] > 0).expand(-1, 3, -1, -1)
    kept = sample(den, cond, SamplerSettings(steps=3), torch.Generator().manual_seed(1))
    torch.testing.assert_close(kept[seen], cond[:, 16:19][seen], atol=1e-6, rtol=0)
    free = sample(den, cond, SamplerSettings(steps=3, keep_warped=0.0), torch.Generator().manual_seed(1))
    assert (free[seen] - cond[:, 16:19][seen]).abs().max() > 1e-3
    # A denoiser without a warped base has nothing to keep: the setting changes nothing.
    plain = ConditionedDenoiser("denoiser_tiny.json", 16, residual=True, extra_channels=4).eval()
    a = sample(plain, cond, SamplerSettings(steps=3), torch.Generator().manual_seed(1))
    b = sample(plain, cond, SamplerSettings(steps=3, keep_warped=0.0), torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_keep_warped_is_a_sampler_flag_checked_before_a_model_loads():
    from dataclasses import fields

    from genvs_ns.sampling import SamplerFlags

    assert {f.name for f in fields(SamplerFlags)} == {f.name for f in fields(SamplerSettings)}
    assert SamplerFlags(keep_warped=0.0).over(SamplerSettings()).keep_warped == 0.0
    with pytest.raises(GeNVSError, match="--keep-warped must be between 0 and 1"):
        SamplerFlags(keep_warped=1.5).check()
