"""The GeNVS model in-process: gradients reach every part, the loss falls, EMA tracks, losses compare like with like."""

from __future__ import annotations

import dataclasses

import torch
from conftest import tiny_trainer_config
from nerfstudio.engine.optimizers import Optimizers


def _setup(data, **datamanager):
    torch.manual_seed(0)
    config = tiny_trainer_config(data)
    for k, v in datamanager.items():
        setattr(config.pipeline.datamanager, k, v)
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    return pipeline, Optimizers(config.optimizers, pipeline.get_param_groups())


def test_one_step_sends_gradients_to_encoder_field_and_denoiser(toy32):
    pipeline, _ = _setup(toy32, min_source_views=2, max_source_views=2)
    _, losses, _ = pipeline.get_train_loss_dict(0)
    assert set(losses) == {
        "diffusion_loss",
        "rgb_loss",
        "source_rgb_loss",
        "opacity_loss",
        "depth_prior_loss",
        "consistency_loss",
        "cross_view_rgb_loss",
        "silhouette_loss",
    }
    sum(losses.values()).backward()
    for group, params in pipeline.get_param_groups().items():
        missing = [p.shape for p in params if p.grad is None]
        assert not missing, f"{group}: {len(missing)} parameters got no gradient"
        assert sum(float(p.grad.abs().sum()) for p in params) > 0, group
    # The EMA copy is not trained.
    assert all(p.grad is None and not p.requires_grad for p in pipeline.model.ema.parameters())


def test_the_depth_loss_trains_the_fields_geometry_on_the_targets_true_depth(toy32):
    torch.manual_seed(0)
    config = tiny_trainer_config(toy32)
    config.pipeline.model.depth_loss_mult = 1.0
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    batch, _ = pipeline.datamanager.next_train(0)
    outputs = pipeline.model(batch)
    assert outputs.target_depth is not None and outputs.target_depth.shape == outputs.depth.shape
    assert float((outputs.target_depth > 0).float().mean()) > 0.05
    losses = pipeline.model.get_loss_dict(outputs, batch)
    known = outputs.target_depth > 0
    expected = (outputs.depth - outputs.target_depth).abs()[known].mean()
    torch.testing.assert_close(losses["depth_loss"], expected)
    _assert_trains_the_geometry(pipeline, losses["depth_loss"])


def _assert_trains_the_geometry(pipeline, loss) -> None:
    loss.backward()
    groups = pipeline.get_param_groups()
    for group in ("encoder", "field"):  # the geometry: where the volumes hold what the field turns into density
        assert sum(float(p.grad.abs().sum()) for p in groups[group] if p.grad is not None) > 0, group


def test_rgb_loss_compares_each_render_with_its_own_target(toy32):
    """The earlier re-implementation broadcast [B,3,H,W] against [B,1,3,H,W]: every render against every target."""
    pipeline, _ = _setup(toy32)
    batch, _ = pipeline.datamanager.next_train(0)
    model = pipeline.model
    outputs = model(batch)
    h, w = outputs.rgb.shape[-2:]
    truth = torch.nn.functional.adaptive_avg_pool2d(batch.target_image, (h, w))
    torch.testing.assert_close(outputs.target_rgb, truth)

    def with_rgb(rgb):
        return dataclasses.replace(outputs, features=torch.cat([rgb, outputs.features[:, 3:]], dim=1))

    assert float(model.get_loss_dict(with_rgb(truth), batch)["rgb_loss"]) < 1e-10
    assert float(model.get_loss_dict(with_rgb(truth.flip(0)), batch)["rgb_loss"]) > 1e-4


def test_loss_falls_and_ema_follows(toy32):
    pipeline, optimizers = _setup(toy32)
    callbacks = pipeline.get_training_callbacks(None)
    ema_before = [p.clone() for p in pipeline.model.ema.parameters()]
    history = []
    for step in range(100):
        optimizers.zero_grad_all()
        _, losses, _ = pipeline.get_train_loss_dict(step)
        sum(losses.values()).backward()
        optimizers.optimizer_step_all()
        for cb in callbacks:
            cb.run_callback_at_location(step, cb.where_to_run[0])
        history.append({k: float(v) for k, v in losses.items()})

    def mean(key, part):
        return sum(h[key] for h in part) / len(part)

    first, last = history[:15], history[-15:]
    assert mean("rgb_loss", last) < 0.6 * mean("rgb_loss", first)
    assert mean("diffusion_loss", last) < mean("diffusion_loss", first)
    assert int(pipeline.model.ema_updates) == 100
    moved = [not torch.equal(a, b) for a, b in zip(ema_before, pipeline.model.ema.parameters())]
    assert sum(moved) > 0.9 * len(moved)
    # Eval path: fixed held-out pair, EMA weights, NeRF RGB at image resolution.
    metrics, images = pipeline.get_eval_image_metrics_and_images(100)
    assert {"psnr", "ssim"} <= set(metrics) and metrics["psnr"] > 8
    assert images["img"].shape == (32, 96, 3) and images["depth"].shape == images["accumulation"].shape == (32, 32, 3)


def test_volumes_carry_source_colours_and_field_rgb_starts_from_them(toy32):
    """rgb_skip: channels 0-2 of every depth plane are the source pixels' colours; the field's RGB is that colour
    corrected by the MLP, so a zero correction returns the colour a point projects onto."""
    import torch.nn.functional as F

    pipeline, _ = _setup(toy32)
    net = pipeline.model.net
    batch, _ = pipeline.datamanager.next_train(0)
    src = batch.source_images[:1]
    cond = net.encode(src, batch.source_c2w[:1], batch.source_K[:1])
    V, (D, h, w) = src.shape[1], cond.volumes.shape[-3:]
    assert cond.volumes.shape[:3] == (1, V, pipeline.model.config.volume_channels)
    pooled = F.adaptive_avg_pool2d(src[0], (h, w))
    assert torch.allclose(cond.volumes[0, :, :3], pooled[:, :, None].expand(V, 3, D, h, w))
    last = net.field.mlp.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    features = cond.volumes[0, 0].flatten(1).T  # one feature vector per voxel
    assert net.field.pooling == "visible"
    features = torch.cat([features, torch.ones_like(features[:, :1])], dim=-1)  # every voxel is seen
    _, latent = net.field(features)
    assert torch.allclose(latent[:, :3], features[:, :3].clamp(0.02, 0.98), atol=1e-5)


def test_noise_draws_denoise_each_render_several_times(toy32, monkeypatch):
    """noise_draws: the denoiser sees every target (and its one rendered feature image) with several noise levels."""
    pipeline, _ = _setup(toy32)
    model = pipeline.model
    model.config.noise_draws = 3
    denoiser, seen = model.net.denoiser, {}
    real_loss = denoiser.loss

    def recording_loss(x0, sigma, cond, uncond, aug_cond=None, views=1):
        seen.update(x0=x0, sigma=sigma, cond=cond)
        return real_loss(x0, sigma, cond, uncond, aug_cond, views)

    monkeypatch.setattr(denoiser, "loss", recording_loss)
    batch, _ = pipeline.datamanager.next_train(0)
    outputs = model(batch)
    B = batch.target_image.shape[0]
    assert seen["x0"].shape[0] == seen["sigma"].shape[0] == 3 * B
    for k in range(3):
        torch.testing.assert_close(seen["x0"][k * B : (k + 1) * B], batch.target_image * 2 - 1)
    assert len(set(seen["sigma"].tolist())) == 3 * B
    model.get_loss_dict(outputs, batch)["diffusion_loss"].backward()
    assert all(p.grad is not None for p in model.net.field.parameters())


def test_ema_update_matches_k_diffusion():
    import copy

    import k_diffusion as K

    from genvs_ns.model.ema import ema_update

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GroupNorm(2, 8), torch.nn.Linear(8, 2))
    model.register_buffer("counter", torch.tensor([3.0]))
    ours, theirs = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        model.counter.fill_(7.0)
    ema_update(model, ours, 0.9)
    K.utils.ema_update(model, theirs, 0.9)
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert float(ours.counter) == 7.0


def test_near_far_are_read_once_and_again_after_loading_a_checkpoint(toy32):
    """near/far are kept as Python floats (a CUDA read every step would wait for the GPU), yet follow a load."""
    pipeline, _ = _setup(toy32)
    model = pipeline.model
    assert (model.near, model.far) == (float(model.near_far[0]), float(model.near_far[1]))
    state = pipeline.state_dict()
    state["_model.near_far"] = torch.tensor([1.25, 2.75])
    pipeline.load_state_dict(state)
    assert (model.near, model.far) == (1.25, 2.75)


def test_a_non_finite_loss_stops_training_in_one_line(toy32, monkeypatch):
    import pytest

    pipeline, _ = _setup(toy32)
    model = pipeline.model
    real = model.get_loss_dict

    def poisoned(outputs, batch, metrics=None):
        losses = real(outputs, batch, metrics)
        losses["rgb_loss"] = losses["rgb_loss"] * float("nan")
        return losses

    pipeline.get_train_loss_dict(0)  # finite: trains on
    monkeypatch.setattr(model, "get_loss_dict", poisoned)
    from genvs_ns.errors import GeNVSError

    with pytest.raises(GeNVSError, match=r"^step 7: non-finite loss \(rgb_loss nan\)"):
        pipeline.get_train_loss_dict(7)


def test_degraded_sources_keep_the_input_view_and_blur_the_others():
    from genvs_ns.model.training import degrade_sources

    torch.manual_seed(0)
    images = torch.rand(3, 3, 3, 8, 8)
    assert degrade_sources(images, 0.0, 2) is images
    out = degrade_sources(images, 1.0, 2, noise=0.0)
    assert torch.equal(out[:, 0], images[:, 0])

    def detail(x):  # mean difference between horizontal neighbours
        return (x[..., 1:] - x[..., :-1]).abs().mean()

    assert detail(out[:, 1:]) < 0.5 * detail(images[:, 1:])  # blurred
    torch.testing.assert_close(out[:, 1:].mean(), images[:, 1:].mean(), atol=0.01, rtol=0)  # same colours
    assert torch.equal(degrade_sources(images[:, :1], 1.0, 2), images[:, :1])  # one view: nothing to degrade


def test_one_render_of_several_conditionings_is_each_of_their_renders(toy32):
    """The auxiliary renders draw source 0's rays once, from its own volume and from source 1's, in one batch
    (Conditioning.rows): values and gradients as two renders give."""
    from genvs_ns.geometry import pixel_centres
    from genvs_ns.model.network import Conditioning
    from genvs_ns.model.renderer import RenderSettings

    pipeline, _ = _setup(toy32)
    net = pipeline.model.net
    ds = pipeline.datamanager.train_dataset
    views = ds.object_images[0][:3]
    images = torch.stack([ds.image(v) for v in views])[None]
    rs = RenderSettings(pipeline.model.config.object_radius, 8, 8, stratified=False)
    uv = pixel_centres(*images.shape[-2:])[None, ::7]
    c2w, K = ds.c2w[views[:1]], ds.K[views[:1]]

    def renders(together: bool):
        net.zero_grad()
        cond = net.encode(images, ds.c2w[views][None], ds.K[views][None])
        parts = [cond.select(slice(v, v + 1)) for v in range(2)]
        if together:
            both = net.render_pixels(Conditioning.rows(parts), c2w.repeat(2, 1, 1), K.repeat(2, 1, 1),
                                     uv.repeat(2, 1, 1), rs)  # fmt: skip
            out = [torch.cat([x.flatten(1) for x in (both.features, both.depth[..., None])], 1)]
        else:
            out = [torch.cat([x.flatten(1) for x in (r.features, r.depth[..., None])], 1)
                   for r in (net.render_pixels(p, c2w, K, uv, rs) for p in parts)]  # fmt: skip
            out = [torch.cat(out)]
        out[0].square().sum().backward()
        return out[0].detach(), [p.grad.clone() for p in net.encoder.parameters() if p.grad is not None]

    (one, one_grads), (two, two_grads) = renders(True), renders(False)
    assert one.shape[0] == 2
    torch.testing.assert_close(one, two)
    assert len(one_grads) == len(two_grads) > 0
    for a, b in zip(one_grads, two_grads):
        torch.testing.assert_close(a, b)


def test_the_silhouette_loss_trains_the_fields_geometry_on_full_resolution_rays(toy32):
    torch.manual_seed(0)
    config = tiny_trainer_config(toy32)
    config.pipeline.model.silhouette_rays = 32
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    batch, _ = pipeline.datamanager.next_train(0)
    outputs = pipeline.model(batch)
    assert outputs.silhouette is not None and outputs.silhouette.accumulation.shape == (batch.target_image.shape[0], 32)
    truth = outputs.silhouette.foreground
    assert 0 < float(truth.mean()) < 1  # drawn at the outline: object and background rays alike
    losses = pipeline.model.get_loss_dict(outputs, batch)
    _assert_trains_the_geometry(pipeline, losses["silhouette_loss"])
