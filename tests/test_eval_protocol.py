"""genvs-eval's protocol: which views are scored, and a plan of batches that runs across objects and never changes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from genvs_ns.errors import GeNVSError
from genvs_ns.evaluation.protocol import image_seed, object_views, plan_batches, select_objects


def _dataset(views_per_object: list[list[int]]):
    """What the protocol reads of an SRNDataset: each object's image indices and each image's view number."""
    object_images, view_index, n = [], [], 0
    for views in views_per_object:
        object_images.append(list(range(n, n + len(views))))
        view_index += views
        n += len(views)
    ids = [f"obj{k}" for k in range(len(views_per_object))]
    metadata = {"object_ids": ids}
    return SimpleNamespace(object_images=object_images, view_index=torch.tensor(view_index), metadata=metadata)


def test_sources_fall_back_to_the_first_free_view_and_targets_spread_evenly():
    ds = _dataset([[0, 1, 2, 64, 65, 66], [3, 4, 5, 6, 7]])  # object 1 lacks view 64, as some SRN cars test objects
    first = object_views(ds, 0, [64], "all")
    assert first.sources == (3,) and first.targets == (0, 1, 2, 4, 5) and first.object_id == "obj0"
    second = object_views(ds, 1, [64, 6], "2")
    assert second.sources == (6, 9) and second.targets == (7, 10)  # first and last of the 3 others
    assert select_objects(["a", "b", "c"], ["all"]) == [0, 1, 2] and select_objects(["a", "b", "c"], ["2"]) == [0, 1]
    with pytest.raises(GeNVSError, match="no object 'z' in this split"):
        select_objects(["a", "b"], ["b", "z"])


def test_batches_run_across_objects_and_do_not_depend_on_what_is_finished():
    ds = _dataset([[0, 1, 2, 3], [0, 1, 2], [0, 1, 2, 3, 4]])
    objects = [object_views(ds, k, [0], "all") for k in range(3)]  # 3 + 2 + 4 targets
    batches = plan_batches(objects, 4)
    assert [[(item.obj.index, item.image) for item in b] for b in batches] == [
        [(0, 1), (0, 2), (0, 3), (1, 5)],
        [(1, 6), (2, 8), (2, 9), (2, 10)],
        [(2, 11)],
    ]
    assert plan_batches(objects, 4) == batches and [len(b) for b in plan_batches(objects, 9)] == [9]


def test_each_image_has_its_own_seed():
    seeds = {image_seed(s, obj, view) for s in (0, 1) for obj in range(3) for view in range(50)}
    assert len(seeds) == 300 and all(0 <= s < 2**63 for s in seeds)
    assert image_seed(0, 1, 2) == image_seed(0, 1, 2)
