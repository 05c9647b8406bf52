"""Autoregressive generation along a camera path.

Each new frame is sampled conditioned on the input view(s), up to ``max_earlier_frames`` earlier generated frames and
the previous frame (GeNVS's recipe; ``context.py`` chooses them): generated frames become source views of their own, so
later frames stay consistent with what was already shown. Every view is encoded once; its volume is reused by later
frames. A model trained with ``joint_views`` > 1 also denoises each frame beside the known views nearest it, so that
the U-Net's attention sees their detail directly, not only the blur of it the feature field carries; one trained with
``warp_known_view`` is conditioned on the input nearest each frame warped into it and, where the input does not see,
on the earlier frames nearest it (the policy's ``fill_views``; their silhouettes' soft edges left out).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from genvs_ns.model.denoiser import to_pixels
from genvs_ns.model.genvs_model import GeNVSModel
from genvs_ns.model.network import Conditioning
from genvs_ns.sampling import SamplerSettings
from genvs_ns.sampling.context import ContextPolicy, choose_context, nearest_known
from genvs_ns.sampling.views import KnownFrames, known_per_sample, render_views


@dataclass
class GeneratedPath:
    samples: Float[Tensor, "frames 3 H W"]
    nerf_rgb: Float[Tensor, "frames 3 H W"]
    context: list[list[str]]  # per frame: which views conditioned it ("input0", "frame3", ...)
    # The NeRF's rendered depth (distance along the unit ray) and opacity of each frame, for the consistency scores.
    depth: Float[Tensor, "frames H W"] = field(default_factory=lambda: torch.empty(0))
    accumulation: Float[Tensor, "frames H W"] = field(default_factory=lambda: torch.empty(0))
    progress: list[Tensor] = field(default_factory=list)  # per frame: [steps, 3, H, W] denoised estimates


@torch.no_grad()
def generate_path(
    model: GeNVSModel,
    input_images: Float[Tensor, "views 3 H W"],
    input_c2w: Float[Tensor, "views 3 4"],
    input_K: Float[Tensor, "views 3 3"],
    target_c2w: Float[Tensor, "frames 3 4"],
    target_K: Float[Tensor, "frames 3 3"],
    settings: SamplerSettings,
    policy: ContextPolicy,
    seed: int = 0,
    save_progress: bool = False,
    on_frame: Callable[[int], None] | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> GeneratedPath:
    device = model.device
    generator = torch.Generator(device=device).manual_seed(seed)
    picker = random.Random(seed)

    def encode(image: Tensor, c2w: Tensor, K: Tensor) -> Conditioning:
        return model.encode(image[None, None].to(device), c2w[None, None].to(device), K[None, None].to(device))

    inputs = [encode(img, c, k) for img, c, k in zip(input_images, input_c2w, input_K)]
    # Known views each frame needs: to be denoised beside (a joint model, unless the policy says no) or warped into it.
    warps = model.config.warp_known_view
    known_count = known_per_sample(model, policy.fill_views) if policy.joint or warps else 0
    # Views a frame can be denoised beside: the inputs, then each generated frame as it comes (image, c2w, K).
    known_pool = [(img.cpu(), c.cpu(), k.cpu()) for img, c, k in zip(input_images, input_c2w, input_K)]
    frames: list[Conditioning] = []
    result = GeneratedPath(samples=torch.empty(0), nerf_rgb=torch.empty(0), context=[])
    samples, nerf, depth, accumulation = [], [], [], []
    for i in range(len(target_c2w)):
        names = [f"input{k}" for k in range(len(inputs))]
        views = list(inputs)
        chosen = choose_context(i, target_c2w, policy, picker)
        views += [frames[j].weighted(policy.generated_frame_weight) for j in chosen]
        names += [f"frame{j}" for j in chosen]
        steps: list[Tensor] = []

        def callback(info: dict, steps: list = steps) -> None:
            if save_progress:
                steps.append(to_pixels(info["denoised"][0].float()).cpu())
            if on_step is not None:
                on_step(info)

        known = None
        if known_count > 0:
            # The known views nearest the new frame (the input, earlier frames), denoised beside it or warped into it.
            picks = nearest_known(i, target_c2w, input_c2w, known_count, policy)
            parts = (torch.stack(part)[None].to(device) for part in zip(*(known_pool[j] for j in picks)))
            # Generated frames' soft silhouettes are left out of their warps; the inputs' are the photos' own.
            margins = tuple(0 if j < len(inputs) else policy.generated_edge_margin for j in picks) if warps else ()
            known = KnownFrames(*parts, edge_margins=margins)
            role = "warped" if warps else "beside"
            names += [f"{role}:input{j}" if j < len(inputs) else f"{role}:frame{j - len(inputs)}" for j in picks]
        out = render_views(
            model,
            Conditioning.cat(views),
            target_c2w[i][None].to(device),
            target_K[i][None].to(device),
            sampling=settings,
            generator=generator,
            callback=callback,
            known=known,
        )
        frame = out.sample[0]
        samples.append(frame.cpu())
        known_pool.append((samples[-1], target_c2w[i].cpu(), target_K[i].cpu()))
        nerf.append(out.rgb[0].cpu())
        depth.append(out.depth[0, 0].float().cpu())
        accumulation.append(out.accumulation[0, 0].float().cpu())
        frames.append(encode(frame, target_c2w[i], target_K[i]))
        result.context.append(names)
        if save_progress:
            result.progress.append(torch.stack(steps))
        if on_frame is not None:
            on_frame(i)
    result.samples, result.nerf_rgb = torch.stack(samples), torch.stack(nerf)
    result.depth, result.accumulation = torch.stack(depth), torch.stack(accumulation)
    return result
