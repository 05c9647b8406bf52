"""Perceptual metrics (LPIPS, FID) when their network weights are on disk; nothing is downloaded.

torchmetrics computes both, but needs torchvision's VGG-16 (LPIPS, as pixelNeRF's scripts) and torch-fidelity's
Inception (FID) weights in torch's hub cache. Without them the result says what was skipped and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterable, Union

import torch
from jaxtyping import Float
from torch import Tensor

VGG16_FILE = "vgg16-397923af.pth"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


def _weights(name: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def missing_weights(name: str, label: str) -> str:
    """Why a metric is skipped: its weights are not in torch's hub cache (nothing is downloaded)."""
    return f"{label} weights not found at {_weights(name)} (they cannot be downloaded here)"


def perceptual_metrics(
    predictions: Dict[str, Float[Tensor, "n 3 H W"]], targets: Float[Tensor, "n 3 H W"]
) -> Dict[str, Union[float, str]]:
    """``{name}_lpips`` per prediction set and ``{name}_fid`` against the targets, or ``*_skipped`` reasons."""
    result: Dict[str, Union[float, str]] = {}
    vgg = _weights(VGG16_FILE)
    if vgg.is_file():
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        lpips = LearnedPerceptualImagePatchSimilarity(net_type="vgg", normalize=True)
        for name, images in predictions.items():
            result[f"{name}_lpips"] = float(lpips(images.clamp(0, 1), targets))
            lpips.reset()
    else:
        result["lpips_skipped"] = missing_weights(VGG16_FILE, "VGG-16")
    if len(targets) < 2 and _weights(INCEPTION_FILE).is_file():
        result["fid_skipped"] = "FID needs at least 2 images"
    else:
        result.update(streamed_fid(list(predictions), [(targets, predictions)]))
    return result


def image_lpips() -> Callable[[Float[Tensor, "3 H W"], Float[Tensor, "3 H W"]], float] | None:
    """Per-image LPIPS (VGG, pixelNeRF's choice) where the weights are on disk, else None."""
    if not _weights(VGG16_FILE).is_file():
        return None
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    metric = LearnedPerceptualImagePatchSimilarity(net_type="vgg", normalize=True, reduction="mean")

    def lpips(prediction: Tensor, truth: Tensor) -> float:
        metric.reset()
        return float(metric(prediction[None].clamp(0, 1).cpu(), truth[None].cpu()))

    return lpips


def streamed_fid(
    names: list[str], batches: Iterable[tuple[Float[Tensor, "n 3 H W"], Dict[str, Float[Tensor, "n 3 H W"]]]]
) -> Dict[str, Union[float, str]]:
    """``{name}_fid`` of all generated images against all ground-truth ones (3DiM's protocol), fed batch by batch
    as (truth, {name: generated}), so a whole split never sits in memory; or ``fid_skipped`` with the reason."""
    inception = _weights(INCEPTION_FILE)
    if not inception.is_file():
        return {"fid_skipped": missing_weights(INCEPTION_FILE, "Inception")}
    from torchmetrics.image.fid import FrechetInceptionDistance

    weights = str(inception)
    fids = {name: FrechetInceptionDistance(normalize=True, feature_extractor_weights_path=weights) for name in names}
    for truth, generated in batches:
        for name, fid in fids.items():
            fid.update(truth, real=True)
            fid.update(generated[name].clamp(0, 1), real=False)
    return {f"{name}_fid": float(fid.compute()) for name, fid in fids.items()}
