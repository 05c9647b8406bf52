"""The view-conditioned EDM denoiser: k-diffusion's ``ImageDenoiserModelV1`` inside its Karras ``Denoiser``.

The rendered feature image (upsampled to image size) enters as ``unet_cond``. One ``mapping_cond`` channel tells the
U-Net the conditioning was replaced by noise (classifier-free guidance); with the JSON's ``augment_wrapper`` the 9
Karras augmentation parameters come first, as k-diffusion's ``KarrasAugmentWrapper`` expects.

Optionally (``residual``) the U-Net denoises the target's difference from the rendered RGB: the denoised estimate is
``rgb + Denoiser(x - rgb)``. Noising commutes with the shift (``x - rgb = (x0 - rgb) + sigma * noise``), so this is
still EDM on images and any k-diffusion sampler runs unchanged; only the estimate an untrained U-Net starts from moves
from zero to the rendered RGB. Unconditional evaluations (classifier-free guidance) have no render and no shift.
"""

from __future__ import annotations

from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Iterator

import k_diffusion as K
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from genvs_ns.errors import DataError

AUG_DIM = 9


def to_denoiser_range(images: Float[Tensor, "*batch 3 H W"]) -> Float[Tensor, "*batch 3 H W"]:
    """Pixels in [0, 1] as the denoiser sees them: [-1, 1] (k-diffusion's image convention, sigma_data 0.5)."""
    return images * 2 - 1


def to_pixels(x: Float[Tensor, "*batch 3 H W"]) -> Float[Tensor, "*batch 3 H W"]:
    """The denoiser's [-1, 1] back to pixels in [0, 1], clamped."""
    return ((x + 1) / 2).clamp(0, 1)


def resolve_config(name_or_path: str | Path) -> Path:
    """A JSON path, or the name of one shipped in ``genvs_ns/configs`` (e.g. ``denoiser_tiny.json``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = resources.files("genvs_ns") / "configs" / str(name_or_path)
    if shipped.is_file():
        return Path(str(shipped))
    names = sorted(p.name for p in (resources.files("genvs_ns") / "configs").iterdir() if p.name.endswith(".json"))
    raise DataError(name_or_path, f"no such denoiser config (file, or one of {', '.join(names)})")


def load_denoiser_config(name_or_path: str | Path, cond_channels: int) -> dict:
    path = resolve_config(name_or_path)
    try:
        config = K.config.load_config(path)
    except Exception as exc:  # noqa: BLE001 - malformed JSON or missing keys: the file's fault
        raise DataError(path, f"not a k-diffusion model config ({exc})") from None
    model = config["model"]
    if model.get("type") != "image_v1":
        raise DataError(path, "model.type must be image_v1")
    if model["unet_cond_dim"] != cond_channels or model["mapping_cond_dim"] != 1 or model["input_channels"] != 3:
        raise DataError(
            path,
            f"needs input_channels 3, unet_cond_dim {cond_channels} (the rendered features) "
            "and mapping_cond_dim 1 (the unconditional flag)",
        )
    return config


class ContiguousSelfAttention2d(K.layers.SelfAttention2d):
    """k-diffusion's ``SelfAttention2d`` with q, k and v made contiguous before ``scaled_dot_product_attention``: its
    ``view(...).transpose(2, 3)`` leaves their last dimension strided, which no fused kernel (flash, memory-efficient)
    accepts, so every call took SDPA's math path (32 calls a paper-size step on an H200). Same weights, same function;
    dropout only in training (k-diffusion applies it while sampling too).

    With ``views`` > 1 each run of ``views`` consecutive images in the batch is one group, and every token attends to
    the tokens of all images of its group (joint denoising of several views of one object); the weights are the same,
    so a model trained one way runs the other."""

    views = 1  # set by ConditionedDenoiser for the duration of one call

    def forward(self, input: Tensor, cond: dict) -> Tensor:
        n, c, h, w = input.shape
        g, heads, d = self.views, self.n_head, c // self.n_head
        qkv = self.qkv_proj(self.norm_in(input, cond))
        qkv = qkv.view([n, heads * 3, d, h * w]).transpose(2, 3)
        q, k, v = qkv.chunk(3, dim=1)  # [n, heads, h*w, d]
        if g > 1:  # [n / g, heads, g*h*w, d]: a group's tokens in one sequence
            q, k, v = (t.view(n // g, g, heads, h * w, d).transpose(1, 2).reshape(n // g, heads, g * h * w, d)
                       for t in (q, k, v))  # fmt: skip
        q, k, v = (t.contiguous() for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout.p if self.training else 0.0)
        if g > 1:
            y = y.view(n // g, heads, g, h * w, d).transpose(1, 2).reshape(n, heads, h * w, d)
        y = y.transpose(2, 3).contiguous().view([n, c, h, w])
        return input + self.out_proj(y)


class ConditionedDenoiser(nn.Module):
    """``Denoiser(ImageDenoiserModelV1)`` with GeNVS's conditioning; images in [-1, 1]."""

    def __init__(
        self,
        config_name: str | Path,
        cond_channels: int,
        residual: bool = False,
        extra_channels: int = 0,
        warp_base: bool = False,
    ) -> None:
        """``cond_channels``: the rendered features' (the JSON's unet_cond_dim); ``extra_channels`` more follow them
        in ``unet_cond`` (a warped known view, warp.py), added to the U-Net's input here, not written in the JSON.
        ``warp_base``: with ``residual``, the estimate is added to the warped known view where it sees the surface
        and to the rendered RGB elsewhere (the extra channels are warp.py's RGB times mask, then the mask)."""
        super().__init__()
        self.config = load_denoiser_config(config_name, cond_channels)
        self.config["model"]["unet_cond_dim"] += extra_channels
        self.residual = residual
        self.warp_at = cond_channels if warp_base else None
        self.augment = bool(self.config["model"]["augment_wrapper"])
        self.sigma_data = float(self.config["model"]["sigma_data"])
        self.sigma_min = float(self.config["model"].get("sigma_min", 0.002))
        self.sigma_max = float(self.config["model"].get("sigma_max", 80.0))
        inner = K.config.make_model(self.config)
        for module in inner.modules():
            if type(module) is K.layers.SelfAttention2d:
                module.__class__ = ContiguousSelfAttention2d
        self.denoiser = K.config.make_denoiser_wrapper(self.config)(inner)

    def _kwargs(self, cond: Tensor, uncond: Tensor, aug_cond: Tensor | None) -> dict:
        flag = uncond.to(cond.dtype)[:, None]
        kwargs = {"unet_cond": cond, "mapping_cond": flag}
        if self.augment:
            kwargs["aug_cond"] = aug_cond if aug_cond is not None else cond.new_zeros(cond.shape[0], AUG_DIM)
        return kwargs

    def prior_mean(
        self, cond: Float[Tensor, "batch C H W"], uncond: Float[Tensor, " batch"]
    ) -> Float[Tensor, "batch 3 H W"] | float:
        """What the U-Net's output is added to, and where sampling starts before the noise: the rendered RGB in
        [-1, 1] (zero for unconditional evaluations and without ``residual``). Started from pure noise at a moderate
        sigma_max instead, the render's offset (up to 2 in these units) would be a shift never seen in training. With
        ``warp_base`` the warped known view takes the render's place where it sees the surface."""
        if not self.residual:
            return 0.0
        # A fixed shift, not a path for gradients: the renderer learns through unet_cond and its own RGB losses.
        rgb = cond[:, :3].detach()
        if self.warp_at is not None:
            warped, mask = cond[:, self.warp_at : self.warp_at + 3].detach(), self.warp_mask(cond)
            rgb = warped + (1 - mask) * rgb
        rgb = to_denoiser_range(rgb)
        return rgb * (1 - uncond.to(rgb.dtype))[:, None, None, None]

    def warp_mask(self, cond: Float[Tensor, "batch C H W"]) -> Float[Tensor, "batch 1 H W"]:
        """Where the warped known view of the residual base sees the surface (needs ``warp_base``)."""
        if self.warp_at is None:
            raise ValueError("this denoiser's residual base is no warped view (warp_base=False)")
        return cond[:, self.warp_at + 3 : self.warp_at + 4].detach()

    def loss(
        self,
        x0: Float[Tensor, "batch 3 H W"],
        sigma: Float[Tensor, " batch"],
        cond: Float[Tensor, "batch C H W"],
        uncond: Float[Tensor, " batch"],
        aug_cond: Float[Tensor, "batch 9"] | None = None,
        views: int = 1,
    ) -> Float[Tensor, " batch"]:
        """k-diffusion's per-image EDM loss; ``views`` > 1: each run of that many images is denoised jointly (one
        object's target views, which should share their noise level)."""
        noise = torch.randn_like(x0)
        base = self.prior_mean(cond, uncond)
        with self.attending_across(views, x0.shape[0]):
            return self.denoiser.loss(x0 - base, noise, sigma, **self._kwargs(cond, uncond, aug_cond))

    def forward(
        self,
        x: Float[Tensor, "batch 3 H W"],
        sigma: Float[Tensor, " batch"],
        cond: Float[Tensor, "batch C H W"],
        uncond: Float[Tensor, " batch"] | None = None,
        views: int = 1,
    ) -> Float[Tensor, "batch 3 H W"]:
        """The denoised estimate of x at noise level sigma (k-diffusion's model interface); ``views`` as in
        ``loss``."""
        if uncond is None:
            uncond = torch.zeros(x.shape[0], device=x.device)
        base = self.prior_mean(cond, uncond)
        with self.attending_across(views, x.shape[0]):
            return base + self.denoiser(x - base, sigma, **self._kwargs(cond, uncond, None))

    @contextmanager
    def attending_across(self, views: int, batch: int) -> Iterator[None]:
        """The U-Net's attention layers attend across groups of ``views`` consecutive images while inside."""
        if views < 1 or batch % views:
            raise ValueError(f"a batch of {batch} images is not a whole number of groups of {views} views")
        if views == 1:  # the layers' own setting: nothing to walk on every U-Net call
            yield
            return
        layers = [m for m in self.modules() if isinstance(m, ContiguousSelfAttention2d)]
        for layer in layers:
            layer.views = views
        try:
            yield
        finally:
            for layer in layers:
                layer.views = 1
