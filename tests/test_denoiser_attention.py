"""The U-Net's self-attention hands scaled_dot_product_attention contiguous q, k, v (the fused kernels need them) and
computes what k-diffusion's does."""

from __future__ import annotations

import k_diffusion as K
import torch
import torch.nn.functional as F

from genvs_ns.model.denoiser import ConditionedDenoiser, ContiguousSelfAttention2d


def test_every_attention_layer_is_the_contiguous_one_with_the_same_output(monkeypatch):
    torch.manual_seed(0)
    den = ConditionedDenoiser("denoiser_tiny.json", 16)
    layers = [m for m in den.modules() if isinstance(m, K.layers.SelfAttention2d)]
    assert layers and all(type(m) is ContiguousSelfAttention2d for m in layers)
    layer = layers[0]
    torch.nn.init.normal_(layer.out_proj.weight)  # k-diffusion zero-initialises it: make the output depend on y
    c = layer.qkv_proj.in_channels
    x = torch.randn(2, c, 4, 4)
    cond = {"cond": torch.randn(2, layer.norm_in.mapper.in_features)}
    seen = []
    real = F.scaled_dot_product_attention

    def checking(q, k, v, **kw):
        seen.append(all(t.is_contiguous() for t in (q, k, v)))
        return real(q, k, v, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", checking)
    with torch.no_grad():
        ours = layer(x, cond)
        layer.__class__ = K.layers.SelfAttention2d
        theirs = layer(x, cond)
    assert seen == [True, False]  # k-diffusion's own forward hands it strided tensors
    torch.testing.assert_close(ours, theirs)
