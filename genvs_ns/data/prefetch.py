"""Training batches decoded ahead of the step, in background worker processes.

The plan (which objects, which views) is drawn in the training process from one seeded generator, so the batches
are the same whatever the number of workers; the workers only decode PNGs. They return uint8 pixels: a quarter of the
bytes to pin and copy to a GPU, converted to float on the device.

Plans are drawn ahead of the step (the DataLoader keeps its workers busy), so the generator's own state is ahead of
the batches the model has seen: ``TrainingBatches.generator_state`` is the state the next unseen plan is drawn from,
which a checkpoint saves so that a resumed run draws the batches the uninterrupted run would have.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from jaxtyping import Float, Int, UInt8
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from genvs_ns.data.dataset import SRNDataset


@dataclass(frozen=True)
class BatchPlan:
    """Dataset image indices of one batch: ``sources[b]`` are object b's source views; ``targets`` the objects'
    targets, object-major (one each, or the same number each for joint training)."""

    sources: tuple[tuple[int, ...], ...]
    targets: tuple[int, ...]


@dataclass
class RawBatch:
    """A batch as it leaves the workers: pixels still uint8 (and pinned where a GPU will receive them)."""

    source_images: UInt8[Tensor, "batch views 3 H W"]
    source_c2w: Float[Tensor, "batch views 3 4"]
    source_K: Float[Tensor, "batch views 3 3"]
    target_image: UInt8[Tensor, "targets 3 H W"]
    target_c2w: Float[Tensor, "targets 3 4"]
    target_K: Float[Tensor, "targets 3 3"]
    object_index: Int[Tensor, " targets"]
    target_index: Int[Tensor, " targets"]
    target_depth: Float[Tensor, "targets 1 H W"] | None = None

    def pin_memory(self) -> RawBatch:
        # DataLoader(pin_memory=True) calls this on custom batch types.
        return RawBatch(**{k: v.pin_memory() if v is not None else None for k, v in vars(self).items()})

    def to_device(self, device: torch.device | str) -> ObjectBatch:
        """Float pixels in [0, 1] on ``device``; ``non_blocking`` overlaps the copy with compute when pinned."""
        out = {k: v.to(device, non_blocking=True) if v is not None else None for k, v in vars(self).items()}
        out["source_images"] = out["source_images"].float() / 255.0
        out["target_image"] = out["target_image"].float() / 255.0
        return ObjectBatch(**out)


@dataclass
class ObjectBatch:
    """Objects with their source views and their target views (one each, or the same number each for joint
    training: object-major, object b's targets are rows b*k .. b*k+k-1), as the model trains on and evaluates them."""

    source_images: Float[Tensor, "batch views 3 H W"]
    """Pixels in [0, 1]."""
    source_c2w: Float[Tensor, "batch views 3 4"]
    source_K: Float[Tensor, "batch views 3 3"]
    target_image: Float[Tensor, "targets 3 H W"]
    target_c2w: Float[Tensor, "targets 3 4"]
    target_K: Float[Tensor, "targets 3 3"]
    object_index: Int[Tensor, " targets"]
    target_index: Int[Tensor, " targets"]
    """Dataset image index of each target."""
    target_depth: Float[Tensor, "targets 1 H W"] | None = None
    """The targets' true depth (ray distance, 0 on background) where the model trains on it (depth_loss_mult)."""

    @property
    def targets_per_object(self) -> int:
        return self.target_image.shape[0] // self.source_images.shape[0]


def load_batch(ds: SRNDataset, plan: BatchPlan, target_depth: bool = False) -> RawBatch:
    """The plan's pixels and cameras and, with ``target_depth``, the targets' depth maps (every one must exist:
    the datamanager checks at setup)."""

    def stack(idx: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        return torch.stack([ds.image_uint8(i) for i in idx]), ds.c2w[idx], ds.K[idx]

    targets = list(plan.targets)
    src = [stack(list(s)) for s in plan.sources]
    tgt_images, tgt_c2w, tgt_K = stack(targets)
    return RawBatch(
        source_images=torch.stack([s[0] for s in src]),
        source_c2w=torch.stack([s[1] for s in src]),
        source_K=torch.stack([s[2] for s in src]),
        target_image=tgt_images,
        target_c2w=tgt_c2w,
        target_K=tgt_K,
        object_index=ds.object_index[targets],
        target_index=torch.tensor(targets),
        target_depth=ds.depths(targets)[:, None] if target_depth else None,
    )


@dataclass(frozen=True)
class PlanShape:
    """What every training batch holds: how many objects, the range of their source-view count, how many target
    views each (more than one for joint training), and whether the targets' depth maps come too."""

    objects: int
    min_sources: int
    max_sources: int
    targets_per_object: int = 1
    target_depth: bool = False


def draw_plan(ds: SRNDataset, objects: list[int], rng: np.random.Generator, shape: PlanShape) -> BatchPlan:
    """``shape.objects`` objects drawn with replacement (each with at least ``targets_per_object`` + 1 views), one
    source count for the whole batch (bounded by the object with fewest views), distinct views per object."""
    picked_objects = rng.choice(objects, size=shape.objects, replace=True)
    fewest = min(len(ds.object_images[o]) for o in picked_objects)
    num_sources = int(rng.integers(shape.min_sources, shape.max_sources + 1))
    num_sources = max(1, min(num_sources, fewest - shape.targets_per_object))
    sources, targets = [], []
    for obj in picked_objects:
        views = rng.choice(ds.object_images[obj], size=num_sources + shape.targets_per_object, replace=False).tolist()
        sources.append(tuple(views[:num_sources]))
        targets += views[num_sources:]
    return BatchPlan(tuple(sources), tuple(targets))


class _Plans(Sampler[BatchPlan]):
    """Endless batch plans; iterated in the training process only (the DataLoader hands each plan to a worker).
    ``pending`` holds the generator state each drawn plan was drawn from, until its batch is consumed."""

    def __init__(self, ds: SRNDataset, objects: list[int], rng: np.random.Generator, shape: PlanShape):
        self.args = (ds, objects, rng, shape)
        self.rng = rng
        self.pending: deque[dict[str, Any]] = deque()

    def __iter__(self) -> Iterator[BatchPlan]:
        while True:
            self.pending.append(self.rng.bit_generator.state)
            yield draw_plan(*self.args)


class _Decode(Dataset[RawBatch]):
    def __init__(self, ds: SRNDataset, target_depth: bool):
        self.ds, self.target_depth = ds, target_depth

    def __getitem__(self, plan: BatchPlan) -> RawBatch:  # type: ignore[override]
        return load_batch(self.ds, plan, self.target_depth)


class TrainingBatches:
    """Endless training batches. ``num_workers`` 0 decodes in this process, between steps."""

    def __init__(
        self,
        ds: SRNDataset,
        objects: list[int],
        rng: np.random.Generator,
        shape: PlanShape,
        num_workers: int,
        pin_memory: bool,
    ) -> None:
        self.plans = _Plans(ds, objects, rng, shape)
        if num_workers == 0:
            self._batches: Iterator[RawBatch] = (load_batch(ds, plan, shape.target_depth) for plan in self.plans)
            return
        loader = DataLoader(
            _Decode(ds, shape.target_depth),
            batch_size=None,
            sampler=self.plans,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=True,
            prefetch_factor=2,
            # The workers' seeds come from this generator, not torch's global one: starting them (at a run's first
            # step, or a resumed run's) must not move the random numbers the training step draws.
            generator=torch.Generator().manual_seed(0),
        )
        self._batches = iter(loader)

    def __iter__(self) -> Iterator[RawBatch]:
        return self

    def __next__(self) -> RawBatch:
        batch = next(self._batches)
        self.plans.pending.popleft()
        return batch

    def generator_state(self) -> dict[str, Any]:
        """The plan generator's state before the next batch not yet returned (ahead of it: plans being decoded)."""
        return self.plans.pending[0] if self.plans.pending else self.plans.rng.bit_generator.state
