"""Paths only a GPU takes, checked on the CPU with stand-ins that refuse what CUDA (or tiny-cuda-nn) refuses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_trainer_config
from torch import nn

import genvs_ns.sampling.diffusion as diffusion
from genvs_ns.model.field import FrustumField
from genvs_ns.sampling import SamplerSettings


class TwoDimOnly(nn.Module):
    """Like tiny-cuda-nn's module: ``shape[0]`` is the batch and ``shape[1]`` must be the input width."""

    def __init__(self, inner: nn.Module, width: int) -> None:
        super().__init__()
        self.inner, self.width = inner, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.width:
            raise RuntimeError(f"input must be [batch, {self.width}], got {list(x.shape)}")
        return self.inner(x)


def test_field_gives_its_mlp_two_dimensional_input():
    torch.manual_seed(0)
    field = FrustumField(16, 32, 3, 16, implementation="torch", colour_inputs=True)
    features = torch.rand(2, 7, field.mlp.in_dim)
    density, latent = field(features)
    field.mlp = TwoDimOnly(field.mlp, field.mlp.in_dim)
    density2, latent2 = field(features)
    assert density2.shape == (2, 7) and latent2.shape == (2, 7, 16)
    torch.testing.assert_close(density2, density)
    torch.testing.assert_close(latent2, latent)


def test_opacity_loss_is_autocast_safe(toy32, monkeypatch):
    """CUDA autocast raises on F.binary_cross_entropy; nerfstudio computes the losses under autocast with
    --mixed-precision True. The loss must not need it, and must equal it."""
    torch.manual_seed(0)
    config = tiny_trainer_config(toy32)
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    batch, _ = pipeline.datamanager.next_train(0)
    model = pipeline.model
    outputs = model(batch)
    expected = float(model.get_loss_dict(outputs, batch)["opacity_loss"])

    def refused(*args, **kwargs):
        raise RuntimeError("torch.nn.functional.binary_cross_entropy is unsafe to autocast")

    monkeypatch.setattr(F, "binary_cross_entropy", refused)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        losses = model.get_loss_dict(outputs, batch)
    assert losses["opacity_loss"].dtype == torch.float32
    assert float(losses["opacity_loss"]) == pytest.approx(expected, rel=1e-5)


def test_churn_samplers_are_seeded_by_the_generator():
    """euler/heun with churn draw their noise from torch's global generator, which sample() seeds from ours: the
    real sampler on a real (tiny) denoiser gives the same image for the same generator seed and another for another.
    The draw of that seed stays on the generator's device (a CUDA generator cannot drive a CPU randint): the CUDA path
    runs in scripts/gpu_smoke.sh (genvs-sample --sampler heun --churn 1)."""
    from genvs_ns.model.denoiser import ConditionedDenoiser

    torch.manual_seed(0)
    denoiser = ConditionedDenoiser("denoiser_tiny.json", 16, residual=True).eval()
    cond = torch.rand(1, 16, 64, 64)
    settings = SamplerSettings(sampler="heun", steps=2, churn=1.0)

    def draw(seed: int) -> torch.Tensor:
        torch.manual_seed(1234)  # whatever the global state was, the generator decides
        return diffusion.sample(denoiser, cond, settings, generator=torch.Generator().manual_seed(seed))

    first, again, other = draw(1), draw(1), draw(2)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_fp16_precision_trains_with_loss_scaling(toy32, tmp_path):
    """--pipeline.model.precision fp16 (V100, T4) runs the networks in fp16 with a GradScaler: nerfstudio's own scaler
    is off unless --mixed-precision, and its torch.cuda.amp one switches itself off away from CUDA."""
    config = tiny_trainer_config(toy32)
    config.pipeline.model.precision = "fp16"
    config.output_dir, config.max_num_iterations = tmp_path, 3
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    assert trainer.grad_scaler.is_enabled() and trainer.grad_scaler.get_scale() == 2.0**16
    trainable = [p for p in trainer.pipeline.model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    loss, _, _ = trainer.train_iteration(0)  # one step: fp16 runs ~60x slower than fp32 on an AVX2 CPU
    assert torch.isfinite(loss)
    # The scaler halves its scale and skips the step on an overflow: the step was taken.
    assert trainer.grad_scaler.get_scale() == 2.0**16
    stepped = [(a, p) for a, p in zip(before, trainable) if p.grad is not None and p.grad.any()]
    assert len(stepped) > 10 and all(not torch.equal(a, p) for a, p in stepped)
    fp32 = tiny_trainer_config(toy32)
    fp32.output_dir = tmp_path
    fp32.set_timestamp()
    assert not fp32.setup(local_rank=0, world_size=1).grad_scaler.is_enabled()
