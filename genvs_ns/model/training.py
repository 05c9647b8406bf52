"""The forward pass of a training step: what the losses (losses.py) compare, from one object batch."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Callable, Protocol

import k_diffusion as K
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from genvs_ns.data.images import foreground
from genvs_ns.data.prefetch import ObjectBatch
from genvs_ns.geometry import image_rays
from genvs_ns.model.augment import augment_jointly
from genvs_ns.model.denoiser import to_denoiser_range
from genvs_ns.model.losses import RayRender, SilhouetteRays, TrainingOutputs
from genvs_ns.model.network import Conditioning, GeNVSNetwork
from genvs_ns.model.renderer import RenderSettings

Autocast = Callable[[], AbstractContextManager]


class TrainingSettings(Protocol):
    """The model config's training settings, read by name (GeNVSModelConfig documents them)."""

    def feature_hw(self, image_hw: tuple[int, int]) -> tuple[int, int]: ...

    aux_num_rays: int
    silhouette_rays: int
    silhouette_band: int
    noise_mean: float
    noise_std: float
    noise_draws: int
    uncond_prob: float
    augment_prob: float
    degraded_source_prob: float
    warp_fill_views: int


def area_resize(images: Float[Tensor, "b c H W"], hw: tuple[int, int]) -> Float[Tensor, "b c h w"]:
    return images if tuple(images.shape[-2:]) == tuple(hw) else F.adaptive_avg_pool2d(images, hw)


def degrade_sources(
    images: Float[Tensor, "batch views 3 H W"], prob: float, factor: int, noise: float = 0.02
) -> Float[Tensor, "batch views 3 H W"]:
    """Views 1.. of each object, with probability ``prob`` per object, area-downsampled by ``factor`` and bilinearly
    upsampled (the detail a render at that resolution lacks) plus Gaussian noise; view 0, the input, stays clean."""
    B, V, _, H, W = images.shape
    if prob <= 0 or V < 2:
        return images
    rest = images[:, 1:].flatten(0, 1)
    blurred = F.interpolate(F.avg_pool2d(rest, factor), size=(H, W), mode="bilinear", align_corners=False)
    blurred = (blurred + noise * torch.randn_like(blurred)).clamp(0, 1).view(B, V - 1, 3, H, W)
    chosen = (torch.rand(B, device=images.device) < prob)[:, None, None, None, None]
    return torch.cat([images[:, :1], torch.where(chosen, blurred, images[:, 1:])], dim=1)


def training_outputs(
    net: GeNVSNetwork, config: TrainingSettings, batch: ObjectBatch, rs: RenderSettings, autocast: Autocast
) -> TrainingOutputs:
    """One training step's forward pass: the target views' feature images and their denoising loss (an object's
    targets denoised jointly where it has several), source view 0 re-rendered on a ray subset (from its own volume
    and from source 1's), and the ground truth at render size."""
    c = config
    src, tgt = batch.source_images, batch.target_image
    B, V = src.shape[:2]
    views = batch.targets_per_object
    H, W = tgt.shape[-2:]
    h, w = c.feature_hw((H, W))
    conditioning = degrade_sources(src, c.degraded_source_prob, max(H // h, 2))
    with autocast():
        cond = net.encode(conditioning, batch.source_c2w, batch.source_K)
        target = net.render_image(cond, batch.target_c2w, batch.target_K, (H, W), (h, w), rs)
        # The input view (source 0, never degraded) warped into each target, where the model is conditioned on it,
        # and with warp_fill_views the step's other source views (as the encoder sees them) where the input does not
        # see, as a path fills from earlier frames.
        warped = None
        if net.warps:
            known = slice(0, 1 + c.warp_fill_views)
            warped = net.warp_known(
                cond,
                conditioning[:, known],
                batch.source_c2w[:, known],
                batch.source_K[:, known],
                batch.target_c2w,
                batch.target_K,
                (H, W),
                target,
                rs,
            )
    mask = foreground(tgt)
    silhouette = None
    if c.silhouette_rays > 0:
        silhouette = silhouette_render(net, cond, batch, mask, c.silhouette_rays, c.silhouette_band, rs, autocast)
    features = target.features
    diffusion = diffusion_loss(net, c, features, tgt, autocast, views, warped)

    # Source view 0 re-rendered on a ray subset from its own volume (and from source 1's, if there is one).
    n = c.aux_num_rays
    # Drawn on the device: a CPU draw and its copy were two host-to-device transfers a step.
    device = tgt.device
    uv = torch.stack([torch.randint(0, W, (B, n), device=device), torch.randint(0, H, (B, n), device=device)], -1)
    pixels = src[:, 0].permute(0, 2, 3, 1)[torch.arange(B, device=device)[:, None], uv[..., 1], uv[..., 0]]
    own_c2w, own_K = batch.source_c2w[:, 0], batch.source_K[:, 0]
    # From source 0's volume and, with a second source view, from source 1's: the same rays, so one render of both
    # (objects twice over in the batch) where two renders made every operator and kernel launch twice. Slices, not
    # lists: list indexing copied whole volumes and scattered full-size zero gradients back.
    aux = min(V, 2)
    with autocast():
        both = net.render_pixels(
            Conditioning.rows([cond.select(slice(v, v + 1)) for v in range(aux)]),
            own_c2w.repeat(aux, 1, 1),
            own_K.repeat(aux, 1, 1),
            (uv + 0.5).repeat(aux, 1, 1),
            rs,
        )
    own, *others = (
        RayRender(f[..., :3], d, a)
        for f, d, a in zip(both.features.chunk(aux), both.depth.chunk(aux), both.accumulation.chunk(aux))
    )
    # The depth prior's reference: each render ray's closest approach to the origin, where objects are centred.
    origins, directions = image_rays(batch.target_c2w, batch.target_K, (H, W), (h, w))
    return TrainingOutputs(
        features=features,
        depth=target.depth,
        accumulation=target.accumulation,
        diffusion=diffusion,
        target_rgb=area_resize(tgt, (h, w)),
        target_foreground=area_resize(mask, (h, w)),
        closest_approach=-(origins * directions).sum(-1).view(-1, 1, h, w),
        source=own,
        source_truth=pixels,
        other=others[0] if others else None,
        target_depth=None if batch.target_depth is None else depth_at(batch.target_depth, (h, w)),
        silhouette=silhouette,
    )


def silhouette_pixels(
    mask: Float[Tensor, "batch 1 H W"], rays: int, band: int, generator: torch.Generator | None = None
) -> Int[Tensor, "batch rays 2"]:
    """``rays`` pixel indices (x, y) per image, drawn with replacement from the pixels within ``band`` of the mask's
    outline (inside or outside); uniformly from the whole image where a mask has no outline."""
    B, _, H, W = mask.shape
    k = 2 * band + 1
    dilated = F.max_pool2d(mask, k, stride=1, padding=band)
    eroded = -F.max_pool2d(-mask, k, stride=1, padding=band)
    near = (dilated - eroded).flatten(1)
    # An all-white or all-object view has no outline: a small floor keeps the draw defined there.
    index = torch.multinomial(near + 1e-6, rays, replacement=True, generator=generator)
    return torch.stack([index % W, index // W], dim=-1)


def silhouette_render(
    net: GeNVSNetwork,
    cond: Conditioning,
    batch: ObjectBatch,
    mask: Float[Tensor, "batch 1 H W"],
    rays: int,
    band: int,
    rs: RenderSettings,
    autocast: Autocast,
) -> SilhouetteRays:
    """The target views' accumulation on rays near their true outline (``mask``: their foreground), at the full image
    resolution."""
    uv = silhouette_pixels(mask, rays, band)
    rows = torch.arange(mask.shape[0], device=mask.device)[:, None]
    truth = mask[:, 0][rows, uv[..., 1], uv[..., 0]]
    with autocast():
        out = net.render_pixels(cond, batch.target_c2w, batch.target_K, uv + 0.5, rs)
    return SilhouetteRays(out.accumulation, truth)


def depth_at(depth: Float[Tensor, "b 1 H W"], hw: tuple[int, int]) -> Float[Tensor, "b 1 h w"]:
    """True depth (0 on background) area-averaged to ``hw``, kept only where a pixel is wholly the object: at a
    silhouette the average would blend the surface with the background's zeros."""
    whole = -F.adaptive_max_pool2d(-(depth > 0).to(depth.dtype), hw)
    return area_resize(depth, hw) * whole


def diffusion_loss(
    net: GeNVSNetwork,
    config: TrainingSettings,
    features: Float[Tensor, "batch L h w"],
    target: Float[Tensor, "batch 3 H W"],
    autocast: Autocast,
    views: int = 1,
    warped: Float[Tensor, "batch 4 H W"] | None = None,
) -> Float[Tensor, " batch*draws"]:
    """EDM denoising loss on the target views, conditioned on the upsampled feature images or (sometimes) on noise;
    ``noise_draws`` noise levels and noises per feature image (the encoder and the render are paid once per
    object). ``views`` > 1: each run of that many targets (one object's) shares its noise level and conditioning
    dropout and is denoised jointly, as sampling denoises a new frame beside known views. ``warped``: a known view
    carried into each target (warp.py), conditioning channels after the features, dropped with them."""
    c, draws = config, config.noise_draws
    B, (H, W) = target.shape[0], target.shape[-2:]
    groups = B * draws // views
    cond_image, x0, aug_cond = net.upsample(features, (H, W)), to_denoiser_range(target), None
    if warped is not None:
        cond_image = torch.cat([cond_image, warped.to(cond_image.dtype)], dim=1)
    if net.denoiser.augment:
        # Non-leaking: the U-Net is told which transform moved target and conditioning; sampling uses none.
        (x0, cond_image), aug_cond = augment_jointly([x0, cond_image], c.augment_prob)
    if draws > 1:
        x0, cond_image = x0.repeat(draws, 1, 1, 1), cond_image.repeat(draws, 1, 1, 1)
        aug_cond = aug_cond.repeat(draws, 1) if aug_cond is not None else None
    uncond = (torch.rand(groups, device=target.device) < c.uncond_prob).float()
    uncond = uncond.repeat_interleave(views) if views > 1 else uncond
    cond_image = torch.where(uncond[:, None, None, None] > 0, torch.randn_like(cond_image), cond_image)
    sigma = K.utils.rand_log_normal([groups], loc=c.noise_mean, scale=c.noise_std, device=target.device)
    sigma = sigma.repeat_interleave(views) if views > 1 else sigma
    with autocast():
        return net.denoiser.loss(x0, sigma, cond_image, uncond, aug_cond, views).float()
