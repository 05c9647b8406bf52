"""Karras augmentation: the batched, differentiable warp matches k-diffusion's own, and moves target and conditioning
alike; a denoiser JSON with augment_wrapper trains through it."""

from __future__ import annotations

import json

import numpy as np
import torch
from conftest import tiny_trainer_config
from k_diffusion.augmentation import KarrasAugmentWrapper
from skimage import transform

from genvs_ns.model.augment import augment_jointly, draw_augmentation, warp


def test_identity_keeps_the_image():
    x = torch.rand(2, 4, 9, 12)
    assert torch.allclose(warp(x, torch.eye(3).expand(2, 3, 3)), x, atol=1e-5)


def test_warp_matches_k_diffusions_scikit_image_warp():
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(3, 24, 24, generator=generator)
    mat, cond = draw_augmentation(24, 24, prob=1.0, generator=generator)  # every transform at once
    assert cond.shape == (9,) and float(cond[2:].abs().sum()) > 0
    ours = warp(image[None], mat[None])[0].permute(1, 2, 0).numpy()
    # k-diffusion's KarrasAugmentationPipeline: transform.warp(image, AffineTransform(mat).inverse, ...).
    theirs = transform.warp(
        image.permute(1, 2, 0).numpy(), transform.AffineTransform(mat.numpy()).inverse, order=1, mode="reflect"
    )
    # Borders are reflected slightly differently; compare where the source pixel lies well inside the image.
    ys, xs = np.mgrid[0:24, 0:24]
    src = np.linalg.inv(mat.numpy()) @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    inside = ((src[:2] > 1) & (src[:2] < 22)).all(axis=0).reshape(24, 24)
    assert inside.sum() > 100
    np.testing.assert_allclose(ours[inside], theirs[inside], atol=1e-4)


def test_target_and_conditioning_move_together_and_aug_cond_says_how():
    torch.manual_seed(0)
    target = torch.rand(16, 3, 8, 8)
    features = torch.cat([target, torch.rand(16, 13, 8, 8)], dim=1)  # RGB channels equal the target
    (t, f), aug_cond = augment_jointly([target, features], prob=0.0)
    assert aug_cond.shape == (16, 9)
    assert torch.allclose(t, f[:, :3], atol=1e-6)
    # With prob 0 only the x-flip remains (k-diffusion always allows it), and aug_cond[:, 0] flags it.
    flipped = aug_cond[:, 0] > 0
    assert 0 < int(flipped.sum()) < 16 and float(aug_cond[:, 1:].abs().sum()) == 0
    assert torch.allclose(t[flipped], target[flipped].flip(-1), atol=1e-5)
    assert torch.allclose(t[~flipped], target[~flipped], atol=1e-5)


def test_a_denoiser_with_augment_wrapper_trains_through_the_warp(toy32, tmp_path):
    from genvs_ns.model.denoiser import resolve_config

    unet = json.loads(resolve_config("denoiser_tiny.json").read_text())
    unet["model"]["augment_wrapper"] = True
    path = tmp_path / "augmented.json"
    path.write_text(json.dumps(unet))
    torch.manual_seed(0)
    config = tiny_trainer_config(toy32)
    config.pipeline.model.denoiser_config = str(path)
    config.pipeline.model.augment_prob = 1.0
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    wrapper = pipeline.model.net.denoiser.denoiser.inner_model
    assert isinstance(wrapper, KarrasAugmentWrapper)
    seen = []
    wrapper.register_forward_pre_hook(lambda _, args, kwargs: seen.append(kwargs["aug_cond"]), with_kwargs=True)
    _, losses, _ = pipeline.get_train_loss_dict(0)
    assert torch.isfinite(losses["diffusion_loss"])
    assert seen[0].shape == (2, 9) and float(seen[0][:, 2:].abs().sum()) > 0  # prob 1: every transform applied
    losses["diffusion_loss"].backward()
    assert all(p.grad is not None for p in pipeline.model.net.denoiser.parameters())
