"""Image-quality figures that tell a sharp sample from a blur and from speckle, on mostly-white SRN-style frames.

Full-frame PSNR/SSIM are dominated by the white background (an all-white image scores SSIM ~0.75 on toy data), so
every figure is also computed on the object crop: the ground truth's foreground bounding box plus a margin. The
gradient-energy ratio (mean |horizontal| + |vertical| finite differences of a prediction over the same of the truth)
separates the two failure modes one PSNR hides: a blur scores < 1, speckle > 1, and a sharp clean image about 1.
Where LPIPS weights are on disk (evaluation/metrics.py), LPIPS on the frame and on the crop too: the figure
generative view synthesis is compared by, which does not reward a blur for sitting at the mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from genvs_ns.data.images import foreground

CROP_MARGIN = 3
# torchmetrics' SSIM uses an 11-pixel Gaussian window: a smaller crop is widened to this (within the frame).
MIN_CROP = 16


def foreground_box(image: Float[Tensor, "3 H W"], margin: int = CROP_MARGIN) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), exclusive ends, of the non-white pixels plus ``margin``, at least MIN_CROP wide
    where the frame allows; the whole frame for an empty image."""
    H, W = image.shape[-2:]
    mask = foreground(image)[0]
    rows, cols = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
    if len(rows) == 0:
        return 0, H, 0, W

    def span(lo: int, hi: int, size: int) -> tuple[int, int]:
        lo, hi = max(0, lo - margin), min(size, hi + 1 + margin)
        short = min(MIN_CROP, size) - (hi - lo)
        if short > 0:
            lo = max(0, lo - (short + 1) // 2)
            hi = min(size, lo + min(MIN_CROP, size))
            lo = hi - min(MIN_CROP, size)
        return lo, hi

    top, bottom = span(int(rows[0]), int(rows[-1]), H)
    left, right = span(int(cols[0]), int(cols[-1]), W)
    return top, bottom, left, right


def gradient_energy(images: Float[Tensor, "*batch 3 H W"]) -> Float[Tensor, "*batch"]:
    """Mean absolute horizontal plus mean absolute vertical finite difference, per image."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean(dim=(-3, -2, -1))
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean(dim=(-3, -2, -1))
    return dx + dy


def image_scores(prediction: Float[Tensor, "3 H W"], truth: Float[Tensor, "3 H W"]) -> dict[str, float]:
    """PSNR and SSIM on the full frame and on the truth's object crop, and both images' gradient energies."""
    p, t = prediction.clamp(0, 1)[None].float(), truth[None].float()
    top, bottom, left, right = foreground_box(truth)
    pc, tc = p[..., top:bottom, left:right], t[..., top:bottom, left:right]
    return {
        "psnr": float(peak_signal_noise_ratio(p, t, data_range=1.0)),
        "ssim": float(structural_similarity_index_measure(p, t, data_range=1.0)),
        "crop_psnr": float(peak_signal_noise_ratio(pc, tc, data_range=1.0)),
        "crop_ssim": float(structural_similarity_index_measure(pc, tc, data_range=1.0)),
        "gradient_energy": float(gradient_energy(p)[0]),
        "truth_gradient_energy": float(gradient_energy(t)[0]),
    }


def perceptual_scores(
    lpips: nn.Module, predictions: Float[Tensor, "n 3 H W"], truths: Float[Tensor, "n 3 H W"]
) -> list[dict[str, float]]:
    """Per image: LPIPS on the full frame and on the truth's object crop (``lpips_network()``'s network)."""
    from genvs_ns.evaluation.metrics import lpips_distances

    full = lpips_distances(lpips, predictions, truths)
    crops = []
    for prediction, truth in zip(predictions, truths):
        top, bottom, left, right = foreground_box(truth)
        box = (..., slice(top, bottom), slice(left, right))
        crops.append(lpips_distances(lpips, prediction[box][None], truth[box][None]))
    return [{"lpips": float(f), "crop_lpips": float(c)} for f, c in zip(full, torch.cat(crops))]


@dataclass
class Summary:
    """Means over a set of images; ``gradient_ratio`` is the ratio of the mean gradient energies (robust to a few
    nearly empty frames, where a per-image ratio explodes)."""

    n: int
    psnr: float
    ssim: float
    crop_psnr: float
    crop_ssim: float
    gradient_ratio: float
    lpips: float | None = None
    crop_lpips: float | None = None

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items() if v is not None}


def summarise(scores: list[dict[str, float]]) -> Summary:
    def mean(key: str) -> float:
        return sum(s[key] for s in scores) / len(scores)

    return Summary(
        n=len(scores),
        psnr=mean("psnr"),
        ssim=mean("ssim"),
        crop_psnr=mean("crop_psnr"),
        crop_ssim=mean("crop_ssim"),
        gradient_ratio=mean("gradient_energy") / max(mean("truth_gradient_energy"), 1e-8),
        **{k: mean(k) for k in ("lpips", "crop_lpips") if all(k in s for s in scores)},
    )


def thirds(values: list[float]) -> tuple[float, float]:
    """Means of the first and the last third of a sequence (at least one element each)."""
    k = max(1, len(values) // 3)
    return sum(values[:k]) / k, sum(values[-k:]) / k
