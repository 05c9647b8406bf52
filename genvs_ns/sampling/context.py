"""Which views condition each frame of an autoregressive path: the policy and the choice, free of heavy imports so
that commands can show the policy's fields as flags."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from genvs_ns.errors import GeNVSError


@dataclass
class ContextPolicy:
    """Which views condition each new frame: the input view(s) always, then earlier generated frames."""

    autoregressive: bool = True
    """False: every frame is conditioned on the input view(s) alone."""
    max_earlier: int = 4
    """Up to this many earlier generated frames (besides the previous frame)."""
    include_previous: bool = True
    """Always condition on the frame just before."""
    earlier: Literal["random", "nearest"] = "random"
    """How the earlier frames are chosen: at random (GeNVS's recipe), or those whose cameras are nearest the new
    frame's (by the angle between camera positions seen from the object's centre)."""

    def check(self) -> None:
        if self.max_earlier < 0:
            raise GeNVSError(f"--max-earlier-frames must be 0 or more, not {self.max_earlier}")


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
    k = min(policy.max_earlier, len(earlier))
    if policy.earlier == "random":
        chosen = picker.sample(earlier, k)
    else:
        positions = c2w[:, :, 3] / c2w[:, :, 3].norm(dim=-1, keepdim=True).clamp_min(1e-8)
        closeness = positions[earlier] @ positions[frame]
        chosen = [earlier[i] for i in torch.argsort(-closeness, stable=True)[:k].tolist()]
    return sorted(chosen) + previous
