"""SRN images as a nerfstudio ``InputDataset``, loaded lazily at the cameras' resolution with a bounded cache."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from jaxtyping import Float, UInt8
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.datasets.base_dataset import InputDataset
from torch import Tensor

from genvs_ns.data.depth_maps import depth_path, read_depth
from genvs_ns.data.images import load_rgb_uint8
from genvs_ns.geometry import intrinsics_matrix, ray_distance


class SRNDataset(InputDataset):
    """Never holds the whole data set: at most ``cache_size`` decoded images stay in RAM (least recently used).

    The cache is one uint8 block of ``cache_size`` slots, allocated with the dataset; its pages become resident only
    as slots fill. Cached in allocations of their own, made one by one while training, the images were small
    long-lived blocks scattered through the heap between the step's large activations, and, with freed memory kept
    for reuse (cpu_runtime.py), the heap fragmented: ns-train genvs-tiny grew from 1.9 GB to 4.6 GB over the demo's
    1600 steps, and stayed at 1.9 GB with no cache at all."""

    def __init__(self, dataparser_outputs: DataparserOutputs, scale_factor: float = 1.0, cache_size: int = 4096):
        super().__init__(dataparser_outputs, scale_factor)
        self.cache_size = cache_size
        self._slots: OrderedDict[int, int] = OrderedDict()  # image index -> slot of _block, oldest use first
        size = (int(self.cameras.height.max()), int(self.cameras.width.max()))
        self._block = torch.empty(max(cache_size, 0), 3, *size, dtype=torch.uint8)
        self.object_index = self.metadata["object_index"]
        self.view_index = self.metadata["view_index"]
        self.num_objects = len(self.metadata["object_ids"])
        # One pass, not one scan of all images per object (SRN train: 2458 objects x 123k images).
        self.object_images: list[list[int]] = [[] for _ in range(self.num_objects)]
        for image, obj in enumerate(self.object_index.tolist()):
            self.object_images[obj].append(image)
        cams = self.cameras
        self.K = intrinsics_matrix(cams.fx[:, 0], cams.fy[:, 0], cams.cx[:, 0], cams.cy[:, 0])
        self.c2w = cams.camera_to_worlds
        # As Python numbers: reading a tensor element per loaded image was most of a training step's host reads.
        self._hw = list(zip(cams.height[:, 0].tolist(), cams.width[:, 0].tolist()))

    def view_image(self, obj: int, view: int) -> int:
        """Image index of an object's view ``view`` (SRN's protocol source view is 64), else its first view."""
        images = self.object_images[obj]
        views = [int(self.view_index[i]) for i in images]
        return images[views.index(view)] if view in views else images[0]

    def image_hw(self, idx: int) -> tuple[int, int]:
        return self._hw[idx]

    def image(self, idx: int) -> Float[Tensor, "3 H W"]:
        return self.image_uint8(idx).float() / 255.0

    def image_uint8(self, idx: int) -> UInt8[Tensor, "3 H W"]:
        h, w = self.image_hw(idx)
        slot = self._slots.get(idx)
        if slot is not None:
            self._slots.move_to_end(idx)
            return self._block[slot, :, :h, :w].clone()
        pixels = torch.from_numpy(load_rgb_uint8(self._dataparser_outputs.image_filenames[idx], size=(w, h)))
        pixels = pixels.permute(2, 0, 1)
        if self.cache_size <= 0:
            return pixels.contiguous()
        if len(self._slots) < self.cache_size:
            slot = len(self._slots)
        else:
            _, slot = self._slots.popitem(last=False)
        self._block[slot, :, :h, :w] = pixels
        self._slots[idx] = slot
        return pixels.contiguous()

    def depth(self, idx: int) -> Float[Tensor, "H W"] | None:
        """Image ``idx``'s depth as the renderer measures it (distance along each pixel's unit ray; 0 on background)
        at its camera's size, from the data set's depth map (toy data made with ``--depth``); None where it has none."""
        z = read_depth(self._dataparser_outputs.image_filenames[idx])
        if z is None:
            return None
        hw = self.image_hw(idx)
        z = torch.from_numpy(z)
        if tuple(z.shape) != hw:  # --downscale-factor: the nearest depth, never a blend across an edge
            z = F.interpolate(z[None, None], size=hw, mode="nearest")[0, 0]
        return ray_distance(z[None], self.K[idx][None])[0]

    def without_depth(self, images: list[int]) -> Path | None:
        """The first of these images without a depth map beside it (None: all have one). Existence only: nothing is
        read."""
        return next((f for f in (self.image_filenames[i] for i in images) if not depth_path(f).is_file()), None)

    def depths(self, images: list[int]) -> Float[Tensor, "n H W"] | None:
        """``depth`` of each of these images (of one size); None unless all have a depth map."""
        maps = [self.depth(i) for i in images]
        return None if any(m is None for m in maps) else torch.stack(maps)

    def get_numpy_image(self, image_idx: int) -> npt.NDArray[np.uint8]:
        return (self.image(image_idx).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    def get_image_float32(self, image_idx: int) -> Float[Tensor, "H W 3"]:
        return self.image(image_idx).permute(1, 2, 0)
