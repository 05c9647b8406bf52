"""--pipeline.model.compile: the compiled training U-Net, encoder and renders compute what the eager ones do (outputs
and gradients)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from genvs_ns.model.denoiser import ConditionedDenoiser
from genvs_ns.model.encoder import DeepLabV3PlusEncoder

# A U-Net as small as k-diffusion's image_v1 allows, with attention, so compiling it on 2 cores takes seconds.
TINY = {
    "model": {
        "type": "image_v1", "input_channels": 3, "input_size": [16, 16], "patch_size": 1, "mapping_out": 16,
        "depths": [1, 1], "channels": [8, 16], "self_attn_depths": [False, True], "dropout_rate": 0.0,
        "augment_wrapper": False, "unet_cond_dim": 16, "mapping_cond_dim": 1, "sigma_data": 0.5,
        "sigma_min": 0.002, "sigma_max": 80,
    }
}  # fmt: skip


@pytest.mark.slow
def test_compiled_and_eager_unets_agree(tmp_path):
    config = tmp_path / "unet.json"
    config.write_text(json.dumps(TINY))
    torch.manual_seed(0)
    eager = ConditionedDenoiser(config, 16, residual=True)
    compiled = ConditionedDenoiser(config, 16, residual=True)
    compiled.load_state_dict(eager.state_dict())
    compiled.denoiser.inner_model.compile(dynamic=False)  # as GeNVSModel does with compile "on"
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints keep their keys
    x0, cond = torch.rand(2, 3, 16, 16) * 2 - 1, torch.randn(2, 16, 16, 16)
    sigma, uncond = torch.tensor([0.3, 2.0]), torch.zeros(2)
    results = []
    for den in (eager, compiled):
        torch.manual_seed(1)  # the same noise
        loss = den.loss(x0, sigma, cond, uncond).mean()
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in den.parameters()]))
    (loss_e, grads_e), (loss_c, grads_c) = results
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads_c, grads_e):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_compiled_and_eager_encoders_agree():
    torch.manual_seed(0)
    eager = DeepLabV3PlusEncoder(16, 8, (16, 16), 32)
    compiled = DeepLabV3PlusEncoder(16, 8, (16, 16), 32)
    compiled.load_state_dict(eager.state_dict())
    compiled.compile(dynamic=False)  # as GeNVSModel does with compile "on"
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    images, weights = torch.rand(2, 3, 64, 64), torch.randn(2, 16, 8, 16, 16)
    results = []
    for enc in (eager, compiled):
        volumes = enc(images)
        (volumes * weights).mean().backward()
        results.append((volumes.detach(), [p.grad.clone() for p in enc.parameters()]))
    (out_e, grads_e), (out_c, grads_c) = results
    torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads_c, grads_e):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)


def test_compile_auto_is_on_for_cuda_only(toy32):
    from conftest import tiny_trainer_config

    config = tiny_trainer_config(toy32)
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    inner = pipeline.model.net.denoiser.denoiser.inner_model
    assert pipeline.model.config.compile == "auto" and inner._compiled_call_impl is None
    assert pipeline.model.net.encoder._compiled_call_impl is None


def test_compile_on_compiles_the_training_unet_and_encoder_not_the_ema(toy32):
    from conftest import tiny_trainer_config

    config = tiny_trainer_config(toy32)
    config.pipeline.model.compile = "on"
    model = config.pipeline.setup(device="cpu", test_mode="val").model
    compiled = [model.net.denoiser.denoiser.inner_model, model.net.encoder]
    assert all(m._compiled_call_impl is not None for m in compiled)  # compiled lazily, at the first training step
    assert model.net._compiled_render is not None and model.ema._compiled_render is None
    eager = [model.ema.denoiser.denoiser.inner_model, model.ema.encoder]
    assert all(m._compiled_call_impl is None for m in eager)


def _gpu_smoke():
    """scripts/gpu_smoke.py, whose render_compile check runs the same comparison on a GPU."""
    spec = importlib.util.spec_from_file_location(
        "gpu_smoke", Path(__file__).resolve().parents[1] / "scripts" / "gpu_smoke.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("lookup", ["numba", "grid_sample"])
def test_compiled_and_eager_renders_agree(toy32, lookup, monkeypatch):
    """GeNVSNetwork.compile_render (compile "on"): a render of two source views, with importance samples, computes
    what the eager one does, in values and in gradients to the volumes and the field MLP; with the CPU's numba lookup
    and with grid_sample, the lookup CUDA runs. Evenly spaced samples: a compiled graph draws its stratified jitter
    from another random stream than eager code does."""
    from conftest import tiny_trainer_config

    from genvs_ns.model import trilinear

    if lookup == "grid_sample":
        monkeypatch.setattr(trilinear, "_cpu_function", lambda: None)

    from genvs_ns.geometry import pixel_centres, rays_through_pixels
    from genvs_ns.model.network import Conditioning
    from genvs_ns.model.renderer import RenderSettings

    torch.manual_seed(0)
    pipeline = tiny_trainer_config(toy32).pipeline.setup(device="cpu", test_mode="val")
    net, ds = pipeline.model.net, pipeline.datamanager.train_dataset
    views = ds.object_images[0][:3]
    volumes = torch.randn(2, net.field.mlp.in_dim - 1, 8, 16, 16).contiguous(memory_format=torch.channels_last_3d)
    volumes = volumes.view(1, 2, *volumes.shape[1:])
    cond = Conditioning(volumes.requires_grad_(), ds.c2w[views[:2]][None], ds.K[views[:2]][None], (32, 32))
    origins, directions = rays_through_pixels(ds.c2w[views[2:]], ds.K[views[2:]], pixel_centres(32, 32)[None, ::5])
    rs = RenderSettings(pipeline.model.config.object_radius, 8, 8, stratified=False)
    (eager, eager_grads, _), (comp, comp_grads, _) = _gpu_smoke().eager_then_compiled_render(
        net, cond, origins, directions, rs
    )
    assert net._compiled_render is not None and eager.abs().sum() > 0
    torch.testing.assert_close(comp, eager, rtol=1e-4, atol=1e-5)
    assert len(comp_grads) == len(eager_grads) > 1 and eager_grads[0].abs().sum() > 0
    for a, b in zip(comp_grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
