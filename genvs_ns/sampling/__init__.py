"""Sampling: k-diffusion samplers with guidance, camera trajectories, autoregressive generation."""

# Ancestral Euler, 25 steps: on the CPU demo's 32 held-out pairs it scored PSNR 15.8 / SSIM 0.76 against Heun's
# 15.1 / 0.72, with half the denoiser evaluations; its fresh noise at every step hides a young U-Net's errors.
# Kept here, free of heavy imports, so CLIs can show it in --help and fail fast on bad arguments.
DEFAULT_SAMPLER = "euler_ancestral"
# Ancestral samplers' eta: 2 re-noises each step fully (k-diffusion caps the re-noise at the next noise level), so
# every step starts from the denoiser's estimate plus fresh noise. On the demo checkpoint (32 held-out pairs) it cut
# the samples' excess high-frequency energy from 1.21x the truth's to 1.03x (eta 1; 1.4-1.6x for the deterministic
# samplers) and raised object-crop SSIM 0.403 -> 0.429: a young U-Net's errors are not carried from step to step.
DEFAULT_ETA = 2.0
