"""The GeNVS pipeline: object batches in, losses and eval metrics out; DDP-correct on CPU (gloo) and CUDA."""

from __future__ import annotations

import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Literal, Type

import torch
import torch.distributed as dist
import torchvision.utils as vutils
from nerfstudio.pipelines.base_pipeline import Pipeline, VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch.cuda.amp.grad_scaler import GradScaler
from torch.nn.parallel import DistributedDataParallel as DDP

from genvs_ns import checks
from genvs_ns.cpu_runtime import apply_cpu_settings
from genvs_ns.data.datamanager import GeNVSDataManager, GeNVSDataManagerConfig
from genvs_ns.data.prefetch import ObjectBatch
from genvs_ns.errors import exits_on_user_error
from genvs_ns.evaluation.metrics import perceptual_metrics
from genvs_ns.geometry import estimate_up
from genvs_ns.loss_guard import NonFiniteGuard
from genvs_ns.model.genvs_model import GeNVSModel
from genvs_ns.model.model_config import GeNVSModelConfig
from genvs_ns.sampling import DEFAULT_STEPS, SamplerSettings, default_sampling
from genvs_ns.sampling.camera_renders import CameraRenderConfig, CameraRenders
from genvs_ns.sampling.views import render_pairs
from genvs_ns.video import ensure_ffmpeg_on_path


@dataclass
class GeNVSPipelineConfig(VanillaPipelineConfig):
    """Generalizable training: every step sees different objects."""

    _target: Type = field(default_factory=lambda: GeNVSPipeline)
    datamanager: GeNVSDataManagerConfig = field(default_factory=GeNVSDataManagerConfig)
    """Object-level datamanager."""
    model: GeNVSModelConfig = field(default_factory=GeNVSModelConfig)
    """The GeNVS model."""
    sampling: SamplerSettings = field(default_factory=SamplerSettings)
    """The method's default sampler: what ns-eval, ns-render, ns-viewer and the genvs-* commands use where their
    flags leave a setting unset (presets: genvs-tiny the tuned ancestral sampler, genvs EDM's stochastic one)."""
    eval_sample_steps: int = 0
    """Denoiser steps (default sampler) for a diffusion sample in the periodic eval images (0: NeRF renders only)."""
    eval_all_sample_steps: int = DEFAULT_STEPS
    """Denoiser steps (default sampler) for the diffusion samples that ns-eval scores (0: NeRF metrics only)."""
    renders: CameraRenderConfig = field(default_factory=CameraRenderConfig)
    """ns-render / ns-viewer: the source view a camera-only render is conditioned on, and its sample."""

    def __setstate__(self, state: dict) -> None:
        # A config.yml is unpickled without __init__: one written before a field existed gets that field's default.
        self.__dict__.update({**GeNVSPipelineConfig().__dict__, **state})

    def check(self) -> None:
        """The model's, datamanager's and pipeline's numbers, each refused in one line naming its flag."""
        self.model.check()
        self.datamanager.check()
        checks.at_least("--pipeline.eval-sample-steps", self.eval_sample_steps, 0)
        checks.at_least("--pipeline.eval-all-sample-steps", self.eval_all_sample_steps, 0)
        self.sampling.check()
        self.renders.check()

    @exits_on_user_error  # how ns-train, ns-eval, ns-render, ns-viewer and ns-export build the pipeline
    def setup(self, **kwargs) -> "GeNVSPipeline":
        return super().setup(**kwargs)


class GeNVSPipeline(VanillaPipeline):
    config: GeNVSPipelineConfig
    datamanager: GeNVSDataManager

    def __init__(
        self,
        config: GeNVSPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: GradScaler | None = None,
    ):
        Pipeline.__init__(self)
        config.check()  # before the data set is parsed or anything is built
        if torch.device(device).type == "cuda" and torch.device(device).index is not None:
            # NCCL collectives (the DDP broadcast, barriers) run on the current CUDA device: make it this rank's.
            torch.cuda.set_device(torch.device(device))
        self.config = config
        self.test_mode = test_mode
        if test_mode != "val":
            # Loaded by a tool (eval_setup: ns-render, ns-eval, ns-viewer; genvs-sample), not for training. ns-render
            # needs an ffmpeg on PATH right after this (its check, then mediapy); this is the first code of ours that
            # runs there for genvs checkpoints only. Importing the plugin must not touch PATH or write files: nerfstudio
            # imports it for every method.
            ensure_ffmpeg_on_path()
        if torch.device(device).type == "cpu":
            # Process-wide, so here at the start of every command that builds a pipeline, before any worker thread.
            apply_cpu_settings(config.model.cpu_reuse_freed_memory, config.model.cpu_flush_denormals)
        self.datamanager = config.datamanager.setup(
            device=device,
            test_mode=test_mode,
            world_size=world_size,
            local_rank=local_rank,
            targets_per_object=config.model.joint_views,
            target_depth=config.model.depth_loss_mult > 0,
        )
        self.datamanager.to(device)
        train = self.datamanager.train_dataset
        self._model = config.model.setup(
            scene_box=train.scene_box,
            num_train_data=len(train),
            metadata={
                **train.metadata,
                "image_hw": train.image_hw(0),
                "world_up": estimate_up(train.c2w[:, :, 3]).tolist(),
            },
            device=device,
            grad_scaler=grad_scaler,
        )
        self.model.to(device)
        self.camera_renders = CameraRenders(
            self.model, self.datamanager.eval_dataset or train, train, config.renders, config.sampling,
            training=test_mode == "val",
        )  # fmt: skip
        self.model.set_camera_renders(self.camera_renders.render)
        self.world_size = world_size
        self.loss_guard = NonFiniteGuard()
        self._said_skipped = False
        self._ddp_device_ids = [local_rank] if torch.device(device).type == "cuda" else None
        if world_size > 1:
            # Unlike nerfstudio's default, no device_ids on the CPU (gloo), and every parameter must get a gradient
            # every step (find_unused_parameters=False turns a violation into an error instead of a silent cost).
            # No buffer changes in training (U-Net kernels, constants): re-sending ~300 of them every step is waste.
            self._model = typing.cast(
                GeNVSModel, DDP(self.model, device_ids=self._ddp_device_ids, broadcast_buffers=False)
            )
            dist.barrier(device_ids=self._ddp_device_ids)

    @property
    def model(self) -> GeNVSModel:
        return typing.cast(GeNVSModel, super().model)

    def get_train_loss_dict(self, step: int):
        batch, _ = self.datamanager.next_train(step)
        outputs = self._model(batch)
        metrics = self.model.get_metrics_dict(outputs, batch)
        losses = self.model.get_loss_dict(outputs, batch, metrics)
        self.loss_guard.record(step, losses)  # every rank stops at the same step (loss_guard.py)
        return outputs, losses, metrics

    @torch.no_grad()
    def get_eval_loss_dict(self, step: int):
        self.eval()
        batch, _ = self.datamanager.next_eval(step)
        outputs = self.model(batch)
        metrics = self.model.get_metrics_dict(outputs, batch)
        losses = self.model.get_loss_dict(outputs, batch, metrics)
        self.train()
        return outputs, losses, metrics

    def _eval_outputs(self, batch: ObjectBatch, sample_steps: int, generator: torch.Generator | None = None):
        return render_pairs(self.model, batch, default_sampling(sample_steps, self.config.sampling), generator)

    @torch.no_grad()
    def get_eval_image_metrics_and_images(self, step: int):
        self.eval()
        batch, _ = self.datamanager.next_eval_image(step)
        outputs = self._eval_outputs(batch, self.config.eval_sample_steps)
        metrics, images = self.model.get_image_metrics_and_images(outputs, batch)
        metrics["num_rays"] = int(batch.target_image.shape[-1] * batch.target_image.shape[-2])
        self.train()
        return metrics, images

    @torch.no_grad()
    @exits_on_user_error  # ns-eval
    def get_average_eval_image_metrics(
        self, step: int | None = None, output_path: Path | None = None, get_std: bool = False
    ) -> Dict[str, float | str]:
        """The SRN protocol on the fixed held-out (object, source view, target view) pairs (``ns-eval``).

        PSNR / SSIM of the NeRF RGB and of diffusion samples (seeded), LPIPS and FID where their weights exist.
        """
        self.eval()
        generator = torch.Generator(device=self.device).manual_seed(0)
        steps = self.config.eval_all_sample_steps
        if output_path is not None:
            output_path.mkdir(parents=True, exist_ok=True)
        per_image, nerf, samples, targets = [], [], [], []
        # As nerfstudio's pipelines evaluate: a transient progress bar, and each image's speed among its metrics.
        columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), TimeElapsedColumn())
        with Progress(*columns, MofNCompleteColumn(), transient=True) as progress:
            task = progress.add_task("[green]Evaluating all images...", total=len(self.datamanager.eval_pairs))
            for k, pair in enumerate(self.datamanager.eval_pairs):
                batch = self.datamanager.eval_batch([pair])
                start = time.perf_counter()
                outputs = self._eval_outputs(batch, steps, generator)
                metrics, images = self.model.get_image_metrics_and_images(outputs, batch)
                height, width = batch.target_image.shape[-2:]
                metrics["num_rays_per_sec"] = height * width / (time.perf_counter() - start)
                metrics["fps"] = metrics["num_rays_per_sec"] / (height * width)
                per_image.append(metrics)
                nerf.append(outputs.rgb.cpu())
                targets.append(batch.target_image.cpu())
                if outputs.sample is not None:
                    samples.append(outputs.sample.cpu())
                if output_path is not None:
                    for key, image in images.items():
                        vutils.save_image(image.permute(2, 0, 1).cpu(), output_path / f"eval_{key}_{k:04d}.png")
                progress.advance(task)
        self.train()
        result: Dict[str, float | str] = {"num_images": len(per_image), "sample_steps": steps}
        for key in per_image[0]:
            values = torch.tensor([m[key] for m in per_image])
            result[key] = float(values.mean())
            if get_std:
                result[f"{key}_std"] = float(values.std()) if len(values) > 1 else 0.0
        predictions = {"nerf": torch.cat(nerf)}
        if samples:
            predictions["sample"] = torch.cat(samples)
        perceptual = perceptual_metrics(predictions, torch.cat(targets))
        skipped = {k: v for k, v in perceptual.items() if isinstance(v, str)}
        result.update({k: v for k, v in perceptual.items() if not isinstance(v, str)})
        if step is None:
            # ns-eval (no step) writes this dict to its JSON: the reasons belong there. During training it goes to
            # the loggers, whose writers take numbers only (a string ended the run at its first all-images eval).
            result.update(skipped)
        elif skipped and not self._said_skipped:
            CONSOLE.print(f"[yellow]genvs-ns: not computed: {'; '.join(f'{k}: {v}' for k, v in skipped.items())}")
            self._said_skipped = True
        return result
