"""tiny-cuda-nn's MLP parameters <-> nerfstudio's torch MLP layers, so a checkpoint loads with either implementation.

A field trained with ``--pipeline.model.mlp-implementation tcnn`` stores its MLP as one flat vector
(``mlp.tcnn_encoding.params``); without tiny-cuda-nn (every CPU) nerfstudio builds ``nn.Linear`` layers
(``mlp.layers.{i}.weight/bias``) instead. The layout, as tiny-cuda-nn's author describes it (NVlabs/tiny-cuda-nn
issues 6, 96, 510): each layer's weight matrix [out, in] in row-major order (torch's ``Linear.weight`` order),
first layer, hidden layers, output layer, concatenated; no biases; input and output widths padded to a multiple of 16
(FullyFusedMLP) or 8 (CutlassMLP), the padded outputs ignored. ``tcnn_reference_forward`` is that network in plain
torch: the tests check both conversions against it, and ``scripts/gpu_smoke.sh`` checks it against tiny-cuda-nn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from genvs_ns.errors import GeNVSError


@dataclass(frozen=True)
class MLPShape:
    """An MLP of ``num_layers`` linear layers (``num_layers - 1`` hidden layers of ``width``), ReLU between them."""

    in_dim: int
    width: int
    num_layers: int
    out_dim: int

    @property
    def padding(self) -> int:
        # nerfstudio picks FullyFusedMLP for these widths and CutlassMLP otherwise.
        return 16 if self.width in (16, 32, 64, 128) else 8

    @property
    def padded_out(self) -> int:
        return -(-self.out_dim // self.padding) * self.padding

    def matrix_shapes(self) -> list[tuple[int, int]]:
        """[out, in] of each weight matrix as tiny-cuda-nn stores it (padded output rows included)."""
        if self.num_layers < 2:
            raise GeNVSError(f"tiny-cuda-nn conversion needs an MLP with a hidden layer, not {self.num_layers} layer")
        if self.in_dim % self.padding:
            # tiny-cuda-nn pads the input with ones before version 1.7 and with zeros since: no single conversion.
            raise GeNVSError(
                f"tiny-cuda-nn conversion needs an input width that is a multiple of {self.padding}, not {self.in_dim}"
            )
        hidden = [(self.width, self.width)] * (self.num_layers - 2)
        return [(self.width, self.in_dim), *hidden, (self.padded_out, self.width)]

    def num_params(self) -> int:
        return sum(rows * cols for rows, cols in self.matrix_shapes())


def tcnn_to_linear(params: Float[Tensor, " n"], shape: MLPShape) -> list[tuple[Tensor, Tensor]]:
    """(weight [out, in], zero bias [out]) per layer, fp32, the output layer trimmed to ``out_dim``."""
    if params.numel() != shape.num_params():
        raise GeNVSError(
            f"tiny-cuda-nn MLP holds {params.numel()} parameters, expected {shape.num_params()} for {shape}"
        )
    sizes = shape.matrix_shapes()
    flat = params.detach().float().flatten()
    layers = [
        chunk.view(rows, cols) for chunk, (rows, cols) in zip(torch.split(flat, [r * c for r, c in sizes]), sizes)
    ]
    layers[-1] = layers[-1][: shape.out_dim]
    return [(weight.clone(), weight.new_zeros(weight.shape[0])) for weight in layers]


def linear_to_tcnn(layers: list[tuple[Tensor, Tensor]], shape: MLPShape, dtype: torch.dtype) -> Float[Tensor, " n"]:
    """The flat tiny-cuda-nn vector of torch layers; refused where a bias is non-zero (tiny-cuda-nn has none)."""
    if len(layers) != shape.num_layers:
        raise GeNVSError(f"torch MLP has {len(layers)} layers, expected {shape.num_layers}")
    if any(bias.abs().max() > 0 for _, bias in layers):
        raise GeNVSError(
            "this checkpoint's field MLP was trained with torch and has biases, which tiny-cuda-nn cannot hold: "
            "load it with --pipeline.model.mlp-implementation torch"
        )
    matrices = []
    for (weight, _), (rows, cols) in zip(layers, shape.matrix_shapes()):
        padded = weight.new_zeros(rows, cols)
        padded[: weight.shape[0]] = weight
        matrices.append(padded.flatten())
    return torch.cat(matrices).to(dtype)


def tcnn_reference_forward(
    params: Float[Tensor, " n"], x: Float[Tensor, "N in_dim"], shape: MLPShape
) -> Float[Tensor, "N out_dim"]:
    """tiny-cuda-nn's MLP in plain torch (ReLU hidden activations, no output activation), fp32: a second reading of
    the layout, independent of ``tcnn_to_linear``, computing the padded outputs and dropping them as tcnn does."""
    h, offset = x.float(), 0
    flat = params.float()
    for i, (rows, cols) in enumerate(shape.matrix_shapes()):
        h = h @ flat[offset : offset + rows * cols].reshape(rows, cols).T
        offset += rows * cols
        if i < shape.num_layers - 1:
            h = torch.relu(h)
    return h[:, : shape.out_dim]


def convert_mlp_state(state_dict: dict, prefix: str, shape: MLPShape, to_tcnn: bool, dtype: torch.dtype) -> None:
    """Rewrites, in place, the MLP entries under ``prefix`` (e.g. ``"...field.mlp."``) from the other implementation's
    keys to this one's; entries already in this one's form are left as they are."""
    tcnn_key = prefix + "tcnn_encoding.params"
    torch_keys = [(f"{prefix}layers.{i}.weight", f"{prefix}layers.{i}.bias") for i in range(shape.num_layers)]
    if to_tcnn and torch_keys[0][0] in state_dict:
        layers = [(state_dict.pop(w), state_dict.pop(b)) for w, b in torch_keys]
        state_dict[tcnn_key] = linear_to_tcnn(layers, shape, dtype)
    elif not to_tcnn and tcnn_key in state_dict:
        for (w_key, b_key), (weight, bias) in zip(torch_keys, tcnn_to_linear(state_dict.pop(tcnn_key), shape)):
            state_dict[w_key], state_dict[b_key] = weight, bias
