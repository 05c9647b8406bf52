"""Video writing, and an ffmpeg executable for nerfstudio's tools on machines without one.

``ns-render`` (through mediapy) insists on an ``ffmpeg`` on PATH. The imageio-ffmpeg wheel carries a static build under
another name; if no ffmpeg is installed, a link named ``ffmpeg`` to it is put in ``~/.cache/genvs-ns/bin`` (under
``$XDG_CACHE_HOME`` where set) and that folder on this process's PATH. GeNVSPipeline does it when a tool loads a genvs
checkpoint, before ns-render checks; never on import (nerfstudio imports the plugin for every method). Our own
videos are written with PyAV (bundled with nerfstudio), which needs neither.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from jaxtyping import Float
from torch import Tensor


def ensure_ffmpeg_on_path() -> None:
    if shutil.which("ffmpeg") is not None:
        return
    try:
        import imageio_ffmpeg

        exe = Path(imageio_ffmpeg.get_ffmpeg_exe())
    except Exception:  # noqa: BLE001 - no bundled binary either: nerfstudio will say ffmpeg is missing
        return
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "genvs-ns" / "bin"
    link = cache / "ffmpeg"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.unlink(missing_ok=True)  # a dangling link from an older imageio-ffmpeg
            link.symlink_to(exe)
    except OSError:
        return
    os.environ["PATH"] = f"{cache}{os.pathsep}{os.environ.get('PATH', '')}"


def write_video(path: Path, frames: Float[Tensor, "n 3 H W"], fps: int) -> None:
    """H.264 MP4 of frames in [0, 1]."""
    import imageio.v3 as iio

    video = (frames.permute(0, 2, 3, 1).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    iio.imwrite(path, video, plugin="pyav", fps=fps, codec="libx264")
