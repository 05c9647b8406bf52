"""Method specifications: ``genvs`` (the paper's sizes, for GPUs) and ``genvs-tiny`` (trains on a CPU in minutes).

Both are the same code with different numbers. The device defaults to CUDA where available, else the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Type

import torch
from nerfstudio.configs.base_config import MachineConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig, OptimizerConfig
from nerfstudio.plugins.types import MethodSpecification

from genvs_ns.data.datamanager import GeNVSDataManagerConfig
from genvs_ns.data.srn_dataparser import SRNDataParserConfig
from genvs_ns.model.model_config import GeNVSModelConfig
from genvs_ns.pipeline import GeNVSPipelineConfig
from genvs_ns.sampling import EDM_STOCHASTIC_SAMPLING
from genvs_ns.trainer import GeNVSTrainerConfig


@dataclass
class FusedAdamOptimizerConfig(AdamOptimizerConfig):
    """Adam with torch's fused kernel: on the CPU here a 22M-parameter step takes 8 ms instead of 80 ms."""

    fused: bool = True
    """Use the fused implementation (CPU and CUDA)."""


@dataclass
class AdamWOptimizerConfig(OptimizerConfig):
    """AdamW (nerfstudio 1.1.5 ships Adam and RAdam only), fused."""

    _target: Type = torch.optim.AdamW
    weight_decay: float = 1e-3
    """Decoupled weight decay."""
    fused: bool = True
    """Use the fused implementation (CPU and CUDA)."""


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _optimizers(lr: float) -> dict:
    return {
        "encoder": {"optimizer": FusedAdamOptimizerConfig(lr=lr, eps=1e-8), "scheduler": None},
        "field": {"optimizer": FusedAdamOptimizerConfig(lr=lr, eps=1e-8), "scheduler": None},
        # k-diffusion's defaults for image_v1 U-Nets.
        "denoiser": {
            "optimizer": AdamWOptimizerConfig(lr=lr, eps=1e-6, weight_decay=1e-3),
            "scheduler": None,
        },
    }


def _trainer(
    method_name: str,
    max_num_iterations: int,
    eval_every: int,
    lr: float,
    datamanager: GeNVSDataManagerConfig,
    model: GeNVSModelConfig,
) -> GeNVSTrainerConfig:
    return GeNVSTrainerConfig(
        method_name=method_name,
        max_num_iterations=max_num_iterations,
        steps_per_eval_batch=eval_every // 2,
        steps_per_eval_image=eval_every,
        steps_per_eval_all_images=max(eval_every * 25, max_num_iterations),
        steps_per_save=eval_every,
        save_only_latest_checkpoint=True,
        # Autocast is the model's own (bf16 where it holds up); nerfstudio's would also cover the compositing.
        mixed_precision=False,
        # On a GPU the viewer comes up while training, as for other nerfstudio methods; on the CPU its renders would
        # take turns with the training step on the same few cores.
        vis="viewer+tensorboard" if _device() == "cuda" else "tensorboard",
        machine=MachineConfig(device_type=_device()),  # type: ignore[arg-type]
        pipeline=GeNVSPipelineConfig(datamanager=datamanager, model=model),
        optimizers=_optimizers(lr),
    )


def genvs_trainer() -> GeNVSTrainerConfig:
    """Paper sizes: 128 px images, 64x64 x 64-plane volumes, 64+64 samples, an 89M-parameter U-Net; EDM's stochastic
    sampler by default (the CPU preset's tuned sampler is not measured at this size)."""
    config = _trainer(
        "genvs",
        max_num_iterations=500_000,
        eval_every=2000,
        lr=1e-4,
        # 8 objects kept an H200 busy 23% of the time (22.5 objects/s); 32 reached 52% (70-76 objects/s) in 40.7 GiB.
        datamanager=GeNVSDataManagerConfig(dataparser=SRNDataParserConfig(), objects_per_batch="auto"),
        model=GeNVSModelConfig(),
    )
    config.pipeline.sampling = replace(EDM_STOCHASTIC_SAMPLING)
    config.pipeline.eval_all_sample_steps = config.pipeline.renders.sample_steps = EDM_STOCHASTIC_SAMPLING.steps
    return config


def genvs_tiny_trainer() -> GeNVSTrainerConfig:
    """CPU preset: 64 px images, 32x32 x 16-plane volumes, 16+16 samples, a 3.6M-parameter U-Net."""
    return _trainer(
        "genvs-tiny",
        max_num_iterations=3000,
        eval_every=500,
        lr=3e-4,
        datamanager=GeNVSDataManagerConfig(
            dataparser=SRNDataParserConfig(), objects_per_batch=4, eval_num_objects=4, eval_num_target_views=2
        ),
        model=GeNVSModelConfig(
            volume_depth=16,
            volume_resolution=32,
            decoder_channels=64,
            num_coarse_samples=16,
            num_importance_samples=16,
            aux_num_rays=128,
            denoiser_config="denoiser_tiny.json",
            denoise_residual=True,
            # With the residual, high noise levels are nearly free (the render is the estimate); EDM's own levels
            # spend the short CPU budget where detail is made (measured when the demo ran 1400 steps: sample SSIM
            # 0.63 -> 0.72).
            noise_mean=-1.2,
            noise_std=1.2,
            # The input warped into each target and the U-Net's residual added to it where it sees the surface: at
            # 1600 steps (3 training seeds, 64 held-out pairs) sample LPIPS 0.265 -> 0.240 on the frame and 0.435 ->
            # 0.382 on the object crop, below a copy of the input's 0.404; unseen kinds 0.287 -> 0.270. A step costs
            # 6% more (0.265 -> 0.282 s). docs/experiments.md, "A known view warped into the new one".
            warp_known_view=True,
            residual_base="warp",
            # Source view 0's rays rendered from source 1's volume alone are compared with its pixels too: 1600 steps,
            # 3 training seeds, 64 held-out pairs: NeRF LPIPS 0.323 -> 0.306, sample LPIPS 0.231 -> 0.226 (every
            # seed better), at no cost (the render was already made for the consistency loss).
            cross_view_rgb_loss_mult=1.0,
            # The feature render sees the outline at half the image's resolution; 256 target rays a view at full
            # resolution near the true outline (about +10% a step): 1600 steps, 3 training seeds, 64 held-out pairs:
            # sample LPIPS 0.225 -> 0.210 (every seed better; the copy of the input scores 0.215), outline IoU
            # 0.849 -> 0.866, paths' last third +0.23 dB, though the surface's depth error grows 11%.
            silhouette_rays=256,
        ),
    )


genvs_method = MethodSpecification(
    config=genvs_trainer(), description="GeNVS generative novel view synthesis (paper sizes, for GPUs)"
)
genvs_tiny_method = MethodSpecification(
    config=genvs_tiny_trainer(), description="GeNVS at CPU size (64 px, small U-Net): trains visibly in minutes"
)
