"""Sampling the view-conditioned denoiser with k-diffusion's samplers and schedules.

Everything speaks k-diffusion's sampler API, ``sampler(model, x, sigmas, extra_args, callback, disable)``, so any
``k_diffusion.sampling.sample_*`` function works; classifier-free guidance is a model wrapper, not a sampler.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Sequence

import k_diffusion as K
import torch
from jaxtyping import Float
from torch import Tensor, nn

from genvs_ns.errors import GeNVSError
from genvs_ns.model.denoiser import ConditionedDenoiser, to_denoiser_range, to_pixels
from genvs_ns.sampling import SamplerSettings


def _takes_a_schedule(fn: Callable) -> bool:
    return list(inspect.signature(fn).parameters)[:3] == ["model", "x", "sigmas"]


_ALL = sorted(name[len("sample_") :] for name in dir(K.sampling) if name.startswith("sample_"))
# dpm_fast and dpm_adaptive choose their own steps (model, x, sigma_min, sigma_max, ...): not this API.
SAMPLERS = [name for name in _ALL if _takes_a_schedule(getattr(K.sampling, f"sample_{name}"))]


def get_sampler(name: str) -> Callable:
    if name not in SAMPLERS:
        why = "takes no noise schedule (it picks its own steps)" if name in _ALL else "is not a k-diffusion sampler"
        raise GeNVSError(f"sampler {name!r} {why}; use one of {', '.join(SAMPLERS)}")
    return getattr(K.sampling, f"sample_{name}")


class GuidedDenoiser(nn.Module):
    """k-diffusion model interface with classifier-free guidance.

    The unconditional branch is what training showed the U-Net 10% of the time: the conditioning replaced by noise
    and the unconditional flag set. ``guidance_scale`` 1 is plain conditional sampling, 0 unconditional.
    """

    def __init__(self, denoiser: ConditionedDenoiser | WarpKeeper | JointDenoiser, guidance_scale: float = 1.0) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.guidance_scale = guidance_scale

    def forward(self, x: Tensor, sigma: Tensor, cond: Tensor, uncond_cond: Tensor) -> Tensor:
        ones, zeros = torch.ones(x.shape[0], device=x.device), torch.zeros(x.shape[0], device=x.device)
        if self.guidance_scale == 1.0:
            return self.denoiser(x, sigma, cond, zeros)
        if self.guidance_scale == 0.0:
            return self.denoiser(x, sigma, uncond_cond, ones)
        both = self.denoiser(
            torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([cond, uncond_cond]), torch.cat([zeros, ones])
        )
        c, u = both.chunk(2)
        return u + self.guidance_scale * (c - u)


class WarpKeeper(nn.Module):
    """k-diffusion model interface for a denoiser whose residual base is a warped known view: its estimate with that
    view's pixels kept (``keep`` 1) or blended in (0-1) where the view sees the surface. Unconditional rows, whose
    features are noise, are left as they are.

    Why: at 15 steps the U-Net repaints the warped pixels a little differently in every frame; kept, they are the
    input's own (and along a path with fill views, earlier frames'), which both scores better by LPIPS and makes
    frames agree (docs/experiments.md, "Keeping the warped pixels")."""

    def __init__(self, denoiser: ConditionedDenoiser, keep: float) -> None:
        super().__init__()
        self.denoiser, self.keep = denoiser, keep

    def forward(self, x: Tensor, sigma: Tensor, cond: Tensor, uncond: Tensor, views: int = 1) -> Tensor:
        out = self.denoiser(x, sigma, cond, uncond, views=views)
        keep = self.keep * self.denoiser.warp_mask(cond) * (1 - uncond.to(cond.dtype))[:, None, None, None]
        return torch.lerp(out, self.denoiser.prior_mean(cond, uncond).to(out.dtype), keep.to(out.dtype))


Generators = torch.Generator | Sequence[torch.Generator] | None


@dataclass
class KnownViews:
    """Views already known (an input view, earlier generated frames) that a joint denoiser (trained with
    ``joint_views`` > 1) denoises beside each new view: its attention layers attend across them."""

    images: Float[Tensor, "batch known 3 H W"]
    """Pixels in [0, 1]."""
    cond: Float[Tensor, "batch known C H W"]
    """Their upsampled feature images, rendered from the same conditioning as the new view's."""


class JointDenoiser(nn.Module):
    """k-diffusion model interface for new views denoised jointly with known ones: at every call the known views are
    noised afresh to the current level (the noise the new view is at) and the U-Net sees each new view and its known
    views as one group, as in training, where one object's target views share a noise level. Only the new views'
    estimates are returned; unconditional rows (classifier-free guidance) have their known views' features replaced by
    noise too."""

    def __init__(self, denoiser: ConditionedDenoiser | WarpKeeper, known: KnownViews, generator: Generators) -> None:
        super().__init__()
        self.denoiser, self.generator = denoiser, generator
        self.known_x0, self.known_cond = to_denoiser_range(known.images), known.cond

    def forward(self, x: Tensor, sigma: Tensor, cond: Tensor, uncond: Tensor) -> Tensor:
        B, J = self.known_x0.shape[:2]
        reps, views = x.shape[0] // B, J + 1  # guidance evaluates conditional and unconditional rows together
        noise = torch.cat([randn(tuple(self.known_x0.shape), self.generator, x.device) for _ in range(reps)])
        known = self.known_x0.repeat(reps, 1, 1, 1, 1) + noise * sigma[:, None, None, None, None]
        known_cond = self.known_cond.repeat(reps, 1, 1, 1, 1)
        drop = uncond[:, None, None, None, None] > 0
        known_cond = torch.where(drop, torch.randn_like(known_cond), known_cond)
        out = self.denoiser(
            torch.cat([x[:, None], known.to(x.dtype)], 1).flatten(0, 1),
            sigma.repeat_interleave(views),
            torch.cat([cond[:, None], known_cond.to(cond.dtype)], 1).flatten(0, 1),
            uncond.repeat_interleave(views),
            views=views,
        )
        return out.view(-1, views, *out.shape[1:])[:, 0]


def randn(shape: tuple[int, ...], generator: Generators, device: torch.device | str) -> Tensor:
    """Normal noise of ``shape``; with one generator per batch row, each row's noise comes from its own generator, so
    an image's noise does not depend on which other images share its batch (genvs-eval's per-image seeds)."""
    if not isinstance(generator, (list, tuple)):
        return torch.randn(shape, generator=generator, device=device)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
    return torch.stack([torch.randn(shape[1:], generator=g, device=device) for g in generator])


@torch.no_grad()
def sample(
    denoiser: ConditionedDenoiser,
    cond: Float[Tensor, "batch C H W"],
    settings: SamplerSettings | None = None,
    generator: Generators = None,
    callback: Callable | None = None,
    disable: bool = True,
    rho: float = 7.0,
    known: KnownViews | None = None,
) -> Float[Tensor, "batch 3 H W"]:
    """Images in [0, 1] from the denoiser conditioned on upsampled feature images ``cond`` (and denoised jointly
    with ``known`` views, for a denoiser trained on several views at once).

    The noise of the start and of stochastic steps comes from ``generator`` (one, or one per image), so a seed fixes
    the result. Exception: euler / heun / dpm_2 with churn draw their noise batch-wide from torch's global generator,
    which is seeded from (the first) ``generator``.
    """
    s = settings or SamplerSettings()
    fn = get_sampler(s.sampler)
    if s.steps < 1:
        raise ValueError(f"sampler steps must be at least 1, not {s.steps}")
    device = cond.device
    sigma_max = denoiser.sigma_max if s.sigma_max is None else s.sigma_max
    sigma_min = denoiser.sigma_min if s.sigma_min is None else s.sigma_min
    # On the CPU whatever the images' device: k-diffusion's samplers compare and index them every step, which on a
    # GPU reads them back (two host syncs a step); 0-dim CPU tensors combine with GPU ones as plain numbers.
    sigmas = K.sampling.get_sigmas_karras(s.steps, sigma_min, sigma_max, rho=rho, device="cpu")
    shape = (cond.shape[0], 3, *cond.shape[-2:])
    uncond = torch.full((cond.shape[0],), float(s.guidance_scale == 0.0), device=device)
    start = denoiser.prior_mean(cond, uncond)
    x = start + randn(shape, generator, device) * sigmas[0]
    uncond_cond = randn(tuple(cond.shape), generator, device)
    kwargs = {}
    params = inspect.signature(fn).parameters
    if "s_churn" in params:
        kwargs["s_churn"] = s.churn
    if "eta" in params:
        kwargs["eta"] = s.eta
    if "s_noise" in params:
        kwargs["s_noise"] = s.s_noise
    if "noise_sampler" in params and generator is not None:
        # Stochastic samplers draw their own noise; route it through the generator for reproducibility.
        kwargs["noise_sampler"] = lambda sigma, sigma_next: randn(shape, generator, device)
    elif s.churn > 0 and generator is not None:
        # euler/heun with churn call torch.randn_like: seed the global generator from ours.
        # The draw stays on the generator's device: a CUDA generator cannot drive a CPU randint.
        first = generator[0] if isinstance(generator, (list, tuple)) else generator
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=first, device=first.device)))
    inner = WarpKeeper(denoiser, s.keep_warped) if s.keep_warped > 0 and denoiser.warp_at is not None else denoiser
    model = GuidedDenoiser(inner if known is None else JointDenoiser(inner, known, generator), s.guidance_scale)
    extra_args = {"cond": cond, "uncond_cond": uncond_cond}
    x0 = fn(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, **kwargs)
    return to_pixels(x0)
