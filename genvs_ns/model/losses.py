"""GeNVS's training outputs and auxiliary losses: pure functions, tensors in and one loss out.

The model renders a ``TrainingOutputs`` in its forward pass; ``training_losses`` weighs the terms with the config's
``*_mult`` and names them as nerfstudio logs them. The denoising loss itself is k-diffusion's (``Denoiser.loss``),
computed in the forward pass where the noise is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Protocol

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


@dataclass
class RayRender:
    """A render of some rays: features (RGB first), depth and accumulation per ray."""

    rgb: Float[Tensor, "batch rays 3"]
    depth: Float[Tensor, "batch rays"]
    accumulation: Float[Tensor, "batch rays"]


@dataclass
class SilhouetteRays:
    """Target-view rays near the true outline, at the full image resolution."""

    accumulation: Float[Tensor, "batch rays"]
    foreground: Float[Tensor, "batch rays"]
    """1 where the ray's pixel is the object."""


@dataclass
class TrainingOutputs:
    """What one training step renders, with the ground truth at the render's resolution."""

    features: Float[Tensor, "batch L h w"]
    """The target view's feature image (RGB first) at the denoiser's conditioning resolution."""
    depth: Float[Tensor, "batch 1 h w"]
    accumulation: Float[Tensor, "batch 1 h w"]
    diffusion: Float[Tensor, " samples"]
    """k-diffusion's per-sample denoising loss (several per object with noise_draws > 1)."""
    target_rgb: Float[Tensor, "batch 3 h w"]
    """The target view, area-averaged to the render's resolution."""
    target_foreground: Float[Tensor, "batch 1 h w"]
    """Its non-white pixels, area-averaged likewise."""
    closest_approach: Float[Tensor, "batch 1 h w"]
    """Depth along each render ray of its closest approach to the origin (where objects are centred)."""
    source: RayRender
    """Source view 0 re-rendered on a ray subset from its own volume."""
    source_truth: Float[Tensor, "batch rays 3"]
    """Those rays' pixels."""
    other: RayRender | None
    """The same rays rendered from source view 1's volume (None with a single source view)."""
    target_depth: Float[Tensor, "batch 1 h w"] | None = None
    """The target's true depth at render size where a pixel is wholly the object, 0 elsewhere (None: no depth maps)."""
    silhouette: SilhouetteRays | None = None
    """With silhouette_rays: the target's rays near its outline (None: off)."""

    @property
    def rgb(self) -> Float[Tensor, "batch 3 h w"]:
        return self.features[:, :3]


def image_mse(prediction: Tensor, truth: Tensor) -> Tensor:
    return F.mse_loss(prediction, truth)


def opacity_bce(
    accumulation: Float[Tensor, "batch 1 h w"], foreground: Float[Tensor, "batch 1 h w"]
) -> Float[Tensor, ""]:
    """BCE between accumulation and the foreground mask. As logits: CUDA autocast refuses F.binary_cross_entropy
    (nerfstudio runs the losses under autocast with --mixed-precision True) and runs the logits form in fp32."""
    acc = accumulation.clamp(1e-4, 1 - 1e-4)
    return F.binary_cross_entropy_with_logits(torch.logit(acc.float()), foreground)


def depth_prior(
    depth: Float[Tensor, "batch 1 h w"],
    closest_approach: Float[Tensor, "batch 1 h w"],
    foreground: Float[Tensor, "batch 1 h w"],
    object_radius: float,
) -> Float[Tensor, ""]:
    """Mean over foreground pixels of how far the rendered depth lies beyond ``object_radius`` from the ray's closest
    approach to the origin: discourages detail floating between the object and the camera."""
    far_off = F.relu((depth - closest_approach).abs() - object_radius)
    return (far_off * foreground).sum() / foreground.sum().clamp_min(1.0)


def view_consistency(own: RayRender, other: RayRender) -> Float[Tensor, ""]:
    """L1 between the depth (where the own render is opaque) and the accumulation of the same rays rendered from two
    source views' volumes."""
    depth_gap = (own.depth - other.depth).abs()
    acc_gap = (own.accumulation - other.accumulation).abs()
    visible = own.accumulation.detach() > 0.5
    return (depth_gap * visible).sum() / visible.sum().clamp_min(1) + acc_gap.mean()


def depth_l1(depth: Float[Tensor, "batch 1 h w"], truth: Float[Tensor, "batch 1 h w"]) -> Float[Tensor, ""]:
    """Mean |rendered - true depth| over the pixels with a true depth (non-zero)."""
    known = (truth > 0).to(depth.dtype)
    return ((depth - truth).abs() * known).sum() / known.sum().clamp_min(1.0)


class LossWeights(Protocol):
    """The model config's loss settings, read by name."""

    diffusion_loss_mult: float
    rgb_loss_mult: float
    source_rgb_loss_mult: float
    opacity_loss_mult: float
    depth_prior_mult: float
    consistency_loss_mult: float
    cross_view_rgb_loss_mult: float
    depth_loss_mult: float
    silhouette_loss_mult: float
    object_radius: float


def training_losses(out: TrainingOutputs, weights: LossWeights) -> Dict[str, Tensor]:
    """The weighted terms under the names nerfstudio logs (the cross-view terms only with a second source view, the
    depth loss only with the targets' depth)."""
    w = weights
    named = {
        "diffusion_loss": w.diffusion_loss_mult * out.diffusion.mean(),
        "rgb_loss": w.rgb_loss_mult * image_mse(out.rgb, out.target_rgb),
        "source_rgb_loss": w.source_rgb_loss_mult * image_mse(out.source.rgb, out.source_truth),
        "opacity_loss": w.opacity_loss_mult * opacity_bce(out.accumulation, out.target_foreground),
        "depth_prior_loss": w.depth_prior_mult
        * depth_prior(out.depth, out.closest_approach, out.target_foreground, w.object_radius),
    }
    if out.target_depth is not None and w.depth_loss_mult > 0:
        named["depth_loss"] = w.depth_loss_mult * depth_l1(out.depth, out.target_depth)
    if out.silhouette is not None:
        named["silhouette_loss"] = w.silhouette_loss_mult * opacity_bce(
            out.silhouette.accumulation, out.silhouette.foreground
        )
    if out.other is not None:
        named["consistency_loss"] = w.consistency_loss_mult * view_consistency(out.source, out.other)
        if w.cross_view_rgb_loss_mult > 0:
            named["cross_view_rgb_loss"] = w.cross_view_rgb_loss_mult * image_mse(out.other.rgb, out.source_truth)
    return named
