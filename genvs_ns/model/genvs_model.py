"""GeNVS as a nerfstudio ``Model``: wires the network to object batches, losses, metrics and EMA."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Literal, Tuple, Type

import k_diffusion as K
import torch
import torch.nn.functional as F
import tyro
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.configs.config_utils import to_immutable_dict
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer_elements import ViewerCheckbox, ViewerDropdown, ViewerNumber
from torch import Tensor
from torch.nn import Parameter
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from genvs_ns.cpu_runtime import flush_denormals, reuse_freed_memory
from genvs_ns.model.augment import augment_jointly
from genvs_ns.model.ema import ema_update
from genvs_ns.model.geometry import depth_range, image_rays, intrinsics_matrix
from genvs_ns.model.network import Conditioning, GeNVSNetwork, NetworkSizes
from genvs_ns.model.precision import Precision, autocast, autocast_dtype
from genvs_ns.model.renderer import RenderSettings
from genvs_ns.quality import foreground
from genvs_ns.sampling import DEFAULT_STEPS, SamplerSettings, default_sampling
from genvs_ns.sampling.diffusion import sample


@dataclass
class GeNVSModelConfig(ModelConfig):
    """GeNVS: frustum feature volumes from source views, a rendered feature image, an EDM denoiser on top."""

    _target: Type = field(default_factory=lambda: GeNVSModel)
    # nerfstudio's per-scene settings, which a GeNVS model does not use: hidden from --help (config.yml keeps them).
    enable_collider: tyro.conf.Suppress[bool] = True
    collider_params: tyro.conf.Suppress[Dict[str, float] | None] = to_immutable_dict(
        {"near_plane": 2.0, "far_plane": 6.0}
    )
    loss_coefficients: tyro.conf.Suppress[Dict[str, float]] = to_immutable_dict(
        {"rgb_loss_coarse": 1.0, "rgb_loss_fine": 1.0}
    )
    eval_num_rays_per_chunk: tyro.conf.Suppress[int] = 4096
    prompt: tyro.conf.Suppress[str | None] = None
    # Encoder and feature volumes.
    volume_channels: int = 16
    """Feature channels per voxel of a source view's frustum volume."""
    volume_depth: int = 64
    """Depth planes of each frustum volume, evenly spaced in camera z between near and far."""
    volume_resolution: int = 64
    """Height and width of each frustum volume (the encoder's head runs at this resolution)."""
    decoder_channels: int = 256
    """Width of the DeepLabV3+ decoder (ASPP and fusion convolutions)."""
    aspp_rates: Tuple[int, ...] = (2, 4, 6)
    """ASPP dilation rates, relative to the stride-16 feature map (8x8 for 128 px images)."""
    backbone_weights: Path | None = None
    """Optional local ResNet-34 state dict (torchvision layout) to start the encoder from; none are downloaded."""
    rgb_skip: bool = True
    """The first 3 volume channels are each source pixel's RGB at every depth (the encoder fills the others), and the
    field's RGB is the mean colour a point projects onto, corrected by its MLP."""
    # Field and rendering.
    latent_channels: int = 16
    """Channels of the rendered feature image; the first 3 are RGB."""
    field_hidden_dim: int = 64
    """Width of the field MLP."""
    field_num_layers: int = 3
    """Linear layers of the field MLP (16 -> 64 -> 64 -> 1 + latent with the defaults)."""
    mlp_implementation: Literal["tcnn", "torch"] = "torch"
    """torch, or tiny-cuda-nn (where installed). torch by default so checkpoints load on every machine: tcnn stores
    its weights as one padded fp16 vector without biases, which a machine without it cannot read. The field MLP is a
    small part of a step (paper size: ~80 GFLOP forward+backward, milliseconds on a recent GPU)."""
    render_downscale: int = 2
    """The feature image is rendered at image size / this, then bilinearly upsampled for the denoiser."""
    num_coarse_samples: int = 64
    """Stratified samples per ray."""
    num_importance_samples: int = 64
    """Importance samples per ray, drawn from the coarse weights (each sample is evaluated once)."""
    aux_num_rays: int = 1024
    """Rays per object for the source-view RGB and cross-view consistency renders."""
    # Diffusion.
    denoiser_config: str = "denoiser_paper.json"
    """k-diffusion JSON model config: a path, or a name shipped in genvs_ns/configs."""
    noise_mean: float = 0.5
    """Mean of log(sigma) during training (EDM: -1.2; GeNVS re-implementations train faster with more noise)."""
    noise_std: float = 1.4
    """Standard deviation of log(sigma) during training."""
    noise_draws: int = 1
    """Noise levels and noises drawn per rendered target in a training step (the denoising loss averages them)."""
    uncond_prob: float = 0.1
    """Probability that the conditioning is replaced by noise (flagged to the U-Net) for classifier-free guidance."""
    denoise_residual: bool = False
    """The U-Net denoises the target's difference from the rendered RGB (estimate = RGB + U-Net) instead of the target:
    the same EDM model family, but an early U-Net already returns the render's colours rather than grey (genvs-tiny)."""
    augment_prob: float = 0.12
    """Karras augmentation, when the denoiser JSON has "augment_wrapper": true: probability of each transform (flips,
    scale, rotation, anisotropy, translation), applied alike to the target and its feature image."""
    precision: Precision = "auto"
    """Autocast of the encoder, field MLP and U-Net (geometry and compositing stay fp32): "auto" is bf16 where the
    device has it natively (CUDA from Ampere on; CPUs with AVX512 or AMX) and fp32 elsewhere; "fp16" (V100, T4)
    turns on the trainer's loss scaling; see precision.py."""
    cpu_reuse_freed_memory: bool = True
    """On the CPU (glibc), keep freed memory for reuse rather than returning it to the OS: large activations otherwise
    page-fault in again every step (genvs-tiny step 0.49 -> 0.45 s on 2 cores). Process-wide; see cpu_runtime.py."""
    cpu_flush_denormals: bool = True
    """On the CPU, flush denormal floats to zero: Adam's second moments of tiny gradients turn denormal and slowed the
    genvs-tiny step from 0.37 to 0.45-0.50 s after about 550 steps. Process-wide; see cpu_runtime.py."""
    # Losses.
    diffusion_loss_mult: float = 1.0
    """Weight of the denoising loss."""
    rgb_loss_mult: float = 1.0
    """Weight of the MSE between the rendered RGB channels and the target view."""
    source_rgb_loss_mult: float = 0.1
    """Weight of the MSE between a source view re-rendered from its own volume and that view."""
    opacity_loss_mult: float = 0.01
    """Weight of the BCE between rendered accumulation and the target's foreground (non-white) mask."""
    depth_prior_mult: float = 0.01
    """Weight of the penalty on foreground depth farther than object_radius from the ray's closest approach to the
    origin (objects are centred there): discourages detail floating between the object and the camera."""
    object_radius: float = 0.6
    """Radius around the origin that holds the object, for the depth prior."""
    consistency_loss_mult: float = 0.1
    """Weight of the L1 between depth and accumulation of a source view rendered from its own volume and from another
    source view's volume (needs 2+ source views in the batch)."""
    # EMA and evaluation.
    ema_power: float = 2.0 / 3.0
    """k-diffusion EMAWarmup power; the EMA weights are used for evaluation and sampling."""
    ema_max_decay: float = 0.9999
    """Largest EMA decay."""
    eval_sample_steps: int = 0
    """Denoiser steps for a diffusion sample in the periodic eval images (0: NeRF renders only)."""
    render_object: int = 0
    """ns-render / ns-viewer without --camera-idx: the object (index in the evaluation split) to condition on."""
    render_source_view: int = 64
    """ns-render / ns-viewer without --camera-idx: the source view of render_object to condition on (view index; the
    object's first view where it does not exist)."""
    render_sample_steps: int = DEFAULT_STEPS
    """Denoiser steps (default sampler) of the "sample" output in ns-render / ns-viewer (0: NeRF outputs only)."""
    render_seed: int = 0
    """Seed of the "sample" output in ns-render / ns-viewer (the same for every frame)."""
    eval_all_sample_steps: int = DEFAULT_STEPS
    """Denoiser steps (default sampler) for the diffusion samples that ns-eval scores (0: NeRF metrics only)."""


def apply_cpu_settings(config: GeNVSModelConfig) -> None:
    """The config's process-wide CPU settings (cpu_runtime.py). Denormal flushing only reaches threads started after
    it, so the pipeline applies them before it builds anything; the model again for itself (sampling scripts)."""
    if config.cpu_reuse_freed_memory:
        reuse_freed_memory()
    if config.cpu_flush_denormals and not flush_denormals():
        CONSOLE.print(
            "[yellow]genvs-ns: denormal floats are not flushed to zero on every CPU thread (the threads started "
            "earlier); training may slow down once Adam's state turns denormal"
        )


def _area_resize(images: Float[Tensor, "b c H W"], hw: tuple[int, int]) -> Float[Tensor, "b c h w"]:
    return images if tuple(images.shape[-2:]) == tuple(hw) else F.adaptive_avg_pool2d(images, hw)


class GeNVSModel(Model):
    config: GeNVSModelConfig

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # nerfstudio's device marker never receives a gradient; under DDP, which must see a gradient for every
        # trainable parameter each step, it has to be frozen.
        self.device_indicator_param.requires_grad_(False)

    def populate_modules(self) -> None:
        super().populate_modules()
        self.collider = None  # object batches carry their own near/far
        metadata = self.kwargs.get("metadata", {})
        # What rendering for a user's own picture needs besides the weights, saved with them: near/far, the image size
        # the denoiser was trained at and the world's up direction (the pipeline reads them off the training data).
        self.register_buffer("near_far", torch.tensor([metadata.get("near", 0.8), metadata.get("far", 1.8)]))
        self.register_buffer("image_size", torch.tensor(metadata.get("image_hw", (0, 0)), dtype=torch.long))
        self.register_buffer("world_up", torch.tensor(metadata.get("world_up", (0.0, 0.0, 1.0)), dtype=torch.float32))
        self._near_far: tuple[float, float] | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: setattr(module, "_near_far", None))
        c = self.config
        if torch.device(self.kwargs.get("device", "cpu")).type == "cpu":
            apply_cpu_settings(c)
        sizes = NetworkSizes(
            volume_channels=c.volume_channels,
            volume_depth=c.volume_depth,
            volume_resolution=c.volume_resolution,
            decoder_channels=c.decoder_channels,
            aspp_rates=tuple(c.aspp_rates),
            field_hidden_dim=c.field_hidden_dim,
            field_num_layers=c.field_num_layers,
            latent_channels=c.latent_channels,
            mlp_implementation=c.mlp_implementation,
            denoiser_config=c.denoiser_config,
            backbone_weights=c.backbone_weights,
            rgb_skip=c.rgb_skip,
            denoise_residual=c.denoise_residual,
        )
        self.net = GeNVSNetwork(sizes)
        # The EMA copy never trains: DDP and the optimizers ignore parameters without requires_grad.
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        # ns-viewer shows these (nerfstudio finds ViewerElements on the model); elsewhere they keep the config values.
        self.viewer_split = ViewerDropdown(
            "Objects from",
            "eval",
            ["eval", "train"],
            hint="Split the object index counts in (clicking a training camera switches to 'train')",
        )
        self.viewer_object = ViewerNumber(
            "Object", c.render_object, hint="Object whose source view conditions the render"
        )
        self.viewer_source_view = ViewerNumber(
            "Source view", c.render_source_view, hint="View index of that object used as input (first view if absent)"
        )
        self.viewer_sample = ViewerCheckbox(
            "Diffusion sample",
            c.render_sample_steps > 0,
            hint=f"Add the 'sample' output ({c.render_sample_steps} steps)",
        )
        # The viewer passes the index of the last clicked training camera with every render (0 before any click).
        self._viewer_camera_idx = 0
        # Mirrors of ema_updates and of the trainer's step as Python ints: reading a CUDA tensor every step would wait
        # for the GPU. None until the first training callback (after a checkpoint has been loaded).
        self._ema_updates: int | None = None

    @property
    def near(self) -> float:
        return self._host_near_far()[0]

    @property
    def far(self) -> float:
        return self._host_near_far()[1]

    def _host_near_far(self) -> tuple[float, float]:
        # Read once, not at every step: float() of a CUDA tensor waits for the GPU to finish all queued work.
        if self._near_far is None:
            self._near_far = (float(self.near_far[0]), float(self.near_far[1]))
        return self._near_far

    @property
    def image_hw(self) -> tuple[int, int]:
        """Height and width of the training images (the denoiser's size)."""
        return int(self.image_size[0]), int(self.image_size[1])

    # ---- nerfstudio plumbing -------------------------------------------------------------------------------------

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return {
            "encoder": list(self.net.encoder.parameters()),
            "field": list(self.net.field.parameters()),
            "denoiser": list(self.net.denoiser.parameters()),
        }

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        def update_ema(step: int) -> None:
            if self._ema_updates is None:
                self._ema_updates = int(self.ema_updates)
            sched = K.utils.EMAWarmup(power=self.config.ema_power, max_value=self.config.ema_max_decay)
            sched.last_epoch = self._ema_updates
            ema_update(self.net, self.ema, sched.get_value())
            self._ema_updates += 1
            self.ema_updates.fill_(self._ema_updates)

        return [TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], update_ema)]

    def _autocast(self):
        return autocast(autocast_dtype(self.config.precision, self.device), self.device)

    def forward(self, inputs) -> Dict[str, Tensor]:
        # nerfstudio's forward runs a collider on ray bundles; object batches go straight to the network.
        return self.get_outputs(inputs)

    def get_outputs(self, inputs) -> Dict[str, Tensor]:
        if isinstance(inputs, RayBundle):
            # Rays alone say nothing about which object to show; cameras go through get_outputs_for_camera. Only
            # nerfstudio's per-scene tools (ns-export pointcloud / poisson / tsdf) come here: one line for them, as
            # DataError gives for bad data (a SystemExit, which they do not catch).
            raise SystemExit(
                "genvs-ns: error: genvs renders need source views, not bare rays: ns-export's pointcloud, poisson and "
                "tsdf do not apply to a genvs checkpoint; genvs-sample generates the views of an object"
            )
        return self.training_outputs(inputs)

    # ---- training --------------------------------------------------------------------------------------------

    def render_settings(self, stratified: bool) -> RenderSettings:
        c = self.config
        # The data's near and far are where the object's sphere begins and ends seen from its cameras.
        radius = (self.far - self.near) / 2
        return RenderSettings(radius, c.num_coarse_samples, c.num_importance_samples, stratified)

    def training_outputs(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        c, net = self.config, self.net
        src, tgt = batch["source_images"], batch["target_image"]
        B, V = src.shape[:2]
        H, W = tgt.shape[-2:]
        h, w = H // c.render_downscale, W // c.render_downscale
        rs = self.render_settings(stratified=True)
        with self._autocast():
            cond = net.encode(src, batch["source_c2w"], batch["source_K"])
            target = net.render_image(cond, batch["target_c2w"], batch["target_K"], (H, W), (h, w), rs)
        features = target["features"]
        outputs = {
            "rgb": features[:, :3],
            "features": features,
            "depth": target["depth"],
            "accumulation": target["accumulation"],
            "diffusion": self._diffusion_loss(features, tgt, c.noise_draws),
        }

        # Source view 0 re-rendered on a ray subset from its own volume (and from source 1's, if there is one).
        uv = torch.stack(
            [torch.randint(0, W, (B, c.aux_num_rays)), torch.randint(0, H, (B, c.aux_num_rays))], dim=-1
        ).to(tgt.device)
        pixels = src[:, 0].permute(0, 2, 3, 1)[torch.arange(B)[:, None], uv[..., 1], uv[..., 0]]
        own_c2w, own_K = batch["source_c2w"][:, 0], batch["source_K"][:, 0]
        with self._autocast():
            own = net.render_pixels(cond.select([0]), own_c2w, own_K, uv + 0.5, rs)
            other = net.render_pixels(cond.select([1]), own_c2w, own_K, uv + 0.5, rs) if V > 1 else None
        outputs.update(
            source_rgb=own.features[..., :3],
            source_rgb_gt=pixels,
            source_depth=own.depth,
            source_accumulation=own.accumulation,
        )
        if other is not None:
            outputs["other_depth"], outputs["other_accumulation"] = other.depth, other.accumulation
        return outputs

    def _diffusion_loss(
        self, features: Float[Tensor, "batch L h w"], target: Float[Tensor, "batch 3 H W"], draws: int
    ) -> Float[Tensor, " batch*draws"]:
        """EDM denoising loss on the target view, conditioned on the upsampled feature image or (sometimes) on noise;
        ``draws`` noise levels and noises per feature image (the encoder and the render are paid once per object)."""
        c, net = self.config, self.net
        B, (H, W) = target.shape[0], target.shape[-2:]
        cond_image, x0, aug_cond = net.upsample(features, (H, W)), target * 2 - 1, None
        if net.denoiser.augment:
            # Non-leaking: the U-Net is told which transform moved target and conditioning; sampling uses none.
            (x0, cond_image), aug_cond = augment_jointly([x0, cond_image], c.augment_prob)
        if draws > 1:
            x0, cond_image = x0.repeat(draws, 1, 1, 1), cond_image.repeat(draws, 1, 1, 1)
            aug_cond = aug_cond.repeat(draws, 1) if aug_cond is not None else None
        uncond = (torch.rand(B * draws, device=target.device) < c.uncond_prob).float()
        cond_image = torch.where(uncond[:, None, None, None] > 0, torch.randn_like(cond_image), cond_image)
        sigma = K.utils.rand_log_normal([B * draws], loc=c.noise_mean, scale=c.noise_std, device=target.device)
        with self._autocast():
            return net.denoiser.loss(x0, sigma, cond_image, uncond, aug_cond).float()

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        gt = _area_resize(batch["target_image"], tuple(outputs["rgb"].shape[-2:]))
        return {"psnr": peak_signal_noise_ratio(outputs["rgb"].detach().clamp(0, 1), gt, data_range=1.0)}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        c = self.config
        tgt = batch["target_image"]
        hw = tuple(outputs["rgb"].shape[-2:])
        gt = _area_resize(tgt, hw)
        fg = _area_resize(foreground(tgt), hw)
        acc = outputs["accumulation"].clamp(1e-4, 1 - 1e-4)
        # Depth prior: the ray's closest approach to the origin, where objects are centred.
        B = tgt.shape[0]
        origins, directions = image_rays(batch["target_c2w"], batch["target_K"], tuple(tgt.shape[-2:]), hw)
        closest = -(origins * directions).sum(-1).view(B, 1, *hw)
        far_off = F.relu((outputs["depth"] - closest).abs() - c.object_radius)
        losses = {
            "diffusion_loss": c.diffusion_loss_mult * outputs["diffusion"].mean(),
            "rgb_loss": c.rgb_loss_mult * F.mse_loss(outputs["rgb"], gt),
            "source_rgb_loss": c.source_rgb_loss_mult * F.mse_loss(outputs["source_rgb"], outputs["source_rgb_gt"]),
            # As logits: CUDA autocast refuses F.binary_cross_entropy (nerfstudio runs the losses under autocast with
            # --mixed-precision True) and runs the logits form in fp32.
            "opacity_loss": c.opacity_loss_mult * F.binary_cross_entropy_with_logits(torch.logit(acc.float()), fg),
            "depth_prior_loss": c.depth_prior_mult * (far_off * fg).sum() / fg.sum().clamp_min(1.0),
        }
        if "other_depth" in outputs:
            depth_gap = (outputs["source_depth"] - outputs["other_depth"]).abs()
            acc_gap = (outputs["source_accumulation"] - outputs["other_accumulation"]).abs()
            visible = outputs["source_accumulation"].detach() > 0.5
            losses["consistency_loss"] = c.consistency_loss_mult * (
                (depth_gap * visible).sum() / visible.sum().clamp_min(1) + acc_gap.mean()
            )
        return losses

    # ---- evaluation --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def render_views(
        self,
        source_images: Float[Tensor, "batch views 3 H W"] | None,
        source_c2w: Float[Tensor, "batch views 3 4"] | None,
        source_K: Float[Tensor, "batch views 3 3"] | None,
        target_c2w: Float[Tensor, "batch 3 4"],
        target_K: Float[Tensor, "batch 3 3"],
        target_hw: tuple[int, int] | None = None,
        sampling: SamplerSettings | None = None,
        use_ema: bool = True,
        generator: torch.Generator | None = None,
        conditioning: Conditioning | None = None,
        callback: Callable | None = None,
    ) -> Dict[str, Tensor]:
        """NeRF RGB, depth and accumulation, and with ``sampling`` a diffusion sample, for new cameras.

        Sources are given as images and cameras, or already encoded as ``conditioning``. ``target_K`` is in pixels of
        ``target_hw`` (default: the source image size). The denoiser always works at the training image size (the
        source images'); its sample is resized to ``target_hw`` when that differs.
        """
        net = self.ema if use_ema else self.net
        c = self.config
        rs = self.render_settings(stratified=False)
        with self._autocast():
            cond = conditioning if conditioning is not None else net.encode(source_images, source_c2w, source_K)
            H, W = cond.image_hw
            target_hw = tuple(target_hw or (H, W))
            full = net.render_image(cond, target_c2w, target_K, target_hw, target_hw, rs)
        out = {
            "rgb": full["features"][:, :3].clamp(0, 1),
            "depth": full["depth"],
            "accumulation": full["accumulation"],
        }
        if sampling is not None:
            h, w = H // c.render_downscale, W // c.render_downscale
            with self._autocast():
                low = net.render_image(cond, target_c2w, target_K, target_hw, (h, w), rs)["features"]
                image = sample(net.denoiser, net.upsample(low, (H, W)), sampling, generator, callback).float()
            if target_hw != (H, W):
                image = F.interpolate(image, size=target_hw, mode="bilinear", align_corners=False)
            out["sample"], out["features"] = image, low
        return out

    # ---- rendering for nerfstudio's camera-only tools (ns-render, ns-viewer) --------------------------------------

    def set_conditioning_datasets(self, eval_dataset, train_dataset) -> None:
        """Images that camera-only renders condition on; set by the pipeline."""
        self._conditioning_datasets = {"eval": eval_dataset, "train": train_dataset}
        self._conditioning_cache: Dict[Tuple[str, int], Conditioning] = {}

    def _in_viewer(self) -> bool:
        # The viewer builds GUI handles for the model's controls; ns-render and scripts never do.
        return self.viewer_object.gui_handle is not None

    def control_source_image(self, clamp: bool = False) -> Tuple[str, int]:
        """Split and image index that the controls (or ``render_object``/``render_source_view``) choose: view
        ``Source view`` of object ``Object``, or the object's first view where that view does not exist. An object out
        of range is an error, or with ``clamp`` (a number typed into the viewer) moved to the nearest one."""
        split = str(self.viewer_split.value)
        ds = self._conditioning_datasets[split]
        obj = int(self.viewer_object.value)
        if not 0 <= obj < ds.num_objects:
            if not clamp:
                raise SystemExit(
                    f"genvs-ns: error: object {obj} out of range: the {split} split has {ds.num_objects} objects "
                    f"(0-{ds.num_objects - 1})"
                )
            obj = min(max(obj, 0), ds.num_objects - 1)
            self.viewer_object.value = obj
        return split, ds.view_image(obj, int(self.viewer_source_view.value))

    def _select_training_image(self, image_index: int) -> None:
        """A click on a training camera in the viewer: its object and view become the controls' choice."""
        ds = self._conditioning_datasets["train"]
        if not 0 <= image_index < len(ds):
            return
        self.viewer_split.value = "train"
        self.viewer_object.value = int(ds.object_index[image_index])
        self.viewer_source_view.value = int(ds.view_index[image_index])

    def conditioning_for_image(self, split: str, image_index: int) -> Conditioning:
        """One image of ``split`` encoded (EMA weights) as the source view; the last one is cached."""
        ds = self._conditioning_datasets[split]
        if not 0 <= image_index < len(ds):
            raise SystemExit(f"genvs-ns: error: camera index {image_index} out of range: {len(ds)} {split} images")
        key = (split, image_index)
        if key not in self._conditioning_cache:
            image = ds.image(image_index)[None, None].to(self.device)
            c2w, K = ds.c2w[image_index][None, None].to(self.device), ds.K[image_index][None, None].to(self.device)
            with torch.no_grad(), self._autocast():
                self._conditioning_cache = {key: self.ema.encode(image, c2w, K)}
        return self._conditioning_cache[key]

    def _camera_source(self, camera: Cameras) -> Tuple[str, int]:
        metadata = camera.metadata or {}
        index = metadata.get("cam_idx")
        index = int(index.flatten()[0]) if isinstance(index, Tensor) else index
        if self._in_viewer():
            # Every viewer render carries the last clicked training camera; only a new click changes the controls.
            if index is not None and index != self._viewer_camera_idx:
                self._viewer_camera_idx = index
                self._select_training_image(index)
            # An exception here would end the viewer's render thread: a mistyped object is clamped instead.
            return self.control_source_image(clamp=True)
        # ns-render --camera-idx N: image N of the evaluation split.
        return ("eval", int(index)) if index is not None else self.control_source_image()

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box=None) -> Dict[str, Tensor]:
        """Renders for a bare camera. In ns-viewer the controls (or a click on a training camera) choose the source
        view; elsewhere ``camera.metadata["cam_idx"]`` (ns-render --camera-idx) names an image of the evaluation
        split, and without it ``render_object``'s source view is used."""
        cond = self.conditioning_for_image(*self._camera_source(camera))
        camera = camera.to(self.device)
        c2w = camera.camera_to_worlds.reshape(1, 3, 4)
        K = intrinsics_matrix(*(x.reshape(1) for x in (camera.fx, camera.fy, camera.cx, camera.cy)))
        hw = (int(camera.height.flatten()[0]), int(camera.width.flatten()[0]))
        generator = torch.Generator(device=self.device).manual_seed(self.config.render_seed)
        out = self.render_views(
            None, None, None, c2w, K, target_hw=hw,
            sampling=default_sampling(self.config.render_sample_steps) if self.viewer_sample.value else None,
            generator=generator, conditioning=cond,
        )  # fmt: skip
        return {k: v[0].permute(1, 2, 0) for k, v in out.items() if k != "features"}

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        gt = batch["target_image"]
        metrics = {
            "psnr": float(peak_signal_noise_ratio(outputs["rgb"], gt, data_range=1.0)),
            "ssim": float(structural_similarity_index_measure(outputs["rgb"], gt, data_range=1.0)),
        }
        row = [batch["source_images"][:, 0], gt, outputs["rgb"]]
        if "sample" in outputs:
            metrics["sample_psnr"] = float(peak_signal_noise_ratio(outputs["sample"], gt, data_range=1.0))
            metrics["sample_ssim"] = float(structural_similarity_index_measure(outputs["sample"], gt, data_range=1.0))
            row.append(outputs["sample"])
        # As nerfstudio's methods show them: turbo between the target camera's near and far planes, masked by
        # accumulation; "img" is the side-by-side (source | truth | NeRF RGB | sample).
        near, far = depth_range(batch["target_c2w"][0, :3, 3], (self.far - self.near) / 2)
        accumulation = outputs["accumulation"][0].permute(1, 2, 0)
        depth = colormaps.apply_depth_colormap(
            outputs["depth"][0].permute(1, 2, 0), accumulation, near_plane=float(near), far_plane=float(far)
        )
        images = {
            "img": torch.cat(row, dim=-1)[0].permute(1, 2, 0),
            "depth": depth,
            "accumulation": colormaps.apply_colormap(accumulation),
        }
        return metrics, images
