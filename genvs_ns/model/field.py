"""Frustum feature field: trilinear lookup in each source view's volume, pooled over views, one small MLP."""

from __future__ import annotations

import torch
from jaxtyping import Float
from nerfstudio.field_components.activations import trunc_exp
from nerfstudio.field_components.mlp import MLP
from torch import Tensor, nn

from genvs_ns.geometry import depth_range, world_to_frustum
from genvs_ns.model.tcnn_params import MLPShape, convert_mlp_state
from genvs_ns.model.trilinear import ViewPooling, trilinear_pool


class FrustumField(nn.Module):
    """Points -> (density, latent). The first 3 latent channels are RGB in [0, 1] (sigmoid), the rest unbounded.

    With ``colour_inputs`` the first 3 input features are the source colours a point projects onto (pooled over views),
    and the RGB output is that colour corrected by the MLP in logit space. The MLP alone needed far longer to learn to
    pass colour through: after 400 steps of genvs-tiny a source view re-rendered at 19.1 dB PSNR without the base
    colour and 21.7 dB with it.

    With ``pooling="visible"`` the MLP has one input more: how much of the point some view sees (its summed coverage,
    capped at 1), so that "no view sees it" and "a view sees zero features" are different inputs. tiny-cuda-nn pads
    an input width that is not a multiple of 16 with ones or zeros depending on its version, so for it the inputs are
    padded with zeros here (17 -> 32), and its weights convert to torch layers either way (tcnn_params.py).
    """

    def __init__(
        self,
        volume_channels: int = 16,
        hidden_dim: int = 64,
        num_layers: int = 3,
        latent_channels: int = 16,
        implementation: str = "tcnn",
        colour_inputs: bool = False,
        pooling: ViewPooling = "visible",
    ) -> None:
        super().__init__()
        self.latent_channels = latent_channels
        self.colour_inputs = colour_inputs
        self.pooling = pooling
        width = volume_channels + (pooling == "visible")
        self.input_padding = (-width % 16) if implementation == "tcnn" else 0
        # nerfstudio falls back to torch when tiny-cuda-nn is missing (always on the CPU).
        self.mlp = MLP(
            in_dim=width + self.input_padding,
            num_layers=num_layers,
            layer_width=hidden_dim,
            out_dim=1 + latent_channels,
            activation=nn.ReLU(),
            implementation=implementation,  # type: ignore[arg-type]
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # A checkpoint written with tiny-cuda-nn loads where it is missing (and the other way round where exact):
        # nerfstudio falls back to torch layers there, whose keys differ.
        mlp = self.mlp
        shape = MLPShape(mlp.in_dim, mlp.layer_width, mlp.num_layers, mlp.out_dim)
        tcnn = mlp.tcnn_encoding
        dtype = tcnn.params.dtype if tcnn is not None else torch.float32
        convert_mlp_state(state_dict, prefix + "mlp.", shape, to_tcnn=tcnn is not None, dtype=dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def lookup(
        self,
        volumes: Float[Tensor, "batch views C D h w"],
        points: Float[Tensor, "batch n 3"],
        c2w: Float[Tensor, "batch views 3 4"],
        K: Float[Tensor, "batch views 3 3"],
        image_hw: tuple[int, int],
        radius: float,
        view_weights: Float[Tensor, "batch views"] | None = None,
    ) -> Float[Tensor, "batch n F"]:
        """The MLP's input at each point: its trilinear features in every source volume (zero outside a frustum),
        pooled over views, and with ``visible`` pooling how much of it the views see. Each volume's depth planes span
        its camera's view of the sphere of ``radius`` (``geometry.depth_range``)."""
        B, V = volumes.shape[:2]
        near, far = depth_range(c2w[..., :3, 3], radius)
        coords = world_to_frustum(points[:, None].expand(B, V, *points.shape[1:]), c2w, K, image_hw, near, far)
        features, coverage = trilinear_pool(volumes, coords, self.pooling, view_weights)
        parts = [features]
        if self.pooling == "visible":
            parts.append(coverage.clamp(max=1)[..., None].to(features.dtype))
        if self.input_padding:
            parts.append(features.new_zeros(*features.shape[:-1], self.input_padding))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else features

    def forward(self, features: Float[Tensor, "*batch C"]) -> tuple[Float[Tensor, "*batch"], Float[Tensor, "*batch L"]]:
        # tiny-cuda-nn takes shape[0] as the batch and checks shape[1] against its input width: only 2-D input works.
        out = self.mlp(features.reshape(-1, features.shape[-1])).float().view(*features.shape[:-1], -1)
        # Shifted so an untrained field starts mostly transparent rather than a fog filling the frustum.
        density = trunc_exp(out[..., 0] - 1.0)
        rgb_logit = out[..., 1:4]
        if self.colour_inputs:
            rgb_logit = rgb_logit + torch.logit(features[..., :3].float().clamp(0.02, 0.98))
        latent = torch.cat([torch.sigmoid(rgb_logit), out[..., 4:]], dim=-1)
        return density, latent
