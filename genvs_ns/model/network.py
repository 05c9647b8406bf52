"""The trainable GeNVS network: encoder -> frustum field -> renderer -> denoiser, with nothing nerfstudio-specific.

Kept apart from the nerfstudio ``Model`` so that an EMA copy is one ``deepcopy`` and sampling scripts can use it alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Protocol, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from genvs_ns.geometry import image_rays, rays_through_pixels
from genvs_ns.model.denoiser import ConditionedDenoiser
from genvs_ns.model.encoder import BackboneNorm, DeepLabV3PlusEncoder
from genvs_ns.model.field import FrustumField
from genvs_ns.model.renderer import RenderedImages, RenderOutputs, RenderSettings, render_rays
from genvs_ns.model.trilinear import ViewPooling
from genvs_ns.model.warp import WARP_CHANNELS, WARP_TOLERANCE, fill_holes, warp_known_view


class NetworkConfig(Protocol):
    """The settings the network is built from, read by name from the model config (GeNVSModelConfig documents them;
    they stay flat there so that the --pipeline.model.* flags and older config.yml files keep working)."""

    volume_channels: int
    volume_depth: int
    volume_resolution: int
    decoder_channels: int
    aspp_rates: Sequence[int]
    field_hidden_dim: int
    field_num_layers: int
    latent_channels: int
    mlp_implementation: str
    denoiser_config: str
    backbone_weights: Path | None
    encoder_norm: BackboneNorm
    rgb_skip: bool
    denoise_residual: bool
    view_pooling: ViewPooling
    warp_known_view: bool
    residual_base: Literal["render", "warp"]


@dataclass
class Conditioning:
    """What a render is conditioned on: the source views' volumes and cameras, and optionally how much each view
    counts where several see a point (``weights``, None: all alike; see trilinear.trilinear_pool)."""

    volumes: Float[Tensor, "batch views C D h w"]
    c2w: Float[Tensor, "batch views 3 4"]
    K: Float[Tensor, "batch views 3 3"]
    image_hw: tuple[int, int]
    weights: Float[Tensor, "batch views"] | None = None

    def select(self, views: slice | list[int]) -> Conditioning:
        """Some views: a slice is a view of the volumes, a list a copy."""
        weights = self.weights[:, views] if self.weights is not None else None
        return Conditioning(self.volumes[:, views], self.c2w[:, views], self.K[:, views], self.image_hw, weights)

    def weighted(self, weight: float) -> Conditioning:
        """The same views, each counting ``weight`` against views of weight 1."""
        weights = torch.full(self.volumes.shape[:2], float(weight), device=self.volumes.device)
        return Conditioning(self.volumes, self.c2w, self.K, self.image_hw, weights)

    @staticmethod
    def rows(parts: list[Conditioning]) -> Conditioning:
        """Conditionings of as many views each, one after the other in the batch: one render for all of them."""
        if len(parts) == 1:
            return parts[0]
        # Concatenated as 5-D volumes, which keeps encode's channels-last layout (the lookup's no-copy case).
        volumes = torch.cat([p.volumes.flatten(0, 1) for p in parts])
        return Conditioning._joined(parts, 0, volumes.view(-1, parts[0].volumes.shape[1], *volumes.shape[1:]))

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        """Views of several conditionings (same batch) side by side: the field pools a point's features over them."""
        return Conditioning._joined(parts, 1, torch.cat([p.volumes for p in parts], dim=1))

    @staticmethod
    def _joined(parts: list[Conditioning], dim: int, volumes: Tensor) -> Conditioning:
        """``parts`` joined along the batch (``dim`` 0) or the views (1), around their joined ``volumes``."""
        weights = None
        if any(p.weights is not None for p in parts):
            weights = torch.cat(
                [p.weights if p.weights is not None else p.volumes.new_ones(p.volumes.shape[:2]) for p in parts], dim
            )
        c2w, K = (torch.cat([getattr(p, name) for p in parts], dim) for name in ("c2w", "K"))
        return Conditioning(volumes, c2w, K, parts[0].image_hw, weights)


class GeNVSNetwork(nn.Module):
    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        # With rgb_skip the first 3 volume channels are the source pixels' colours; the encoder fills the others.
        self.rgb_skip = config.rgb_skip
        self.encoder = DeepLabV3PlusEncoder(
            config.volume_channels - 3 * self.rgb_skip,
            config.volume_depth,
            (config.volume_resolution, config.volume_resolution),
            config.decoder_channels,
            tuple(config.aspp_rates),
            config.backbone_weights,
            config.encoder_norm,
        )
        self.field = FrustumField(
            config.volume_channels,
            config.field_hidden_dim,
            config.field_num_layers,
            config.latent_channels,
            config.mlp_implementation,
            colour_inputs=config.rgb_skip,
            pooling=config.view_pooling,
        )
        self.warps = config.warp_known_view
        self.denoiser = ConditionedDenoiser(
            config.denoiser_config,
            config.latent_channels,
            config.denoise_residual,
            WARP_CHANNELS * self.warps,
            warp_base=config.residual_base == "warp",
        )
        background = torch.zeros(config.latent_channels)
        background[:3] = 1.0  # SRN renders are on white
        self.register_buffer("background", background, persistent=False)
        self._compiled_render: Callable[..., RenderOutputs] | None = None

    def encode(
        self,
        images: Float[Tensor, "batch views 3 H W"],
        c2w: Float[Tensor, "batch views 3 4"],
        K: Float[Tensor, "batch views 3 3"],
    ) -> Conditioning:
        B, V = images.shape[:2]
        volumes = self.encoder(images.flatten(0, 1)).float()
        if self.rgb_skip:
            # Each pixel's own colour at every depth: the field sees the colour a point projects onto directly instead
            # of waiting for the encoder to learn to carry it. Kept as channels of their own: added to the encoder's
            # features, the colour was lost in them.
            rgb = F.adaptive_avg_pool2d(images.flatten(0, 1), volumes.shape[-2:])[:, :, None]
            volumes = torch.cat([rgb.expand(-1, -1, volumes.shape[2], -1, -1), volumes], dim=1)
        # Channels-last puts a voxel's C features side by side: the field's grid_sample forward+backward is a third
        # faster on the CPU. Done once here rather than at every lookup (coarse, fine, each chunk and aux render).
        volumes = volumes.contiguous(memory_format=torch.channels_last_3d)
        return Conditioning(volumes.view(B, V, *volumes.shape[1:]), c2w, K, tuple(images.shape[-2:]))

    def compile_render(self) -> None:
        """torch.compile every render of this network (lookup, field MLP, compositing) from its next call."""
        self._compiled_render = torch.compile(GeNVSNetwork._render)

    def render(
        self,
        cond: Conditioning,
        origins: Float[Tensor, "batch rays 3"],
        directions: Float[Tensor, "batch rays 3"],
        settings: RenderSettings,
    ) -> RenderOutputs:
        return (self._compiled_render or GeNVSNetwork._render)(self, cond, origins, directions, settings)

    def _render(self, cond: Conditioning, origins: Tensor, directions: Tensor, rs: RenderSettings) -> RenderOutputs:
        def field_fn(points: Tensor) -> tuple[Tensor, Tensor]:
            feats = self.field.lookup(cond.volumes, points, cond.c2w, cond.K, cond.image_hw, rs.radius, cond.weights)
            return self.field(feats)

        return render_rays(field_fn, origins, directions, rs, self.background)

    def render_image(
        self,
        cond: Conditioning,
        c2w: Float[Tensor, "targets 3 4"],
        K: Float[Tensor, "targets 3 3"],
        image_hw: tuple[int, int],
        out_hw: tuple[int, int],
        settings: RenderSettings,
        chunk: int = 1 << 14,
    ) -> RenderedImages:
        """Feature images, depth and accumulation of the targets at ``out_hw``. The targets are a whole number per
        conditioned object, object-major (joint training renders several of each)."""
        B, T, (h, w) = cond.volumes.shape[0], c2w.shape[0], out_hw
        if T % B:
            raise ValueError(f"{T} target cameras for {B} conditioned objects")
        # One object's targets are rays of one batch row: its volumes are looked up once, not copied per target.
        origins, directions = (t.reshape(B, -1, 3) for t in image_rays(c2w, K, image_hw, out_hw))
        parts = [
            self.render(cond, o, d, settings)
            for o, d in zip(origins.split(chunk, dim=1), directions.split(chunk, dim=1))
        ]

        def image(values: list[Tensor]) -> Tensor:
            x = torch.cat(values, dim=1)
            return (x if x.dim() == 3 else x[..., None]).reshape(T, h * w, -1).transpose(1, 2).reshape(T, -1, h, w)

        return RenderedImages(
            image([p.features for p in parts]),
            image([p.depth for p in parts]),
            image([p.accumulation for p in parts]),
        )

    def render_pixels(
        self,
        cond: Conditioning,
        c2w: Float[Tensor, "targets 3 4"],
        K: Float[Tensor, "targets 3 3"],
        uv: Float[Tensor, "targets rays 2"],
        settings: RenderSettings,
    ) -> RenderOutputs:
        """The rays through pixels ``uv`` of each target, per target. As in ``render_image``, a whole number of
        targets per conditioned object, object-major: one object's targets are rays of one batch row."""
        B, (T, n) = cond.volumes.shape[0], uv.shape[:2]
        if T % B:
            raise ValueError(f"{T} target cameras for {B} conditioned objects")
        origins, directions = (t.reshape(B, -1, 3) for t in rays_through_pixels(c2w, K, uv))
        out = self.render(cond, origins, directions, settings)
        return RenderOutputs(out.features.reshape(T, n, -1), out.depth.reshape(T, n), out.accumulation.reshape(T, n))

    def warp_known(
        self,
        cond: Conditioning,
        known: Float[Tensor, "batch known 3 H W"],
        known_c2w: Float[Tensor, "batch known 3 4"],
        known_K: Float[Tensor, "batch known 3 3"],
        target_c2w: Float[Tensor, "batch 3 4"],
        target_K: Float[Tensor, "batch 3 3"],
        target_hw: tuple[int, int],
        target: RenderedImages,
        settings: RenderSettings,
        edge_margins: Sequence[int] = (),
    ) -> Float[Tensor, "batch 4 H W"]:
        """Each conditioned object's known views carried into its target (warp_known_view is not combined with joint
        views, so one target per object) at the target's rendered ``depth`` and ``accumulation`` (``render_image``'s
        output): the denoiser's extra conditioning channels (warp.py). The first known view's pixels wherever it sees
        the surface, each later view's where no view before it does (the mask: where any does). Each known view's
        depth and opacity, for the occlusion test, are rendered here from the same conditioning at the target's render
        size. ``edge_margins``: per known view, pixels next to its silhouette that count as unseen (none where not
        given; warp.known_edge_margin)."""
        if not known.shape[0] == target_c2w.shape[0] == cond.volumes.shape[0]:
            raise ValueError(f"known views of {known.shape[0]} objects for {target_c2w.shape[0]} targets: one each")
        known_hw, hw = tuple(known.shape[-2:]), tuple(target.depth.shape[-2:])
        warps = []
        for view in range(known.shape[1]):
            with torch.no_grad():
                seen = self.render_image(cond, known_c2w[:, view], known_K[:, view], known_hw, hw, settings)
            warp = warp_known_view(
                known[:, view],
                known_c2w[:, view],
                known_K[:, view],
                seen.depth,
                seen.accumulation,
                target_c2w,
                target_K,
                target_hw,
                target.depth.detach(),
                target.accumulation.detach(),
                WARP_TOLERANCE * settings.radius,
                edge_margins[view] if view < len(edge_margins) else 0,
            )
            warps.append(warp)
        return fill_holes(warps)

    @staticmethod
    def upsample(features: Float[Tensor, "batch L h w"], image_hw: tuple[int, int]) -> Float[Tensor, "batch L H W"]:
        if tuple(features.shape[-2:]) == tuple(image_hw):
            return features
        return F.interpolate(features, size=image_hw, mode="bilinear", align_corners=False)
