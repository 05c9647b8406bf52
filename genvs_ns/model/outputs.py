"""What the model gives for target views of encoded source views, as the sampling and evaluation layers use it."""

from __future__ import annotations

from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor


@dataclass
class ViewRenders:
    """Target views: the NeRF render and, where sampled (``sampling.views.render_views`` with a sampler), the
    diffusion sample."""

    rgb: Float[Tensor, "batch 3 H W"]
    """The NeRF RGB, clamped to [0, 1]."""
    depth: Float[Tensor, "batch 1 H W"]
    """Expected distance along the unit ray."""
    accumulation: Float[Tensor, "batch 1 H W"]
    sample: Float[Tensor, "batch 3 H W"] | None = None
    """The diffusion sample, pixels in [0, 1]."""
    features: Float[Tensor, "batch L h w"] | None = None
    """The feature image the sample was conditioned on, at the denoiser's resolution."""

    def images(self) -> dict[str, Tensor]:
        """The images under nerfstudio's output names: rgb, depth, accumulation and, where sampled, sample."""
        out = {"rgb": self.rgb, "depth": self.depth, "accumulation": self.accumulation}
        if self.sample is not None:
            out["sample"] = self.sample
        return out
