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


def test_churn_seed_is_drawn_on_the_generators_device(monkeypatch):
    """euler/heun with churn seed the global generator from ours; a CUDA generator cannot drive a CPU randint."""

    class CudaLikeGenerator:
        """A generator on another device than the one randint defaults to."""

        device = torch.device("meta")

    seen = []
    monkeypatch.setattr(torch, "randint", lambda *a, **k: seen.append(k.get("device")) or torch.tensor([1]))
    monkeypatch.setattr(torch, "manual_seed", lambda seed: None)
    denoiser = type("D", (), {"sigma_min": 0.002, "sigma_max": 80.0, "prior_mean": lambda self, c, u: 0.0})()
    monkeypatch.setattr(diffusion, "GuidedDenoiser", lambda d, g: lambda x, sigma, **kw: x * 0)
    monkeypatch.setattr(torch, "randn", lambda *a, **k: torch.zeros(a[0]))
    settings = SamplerSettings(sampler="euler", steps=2, churn=1.0)
    diffusion.sample(denoiser, torch.zeros(1, 16, 4, 4), settings, generator=CudaLikeGenerator())
    assert seen == [torch.device("meta")]


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
