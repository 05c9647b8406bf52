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


VIDEO_FORMATS = ("mp4", "gif", "webp")


def write_video(path: Path, frames: Float[Tensor, "n 3 H W"], fps: int) -> None:
    """Frames in [0, 1] as a looping animation: H.264 MP4 (PyAV), or GIF / animated WebP (Pillow), by suffix.
    GIFs and WebPs render on repository pages and in chats, where a video may not."""
    video = (frames.permute(0, 2, 3, 1).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    suffix = Path(path).suffix.lower()
    if suffix == ".mp4":
        import imageio.v3 as iio

        iio.imwrite(path, video, plugin="pyav", fps=fps, codec="libx264")
        return
    if suffix not in (".gif", ".webp"):
        raise ValueError(f"write_video: {path}: not one of .{', .'.join(VIDEO_FORMATS)}")
    from PIL import Image

    images = [Image.fromarray(frame) for frame in video]
    options = {"optimize": True} if suffix == ".gif" else {"lossless": False, "quality": 90}
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0, **options)
