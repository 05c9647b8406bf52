"""The model's render path for bare cameras (ns-viewer, ns-render): conditioning picked by index or viewer control."""

from __future__ import annotations

import torch
from conftest import tiny_trainer_config
from nerfstudio.cameras.cameras import Cameras


def test_viewer_camera_renders_rgb_depth_accumulation_and_sample(toy32):
    torch.manual_seed(0)
    config = tiny_trainer_config(toy32)
    config.pipeline.model.render_sample_steps = 2
    pipeline = config.pipeline.setup(device="cpu", test_mode="test")
    pipeline.eval()
    model = pipeline.model
    ds = pipeline.datamanager.eval_dataset
    # A viewer camera: its own resolution and field of view, no dataset metadata.
    c2w = ds.c2w[3]
    camera = Cameras(camera_to_worlds=c2w[None], fx=50.0, fy=50.0, cx=24.0, cy=20.0, width=48, height=40)
    out = model.get_outputs_for_camera(camera)
    assert out["rgb"].shape == (40, 48, 3) and out["sample"].shape == (40, 48, 3)
    assert out["depth"].shape == (40, 48, 1) and out["accumulation"].shape == (40, 48, 1)
    assert float(out["rgb"].min()) >= 0 and float(out["rgb"].max()) <= 1
    # The viewer's controls choose the conditioning: the first view of the object (toy data has no view 64).
    assert model.default_source_image() == ds.view_image(0, 64) == ds.object_images[0][0]
    model.viewer_sample.value = False  # the checkbox: no diffusion sample
    assert "sample" not in model.get_outputs_for_camera(camera)
    # ns-render --camera-idx N conditions on image N of the evaluation split.
    camera.metadata = {"cam_idx": 5}
    model.get_outputs_for_camera(camera)
    assert set(model._conditioning_cache) == {5}
