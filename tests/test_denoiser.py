"""The conditioned denoiser: residual parameterisation around the rendered RGB, and its sampling."""

from __future__ import annotations

import torch

from genvs_ns.model.denoiser import ConditionedDenoiser
from genvs_ns.sampling import SamplerSettings
from genvs_ns.sampling.diffusion import sample


def _cond(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(2, 16, 16, 16, generator=generator)


def test_an_untrained_residual_denoiser_returns_the_rendered_rgb():
    torch.manual_seed(0)
    cond = _cond()
    x = torch.randn(2, 3, 16, 16) * 80
    sigma = torch.full((2,), 80.0)
    residual = ConditionedDenoiser("denoiser_tiny.json", 16, residual=True).eval()
    plain = ConditionedDenoiser("denoiser_tiny.json", 16, residual=False).eval()
    plain.load_state_dict(residual.state_dict())
    rgb = cond[:, :3] * 2 - 1
    c_skip = 0.5**2 / (80.0**2 + 0.5**2)  # EDM's skip weight at sigma 80, sigma_data 0.5
    with torch.no_grad():
        # k-diffusion zero-initialises the U-Net's output layer, leaving EDM's skip term: around the shift, or zero.
        assert torch.allclose(residual(x, sigma, cond), rgb + c_skip * (x - rgb), atol=1e-5)
        assert torch.allclose(plain(x, sigma, cond), c_skip * x, atol=1e-5)
        # Unconditional evaluations (classifier-free guidance) are not shifted.
        assert torch.allclose(residual(x, sigma, cond, torch.ones(2)), c_skip * x, atol=1e-5)
        # The whole sampler path: one Euler step from pure noise gives the render's colours.
        image = sample(residual, cond, SamplerSettings("euler", steps=1), torch.Generator().manual_seed(1))
    assert torch.allclose(image, cond[:, :3], atol=0.01)


def test_residual_loss_is_the_plain_loss_on_the_difference():
    torch.manual_seed(0)
    cond, x0 = _cond(1), torch.rand(2, 3, 16, 16) * 2 - 1
    sigma, uncond = torch.tensor([0.3, 5.0]), torch.tensor([0.0, 1.0])
    residual = ConditionedDenoiser("denoiser_tiny.json", 16, residual=True)
    plain = ConditionedDenoiser("denoiser_tiny.json", 16, residual=False)
    plain.load_state_dict(residual.state_dict())
    torch.manual_seed(1)
    got = residual.loss(x0, sigma, cond, uncond)
    torch.manual_seed(1)
    # Element 0 is conditional (shifted by its render), element 1 unconditional (not shifted).
    shift = torch.stack([cond[0, :3] * 2 - 1, torch.zeros(3, 16, 16)])
    expected = plain.loss(x0 - shift, sigma, cond, uncond)
    assert torch.allclose(got, expected, atol=1e-5)


def test_an_images_sample_is_the_same_draw_whichever_images_share_its_batch():
    """One generator per image (genvs-eval): batching images of other objects with it does not change its sample."""
    torch.manual_seed(0)
    denoiser = ConditionedDenoiser("denoiser_tiny.json", 16, residual=True).eval()
    with torch.no_grad():
        for p in denoiser.parameters():
            if not p.any():  # the zero-initialised output layer: without it the noise never shows in a sample
                p.normal_(0, 0.05)
    cond, settings = _cond(), SamplerSettings(steps=3)  # the default ancestral sampler: fresh noise at every step

    def generators(*seeds: int) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in seeds]

    pair = sample(denoiser, cond, settings, generators(1, 2))
    alone = sample(denoiser, cond[1:], settings, generators(2))
    other_seed = sample(denoiser, cond[1:], settings, generators(3))
    assert torch.allclose(pair[1:], alone, atol=1e-5)
    assert (alone - other_seed).abs().max() > 0.01  # the noise reaches the sample, so the check above has teeth
