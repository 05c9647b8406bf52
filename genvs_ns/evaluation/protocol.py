"""What an evaluation scores: the split's objects, each one's source and target views (SRN protocol), and the fixed
plan of batches the target views are rendered in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from genvs_ns.errors import GeNVSError

if TYPE_CHECKING:  # importing it imports nerfstudio: not for genvs-eval --help
    from genvs_ns.data.dataset import SRNDataset


@dataclass(frozen=True)
class ObjectViews:
    """One object's views, as image indices of the data set."""

    index: int
    """The object's index in the split (sorted by id)."""
    object_id: str
    sources: tuple[int, ...]
    targets: tuple[int, ...]


@dataclass(frozen=True)
class Item:
    """One target view of one object: the unit a batch is made of."""

    obj: ObjectViews
    image: int


def select_objects(ids: list[str], wanted: list[str]) -> list[int]:
    """Indices of ``wanted``: ["all"], ["N"] (the first N), or instance ids (a missing one is an error)."""
    if wanted == ["all"]:
        return list(range(len(ids)))
    if len(wanted) == 1 and wanted[0].isdigit():
        return list(range(min(int(wanted[0]), len(ids))))
    missing = [w for w in wanted if w not in ids]
    if missing:
        raise GeNVSError(f"--objects: no object {missing[0]!r} in this split ({len(ids)} objects)")
    return [ids.index(w) for w in wanted]


def object_views(ds: SRNDataset, obj: int, source_views: list[int], target_views: str) -> ObjectViews:
    """An object's source views (an absent view is replaced by its first view not already chosen) and its other
    views as targets: all, or N of them spread evenly."""
    images = ds.object_images[obj]
    by_view = {int(ds.view_index[i]): i for i in images}
    sources: list[int] = []
    for view in source_views:
        if view in by_view and by_view[view] not in sources:
            sources.append(by_view[view])
        else:  # SRN cars test objects lack some views: the first views not already chosen stand in
            sources.append(next(i for i in images if i not in sources))
    others = [i for i in images if i not in sources]
    if target_views != "all":
        picks = np.linspace(0, len(others) - 1, min(int(target_views), len(others))).round()
        others = [others[int(p)] for p in picks]
    return ObjectViews(obj, ds.metadata["object_ids"][obj], tuple(sources), tuple(others))


def plan_batches(objects: list[ObjectViews], batch_size: int) -> list[list[Item]]:
    """All target views of ``objects`` in order, cut into batches of ``batch_size`` across object boundaries.

    The plan depends only on the settings, never on what earlier runs finished: a rerun renders a batch with the same
    companions as the first run did, so batched kernels see the same inputs and the numbers repeat exactly."""
    items = [Item(o, image) for o in objects for image in o.targets]
    return [items[b : b + batch_size] for b in range(0, len(items), batch_size)]


def image_seed(seed: int, obj: int, view: int) -> int:
    """The seed of one image's sampling noise: the same whichever images share its batch or run."""
    return int(np.random.SeedSequence([seed, obj, view]).generate_state(1, np.uint64)[0]) >> 1
