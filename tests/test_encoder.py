"""The encoder's frozen batch norms are folded into the convolutions: the same function in fewer operators, and
checkpoints written before the folding load into it."""

from __future__ import annotations

import torch
from torchvision.models import resnet34
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
