"""Image encoder: DeepLabV3+ on a ResNet-34 backbone, reshaped into one frustum feature volume per source view.

Built from torchvision parts (``resnet34`` and DeepLabV3's ``ASPP``); segmentation-models-pytorch would need a newer
timm than nerfstudio allows. Dropout is removed, and batches here are a handful of objects, too few for batch
statistics, so the backbone normalises in one of two ways (``norm``):

- "group": group norm in every block, for a backbone trained from scratch (the presets). Without any normalisation
  nothing bounds the backbone's scale: the decoder's group norm after it makes the output blind to it, so Adam let
  it drift, and the residual blocks multiplied it up. genvs-tiny's ASPP output reached 1e11 by step 1600 and 1e15 by
  5100; at step 5130 of a run on mixed kinds one batch took it to 1.5e20, the decoder's group norm squared it past
  fp32's range, and every loss turned NaN (an earlier run's NaN at step 8865 was probably the same; not replayed).
- "frozen": batch norm frozen, as in GeNVS with pretrained weights (``backbone_weights``). A frozen batch norm is an
  affine map, so it is folded into the convolution before it (weight scaled, a bias added). Without pretrained
  weights it is the identity: the unnormalised backbone above, which runs trained before this setting used.

The decoder uses group norm, which does not depend on the batch.

Cost is set by the decoder's output: DeepLabV3+ normally predicts at full image resolution, but the volume only needs
``volume_hw`` pixels, so the head runs at that resolution (the paper-size preset: 64x64 x 64 planes x 16 channels from
128 px images) instead of predicting 1024 channels at 128x128 and throwing detail away later.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from torchvision.models import resnet34
from torchvision.models.resnet import BasicBlock
from torchvision.models.segmentation.deeplabv3 import ASPP
from torchvision.ops.misc import FrozenBatchNorm2d

from genvs_ns.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

BackboneNorm = Literal["group", "frozen"]


def _strip_norm_and_dropout(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm2d, nn.Dropout)):
            setattr(module, name, nn.Identity())
        else:
            _strip_norm_and_dropout(child)
    return module


def _dilate_layer4(backbone: nn.Module) -> None:
    """Output stride 16 instead of 32, the DeepLabV3+ default; torchvision's BasicBlock refuses ``dilation`` itself."""
    for module in backbone.layer4.modules():
        if isinstance(module, nn.Conv2d):
            module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation, module.padding = (2, 2), (2, 2)


# torchvision's FrozenBatchNorm2d: y = (x - running_mean) * weight / sqrt(running_var + eps) + bias.
_FROZEN_EPS = 1e-5
# (convolution, the frozen norm after it) in the encoder's module names: the stem, each BasicBlock's two, and the
# downsampling shortcuts of layers 2-4 (ResNet-34: 3, 4, 6, 3 blocks).
_CONV_NORM_PAIRS = [("stem.0", "stem.1")] + [
    pair
    for layer, blocks in ((1, 3), (2, 4), (3, 6), (4, 3))
    for block in range(blocks)
    for pair in [
        (f"layer{layer}.{block}.conv1", f"layer{layer}.{block}.bn1"),
        (f"layer{layer}.{block}.conv2", f"layer{layer}.{block}.bn2"),
        *([(f"layer{layer}.0.downsample.0", f"layer{layer}.0.downsample.1")] if layer > 1 and block == 0 else []),
    ]
]


def _folded(
    weight: Tensor, bias: Tensor | None, norm_weight: Tensor, norm_bias: Tensor, mean: Tensor, var: Tensor
) -> tuple[Tensor, Tensor]:
    """A convolution's weight and bias with the frozen norm after it folded in."""
    scale = norm_weight * (var + _FROZEN_EPS).rsqrt()
    folded_bias = norm_bias - mean * scale
    if bias is not None:
        folded_bias = folded_bias + bias * scale
    return weight * scale.view(-1, 1, 1, 1).to(weight.dtype), folded_bias


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(16, channels), channels)


class DeepLabV3PlusEncoder(nn.Module):
    """Source images -> frustum feature volumes ``[views, channels, depth, h, w]``."""

    def __init__(
        self,
        volume_channels: int,
        volume_depth: int,
        volume_hw: tuple[int, int],
        decoder_channels: int = 256,
        aspp_rates: Sequence[int] = (2, 4, 6),
        backbone_weights: Path | None = None,
        norm: BackboneNorm = "frozen",
    ) -> None:
        super().__init__()
        if norm == "group" and backbone_weights is not None:
            raise ValueError("pretrained backbone weights come with frozen batch norms, not group norms")
        self.volume_channels, self.volume_depth, self.volume_hw = volume_channels, volume_depth, tuple(volume_hw)
        self.norm = norm
        backbone = resnet34(weights=None, norm_layer=_group_norm if norm == "group" else FrozenBatchNorm2d)
        if backbone_weights is not None:
            self._load_backbone(backbone, Path(backbone_weights))
        else:
            # Zero-initialised residual branches: each block starts as the identity (Goyal et al.; Fixup without norms).
            for block in backbone.modules():
                if isinstance(block, BasicBlock):
                    nn.init.zeros_(block.bn2.weight if norm == "group" else block.conv2.weight)
        _dilate_layer4(backbone)
        self.stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            backbone.layer1,
            backbone.layer2,
            backbone.layer3,
            backbone.layer4,
        )
        if norm == "frozen":
            self._fold_frozen_batch_norms()
        self.aspp = _strip_norm_and_dropout(ASPP(512, list(aspp_rates), decoder_channels))
        # Group norm (independent of the batch) keeps the volume features near unit scale: with no normalisation at
        # all they grew to a standard deviation of ~20 and drowned the colour channels beside them.
        self.aspp_out = nn.Sequential(
            nn.Conv2d(decoder_channels, decoder_channels, 3, padding=1), _group_norm(decoder_channels), nn.ReLU()
        )
        self.low_level = nn.Sequential(nn.Conv2d(64, 48, 1), nn.ReLU())
        self.fuse = nn.Sequential(
            nn.Conv2d(decoder_channels + 48, decoder_channels, 3, padding=1), _group_norm(decoder_channels), nn.ReLU()
        )
        self.head = nn.Conv2d(decoder_channels, volume_channels * volume_depth, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def _fold_frozen_batch_norms(self) -> None:
        """Each FrozenBatchNorm2d folded into the convolution before it, and replaced by an identity."""
        for conv_name, norm_name in _CONV_NORM_PAIRS:
            conv, norm = self.get_submodule(conv_name), self.get_submodule(norm_name)
            assert isinstance(norm, FrozenBatchNorm2d) and norm.eps == _FROZEN_EPS, norm_name
            weight, bias = _folded(conv.weight, conv.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var)
            conv.weight.copy_(weight)
            conv.bias = nn.Parameter(bias)
            parent, _, child = norm_name.rpartition(".")
            setattr(self.get_submodule(parent), child, nn.Identity())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Checkpoints written before the folding hold each frozen norm's four buffers and convolutions without
        # biases: fold them the same way, so they load into the same function.
        for conv, norm in _CONV_NORM_PAIRS if self.norm == "frozen" else []:
            keys = [f"{prefix}{norm}.{name}" for name in ("weight", "bias", "running_mean", "running_var")]
            if keys[0] in state_dict:
                weight, bias = _folded(
                    state_dict[f"{prefix}{conv}.weight"], state_dict.get(f"{prefix}{conv}.bias"),
                    *(state_dict.pop(k) for k in keys),
                )  # fmt: skip
                state_dict[f"{prefix}{conv}.weight"], state_dict[f"{prefix}{conv}.bias"] = weight, bias
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @staticmethod
    def _load_backbone(backbone: nn.Module, path: Path) -> None:
        if not path.is_file():
            raise DataError(path, "backbone weights file does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            backbone.load_state_dict(state, strict=False)
        except Exception as exc:  # noqa: BLE001 - any failure here is the file's fault
            raise DataError(path, f"not a ResNet-34 state dict ({exc})") from None

    def forward(self, images: Float[Tensor, "n 3 H W"]) -> Float[Tensor, "n C D h w"]:
        x = (images - self.mean) / self.std
        x = self.stem(x)
        low = self.layer1(x)
        high = self.layer4(self.layer3(self.layer2(low)))
        high = self.aspp_out(self.aspp(high))
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        x = self.fuse(torch.cat([high, self.low_level(low)], dim=1))
        x = F.interpolate(x, size=self.volume_hw, mode="bilinear", align_corners=False)
        x = self.head(x)
        return x.view(x.shape[0], self.volume_channels, self.volume_depth, *self.volume_hw)
