"""LPIPS and FID: skipped with a reason without their weights, computed when the files are in torch's hub cache.

The real weights cannot be downloaded here, so the test puts randomly initialised networks of the right layout under
the expected file names: that checks the plumbing (where the files are looked for, how they are loaded, the keys of
the result), not the values of the metrics.
"""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from genvs_ns.evaluation.metrics import INCEPTION_FILE, VGG16_FILE, perceptual_metrics


@pytest.fixture
def hub_dir(tmp_path):
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(previous)


def _images(seed: int) -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_without_weights_both_are_skipped_with_the_reason(hub_dir):
    result = perceptual_metrics({"nerf": _images(0)}, _images(1))
    assert "cannot be downloaded" in result["lpips_skipped"] and str(hub_dir) in result["lpips_skipped"]
    assert "cannot be downloaded" in result["fid_skipped"]
    assert not any(k.endswith(("_lpips", "_fid")) for k in result)


def test_with_weight_files_both_are_computed(hub_dir):
    import torchvision
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    vgg = torchvision.models.vgg16().state_dict()
    torch.save({k: v.half() for k, v in vgg.items()}, hub_dir / VGG16_FILE)  # half the bytes; loading casts back
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict"), mock.patch("torch.load", return_value={}):
        inception = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="-")
    torch.save(inception.state_dict(), hub_dir / INCEPTION_FILE)
    result = perceptual_metrics({"nerf": _images(0), "sample": _images(2)}, _images(1))
    for key in ("nerf_lpips", "sample_lpips", "nerf_fid", "sample_fid"):
        assert isinstance(result[key], float) and result[key] == result[key], key  # a number, not NaN
    assert not any(k.endswith("_skipped") for k in result)
