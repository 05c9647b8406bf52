"""Which views condition each frame of an autoregressive path: the policy and the choice, free of heavy imports so
that commands can show the policy's fields as flags."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from genvs_ns import checks
from genvs_ns.errors import GeNVSError


@dataclass
class ContextPolicy:
    """Which views condition each new frame: the input view(s) always, then earlier generated frames."""

    autoregressive: bool = True
    """Condition each frame on earlier generated frames as well (--no-autoregressive: on the input view(s) alone)."""
    max_earlier_frames: int = 4
    """Autoregressive: up to this many earlier generated frames besides the previous one."""
    include_previous: bool = True
    """Autoregressive: always condition on the frame just before."""
    earlier_frames: Literal["random", "nearest"] = "random"
    """Autoregressive: how the earlier frames are chosen: at random (GeNVS's recipe), or those whose cameras are
    nearest the new frame's (by the angle between camera positions seen from the object's centre)."""
    joint: bool = True
    """With a model trained with joint-views > 1: denoise each frame beside the known views nearest it (the input(s),
    and earlier frames when autoregressive), as it was trained. False: every frame alone. (A model trained with
    warp-known-view always has its known views warped in.)"""
    # Why not "nearest" (genvs-tiny with the warp, 3 training seeds x 4 cars x 23 frames): warping the nearest earlier
    # frame first resamples every frame from the one before, and the blur compounds: last-third LPIPS 0.300 against
    # 0.283 for frames sampled on the input alone; from the input only, 0.280 (PSNR 16.10 against 16.04). With 4 fill
    # views (8 cars): "nearest" agrees more (16% against 10%) but loses the input's sharp pixels (last-third LPIPS
    # 0.271 against 0.261). With one known view a frame "input-first" is "inputs"; with more (fill_views, joint views)
    # the others come from earlier frames too. (The joint-view runs of 2026-12-05 were measured with "nearest".)
    known_views: Literal["input-first", "inputs", "nearest"] = "input-first"
    """The known views a joint model denoises each frame beside, or a warp model warps into it: the nearest input
    first, then those nearest the new frame among the other inputs and (autoregressive) earlier frames; the nearest
    among the input(s) only; or the nearest among the input(s) and earlier frames."""
    # Why 4 earlier frames with a 2-pixel margin (genvs-tiny, sampling only, 3 training seeds x 8 cars x 23 frames;
    # docs/experiments.md, "Earlier frames kept where the input does not see"): the frames agree 10% better than each
    # sampled on the input alone (30.1 against 33.6 MAD) and look better along the path (last-third LPIPS 0.261
    # against 0.268) for 0.14 dB of PSNR; without a margin the kept frames paled at their edges frame by frame (0.36 dB
    # at 2 frames); 0 frames is the old default (2%, +0.05 dB).
    fill_views: int = 4
    """A model trained with warp-known-view: up to this many more known views after the first (the other inputs and,
    autoregressive, earlier frames; as --known-views orders them) warped into each frame, each where the views before
    it do not see (0: the first known view alone)."""
    # Why 2, not 1 (preset, 3200 steps, 3 seeds x 4 cars; docs/experiments.md, "How near the truth the geometry must
    # be"): on the field's geometry 1 px agrees 12% better than input-only frames for 0.48 dB, 2 px 8% for 0.12; warped
    # at the true geometry 1 px meets issue 23's target (22% at -0.13 dB): worth trying on a field near the truth.
    generated_edge_margin: int = 2
    """Pixels next to a warped earlier frame's silhouette that count as unseen: the sample's soft edge against the
    white background is not the object's colour."""
    # Why 0.01 (genvs-tiny, 4 paths x 23 frames, sampling seed 0; docs/experiments.md, 2026-12-07, third session):
    # at 1 the input was one voice of up to six and the paths lost quality to frames sampled on the input alone; at 0.1
    # the NeRF RGB conditioned on generated frames was still worse than on the input alone at 3200 steps (LPIPS +0.0035
    # on held-out cars, +0.0046 on unseen kinds, three training seeds); at 0.01 it is level everywhere (-0.0002,
    # -0.0001; -0.0019 at 1600 steps), the samples' last third within 0.0035 LPIPS and their agreement within 0.4 MAD.
    generated_frame_weight: float = 0.01
    """Autoregressive: how much a generated frame counts against an input view where both see a point, in (0, 1]
    (1: alike): below 1 the input's features win where it sees the point and generated frames fill in where not."""

    def check(self) -> None:
        checks.at_least("--max-earlier-frames", self.max_earlier_frames, 0)
        checks.at_least("--fill-views", self.fill_views, 0)
        checks.at_least("--generated-edge-margin", self.generated_edge_margin, 0)
        if not 0 < self.generated_frame_weight <= 1:
            raise GeNVSError(f"--generated-frame-weight must be in (0, 1], not {self.generated_frame_weight}")


def choose_context(
    frame: int,
    c2w: Float[Tensor, "frames 3 4"],
    policy: ContextPolicy,
    picker: random.Random,
) -> list[int]:
    """The earlier frames (indices below ``frame``, ascending) that condition frame ``frame`` besides the input(s)."""
    if not policy.autoregressive or frame == 0:
        return []
    previous = [frame - 1] if policy.include_previous else []
    earlier = [j for j in range(frame) if j not in previous]
    k = min(policy.max_earlier_frames, len(earlier))
    if policy.earlier_frames == "random":
        chosen = picker.sample(earlier, k)
    else:
        positions = _directions(c2w)
        closeness = positions[earlier] @ positions[frame]
        chosen = [earlier[i] for i in torch.argsort(-closeness, stable=True)[:k].tolist()]
    return sorted(chosen) + previous


def _directions(c2w: Float[Tensor, "n 3 4"]) -> Float[Tensor, "n 3"]:
    """Unit vectors from the object's centre (the origin) to each camera."""
    return c2w[:, :, 3] / c2w[:, :, 3].norm(dim=-1, keepdim=True).clamp_min(1e-8)


def nearest_known(
    frame: int,
    c2w: Float[Tensor, "frames 3 4"],
    input_c2w: Float[Tensor, "inputs 3 4"],
    count: int,
    policy: ContextPolicy,
) -> list[int]:
    """The ``count`` known views for frame ``frame``, for joint denoising or warping, as ``policy.known_views`` says
    (nearest by the angle between cameras seen from the object's centre): indices into the inputs followed by the
    frames before ``frame`` (those only when the policy is autoregressive and does not keep to the inputs); fewer where
    fewer are known."""
    earlier = policy.autoregressive and policy.known_views != "inputs"
    known = torch.cat([input_c2w.to(c2w), c2w[:frame] if earlier else c2w[:0]])
    closeness = _directions(known) @ _directions(c2w[frame : frame + 1])[0]
    order = torch.argsort(-closeness, stable=True).tolist()
    if policy.known_views == "input-first":
        first = next(i for i in order if i < len(input_c2w))
        order = [first] + [i for i in order if i != first]
    return order[:count]
