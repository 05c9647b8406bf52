"""Sampling: k-diffusion samplers with guidance, camera trajectories, autoregressive generation.

``SamplerSettings`` is the one description of how a diffusion sample is drawn. Each preset has its default
(``GeNVSPipelineConfig.sampling``: the tuned ``TUNED_CPU_SAMPLING`` for genvs-tiny, EDM's stochastic sampler for
genvs), which a checkpoint and an exported model carry. The commands that sample (genvs-sample, genvs-eval,
genvs-contact-sheet, scripts/quality.py) show ``SamplerFlags`` as flags: what a user leaves unset is the model's
default. Kept here, free of heavy imports, so CLIs can show them in --help and fail fast on bad arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

from genvs_ns import checks
from genvs_ns.errors import GeNVSError

# Ancestral Euler: on the CPU demo's 32 held-out pairs it scored PSNR 15.8 / SSIM 0.76 against Heun's 15.1 / 0.72,
# with half the denoiser evaluations; its fresh noise at every step hides a young U-Net's errors.
DEFAULT_SAMPLER = "euler_ancestral"
# k-diffusion's samplers that take a noise schedule (sampling/diffusion.py's SAMPLERS, which a test keeps this equal
# to); written out so that --help lists them and tyro refuses a typo without importing k-diffusion.
SamplerName = Literal[
    "dpm_2", "dpm_2_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_2s_ancestral", "dpmpp_3m_sde", "dpmpp_sde", "euler",
    "euler_ancestral", "heun", "lms",
]  # fmt: skip
# Ancestral samplers' eta: 2 re-noises each step fully (k-diffusion caps the re-noise at the next noise level), so
# every step starts from the denoiser's estimate plus fresh noise. On the demo checkpoint (32 held-out pairs) it cut
# the samples' excess high-frequency energy from 1.21x the truth's to 1.03x (eta 1; 1.4-1.6x for the deterministic
# samplers) and raised object-crop SSIM 0.403 -> 0.429: a young U-Net's errors are not carried from step to step.
DEFAULT_ETA = 2.0
# 15 steps with the fresh noise scaled by 0.8, against 25 at 1.0 (demo checkpoint, 32 held-out pairs, seeds 0-2):
# object-crop PSNR 12.09 -> 12.23, crop SSIM 0.437 -> 0.447, gradient-energy ratio 0.99 -> 0.92, in 60% of the time.
# Fewer steps re-draw the finest detail fewer times; s_noise < 1 samples the detail the render cannot pin down a
# little colder. Steps alone (8-25) moved the scores less than the seed does (+-0.1 dB).
# s_noise 0.8 -> 0.5 (2026-12-03, LPIPS, seeds 0-2): held-out cars LPIPS 0.260 -> 0.252 (crop 0.430 -> 0.420), unseen
# kinds 0.285 -> 0.276 (crop 0.503 -> 0.495), every seed; the render scores 0.302 / 0.319. Colder than 0.5 gained
# under 0.003 more while the gradient-energy ratio kept falling (cars 0.85 at 0.5; docs/experiments.md, "LPIPS").
DEFAULT_STEPS = 15
DEFAULT_S_NOISE = 0.5
# Keeping the warped known view's pixels where it sees the surface instead of letting the U-Net repaint them
# (2026-12-05, genvs-tiny's 1600-step warp checkpoints, 3 training seeds, 64 held-out pairs and 4 x 23-frame paths):
# sample LPIPS 0.240 -> 0.230 (crop 0.382 -> 0.371, every seed; unseen kinds 0.270 -> 0.264; at 3200 steps 0.213 ->
# 0.205, below a copy of the input on every seed), path last third 0.280 -> 0.271 (PSNR 16.10 -> 15.99), frames 10%
# closer at true depth (36.0 -> 32.3); docs/experiments.md, "Keeping the warped pixels".
DEFAULT_KEEP_WARPED = 1.0


@dataclass
class SamplerSettings:
    """How a diffusion sample is drawn: a k-diffusion sampler on a Karras noise schedule."""

    sampler: SamplerName = DEFAULT_SAMPLER
    """k-diffusion sampler (those that take a noise schedule)."""
    steps: int = DEFAULT_STEPS
    """Denoiser steps per sample."""
    churn: float = 0.0
    """EDM S_churn for the samplers that take it (euler, heun, dpm_2); > 0 makes them stochastic."""
    eta: float = DEFAULT_ETA
    """Ancestral samplers' share of each step re-noised: 0 deterministic, 1 DDPM-like; the re-noise is capped at the
    next noise level, which 2 reaches on these schedules."""
    s_noise: float = DEFAULT_S_NOISE
    """Scale of the fresh noise of stochastic steps (k-diffusion's s_noise): below 1 samples colder, sharper than the
    render but with less invented detail."""
    guidance_scale: float = 1.0
    """Classifier-free guidance: 1 plain conditional sampling, 0 unconditional, > 1 follows the features harder."""
    sigma_min: float | None = None
    """Smallest noise level before the last step to 0 (default: the denoiser JSON's)."""
    sigma_max: float | None = None
    """Largest noise level, where sampling starts (default: the denoiser JSON's)."""
    keep_warped: float = DEFAULT_KEEP_WARPED
    """Models whose residual base is a warped known view (--pipeline.model.residual-base warp): the share of the
    U-Net's correction dropped where that view sees the surface. 1 keeps the known view's pixels there as warped (the
    input's; along a path also earlier frames' where the input does not see: ContextPolicy.fill_views), 0 lets the
    U-Net repaint them. No effect on other models."""

    def check(self) -> None:
        """One line for a value no sampler can use (a negative sigma_min made the Karras schedule complex)."""
        checks.at_least("--steps", self.steps, 1)
        for flag, value in (("--churn", self.churn), ("--eta", self.eta), ("--s-noise", self.s_noise)):
            checks.at_least(flag, value, 0)
        checks.at_least("--guidance-scale", self.guidance_scale, 0)
        checks.between("--keep-warped", self.keep_warped, 0, 1)
        for flag, value in (("--sigma-min", self.sigma_min), ("--sigma-max", self.sigma_max)):
            if value is not None:
                checks.greater_than(flag, value, 0)
        if self.sigma_min is not None and self.sigma_max is not None and self.sigma_min >= self.sigma_max:
            raise GeNVSError(f"--sigma-min ({self.sigma_min}) must be below --sigma-max ({self.sigma_max})")


# The genvs-tiny default, tuned on its demo checkpoint (the constants above).
TUNED_CPU_SAMPLING = SamplerSettings()
# EDM's stochastic sampler (Karras et al. 2022, Algorithm 2: Heun steps, noise added back at each step and the noise
# level it reaches told to the denoiser) for the paper preset: 25 steps (49 denoiser evaluations), churn 0.4 per step
# as the earlier re-implementation's 250-step Euler used. Not yet measured at paper size; on genvs-tiny's 1600-step
# checkpoints it scored far below the tuned sampler (LPIPS 0.338 against 0.266, deterministic Heun as badly;
# docs/experiments.md, issue 23), so compare the two on a paper-size checkpoint before trusting either there.
EDM_STOCHASTIC_SAMPLING = SamplerSettings(sampler="heun", steps=25, churn=10.0, eta=0.0, s_noise=1.0)


@dataclass
class SamplerFlags:
    """How the diffusion samples are drawn; a setting left unset is the model's own default (genvs-tiny:
    euler_ancestral, 15 steps, eta 2, s_noise 0.5, warped pixels kept; genvs: EDM's stochastic Heun, 25 steps,
    churn 10)."""

    sampler: SamplerName | None = None
    """k-diffusion sampler (those that take a noise schedule)."""
    steps: int | None = None
    """Denoiser steps per sample."""
    churn: float | None = None
    """EDM S_churn for the samplers that take it (euler, heun, dpm_2); > 0 makes them stochastic."""
    eta: float | None = None
    """Ancestral samplers' share of each step re-noised: 0 deterministic, 1 DDPM-like; the re-noise is capped at the
    next noise level, which 2 reaches on these schedules."""
    s_noise: float | None = None
    """Scale of the fresh noise of stochastic steps (k-diffusion's s_noise)."""
    guidance_scale: float | None = None
    """Classifier-free guidance: 1 plain conditional sampling, 0 unconditional, > 1 follows the features harder."""
    sigma_min: float | None = None
    """Smallest noise level before the last step to 0 (default: the model's, else the denoiser JSON's)."""
    sigma_max: float | None = None
    """Largest noise level, where sampling starts (default: the model's, else the denoiser JSON's)."""
    keep_warped: float | None = None
    """Models whose residual base is a warped known view: the share of the U-Net's correction dropped where that
    view sees the surface (1: its pixels kept as warped; 0: repainted as the U-Net likes). No effect on others."""

    def over(self, defaults: SamplerSettings) -> SamplerSettings:
        """The settings given here, the model's ``defaults`` for the rest."""
        given = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        return replace(defaults, **given)

    def check(self) -> None:
        """The settings given, checked as complete settings would be (before any model is loaded)."""
        self.over(SamplerSettings()).check()


def default_sampling(steps: int, defaults: SamplerSettings = TUNED_CPU_SAMPLING) -> SamplerSettings | None:
    """A model's default sampler (``defaults``) at ``steps`` steps; None (no sample) for 0."""
    return replace(defaults, steps=steps) if steps > 0 else None
