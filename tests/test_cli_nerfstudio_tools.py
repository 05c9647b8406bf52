"""nerfstudio's own tools on a genvs checkpoint: ns-eval (SRN protocol metrics) and ns-render (rgb + sample)."""

from __future__ import annotations

import json
import math

import imageio.v3 as iio
import pytest
import torch
from conftest import BIN, run


@pytest.mark.slow
def test_ns_eval_writes_nerf_and_sample_metrics(tiny_run, tmp_path):
    out = tmp_path / "metrics.json"
    res = run(BIN / "ns-eval", "--load-config", tiny_run, "--output-path", out, "--render-output-path", tmp_path / "r")
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    for key in ("psnr", "ssim", "sample_psnr", "sample_ssim"):
        assert isinstance(results[key], float) and isinstance(results[f"{key}_std"], float)
    assert results["num_images"] == 2  # one held-out test object, two target views (genvs-tiny's eval settings)
    assert results["fps"] > 0 and results["num_rays_per_sec"] > 0  # per image, as nerfstudio's pipelines report
    # Without LPIPS/FID weights (as on CI) they are reported as skipped, with the reason; with them, computed.
    from genvs_ns.evaluation.metrics import INCEPTION_FILE, _weights, lpips_weights_on_disk

    if lpips_weights_on_disk():
        assert isinstance(results["nerf_lpips"], float)
    else:
        assert "cannot be downloaded" in results["lpips_skipped"]
    if _weights(INCEPTION_FILE).is_file():
        assert isinstance(results["nerf_fid"], float)
    else:
        assert "cannot be downloaded" in results["fid_skipped"]
    assert len(list((tmp_path / "r").glob("eval_img_*.png"))) == 2


@pytest.mark.slow
def test_ns_render_spiral_writes_rgb_and_sample(tiny_run, tmp_path):
    out = tmp_path / "spiral.mp4"
    res = run(
        BIN / "ns-render", "spiral", "--load-config", tiny_run, "--output-path", out,
        "--rendered-output-names", "rgb", "sample", "depth", "--seconds", "1", "--frame-rate", "3",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert iio.improps(out, plugin="pyav").shape == (3, 32, 96, 3)  # rgb | sample | depth side by side


@pytest.mark.slow
def test_ns_viewer_serves_its_page(tiny_run):
    import socket
    import subprocess
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(BIN / "ns-viewer"), "--load-config", str(tiny_run), "--viewer.websocket-host", "127.0.0.1",
         "--viewer.websocket-port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline, page = time.time() + 180, None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    page = response.read().decode("utf-8", "replace")
                break
            except OSError:
                time.sleep(1)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert page is not None and "<html" in page.lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_ns_render_interpolate_and_camera_path(tiny_run, tmp_path):
    # interpolate: through the evaluation cameras (one held-out object, 8 views: 7 transitions of 1 step).
    out = tmp_path / "interpolate.mp4"
    res = run(
        BIN / "ns-render", "interpolate", "--load-config", tiny_run, "--output-path", out,
        "--rendered-output-names", "rgb", "accumulation", "--interpolation-steps", "1", "--frame-rate", "7",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    frames, height, width, _ = iio.improps(out, plugin="pyav").shape
    assert frames == 7 and (height, width) == (32, 64)
    # camera-path: a path as the viewer exports it (4x4 camera-to-world rows, vertical fov in degrees).
    from genvs_ns.geometry import look_at
    from genvs_ns.sampling.trajectories import from_spherical

    up = torch.tensor([0.0, 0.0, 1.0])
    bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    poses = [look_at(from_spherical(1.3, math.radians(20), math.radians(a), up), up) for a in (0, 30, 60)]
    path = {
        "camera_type": "perspective", "render_height": 24, "render_width": 40, "seconds": 1.0, "fps": 3,
        "camera_path": [{"camera_to_world": torch.cat([p, bottom]).flatten().tolist(), "fov": 50} for p in poses],
    }  # fmt: skip
    path_file = tmp_path / "camera_path.json"
    path_file.write_text(json.dumps(path))
    out = tmp_path / "path.mp4"
    res = run(
        BIN / "ns-render", "camera-path", "--load-config", tiny_run, "--camera-path-filename", path_file,
        "--output-path", out, "--rendered-output-names", "rgb", "sample", "--camera-idx", "3",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert iio.improps(out, plugin="pyav").shape == (3, 24, 80, 3)


@pytest.mark.slow
def test_importing_the_plugin_leaves_path_and_home_alone(tmp_path):
    """nerfstudio imports the plugin for every method (ns-train nerfacto too): no PATH edit, no ffmpeg link written.
    PATH holds no ffmpeg here, so the link would be made if the import still did it."""
    import os
    import subprocess
    import sys

    (tmp_path / "bin").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"}
    env.update(HOME=str(tmp_path / "home"), PATH=str(tmp_path / "bin"))
    code = "import os; before = os.environ['PATH']; import genvs_ns.config; assert os.environ['PATH'] == before"
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (tmp_path / "home" / ".cache" / "genvs-ns").exists()
