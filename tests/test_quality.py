"""The quality figures: object crop, gradient-energy ratio (blur < 1 < speckle), thirds of a path."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genvs_ns.evaluation.quality import foreground_box, gradient_energy, image_scores, summarise, thirds


def _object(size: int = 64) -> torch.Tensor:
    """A white frame with a textured square object at rows 20-39, columns 10-33."""
    image = torch.ones(3, size, size)
    yy, xx = torch.meshgrid(torch.arange(20), torch.arange(24), indexing="ij")
    checker = ((yy // 4 + xx // 4) % 2).float()
    image[:, 20:40, 10:34] = torch.stack([0.2 + 0.6 * checker, 0.3 * checker, 0.8 - 0.5 * checker])
    return image


def test_foreground_box_is_the_object_plus_margin_and_at_least_16_px():
    assert foreground_box(_object()) == (17, 43, 7, 37)
    dot = torch.ones(3, 64, 64)
    dot[:, 30, 30] = 0.0
    top, bottom, left, right = foreground_box(dot)
    assert bottom - top == 16 and right - left == 16 and top <= 30 < bottom and left <= 30 < right
    corner = torch.ones(3, 64, 64)
    corner[:, 0, 63] = 0.0
    assert foreground_box(corner) == (0, 16, 48, 64)  # widened inside the frame
    assert foreground_box(torch.ones(3, 32, 32)) == (0, 32, 0, 32)  # nothing: the whole frame


def test_gradient_ratio_tells_blur_from_speckle_and_truth():
    truth = _object()
    blur = F.avg_pool2d(truth[None], 5, stride=1, padding=2, count_include_pad=False)[0]
    speckle = (truth + 0.15 * torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    ratio = {
        name: summarise([image_scores(p, truth)]).gradient_ratio
        for name, p in [("truth", truth), ("blur", blur), ("speckle", speckle)]
    }
    assert abs(ratio["truth"] - 1) < 1e-6
    assert ratio["blur"] < 0.8
    assert ratio["speckle"] > 1.5
    assert float(gradient_energy(torch.ones(3, 8, 8))) == 0.0


def test_crop_scores_see_what_the_white_frame_hides():
    truth = _object()
    white = torch.ones_like(truth)
    full = crop = image_scores(white, truth)
    assert full["ssim"] > 0.6  # a blank frame looks good on the full frame...
    assert crop["crop_psnr"] < full["psnr"] - 5  # ...and not on the object
    assert crop["crop_ssim"] < full["ssim"] - 0.3
    perfect = image_scores(truth, truth)
    assert perfect["crop_ssim"] > 0.999 and perfect["psnr"] > 60


def test_thirds():
    assert thirds([1.0, 2, 3, 4, 5, 6, 7, 8, 9]) == (2.0, 8.0)
    assert thirds([1.0, 3.0]) == (1.0, 3.0)


class _MeanAbsoluteDifference(torch.nn.Module):
    """Stands in for LPIPS (same call and output shape) so the test checks which pixels each figure sees."""

    def forward(self, a: torch.Tensor, b: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return (a - b).abs().mean(dim=(1, 2, 3), keepdim=True)


def test_perceptual_scores_cover_the_frame_and_the_crop_and_are_summarised_only_when_every_image_has_them():
    from genvs_ns.evaluation.quality import perceptual_scores

    truth = _object()
    outside = truth.clone()
    outside[:, 50:60, 50:60] = 0.0  # a blot outside the object's box (17-43, 7-37): only the full frame sees it
    inside = truth.clone()
    inside[:, 25:30, 15:20] = 1.0
    scores = perceptual_scores(_MeanAbsoluteDifference(), torch.stack([outside, inside]), torch.stack([truth] * 2))
    assert scores[0]["crop_lpips"] == 0.0 < scores[0]["lpips"]
    assert scores[1]["crop_lpips"] > scores[1]["lpips"] > 0.0  # the same error weighs more in the smaller crop

    plain = [image_scores(p, truth) for p in (outside, inside)]
    assert "lpips" not in summarise(plain).as_dict()
    with_lpips = [dict(s, **p) for s, p in zip(plain, scores)]
    summary = summarise(with_lpips).as_dict()
    assert summary["crop_lpips"] == round((scores[0]["crop_lpips"] + scores[1]["crop_lpips"]) / 2, 4)
    assert "lpips" not in summarise([with_lpips[0], plain[1]]).as_dict()
