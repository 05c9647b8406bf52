"""Reading SRN images: one place that knows about RGBA, white backgrounds, downscaling and broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from jaxtyping import Float
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from genvs_ns.errors import DataError


def image_size(path: Path, verify: bool = True) -> tuple[int, int]:
    """(width, height) from the header; with ``verify`` also checks the file is complete (PNG CRCs) without decoding."""
    try:
        with Image.open(path) as im:
            size = im.size
            if verify:
                im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"unreadable or truncated image ({exc})") from None
    return size


def load_rgb_uint8(path: Path, size: tuple[int, int] | None = None, pad_square: bool = False) -> np.ndarray:
    """Uint8 [H, W, 3]. RGBA is composited on white, as SRN's background is white.

    ``size`` (width, height) resizes with an area filter, which is exact averaging for integer downscale factors.
    ``pad_square`` first pads a non-square picture with white to a square around its centre, so that resizing it to
    the model's square images does not stretch the object.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I"):
                # 16-bit greyscale: PIL's convert("RGB") clips at 255, turning almost every pixel white.
                grey = np.asarray(im).astype(np.float64) * (255.0 / 65535.0)
                im = Image.fromarray(grey.round().clip(0, 255).astype(np.uint8), mode="L")
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, rgba)
            im = im.convert("RGB")
            if pad_square and im.size[0] != im.size[1]:
                side = max(im.size)
                square = Image.new("RGB", (side, side), (255, 255, 255))
                square.paste(im, ((side - im.size[0]) // 2, (side - im.size[1]) // 2))
                im = square
            if size is not None and im.size != tuple(size):
                im = im.resize(tuple(size), Image.Resampling.BOX)
            return np.array(im, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on read-only arrays
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"unreadable or truncated image ({exc})") from None


def load_rgb(path: Path, size: tuple[int, int] | None = None, pad_square: bool = False) -> np.ndarray:
    """Float32 [H, W, 3] in [0, 1]: ``load_rgb_uint8`` / 255."""
    return load_rgb_uint8(path, size, pad_square).astype(np.float32) / 255.0


WHITE_THRESHOLD = 0.99  # SRN foreground: pixels that are not (almost) pure white


def foreground(images: Float[Tensor, "*batch 3 H W"]) -> Float[Tensor, "*batch 1 H W"]:
    """1 where a pixel is not (almost) pure white: SRN's and the toy data's object mask."""
    return (images < WHITE_THRESHOLD).any(dim=-3, keepdim=True).float()
