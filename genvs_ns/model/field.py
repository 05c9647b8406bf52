"""Frustum feature field: trilinear lookup in each source view's volume, mean over views, one small MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.field_components.activations import trunc_exp
from nerfstudio.field_components.mlp import MLP
from torch import Tensor, nn

from genvs_ns.model.geometry import world_to_frustum


def _sample_volumes(volumes: Float[Tensor, "n C D h w"], grid: Float[Tensor, "n p 3"]) -> Float[Tensor, "n C p"]:
    """Trilinear lookup of each volume's points, zero outside.

    PyTorch's CPU grid_sample parallelises over the batch only: 3 volumes on 2 threads keep one thread idle a third of
    the time, and 1 volume (a single source view) runs on one thread. So on the CPU, unless the volumes divide evenly
    among the threads, each volume's points are split among the threads, the volume expanded rather than copied:
    paper-size field+render (3 views, 2 threads) forward+backward got 15-20% faster. With many volumes (genvs-tiny's
    batches) one call per volume costs more than the imbalance, so the batched call stays.
    """
    n, p = grid.shape[:2]
    threads = torch.get_num_threads()
    if volumes.device.type != "cpu" or n % threads == 0 or n >= 2 * threads or p < threads:
        return F.grid_sample(volumes, grid[:, :, None, None], padding_mode="zeros", align_corners=False).view(n, -1, p)
    pad = -p % threads
    # Padding points lie outside every volume (normalised coordinates beyond 1) and are cut off again below.
    grid = F.pad(grid, (0, 0, 0, pad), value=2.0).view(n, threads, -1, 1, 1, 3)
    parts = [
        F.grid_sample(volumes[i : i + 1].expand(threads, -1, -1, -1, -1), grid[i], align_corners=False)
        for i in range(n)
    ]
    return torch.stack(parts).transpose(1, 2).reshape(n, volumes.shape[1], -1)[..., :p]


class FrustumField(nn.Module):
    """Points -> (density, latent). The first 3 latent channels are RGB in [0, 1] (sigmoid), the rest unbounded.

    With ``colour_inputs`` the first 3 input features are the source colours a point projects onto (mean over views),
    and the RGB output is that colour corrected by the MLP in logit space. The MLP alone needed far longer to learn to
    pass colour through: after 400 steps of genvs-tiny a source view re-rendered at 19.1 dB PSNR without the base
    colour and 21.7 dB with it.
    """

    def __init__(
        self,
        volume_channels: int = 16,
        hidden_dim: int = 64,
        num_layers: int = 3,
        latent_channels: int = 16,
        implementation: str = "tcnn",
        colour_inputs: bool = False,
    ) -> None:
        super().__init__()
        self.latent_channels = latent_channels
        self.colour_inputs = colour_inputs
        # nerfstudio falls back to torch when tiny-cuda-nn is missing (always on the CPU).
        self.mlp = MLP(
            in_dim=volume_channels,
            num_layers=num_layers,
            layer_width=hidden_dim,
            out_dim=1 + latent_channels,
            activation=nn.ReLU(),
            implementation=implementation,  # type: ignore[arg-type]
        )

    @staticmethod
    def lookup(
        volumes: Float[Tensor, "batch views C D h w"],
        points: Float[Tensor, "batch n 3"],
        c2w: Float[Tensor, "batch views 3 4"],
        K: Float[Tensor, "batch views 3 3"],
        image_hw: tuple[int, int],
        near: float,
        far: float,
    ) -> Float[Tensor, "batch n C"]:
        """Trilinear features of each point in every source volume (zero outside a frustum), averaged over views."""
        B, V, C, D, h, w = volumes.shape
        coords = world_to_frustum(points[:, None].expand(B, V, *points.shape[1:]), c2w, K, image_hw, near, far)
        grid = coords.reshape(B * V, -1, 3).to(volumes.dtype)
        # A no-op for volumes from GeNVSNetwork.encode, which lays them out channels-last (see there).
        volumes = volumes.reshape(B * V, C, D, h, w).contiguous(memory_format=torch.channels_last_3d)
        return _sample_volumes(volumes, grid).view(B, V, C, -1).mean(dim=1).transpose(1, 2)

    def forward(self, features: Float[Tensor, "*batch C"]) -> tuple[Float[Tensor, "*batch"], Float[Tensor, "*batch L"]]:
        out = self.mlp(features).float()
        # Shifted so an untrained field starts mostly transparent rather than a fog filling the frustum.
        density = trunc_exp(out[..., 0] - 1.0)
        rgb_logit = out[..., 1:4]
        if self.colour_inputs:
            rgb_logit = rgb_logit + torch.logit(features[..., :3].float().clamp(0.02, 0.98))
        latent = torch.cat([torch.sigmoid(rgb_logit), out[..., 4:]], dim=-1)
        return density, latent
