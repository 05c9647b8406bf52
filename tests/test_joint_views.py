"""Joint denoising of several views (model config joint_views): attention across a group of views and only within
it, several target renders per object, training batches of one object's targets sharing a noise level, and sampling
that denoises a new view beside known ones re-noised to the current level."""

from __future__ import annotations

import torch
from conftest import tiny_trainer_config
from test_context import _cameras
from torch import nn

from genvs_ns.data.images import foreground
from genvs_ns.model.denoiser import ConditionedDenoiser, ContiguousSelfAttention2d
from genvs_ns.model.network import Conditioning
from genvs_ns.model.renderer import RenderSettings
from genvs_ns.model.training import silhouette_pixels, silhouette_render
from genvs_ns.sampling import SamplerSettings
from genvs_ns.sampling.context import ContextPolicy, nearest_known
from genvs_ns.sampling.diffusion import JointDenoiser, KnownViews


def _joint_pipeline(data, test_mode: str):
    """genvs-tiny, shrunk, trained on 2 target views per object."""
    torch.manual_seed(0)
    config = tiny_trainer_config(data)
    config.pipeline.model.joint_views = 2
    config.pipeline.model.warp_known_view, config.pipeline.model.residual_base = False, "render"  # not with joint views
    return config.pipeline.setup(device="cpu", test_mode=test_mode)


def _attention_layer() -> ContiguousSelfAttention2d:
    torch.manual_seed(0)
    den = ConditionedDenoiser("denoiser_tiny.json", 16)
    layer = next(m for m in den.modules() if isinstance(m, ContiguousSelfAttention2d))
    torch.nn.init.normal_(layer.out_proj.weight)  # k-diffusion zero-initialises it: make the output depend on y
    return layer


def test_attention_mixes_the_views_of_a_group_and_nothing_across_groups():
    layer = _attention_layer()
    c = layer.qkv_proj.in_channels
    x = torch.randn(4, c, 4, 4)
    cond = {"cond": torch.randn(4, layer.norm_in.mapper.in_features)}
    moved = x.clone()
    moved[1] += torch.randn_like(moved[1])  # image 1: same group as image 0 when views=2
    with torch.no_grad():
        alone, alone_moved = layer(x, cond), layer(moved, cond)
        layer.views = 2
        joint, joint_moved = layer(x, cond), layer(moved, cond)
    torch.testing.assert_close(alone[0], alone_moved[0])  # one view at a time: image 1 cannot reach image 0
    assert (joint[0] - joint_moved[0]).abs().max() > 1e-3  # a group: it does
    torch.testing.assert_close(joint[2:], joint_moved[2:])  # the other group does not see it
    # A group of two identical images attends to duplicated keys: softmax weights halve, the output is unchanged.
    same = torch.cat([x[:1], x[:1]])
    with torch.no_grad():
        torch.testing.assert_close(layer(same, {"cond": cond["cond"][:1].repeat(2, 1)})[0], alone[0])


def test_denoiser_attends_jointly_only_inside_the_call():
    den = ConditionedDenoiser("denoiser_tiny.json", 16)
    layers = [m for m in den.modules() if isinstance(m, ContiguousSelfAttention2d)]
    seen = []
    layers[0].register_forward_pre_hook(lambda module, args: seen.append(module.views))
    x, cond = torch.randn(4, 3, 16, 16), torch.randn(4, 16, 16, 16)
    with torch.no_grad():
        den(x, torch.ones(4), cond, views=2)
    assert seen == [2] and all(m.views == 1 for m in layers)
    try:
        den(x[:3], torch.ones(3), cond[:3], views=2)
    except ValueError as exc:
        assert "3 images" in str(exc) and all(m.views == 1 for m in layers)
    else:
        raise AssertionError("a batch that is not whole groups was accepted")


def test_several_targets_of_one_object_render_as_each_alone(toy32):
    torch.manual_seed(0)
    pipeline = tiny_trainer_config(toy32).pipeline.setup(device="cpu", test_mode="inference")
    net, ds = pipeline.model.net, pipeline.datamanager.train_dataset
    views = ds.object_images[0]
    cond = net.encode((torch.stack([ds.image(views[0])]))[None], ds.c2w[views[:1]][None], ds.K[views[:1]][None])
    rs = RenderSettings(0.5, 8, 8, stratified=False)
    with torch.no_grad():
        both = net.render_image(cond, ds.c2w[views[1:3]], ds.K[views[1:3]], (32, 32), (16, 16), rs)
        each = [net.render_image(cond, ds.c2w[[v]], ds.K[[v]], (32, 32), (16, 16), rs) for v in views[1:3]]
    for key in ("features", "depth", "accumulation"):
        torch.testing.assert_close(getattr(both, key), torch.cat([getattr(e, key) for e in each]), atol=1e-5, rtol=1e-5)


def test_joint_training_draws_targets_of_one_object_sharing_a_noise_level(toy32, monkeypatch):
    pipeline = _joint_pipeline(toy32, "val")
    calls = []
    loss = ConditionedDenoiser.loss

    def recording(self, x0, sigma, cond, uncond, aug_cond=None, views=1):
        calls.append((sigma.clone(), uncond.clone(), views))
        return loss(self, x0, sigma, cond, uncond, aug_cond, views)

    monkeypatch.setattr(ConditionedDenoiser, "loss", recording)
    batch, _ = pipeline.datamanager.next_train(0)
    assert batch.target_image.shape[0] == 2 * batch.source_images.shape[0] and batch.targets_per_object == 2
    objects, targets = batch.object_index.view(-1, 2), batch.target_index.view(-1, 2)
    assert (objects[:, 0] == objects[:, 1]).all() and (targets[:, 0] != targets[:, 1]).all()
    outputs = pipeline.model(batch)
    assert outputs.features.shape[0] == 4 and outputs.diffusion.shape == (4,)
    ((sigma, uncond, views),) = calls
    assert views == 2 and (sigma.view(-1, 2)[:, 0] == sigma.view(-1, 2)[:, 1]).all()
    assert (uncond.view(-1, 2)[:, 0] == uncond.view(-1, 2)[:, 1]).all() and sigma[0] != sigma[2]
    losses = pipeline.model.get_loss_dict(outputs, batch)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert pipeline.model.net.encoder.parameters().__next__().grad is not None
    assert outputs.silhouette.accumulation.shape == (4, pipeline.model.config.silhouette_rays)


def test_joint_silhouette_rays_are_each_targets_own_rays_through_its_objects_volumes(toy32):
    pipeline = _joint_pipeline(toy32, "val")
    model, (batch, _) = pipeline.model, pipeline.datamanager.next_train(0)
    rs, views = model.render_settings(stratified=False), batch.targets_per_object
    mask = foreground(batch.target_image)
    with torch.no_grad():
        cond = model.net.encode(batch.source_images, batch.source_c2w, batch.source_K)
        torch.manual_seed(1)
        rays = silhouette_render(model.net, cond, batch, mask, 16, 2, rs, model.autocast)
        torch.manual_seed(1)
        uv = silhouette_pixels(mask, 16, 2)
        assert (rays.foreground == mask[:, 0][torch.arange(4)[:, None], uv[..., 1], uv[..., 0]]).all()
        for t in range(batch.target_image.shape[0]):
            b = slice(t // views, t // views + 1)
            own = Conditioning(cond.volumes[b], cond.c2w[b], cond.K[b], cond.image_hw)
            alone = model.net.render_pixels(
                own, batch.target_c2w[t : t + 1], batch.target_K[t : t + 1], uv[t : t + 1] + 0.5, rs
            )
            torch.testing.assert_close(rays.accumulation[t], alone.accumulation[0], atol=1e-4, rtol=1e-3)


class _Recording(nn.Module):
    """A denoiser that records what it is asked and returns each image's own index as its estimate."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def prior_mean(self, cond, uncond):
        return 0.0

    def forward(self, x, sigma, cond, uncond, views=1):
        self.calls.append((x.clone(), sigma.clone(), cond.clone(), uncond.clone(), views))
        return torch.arange(x.shape[0], dtype=x.dtype)[:, None, None, None].expand_as(x)


def test_known_views_are_noised_to_the_current_level_and_only_new_views_come_back():
    torch.manual_seed(0)
    inner = _Recording()
    images = torch.rand(2, 1, 3, 8, 8)
    known = KnownViews(images, torch.randn(2, 1, 16, 8, 8))
    joint = JointDenoiser(inner, known, torch.Generator().manual_seed(1))
    x, cond = torch.randn(2, 3, 8, 8), torch.randn(2, 16, 8, 8)
    sigma = torch.tensor([5.0, 5.0])
    out = joint(x, sigma, cond, torch.zeros(2))
    xs, sigmas, conds, unconds, views = inner.calls[0]
    assert views == 2 and xs.shape[0] == 4
    torch.testing.assert_close(out, torch.tensor([0.0, 2.0])[:, None, None, None].expand_as(x))  # rows 0 and 2: new
    torch.testing.assert_close(xs[0::2], x)
    torch.testing.assert_close(conds[1::2], known.cond[:, 0])
    noise = (xs[1::2] - (images[:, 0] * 2 - 1)) / 5.0  # the known view in [-1, 1], plus sigma times unit noise
    assert 0.8 < float(noise.std()) < 1.2 and abs(float(noise.mean())) < 0.2
    assert (sigmas == 5.0).all() and (unconds == 0).all()
    # Guidance: conditional and unconditional rows together; the unconditional rows' known features are noise.
    joint(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([cond, cond]), torch.tensor([0.0, 0, 1, 1]))
    _, _, conds, unconds, _ = inner.calls[1]
    torch.testing.assert_close(conds[1:4:2], known.cond[:, 0])
    assert not torch.allclose(conds[5::2], known.cond[:, 0]) and unconds.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_the_known_views_nearest_a_frame_come_from_the_inputs_and_earlier_frames():
    inputs = _cameras([0.0])
    frames = _cameras([20.0, 40.0, 60.0, 55.0])
    nearest = ContextPolicy(known_views="nearest")
    assert nearest_known(0, frames, inputs, 1, nearest) == [0]  # only the input is known
    assert nearest_known(3, frames, inputs, 2, nearest) == [3, 2]  # frames 2 and 1 (inputs come first)
    assert nearest_known(3, frames, inputs, 2, ContextPolicy(autoregressive=False, known_views="nearest")) == [0]
    assert nearest_known(3, frames, inputs, 5, nearest) == [3, 2, 1, 0]
    assert nearest_known(3, frames, inputs, 5, ContextPolicy(known_views="inputs")) == [0]
    # The default: the nearest input first, wherever it lies, then the nearest of the rest.
    assert nearest_known(3, frames, inputs, 5, ContextPolicy()) == [0, 3, 2, 1]
    two_inputs = _cameras([0.0, 180.0])
    assert nearest_known(3, frames, two_inputs, 3, ContextPolicy()) == [0, 4, 3]
    assert nearest_known(3, frames, two_inputs, 3, ContextPolicy(autoregressive=False)) == [0, 1]


def test_a_jointly_trained_model_generates_a_path_beside_known_views(toy32):
    from genvs_ns.sampling.autoregressive import generate_path

    pipeline = _joint_pipeline(toy32, "inference")
    ds = pipeline.datamanager.eval_dataset
    views = ds.object_images[0]
    images = torch.stack([ds.image(v) for v in views])
    args = (
        images[:1],
        ds.c2w[views[:1]],
        ds.K[views[:1]],
        ds.c2w[views[1:4]],
        ds.K[views[1:4]],
        SamplerSettings(steps=2),
    )
    joint = generate_path(pipeline.model, *args, ContextPolicy())
    assert joint.context[0] == ["input0", "beside:input0"] and joint.samples.shape == (3, 3, 32, 32)
    assert all(len([n for n in names if n.startswith("beside:")]) == 1 for names in joint.context)
    alone = generate_path(pipeline.model, *args, ContextPolicy(joint=False))
    assert not any(n.startswith("beside:") for names in alone.context for n in names)
    assert not torch.allclose(joint.samples, alone.samples)


def test_joint_training_needs_objects_with_enough_views(tmp_path):
    from genvs_ns.data.toy import generate
    from genvs_ns.errors import DataError

    generate(tmp_path / "srn", num_objects=4, num_views=2, resolution=16, seed=0)
    config = tiny_trainer_config(tmp_path / "srn").pipeline.datamanager
    config.setup(device="cpu", targets_per_object=1)  # one source and one target: enough
    try:
        config.setup(device="cpu", targets_per_object=2)
    except DataError as exc:
        assert str(exc).endswith("no training object has the 3 views a batch needs") and "srn" in str(exc)
    else:
        raise AssertionError("objects with 2 views were accepted for 2 targets and a source each")


def test_evaluation_batches_denoise_each_target_beside_its_source_view(toy32, monkeypatch):
    """genvs-eval's renderer hands a jointly trained model each item's source view as its known view."""
    from genvs_ns.evaluation import batches as batches_module
    from genvs_ns.evaluation.protocol import Item, ObjectViews

    pipeline = _joint_pipeline(toy32, "inference")
    ds = pipeline.datamanager.eval_dataset
    views = ds.object_images[0]
    obj = ObjectViews(0, "x", (views[0],), tuple(views[1:3]))
    seen = []
    real = batches_module.render_views

    def recording(model, cond, c2w, K, **kwargs):
        seen.append((c2w, kwargs["known"]))
        return real(model, cond, c2w, K, **kwargs)

    monkeypatch.setattr(batches_module, "render_views", recording)
    items = [Item(obj, views[1]), Item(obj, views[2])]
    (rendered,) = batches_module.render_batches(pipeline.model, ds, [items], SamplerSettings(steps=2), seed=0)
    assert rendered.sample.shape == (2, 3, 32, 32)
    ((c2w, known),) = seen
    torch.testing.assert_close(c2w, ds.c2w[[views[1], views[2]]])  # the targets, not the known views
    torch.testing.assert_close(known.images[:, 0], torch.stack([ds.image(views[0])] * 2))
    torch.testing.assert_close(known.c2w[:, 0], ds.c2w[[views[0], views[0]]])
