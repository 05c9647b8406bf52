"""Object-level batches for a generalizable model: B objects, each with 1-3 source views and a target view.

A subclass of nerfstudio's ``VanillaDataManager`` (so nerfstudio's tools accept it) that replaces its ray sampling:
nerfstudio's ``CacheDataloader`` would decode and keep every image of the data set, which for SRN is far too many.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Literal, Tuple, Type, Union

import numpy as np
import torch
import torch.distributed as dist
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.utils.dataloaders import FixedIndicesEvalDataloader
from torch import Tensor

from genvs_ns.data.dataset import SRNDataset
from genvs_ns.data.srn_dataparser import SRNDataParserConfig

ObjectBatch = Dict[str, Tensor]
"""source_images [B, V, 3, H, W], source_c2w [B, V, 3, 4], source_K [B, V, 3, 3], target_image [B, 3, H, W],
target_c2w [B, 3, 4], target_K [B, 3, 3], object_index [B], target_index [B] (dataset image indices)."""


@dataclass
class GeNVSDataManagerConfig(VanillaDataManagerConfig):
    """Object-level multi-view batches from an SRN data set."""

    _target: Type = field(default_factory=lambda: GeNVSDataManager)
    dataparser: SRNDataParserConfig = field(default_factory=SRNDataParserConfig)
    """The SRN dataparser."""
    objects_per_batch: int = 4
    """Objects in one training batch (per process under DDP)."""
    min_source_views: int = 1
    """Fewest source views of an object in a batch; each step draws a count between min and max for the batch."""
    max_source_views: int = 3
    """Most source views of an object in a batch."""
    image_cache_size: int = 4096
    """Decoded images kept in RAM per dataset, as uint8 (48 KiB each at 128 px; least recently used go first; 0: none).
    Images load lazily from disk."""
    eval_num_objects: int = 8
    """Held-out objects used for evaluation (the first N by id): bounds evaluation time."""
    eval_num_target_views: int = 4
    """Target views per held-out object (evenly spread over its views, the source view excluded)."""
    eval_source_view: int = 64
    """Source view index for evaluation (SRN protocol: 64); objects without it use their first view."""
    seed: int = 0
    """Seed of the training sampler (offset by the DDP rank)."""


def evaluation_pairs(
    ds: SRNDataset, num_objects: int, views_per_object: int, source_view: int = 64
) -> list[tuple[int, int, int]]:
    """(object, source image, target image) for the first ``num_objects`` objects: view ``source_view`` (else the
    object's first) as the source, and ``views_per_object`` targets spread evenly over the object's other views."""
    pairs = []
    for obj in range(min(num_objects, ds.num_objects)):
        source = ds.view_image(obj, source_view)
        others = [i for i in ds.object_images[obj] if i != source]
        picks = np.linspace(0, len(others) - 1, min(views_per_object, len(others))).round()
        pairs += [(obj, source, others[int(p)]) for p in picks]
    return pairs


class GeNVSDataManager(VanillaDataManager[SRNDataset]):
    config: GeNVSDataManagerConfig
    train_dataset: SRNDataset
    eval_dataset: SRNDataset

    def __init__(
        self,
        config: GeNVSDataManagerConfig,
        device: Union[torch.device, str] = "cpu",
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        **kwargs,
    ):
        if not 1 <= config.min_source_views <= config.max_source_views:
            raise SystemExit("genvs-ns: error: need 1 <= min_source_views <= max_source_views")
        super().__init__(config, device, test_mode, world_size, local_rank, **kwargs)

    def create_train_dataset(self) -> SRNDataset:
        return SRNDataset(self.train_dataparser_outputs, cache_size=self.config.image_cache_size)

    def create_eval_dataset(self) -> SRNDataset:
        outputs = self.dataparser.get_dataparser_outputs(split=self.test_split)
        return SRNDataset(outputs, cache_size=self.config.image_cache_size)

    def setup_train(self) -> None:
        ds = self.train_dataset
        # Each rank trains on its own objects; objects with too few views for the largest batch are still usable
        # with fewer sources.
        self.train_objects = [o for o in range(ds.num_objects) if len(ds.object_images[o]) >= 2]
        # The global rank: nerfstudio passes the rank on this machine, which repeats on every machine of a multi-node
        # run.
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else self.local_rank
        self.train_objects = self.train_objects[rank :: self.world_size] or self.train_objects
        self.rng = np.random.default_rng(self.config.seed + rank)

    def setup_eval(self) -> None:
        ds = self.eval_dataset
        self.eval_pairs = evaluation_pairs(
            ds, self.config.eval_num_objects, self.config.eval_num_target_views, self.config.eval_source_view
        )
        # nerfstudio's tools (ns-render spiral) read start cameras here; it loads images one at a time.
        self.eval_dataloader = FixedIndicesEvalDataloader(input_dataset=ds, device=self.device)

    def _batch(self, ds: SRNDataset, sources: list[list[int]], targets: list[int]) -> ObjectBatch:
        def stack(idx: list[int]) -> Tuple[Tensor, Tensor, Tensor]:
            return torch.stack([ds.image(i) for i in idx]), ds.c2w[idx], ds.K[idx]

        src = [stack(s) for s in sources]
        tgt_images, tgt_c2w, tgt_K = stack(targets)
        batch = {
            "source_images": torch.stack([s[0] for s in src]),
            "source_c2w": torch.stack([s[1] for s in src]),
            "source_K": torch.stack([s[2] for s in src]),
            "target_image": tgt_images,
            "target_c2w": tgt_c2w,
            "target_K": tgt_K,
            "object_index": ds.object_index[targets],
            "target_index": torch.tensor(targets),
        }
        return {k: v.to(self.device) for k, v in batch.items()}

    def next_train(self, step: int) -> Tuple[ObjectBatch, Dict]:
        self.train_count += 1
        ds, rng = self.train_dataset, self.rng
        objects = rng.choice(self.train_objects, size=self.config.objects_per_batch, replace=True)
        fewest = min(len(ds.object_images[o]) for o in objects)
        num_sources = int(rng.integers(self.config.min_source_views, self.config.max_source_views + 1))
        num_sources = max(1, min(num_sources, fewest - 1))
        sources, targets = [], []
        for obj in objects:
            picked = rng.choice(ds.object_images[obj], size=num_sources + 1, replace=False).tolist()
            sources.append(picked[:-1])
            targets.append(picked[-1])
        return self._batch(ds, sources, targets), {}

    def eval_batch(self, pairs: list[tuple[int, int, int]]) -> ObjectBatch:
        return self._batch(self.eval_dataset, [[s] for _, s, _ in pairs], [t for _, _, t in pairs])

    def next_eval(self, step: int) -> Tuple[ObjectBatch, Dict]:
        self.eval_count += 1
        n = self.config.objects_per_batch
        start = (self.eval_count - 1) * n
        pairs = [self.eval_pairs[(start + k) % len(self.eval_pairs)] for k in range(n)]
        return self.eval_batch(pairs), {}

    def next_eval_image(self, step: int) -> Tuple[ObjectBatch, Dict]:
        self.eval_count += 1
        return self.eval_batch([self.eval_pairs[(self.eval_count - 1) % len(self.eval_pairs)]]), {}

    def get_train_rays_per_batch(self) -> int:
        ds = self.train_dataset
        return self.config.objects_per_batch * int(ds.cameras.height[0]) * int(ds.cameras.width[0])
