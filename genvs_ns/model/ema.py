"""The EMA update of the network's weights (k-diffusion's ``ema_update``, one fused call instead of a loop)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(model: nn.Module, averaged: nn.Module, decay: float) -> None:
    """``averaged <- decay * averaged + (1 - decay) * model`` for every parameter; buffers are copied.

    k-diffusion's ``utils.ema_update`` does the same one tensor at a time: ~300 small kernels a step for this network,
    which on a GPU costs more launch time than arithmetic. The buffers (10 since the encoder's frozen norms were
    folded away, 156 before: U-Net resampling kernels, Fourier features, constants) never change in training; they
    are copied in one call all the same, so a buffer that one day does change is never stale.
    """
    trained, average = list(model.parameters()), list(averaged.parameters())
    if len(trained) != len(average):
        raise ValueError(f"EMA copy has {len(average)} parameters, the model {len(trained)}")
    torch._foreach_lerp_(average, trained, 1.0 - decay)
    buffers, copies = list(model.buffers()), list(averaged.buffers())
    if buffers:
        torch._foreach_copy_(copies, buffers)
