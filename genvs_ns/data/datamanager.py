"""Object-level batches for a generalizable model: B objects, each with 1-3 source views and a target view.

A subclass of nerfstudio's ``VanillaDataManager`` (so nerfstudio's tools accept it) that replaces its ray sampling:
nerfstudio's ``CacheDataloader`` would decode and keep every image of the data set, which for SRN is far too many.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Literal, Tuple, Type, Union

import numpy as np
import torch
import torch.distributed as dist
import tyro
from nerfstudio.data.datamanagers.base_datamanager import DataManager, VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.pixel_samplers import PixelSamplerConfig
from nerfstudio.data.utils.dataloaders import FixedIndicesEvalDataloader

from genvs_ns import checks
from genvs_ns.data.dataset import SRNDataset
from genvs_ns.data.prefetch import BatchPlan, ObjectBatch, PlanShape, TrainingBatches, load_batch
from genvs_ns.data.srn_dataparser import SRNDataParserChoice, SRNDataParserConfig
from genvs_ns.errors import DataError, GeNVSError


@dataclass
class GeNVSDataManagerConfig(VanillaDataManagerConfig):
    """Object-level multi-view batches from an SRN data set."""

    _target: Type = field(default_factory=lambda: GeNVSDataManager)
    # nerfstudio's ray-batch settings, which object batches do not use: hidden from --help (config.yml keeps them).
    masks_on_gpu: tyro.conf.Suppress[bool] = False
    images_on_gpu: tyro.conf.Suppress[bool] = False
    train_num_rays_per_batch: tyro.conf.Suppress[int] = 1024
    train_num_images_to_sample_from: tyro.conf.Suppress[int] = -1
    train_num_times_to_repeat_images: tyro.conf.Suppress[int] = -1
    eval_num_rays_per_batch: tyro.conf.Suppress[int] = 1024
    eval_num_images_to_sample_from: tyro.conf.Suppress[int] = -1
    eval_num_times_to_repeat_images: tyro.conf.Suppress[int] = -1
    eval_image_indices: tyro.conf.Suppress[Tuple[int, ...] | None] = (0,)
    camera_res_scale_factor: tyro.conf.Suppress[float] = 1.0
    patch_size: tyro.conf.Suppress[int] = 1
    pixel_sampler: tyro.conf.Suppress[PixelSamplerConfig] = field(default_factory=PixelSamplerConfig)
    dataparser: SRNDataParserChoice = field(default_factory=SRNDataParserConfig)
    """The SRN dataparser: subcommand srn, typed after the other flags as for nerfstudio's dataparsers."""
    objects_per_batch: Union[int, Literal["auto"]] = 4
    """Objects in one training batch (per process under DDP). "auto": on CUDA as many as fit in 85% of the GPU's
    free memory at gpu-gib-per-object each (8 to 64); on the CPU 2."""
    gpu_gib_per_object: float = 1.2
    """GPU memory one object of a training batch takes, for objects-per-batch auto (the genvs preset at 128 px: 1.2
    GiB on an H200, scripts/gpu_smoke.sh's max_batch)."""
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
    num_workers: int = 2
    """Processes decoding training images ahead of the step (0: decode in the training process, between steps).
    The batches are the same for any number: the training process draws which views to load."""

    def check(self, prefix: str = "--pipeline.datamanager.") -> None:
        """Every number checked before the data set is parsed: one line naming the flag."""
        if self.objects_per_batch != "auto":
            checks.at_least(prefix + "objects-per-batch", self.objects_per_batch, 1)
        checks.greater_than(prefix + "gpu-gib-per-object", self.gpu_gib_per_object, 0)
        for name in ("min_source_views", "eval_num_objects", "eval_num_target_views"):
            checks.at_least(prefix + name.replace("_", "-"), getattr(self, name), 1)
        checks.at_least(prefix + "max-source-views", self.max_source_views, self.min_source_views)
        for name in ("image_cache_size", "eval_source_view", "num_workers"):
            checks.at_least(prefix + name.replace("_", "-"), getattr(self, name), 0)
        checks.seed(prefix + "seed", self.seed)


def auto_objects_per_batch(device: torch.device | str, gib_per_object: float) -> int:
    """Objects a training batch holds on ``device``: what fits in 85% of a GPU's free memory (8 to 64), else 2."""
    device = torch.device(device)
    if device.type != "cuda":
        return 2
    free, _ = torch.cuda.mem_get_info(device)
    return int(min(64, max(8, 0.85 * free / 2**30 // gib_per_object)))


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
        targets_per_object: int = 1,
        target_depth: bool = False,
        **kwargs,
    ):
        config.check()
        # The model's joint_views: how many target views of each object one training step denoises together.
        self.targets_per_object = targets_per_object
        # Whether training batches carry the targets' depth maps (the model's depth_loss_mult).
        self.target_depth = target_depth
        # VanillaDataManager.__init__, without its last part: it indexes every training camera twice looking for mixed
        # image sizes (for a collate function object batches do not use), 442k TensorDataclass indexings for a split
        # of SRN cars' shape (2212 objects x 50 views): 340 s of ns-train's start-up on 2 cores.
        self.config = config
        self.device = device
        self.objects_per_batch = (
            auto_objects_per_batch(device, config.gpu_gib_per_object)
            if config.objects_per_batch == "auto"
            else config.objects_per_batch
        )
        self.world_size = world_size
        self.local_rank = local_rank
        self.sampler = None
        self.test_mode = test_mode
        self.test_split = "test" if test_mode in ["test", "inference"] else "val"
        self.dataparser_config = self.config.dataparser
        if self.config.data is not None:
            self.config.dataparser.data = Path(self.config.data)
        else:
            self.config.data = self.config.dataparser.data
        self.dataparser = self.dataparser_config.setup()
        self.includes_time = self.dataparser.includes_time
        self.train_dataparser_outputs = self.dataparser.get_dataparser_outputs(split="train")
        self.train_dataset = self.create_train_dataset()
        self.eval_dataset = self.create_eval_dataset()
        self.exclude_batch_keys_from_device = self.train_dataset.exclude_batch_keys_from_device
        DataManager.__init__(self)  # runs setup_train / setup_eval

    def create_train_dataset(self) -> SRNDataset:
        return SRNDataset(self.train_dataparser_outputs, cache_size=self.config.image_cache_size)

    def create_eval_dataset(self) -> SRNDataset:
        outputs = self.dataparser.get_dataparser_outputs(split=self.test_split)
        return SRNDataset(outputs, cache_size=self.config.image_cache_size)

    def setup_train(self) -> None:
        ds = self.train_dataset
        # Each rank trains on its own objects; objects with too few views for the largest batch are still usable
        # with fewer sources.
        self.train_objects = [
            o for o in range(ds.num_objects) if len(ds.object_images[o]) >= 1 + self.targets_per_object
        ]
        # The global rank: nerfstudio passes the rank on this machine, which repeats on every machine of a multi-node
        # run.
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else self.local_rank
        if not self.train_objects:
            raise DataError(
                self.config.data, f"no training object has the {1 + self.targets_per_object} views a batch needs"
            )
        self.train_objects = self.train_objects[rank :: self.world_size] or self.train_objects
        missing = self.target_depth and ds.without_depth([i for o in self.train_objects for i in ds.object_images[o]])
        if missing:
            needs = "--pipeline.model.depth-loss-mult needs data made with --depth"
            raise DataError(missing, f"no depth map beside this image ({needs})")
        self.rng = np.random.default_rng(self.config.seed + rank)
        self._train_batches: TrainingBatches | None = None  # started at the first step: tools that only render
        # (ns-render, ns-eval) never start the workers

    def setup_eval(self) -> None:
        ds = self.eval_dataset
        self.eval_pairs = evaluation_pairs(
            ds, self.config.eval_num_objects, self.config.eval_num_target_views, self.config.eval_source_view
        )
        # nerfstudio's tools (ns-render spiral) read start cameras here; it loads images one at a time.
        self.eval_dataloader = FixedIndicesEvalDataloader(input_dataset=ds, device=self.device)

    def next_train(self, step: int) -> Tuple[ObjectBatch, Dict]:
        self.train_count += 1
        if self._train_batches is None:
            cfg = self.config
            self._train_batches = TrainingBatches(
                self.train_dataset,
                self.train_objects,
                self.rng,
                PlanShape(
                    self.objects_per_batch,
                    cfg.min_source_views,
                    cfg.max_source_views,
                    self.targets_per_object,
                    self.target_depth,
                ),
                cfg.num_workers,
                pin_memory=torch.device(self.device).type == "cuda",
            )
        return next(self._train_batches).to_device(self.device), {}

    def sampler_state(self) -> dict:
        """The training sampler's generator state for the next batch the model has not seen (a checkpoint keeps it)."""
        if self._train_batches is None:
            return self.rng.bit_generator.state
        return self._train_batches.generator_state()

    def load_sampler_state(self, state: dict) -> None:
        """Continue the training batches from ``sampler_state()`` of a checkpoint (before the first step)."""
        if self._train_batches is not None:
            raise GeNVSError("the training sampler's state can only be restored before the first batch")
        try:
            self.rng.bit_generator.state = state
        except (TypeError, ValueError, KeyError) as exc:
            raise GeNVSError(f"the checkpoint's training sampler state does not fit this generator ({exc})") from None

    def eval_batch(self, pairs: list[tuple[int, int, int]]) -> ObjectBatch:
        plan = BatchPlan(tuple((s,) for _, s, _ in pairs), tuple(t for _, _, t in pairs))
        return load_batch(self.eval_dataset, plan).to_device(self.device)

    def next_eval(self, step: int) -> Tuple[ObjectBatch, Dict]:
        self.eval_count += 1
        n = self.objects_per_batch
        start = (self.eval_count - 1) * n
        pairs = [self.eval_pairs[(start + k) % len(self.eval_pairs)] for k in range(n)]
        return self.eval_batch(pairs), {}

    def next_eval_image(self, step: int) -> Tuple[ObjectBatch, Dict]:
        self.eval_count += 1
        return self.eval_batch([self.eval_pairs[(self.eval_count - 1) % len(self.eval_pairs)]]), {}

    def get_train_rays_per_batch(self) -> int:
        ds = self.train_dataset
        return self.objects_per_batch * int(ds.cameras.height[0]) * int(ds.cameras.width[0])
