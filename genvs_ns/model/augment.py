"""Karras (EDM) non-leaking augmentation, applied jointly and differentiably to a target view and its conditioning.

k-diffusion's ``KarrasAugmentationPipeline`` warps one PIL image with scikit-image. GeNVS needs the same warp on the
target and on the rendered feature image it is conditioned on, batched and differentiable (the renderer trains through
the conditioning), so the transforms are drawn here the way k-diffusion draws them (its matrix helpers, its 9-number
``aug_cond`` layout for ``KarrasAugmentWrapper``) and applied with ``grid_sample``.
"""

from __future__ import annotations

import functools
import math
import operator

import torch
import torch.nn.functional as F
from jaxtyping import Float
from k_diffusion.augmentation import rotate2d, scale2d, translate2d
from torch import Tensor


def draw_augmentation(
    height: int,
    width: int,
    prob: float = 0.12,
    scale: float = 2**0.2,
    aniso: float = 2**0.2,
    trans: float = 1 / 8,
    generator: torch.Generator | None = None,
) -> tuple[Float[Tensor, "3 3"], Float[Tensor, " 9"]]:
    """One transform in pixel coordinates (input -> output) and its ``aug_cond``, as k-diffusion draws them."""

    def rand(*shape: int) -> Tensor:
        return torch.rand(shape, generator=generator)

    def randn() -> Tensor:
        return torch.randn([], generator=generator)

    def maybe() -> Tensor:
        return (rand() < prob).float()

    a0 = (rand() < 0.5).float()  # x-flip, always eligible
    a1 = (rand() < 0.5).float() * maybe()  # y-flip
    a2 = randn() * maybe()  # isotropic scale
    a3 = (rand() * 2 * math.pi - math.pi) * maybe()  # rotation
    do = maybe()
    a4, a5 = (rand() * 2 * math.pi - math.pi) * do, randn() * do  # anisotropic scale along a random angle
    do = maybe()
    a6, a7 = randn() * do, randn() * do  # translation
    mats = [
        translate2d(width / 2 - 0.5, height / 2 - 0.5),
        scale2d(1 - 2 * a0, 1),
        scale2d(1, 1 - 2 * a1),
        scale2d(scale**a2, scale**a2),
        rotate2d(-a3),
        rotate2d(a4),
        scale2d(aniso**a5, aniso**-a5),
        rotate2d(-a4),
        translate2d(trans * width * a6, trans * height * a7),
        translate2d(-width / 2 + 0.5, -height / 2 + 0.5),
    ]
    mat = functools.reduce(operator.matmul, mats)
    cond = torch.stack([a0, a1, a2, a3.cos() - 1, a3.sin(), a5 * a4.cos(), a5 * a4.sin(), a6, a7])
    return mat, cond


def warp(images: Float[Tensor, "batch C H W"], mats: Float[Tensor, "batch 3 3"]) -> Float[Tensor, "batch C H W"]:
    """``images`` moved by the pixel-space transforms ``mats`` (reflected at the borders, as k-diffusion does)."""
    B, _, H, W = images.shape
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float32, device=images.device),
        torch.arange(W, dtype=torch.float32, device=images.device),
        indexing="ij",
    )
    out_pixels = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(1, -1, 3)
    # Each output pixel reads the input where the inverse transform sends it.
    src = out_pixels @ torch.linalg.inv(mats.to(images.device)).transpose(1, 2)
    grid = torch.stack([src[..., 0] / (W - 1), src[..., 1] / (H - 1)], dim=-1) * 2 - 1
    grid = grid.view(B, H, W, 2).to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def augment_jointly(
    images: list[Float[Tensor, "batch _ H W"]], prob: float, generator: torch.Generator | None = None
) -> tuple[list[Float[Tensor, "batch _ H W"]], Float[Tensor, "batch 9"]]:
    """The same random transform per batch element on every tensor in ``images``, and the ``aug_cond`` for each."""
    B, _, H, W = images[0].shape
    drawn = [draw_augmentation(H, W, prob, generator=generator) for _ in range(B)]
    mats = torch.stack([m for m, _ in drawn])
    aug_cond = torch.stack([c for _, c in drawn]).to(images[0].device)
    return [warp(x, mats) for x in images], aug_cond
