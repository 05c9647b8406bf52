"""Target views of encoded source views: the NeRF render and, given a sampler, a diffusion sample.

What ns-eval, ns-render, the viewer, genvs-sample, genvs-contact-sheet and scripts/quality.py show, built on the
model's encode / render / render_features and the denoiser.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from genvs_ns.data.prefetch import ObjectBatch
from genvs_ns.model.genvs_model import GeNVSModel
from genvs_ns.model.network import Conditioning
from genvs_ns.model.outputs import ViewRenders
from genvs_ns.sampling import SamplerSettings
from genvs_ns.sampling.diffusion import Generators, KnownViews, sample


@dataclass
class KnownFrames:
    """Frames already known (input views, earlier generated frames) at the source image size, per target view."""

    images: Float[Tensor, "batch known 3 H W"]
    """Pixels in [0, 1]."""
    c2w: Float[Tensor, "batch known 3 4"]
    K: Float[Tensor, "batch known 3 3"]
    edge_margins: tuple[int, ...] = ()
    """Per known view, warped: pixels next to its silhouette that count as unseen (none where not given)."""


@torch.no_grad()
def render_views(
    model: GeNVSModel,
    cond: Conditioning,
    target_c2w: Float[Tensor, "batch 3 4"],
    target_K: Float[Tensor, "batch 3 3"],
    target_hw: tuple[int, int] | None = None,
    sampling: SamplerSettings | None = None,
    generator: Generators = None,
    callback: Callable | None = None,
    use_ema: bool = True,
    known: KnownFrames | None = None,
) -> ViewRenders:
    """The NeRF render at ``target_hw`` (default: the source image size; ``target_K`` in its pixels); with ``sampling``
    also the sample and the feature image it was conditioned on. The denoiser always works at the source image size;
    its sample is resized to ``target_hw`` where that differs. ``known`` frames: a denoiser trained with several joint
    views denoises each sample beside them; one trained with warp_known_view is conditioned on them warped into the
    target (the first where it sees the surface, the others in its holes)."""
    out = model.render(cond, target_c2w, target_K, target_hw, use_ema)
    if sampling is not None:
        H, W = cond.image_hw
        net = model.network(use_ema)
        views = (known.images, known.c2w, known.K) if known is not None else None
        margins = known.edge_margins if known is not None else ()
        features, cond_image = model.denoiser_conditioning(
            cond, target_c2w, target_K, target_hw, use_ema, views, margins
        )
        joint = None
        if known is not None and model.config.joint_views > 1:
            B, J = known.images.shape[:2]
            # The known frames' features, rendered from the same conditioning as the new view's, at the denoiser's size.
            rendered = model.render_features(cond, known.c2w.flatten(0, 1), known.K.flatten(0, 1), (H, W), use_ema)
            upsampled = net.upsample(rendered, (H, W))
            joint = KnownViews(known.images, upsampled.view(B, J, *upsampled.shape[1:]))
        with model.autocast():
            image = sample(net.denoiser, cond_image, sampling, generator, callback, known=joint).float()
        if tuple(target_hw or (H, W)) != (H, W):
            image = F.interpolate(image, size=target_hw, mode="bilinear", align_corners=False)
        out = replace(out, sample=image, features=features)
    return out


@torch.no_grad()
def render_pairs(
    model: GeNVSModel,
    batch: ObjectBatch,
    sampling: SamplerSettings | None = None,
    generator: torch.Generator | None = None,
    callback: Callable | None = None,
) -> ViewRenders:
    """``render_views`` for a batch of evaluation pairs (the datamanager's ``eval_batch``), EMA weights; a model
    trained with joint_views > 1 denoises each target beside (up to joint_views - 1 of) its source views."""
    cond = model.encode(batch.source_images, batch.source_c2w, batch.source_K)
    known = sources_as_known(model, batch.source_images, batch.source_c2w, batch.source_K)
    return render_views(model, cond, batch.target_c2w, batch.target_K, None, sampling, generator, callback, known=known)


def sources_as_known(
    model: GeNVSModel,
    images: Float[Tensor, "batch views 3 H W"],
    c2w: Float[Tensor, "batch views 3 4"],
    K: Float[Tensor, "batch views 3 3"],
) -> KnownFrames | None:
    """The source views a sample needs: the first ``known_per_sample`` of them (None where it needs none)."""
    joint = known_per_sample(model)
    return KnownFrames(images[:, :joint], c2w[:, :joint], K[:, :joint]) if joint > 0 else None


def known_per_sample(model: GeNVSModel, fill_views: int | None = None) -> int:
    """How many known views each sample takes: joint_views - 1 to be denoised beside, or one to be warped into it
    and ``fill_views`` (default: warp_fill_views, as trained) more to fill its holes (0: samples need none)."""
    config = model.config
    fill = config.warp_fill_views if fill_views is None else fill_views
    return max(config.joint_views - 1, (1 + fill) * int(config.warp_known_view))
