"""Generated views as a nerfstudio data set: one photo to a 3D scene with ``ns-train nerfacto`` (or splatfacto).

nerfstudio's ``nerfstudio-data`` format: ``images/`` and a ``transforms.json`` with shared pinhole intrinsics and one
camera-to-world matrix per image in OpenGL camera axes, which is what genvs-ns uses throughout (geometry.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor
from torchvision.utils import save_image

from genvs_ns.errors import DataError, GeNVSError


def export_nerfstudio(
    out: Path,
    images: Float[Tensor, "n 3 H W"],
    c2w: Float[Tensor, "n 3 4"],
    K: Float[Tensor, "n 3 3"],
) -> Path:
    """Writes ``out/images/frame_00000.png``... and ``out/transforms.json``; returns the latter. The input view(s)
    come first: they are the only frames that are not generated."""
    if (out / "transforms.json").exists():
        raise DataError(out, "already holds a transforms.json; choose a new --export-nerfstudio folder")
    if not torch.allclose(K, K[:1].expand_as(K)):
        raise GeNVSError("the frames have different intrinsics; a nerfstudio export needs one camera for all")
    (out / "images").mkdir(parents=True, exist_ok=True)
    H, W = images.shape[-2:]
    frames = []
    for i, (image, pose) in enumerate(zip(images, c2w)):
        name = f"images/frame_{i:05d}.png"
        save_image(image.float().clamp(0, 1), out / name)
        matrix = torch.cat([pose.double(), torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
        frames.append({"file_path": name, "transform_matrix": matrix.tolist()})
    k = K[0].double()
    transforms = {
        "camera_model": "OPENCV",
        "fl_x": float(k[0, 0]),
        "fl_y": float(k[1, 1]),
        "cx": float(k[0, 2]),
        "cy": float(k[1, 2]),
        "w": int(W),
        "h": int(H),
        "frames": frames,
    }
    path = out / "transforms.json"
    path.write_text(json.dumps(transforms, indent=1))
    return path
