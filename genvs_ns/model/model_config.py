"""The GeNVS model's settings: what ``--pipeline.model.*`` sets, documented once.

The settings stay flat (one level under ``--pipeline.model``) rather than nested per component: nested dataclasses
would rename every flag users know (tyro keeps a nested field's name in its flags) and break every config.yml written
so far. The components read what they need by name (``NetworkConfig``, ``TrainingSettings``, ``LossWeights``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Literal, Tuple, Type

import tyro
from nerfstudio.configs.config_utils import to_immutable_dict
from nerfstudio.models.base_model import ModelConfig

from genvs_ns import checks
from genvs_ns.errors import GeNVSError
from genvs_ns.model.encoder import BackboneNorm
from genvs_ns.model.precision import Precision
from genvs_ns.model.trilinear import ViewPooling

# Settings whose default changed: what a config written before the setting existed was trained with.
LEGACY_MODEL_SETTINGS = {"view_pooling": "mean", "encoder_norm": "frozen"}


def _model_class() -> Type:
    from genvs_ns.model.genvs_model import GeNVSModel

    return GeNVSModel


@dataclass
class GeNVSModelConfig(ModelConfig):
    """GeNVS: frustum feature volumes from source views, a rendered feature image, an EDM denoiser on top."""

    _target: Type = field(default_factory=lambda: _model_class())
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
    encoder_norm: BackboneNorm = "group"
    """How the encoder's ResNet normalises: "group" (group norm in every block; training from scratch) or "frozen"
    (frozen batch norm, for --pipeline.model.backbone-weights; without them no normalisation at all, as runs trained
    before this setting had: their activations grew to 1e15 and could overflow into NaN; see encoder.py)."""
    rgb_skip: bool = True
    """The first 3 volume channels are each source pixel's RGB at every depth (the encoder fills the others), and the
    field's RGB is the mean colour a point projects onto, corrected by its MLP."""
    # Field and rendering.
    view_pooling: ViewPooling = "visible"
    """How a point's features from several source views are pooled: "visible" averages the views whose frustum holds
    it (and tells the field how much of it they see); "mean" averages all views, zeros of the ones that miss it
    included (runs trained before this setting existed)."""
    latent_channels: int = 16
    """Channels of the rendered feature image; the first 3 are RGB."""
    field_hidden_dim: int = 64
    """Width of the field MLP."""
    field_num_layers: int = 3
    """Linear layers of the field MLP (16 -> 64 -> 64 -> 1 + latent with the defaults)."""
    mlp_implementation: Literal["tcnn", "torch"] = "torch"
    """torch, or tiny-cuda-nn (where installed). A tcnn checkpoint loads on a machine without it (its flat weight
    vector becomes torch layers); a torch one loads into tcnn only if its biases are zero, which tcnn lacks, hence torch
    by default. The field MLP is a small part of a step (paper size: ~80 GFLOP forward+backward, milliseconds on a
    recent GPU)."""
    render_downscale: int = 2
    """The feature image is rendered at image size / this, then bilinearly upsampled for the denoiser."""
    num_coarse_samples: int = 64
    """Stratified samples per ray."""
    num_importance_samples: int = 64
    """Importance samples per ray, drawn from the coarse weights (each sample is evaluated once)."""
    aux_num_rays: int = 1024
    """Rays per object for the source-view RGB and cross-view consistency renders."""
    silhouette_rays: int = 0
    """Rays per target view rendered at the full image resolution, drawn within silhouette_band pixels of the
    target's true outline, whose accumulation is compared with the exact foreground (silhouette_loss_mult): the
    feature render's opacity loss sees the outline only at image size / render_downscale. 0: off (genvs-tiny: 256;
    1600 steps, 3 seeds: sample LPIPS 0.225 -> 0.210, outline IoU 0.849 -> 0.866, depth 11% worse; experiments.md)."""
    silhouette_band: int = 2
    """How far (in image pixels) inside and outside the target's outline the silhouette rays are drawn."""
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
    degraded_source_prob: float = 0.0
    """Probability that an object's source views other than the first are degraded in a training step (blurred to
    the render's resolution, lightly noised), as the generated frames an autoregressive path conditions on are: the
    field learns to carry imperfect views forward instead of taking every view for the truth."""
    joint_views: int = 1
    """Views of one object the U-Net denoises together, its attention layers attending across them (GeNVS's
    multi-view branch): training draws this many target views per object, sharing one noise level, and an
    autoregressive path generates each frame beside the joint-views - 1 known views nearest it (the input, earlier
    frames), re-noised to each step's level. 1: every view alone."""
    warp_known_view: bool = False
    """Condition the U-Net also on a known view (a pair's source view; along a path the input nearest the new frame)
    warped into the new view at its rendered depth, at full resolution, with a mask of where the known view sees the
    surface (a depth test against its own rendered depth): 4 more conditioning channels (warp.py). On in genvs-tiny."""
    warp_fill_views: int = 0
    """With warp-known-view, up to this many more known views warped into each new one, each adding its pixels where
    no view before it sees the surface: in training the step's other source views (after the input), along a path the
    earlier frames nearest the new one (after the nearest input), so the residual starts from pixels already
    generated where the input does not see."""
    residual_base: Literal["render", "warp"] = "render"
    """With denoise-residual, what the U-Net's residual is added to: the rendered RGB, or ("warp", needs
    warp-known-view) the warped known view where it sees the surface and the rendered RGB elsewhere."""
    augment_prob: float = 0.12
    """Karras augmentation, when the denoiser JSON has "augment_wrapper": true: probability of each transform (flips,
    scale, rotation, anisotropy, translation), applied alike to the target and its feature image."""
    compile: Literal["auto", "on", "off"] = "auto"
    """torch.compile the training U-Net, encoder and renders (the EMA copy that samples stays eager): fuses the autocast
    casts, GroupNorm and GELU of k-diffusion's blocks, the encoder's weight casts, and each render's ray sampling,
    field MLP and compositing, into few kernels. "auto": on CUDA only; on 2 CPU cores genvs-tiny's step ran no faster
    (0.485-0.496 s against 0.479-0.490 s eager) after 30 s more of compiling with inductor's cache warm, while a
    paper-size step of 2 objects ran 1.3x faster (2.96-2.99 s against 3.87-3.88 s)."""
    precision: Precision = "auto"
    """Autocast of the encoder, field MLP and U-Net (geometry and compositing stay fp32): "auto" is bf16 where the
    device has it natively (CUDA from Ampere on; CPUs with AVX512 or AMX) and fp32 elsewhere; "fp16" (V100, T4)
    turns on the trainer's loss scaling; see precision.py."""
    cpu_reuse_freed_memory: bool = True
    """On the CPU (glibc), keep freed memory for reuse rather than returning it to the OS: large activations otherwise
    page-fault in again every step (genvs-tiny step 0.49 -> 0.45 s on 2 cores). Process-wide; see cpu_runtime.py."""
    cpu_flush_denormals: bool = True
    """On the CPU, flush denormal floats to zero: Adam's first moments of weights with no gradient decay into
    denormals and slowed the genvs-tiny step from 0.37 to 0.45-0.50 s after about 550 steps. Process-wide; see
    cpu_runtime.py."""
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
    cross_view_rgb_loss_mult: float = 0.0
    """Weight of the MSE between source view 0's pixels and the same rays rendered from source view 1's volume alone:
    a new view's colours from one view's volume, as a path's input-only frames are rendered (needs 2+ source views)."""
    silhouette_loss_mult: float = 0.1
    """Weight of the BCE between the silhouette rays' accumulation and the target's exact foreground."""
    depth_loss_mult: float = 0.0
    """Weight of the L1 between the target view's rendered depth and its true depth where the target is wholly the
    object (world units). Needs depth maps beside the images (genvs-toy-data --depth; SRN has none); 0: off. On the
    demo's cars 1 did best of 0.3, 1 and 3 (docs/experiments.md)."""
    # EMA and evaluation.
    ema_power: float = 2.0 / 3.0
    """k-diffusion EMAWarmup power; the EMA weights are used for evaluation and sampling."""
    ema_max_decay: float = 0.9999
    """Largest EMA decay."""

    def __setstate__(self, state: dict) -> None:
        # A config.yml is unpickled without __init__: a run written before view_pooling existed averaged all views, and
        # one written before encoder_norm had an unnormalised backbone (the frozen norms' identity).
        self.__dict__.update({**GeNVSModelConfig().__dict__, **LEGACY_MODEL_SETTINGS, **state})

    def check(self, prefix: str = "--pipeline.model.") -> None:
        """Every number checked before anything is built: one line naming the flag (``prefix`` + its name)."""

        def flag(name: str) -> str:
            return prefix + name.replace("_", "-")

        for name in (
            "volume_depth", "volume_resolution", "decoder_channels", "field_hidden_dim", "render_downscale",
            "num_coarse_samples", "aux_num_rays", "noise_draws", "joint_views",
        ):  # fmt: skip
            checks.at_least(flag(name), getattr(self, name), 1)
        checks.at_least(flag("silhouette_rays"), self.silhouette_rays, 0)
        checks.at_least(flag("silhouette_band"), self.silhouette_band, 1)
        checks.at_least(flag("volume_channels"), self.volume_channels, 4 if self.rgb_skip else 1)
        checks.at_least(flag("latent_channels"), self.latent_channels, 3)  # the first 3 are RGB
        checks.at_least(flag("field_num_layers"), self.field_num_layers, 2)
        checks.at_least(flag("num_importance_samples"), self.num_importance_samples, 0)
        if not self.aspp_rates or any(r < 1 for r in self.aspp_rates):
            raise GeNVSError(f"{flag('aspp_rates')} must be one or more dilation rates of at least 1")
        checks.finite(flag("noise_mean"), self.noise_mean)
        checks.greater_than(flag("noise_std"), self.noise_std, 0)
        checks.between(flag("uncond_prob"), self.uncond_prob, 0, 1)
        checks.between(flag("augment_prob"), self.augment_prob, 0, 1)
        checks.between(flag("degraded_source_prob"), self.degraded_source_prob, 0, 1)
        checks.at_least(flag("warp_fill_views"), self.warp_fill_views, 0)
        for name in ("diffusion_loss_mult", "rgb_loss_mult", "source_rgb_loss_mult", "opacity_loss_mult",
                     "depth_prior_mult", "consistency_loss_mult", "cross_view_rgb_loss_mult",
                     "silhouette_loss_mult", "depth_loss_mult"):  # fmt: skip
            checks.at_least(flag(name), getattr(self, name), 0)
        checks.greater_than(flag("object_radius"), self.object_radius, 0)
        checks.greater_than(flag("ema_power"), self.ema_power, 0)
        checks.between(flag("ema_max_decay"), self.ema_max_decay, 0, 1)
        checks.existing_file(flag("backbone_weights"), self.backbone_weights)
        if self.backbone_weights is not None and self.encoder_norm != "frozen":
            raise GeNVSError(
                f"{flag('backbone_weights')} holds batch-norm statistics: pass {flag('encoder_norm')} frozen with it"
            )
        if self.warp_known_view and self.joint_views > 1:
            raise GeNVSError(f"{flag('warp_known_view')} needs {flag('joint_views')} 1 (one view denoised at a time)")
        if self.warp_fill_views > 0 and not self.warp_known_view:
            raise GeNVSError(f"{flag('warp_fill_views')} needs {flag('warp_known_view')}")
        if self.residual_base == "warp" and not (self.warp_known_view and self.denoise_residual):
            raise GeNVSError(
                f"{flag('residual_base')} warp needs {flag('warp_known_view')} and {flag('denoise_residual')}"
            )

    def feature_hw(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """Size of the rendered feature image for images of ``image_hw``: / ``render_downscale``."""
        return image_hw[0] // self.render_downscale, image_hw[1] // self.render_downscale
