"""Depth maps beside an SRN instance's images: ``<instance>/depth/<stem>.npy``, z-depth along the camera's forward
axis (float32, 0 where the ray misses). SRN itself has none; the toy data writes them with ``--depth``, and the
geometry diagnostics and the depth loss read them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from jaxtyping import Float

from genvs_ns.errors import DataError


def depth_path(image: Path) -> Path:
    """Where ``image``'s depth map lives: ``<instance>/depth/<stem>.npy``."""
    return Path(image).parent.parent / "depth" / f"{Path(image).stem}.npy"


def write_depth(image: Path, t: Float[np.ndarray, "H W"]) -> None:
    """Write ``image``'s z-depth map from ray parameters ``t`` (inf where the ray misses)."""
    path = depth_path(image)
    path.parent.mkdir(exist_ok=True)
    np.save(path, np.where(np.isfinite(t), t, 0).astype(np.float32))


def read_depth(image: Path) -> np.ndarray | None:
    """``image``'s z-depth map (``depth_path``), or None if there is none (data made without ``--depth``, or not toy
    data)."""
    path = depth_path(image)
    if not path.is_file():
        return None
    try:
        return np.load(path).astype(np.float32)
    except (OSError, ValueError) as exc:
        raise DataError(path, f"unreadable depth map ({exc})") from None
