"""The encoder's frozen batch norms are folded into the convolutions: the same function in fewer operators, and
checkpoints written before the folding load into it. Trained from scratch, its backbone has group norms, which hold
its scale where weights that grow would otherwise multiply it up into overflow."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet34
from torchvision.models.resnet import BasicBlock
from torchvision.ops.misc import FrozenBatchNorm2d

from genvs_ns.model.encoder import _CONV_NORM_PAIRS, DeepLabV3PlusEncoder, _dilate_layer4


def _old_backbone(seed: int):
    """The backbone as it was built before: torchvision's ResNet-34 with frozen norms, here with statistics that are
    not the identity (as pretrained ones are not)."""
    torch.manual_seed(seed)
    old = resnet34(weights=None, norm_layer=FrozenBatchNorm2d)
    for m in old.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    _dilate_layer4(old)
    return old.eval()


def _features(backbone_stages, x):
    return torch.nn.Sequential(*backbone_stages)(x)


def test_no_norm_is_left_in_the_backbone():
    encoder = DeepLabV3PlusEncoder(16, 8, (16, 16), 32)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in encoder.modules())
    assert [n for n, _ in encoder.named_buffers()] == ["mean", "std"]  # no norm statistics left to copy each step
    names = dict(encoder.named_modules())
    assert all(names[conv].bias is not None for conv, _ in _CONV_NORM_PAIRS)


def test_a_checkpoint_with_frozen_norms_loads_into_the_same_function():
    old = _old_backbone(0)
    # The old encoder's state dict names: stem.0 / stem.1 for conv1 / bn1, the layers as they are.
    renames = {"conv1.": "stem.0.", "bn1.": "stem.1."}
    state = {}
    for key, value in old.state_dict().items():
        if key.startswith("fc."):
            continue
        for a, b in renames.items():
            if key.startswith(a):
                key = b + key[len(a) :]
        state[key] = value
    encoder = DeepLabV3PlusEncoder(16, 8, (16, 16), 32)
    rest = {k: v for k, v in encoder.state_dict().items() if not k.startswith(("stem.", "layer"))}
    encoder.load_state_dict({**state, **rest})  # strict: every key placed, none left over
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = _features([old.conv1, old.bn1, old.relu, old.maxpool, old.layer1, old.layer2, old.layer3, old.layer4], x)
        got = _features([encoder.stem, encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4], x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert want.abs().mean() > 0.01


def _grown(encoder: DeepLabV3PlusEncoder, factor: float) -> DeepLabV3PlusEncoder:
    """Every convolution's weight scaled by ``factor`` and every residual branch switched on: what a long run's
    weight growth does to the backbone, compressed into one step."""
    torch.manual_seed(1)
    with torch.no_grad():
        for block in encoder.modules():
            if isinstance(block, BasicBlock):
                if encoder.norm == "group":
                    block.bn2.weight.fill_(1.0)
                else:
                    torch.nn.init.kaiming_normal_(block.conv2.weight)
        for module in encoder.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.mul_(factor)
    return encoder


@pytest.mark.parametrize("norm, bounded", [("group", True), ("frozen", False)])
def test_group_norms_hold_the_backbone_scale_where_weights_grow(norm, bounded):
    """Weights 3x larger: with group norms the backbone's output keeps its scale; without (frozen norms and no
    pretrained weights: the identity) it is multiplied up block by block, as genvs-tiny's reached 1e20 and overflowed
    into NaN at step 5130 of a run."""
    encoder = _grown(DeepLabV3PlusEncoder(16, 8, (16, 16), 32, norm=norm), 3.0)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        high = encoder.layer4(encoder.layer3(encoder.layer2(encoder.layer1(encoder.stem(x)))))
        volumes = encoder(x)
    assert torch.isfinite(volumes).all()
    assert (high.abs().max() < 100) == bounded, high.abs().max()


def test_group_norms_start_each_block_as_the_identity():
    encoder = DeepLabV3PlusEncoder(16, 8, (16, 16), 32, norm="group")
    blocks = [m for m in encoder.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 16 and all(isinstance(b.bn1, torch.nn.GroupNorm) for b in blocks)
    assert all(b.bn2.weight.abs().sum() == 0 for b in blocks)  # the residual branch adds nothing at the start
    with pytest.raises(ValueError, match="frozen batch norms"):
        DeepLabV3PlusEncoder(16, 8, (16, 16), 32, backbone_weights="r34.pth", norm="group")
