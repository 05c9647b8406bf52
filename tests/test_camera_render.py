"""The model's render path for bare cameras (ns-viewer, ns-render): conditioning picked by index or viewer control."""

from __future__ import annotations

import re
import socket

import pytest
import torch
from conftest import tiny_trainer_config
from nerfstudio.cameras.cameras import CameraType
from nerfstudio.viewer.utils import CameraState, get_camera, parse_object
from nerfstudio.viewer.viewer_elements import ViewerElement


@pytest.fixture(scope="module")
def pipeline(toy32):
    torch.manual_seed(0)
    config = tiny_trainer_config(toy32)
    config.pipeline.renders.sample_steps = 2
    pipeline = config.pipeline.setup(device="cpu", test_mode="test")
    pipeline.eval()
    return pipeline


def _viewer_camera(c2w, idx: int = 0):
    """A camera exactly as nerfstudio's viewer builds it: its own fov and size, ``cam_idx`` = last clicked camera."""
    state = CameraState(fov=0.7, aspect=48 / 40, c2w=c2w, camera_type=CameraType.PERSPECTIVE, idx=idx)
    return get_camera(state, image_height=40, image_width=48)


def test_render_outside_the_viewer_follows_config_and_camera_idx(pipeline, capsys):
    model, renders = pipeline.model, pipeline.camera_renders
    ds = pipeline.datamanager.eval_dataset
    camera = _viewer_camera(ds.c2w[3])
    camera.metadata = {}
    out = model.get_outputs_for_camera(camera)
    assert out["rgb"].shape == (40, 48, 3) and out["sample"].shape == (40, 48, 3)
    assert out["depth"].shape == (40, 48, 1) and out["accumulation"].shape == (40, 48, 1)
    assert float(out["rgb"].min()) >= 0 and float(out["rgb"].max()) <= 1
    # renders.object's first view (toy data has no view 64).
    assert set(renders._cache) == {("eval", ds.object_images[0][0])}
    # ns-render --camera-idx N conditions on image N of the evaluation split.
    camera.metadata = {"cam_idx": 5}
    model.get_outputs_for_camera(camera)
    assert set(renders._cache) == {("eval", 5)}
    camera.metadata = {"cam_idx": len(ds)}
    with pytest.raises(SystemExit):
        model.get_outputs_for_camera(camera)
    assert re.search(r"^\S+: error: camera index .* out of range", capsys.readouterr().err)
    # renders.object past the last object (ns-render without --camera-idx): one line, no render.
    camera.metadata, renders.viewer_object.value = {}, ds.num_objects
    with pytest.raises(SystemExit):
        model.get_outputs_for_camera(camera)
    assert "error: object 1 out of range: the eval split has 1 objects" in capsys.readouterr().err
    renders.viewer_object.value = 0


def test_viewer_controls_and_training_camera_clicks_choose_the_source(pipeline):
    import viser

    model, renders = pipeline.model, pipeline.camera_renders
    eval_ds, train_ds = pipeline.datamanager.eval_dataset, pipeline.datamanager.train_dataset
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = viser.ViserServer(host="127.0.0.1", port=port, verbose=False)
    # What nerfstudio's viewer installs: the ViewerElements among the pipeline's modules.
    elements = [element for _, element in parse_object(pipeline, ViewerElement, "Custom Elements")]
    assert {e.name for e in elements} == {"Objects from", "Object", "Source view", "Diffusion sample"}
    try:
        for element in elements:  # what the viewer does with the model's controls
            element.install(server)
        c2w = eval_ds.c2w[3]
        # Before any click the viewer sends cam_idx 0: the controls decide (here the second view of eval object 0).
        second = eval_ds.object_images[0][1]
        renders.viewer_source_view.value = int(eval_ds.view_index[second])
        out = model.get_outputs_for_camera(_viewer_camera(c2w, idx=0))
        assert set(renders._cache) == {("eval", second)}
        assert "sample" in out
        renders.viewer_sample.value = False
        assert "sample" not in model.get_outputs_for_camera(_viewer_camera(c2w, idx=0))
        # A click on training camera 7: its object and view become the source, and the controls show them.
        clicked = 7
        model.get_outputs_for_camera(_viewer_camera(c2w, idx=clicked))
        assert renders.viewer_split.value == "train"
        assert renders.viewer_object.value == int(train_ds.object_index[clicked])
        assert renders.viewer_source_view.value == int(train_ds.view_index[clicked])
        assert set(renders._cache) == {("train", clicked)}
        # Later renders still carry cam_idx 7, but the controls now win until the next click.
        renders.viewer_object.value = 0
        renders.viewer_source_view.value = -1  # no such view: the object's first
        model.get_outputs_for_camera(_viewer_camera(c2w, idx=clicked))
        assert set(renders._cache) == {("train", train_ds.object_images[0][0])}
        # A number typed past the last object renders the last one rather than ending the viewer's render thread.
        renders.viewer_object.value = train_ds.num_objects + 5
        model.get_outputs_for_camera(_viewer_camera(c2w, idx=clicked))
        assert renders.viewer_object.value == train_ds.num_objects - 1
    finally:
        for element in elements:
            element.remove()
        server.stop()


def test_bare_rays_as_ns_export_sends_them_stop_in_one_line(pipeline, capsys):
    """ns-export pointcloud/poisson/tsdf render rays of one scene; a genvs model needs source views."""
    from nerfstudio.cameras.rays import RayBundle

    rays = RayBundle(origins=torch.zeros(4, 3), directions=torch.ones(4, 3), pixel_area=torch.ones(4, 1))
    with pytest.raises(SystemExit) as err:
        pipeline.model.get_outputs(rays)
    assert err.value.code == 1
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ": error:" in ln]
    assert ": error: genvs renders need source views" in line and "ns-export" in line
