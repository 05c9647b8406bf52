"""--pipeline.model.compile: the compiled training U-Net and encoder compute what the eager ones do (outputs and
gradients)."""

from __future__ import annotations

import json

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
    eager = [model.ema.denoiser.denoiser.inner_model, model.ema.encoder]
    assert all(m._compiled_call_impl is None for m in eager)
