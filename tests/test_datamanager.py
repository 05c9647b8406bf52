"""Object-level batches: same-object views, bounded image cache, fixed eval pairs, per-rank sharding."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from genvs_ns.data.datamanager import GeNVSDataManagerConfig
from genvs_ns.data.srn_dataparser import SRNDataParserConfig
from genvs_ns.errors import DataError


def _dm(data, world_size=1, local_rank=0, target_depth=False, **kw):
    config = GeNVSDataManagerConfig(dataparser=SRNDataParserConfig(data=data), **kw)
    return config.setup(
        device="cpu", test_mode="val", world_size=world_size, local_rank=local_rank, target_depth=target_depth
    )


def test_batches_hold_distinct_views_of_one_object_each(toy32):
    dm = _dm(toy32, objects_per_batch=3, min_source_views=1, max_source_views=3, image_cache_size=5)
    ds = dm.train_dataset
    counts = set()
    for step in range(12):
        batch, _ = dm.next_train(step)
        B, V = batch.source_images.shape[:2]
        counts.add(V)
        assert B == 3 and 1 <= V <= 3
        assert batch.source_images.shape[2:] == (3, 32, 32) and batch.target_image.shape == (3, 3, 32, 32)
        for b in range(B):
            target = int(batch.target_index[b])
            obj = int(ds.object_index[target])
            assert int(batch.object_index[b]) == obj
            # Sources are other views of the same object: match their cameras back to dataset images.
            views = [int(torch.nonzero((ds.c2w == c).all(-1).all(-1))[0]) for c in batch.source_c2w[b]]
            assert all(int(ds.object_index[v]) == obj for v in views)
            assert len(set(views + [target])) == V + 1
            torch.testing.assert_close(batch.target_image[b], ds.image(target))
        assert len(ds._slots) <= 5  # lazily loaded, never more than the bound in RAM
    assert counts == {1, 2, 3}


def test_cached_images_are_the_decoded_files_after_slots_are_reused(toy32):
    from genvs_ns.data.images import load_rgb

    ds = _dm(toy32, image_cache_size=3).train_dataset
    order = [0, 1, 2, 0, 3, 4, 0, 5, 1, 2, 0]  # least recently used out first: every slot is reused
    for idx in order:
        expected = torch.from_numpy(load_rgb(ds._dataparser_outputs.image_filenames[idx])).permute(2, 0, 1)
        assert torch.equal(ds.image(idx), expected)
        assert torch.equal(ds.image(idx), expected)  # the cached copy
    assert list(ds._slots) == [1, 2, 0] and sorted(ds._slots.values()) == [0, 1, 2]
    assert ds._block.shape == (3, 3, 32, 32) and ds._block.dtype == torch.uint8


def test_eval_pairs_are_fixed_held_out_and_use_the_protocol_source_view(toy32):
    dm = _dm(toy32, eval_num_objects=1, eval_num_target_views=3, eval_source_view=5)
    ds = dm.eval_dataset
    assert set(ds.metadata["object_ids"]).isdisjoint(dm.train_dataset.metadata["object_ids"])
    assert len(dm.eval_pairs) == 3
    sources = {s for _, s, _ in dm.eval_pairs}
    assert len(sources) == 1 and int(ds.view_index[sources.pop()]) == 5
    assert len({t for _, _, t in dm.eval_pairs}) == 3
    first, _ = dm.next_eval_image(0)
    again = _dm(toy32, eval_num_objects=1, eval_num_target_views=3, eval_source_view=5)
    second, _ = again.next_eval_image(0)
    torch.testing.assert_close(first.target_image, second.target_image)
    # Without view 64 (SRN's protocol view) the first view is the source.
    default = _dm(toy32, eval_num_objects=1)
    assert {int(ds.view_index[s]) for _, s, _ in default.eval_pairs} == {0}


def test_objects_are_sharded_per_rank(toy32):
    ranks = [_dm(toy32, world_size=2, local_rank=r) for r in (0, 1)]
    a, b = (set(dm.train_objects) for dm in ranks)
    assert a.isdisjoint(b) and a | b == set(range(6))


def test_multi_node_ranks_shard_by_global_rank(toy32, monkeypatch):
    """Two machines x two GPUs: nerfstudio passes local ranks 0, 1, 0, 1; the shards must follow the global rank."""
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    shards = []
    for global_rank, local_rank in [(0, 0), (1, 1), (2, 0), (3, 1)]:
        monkeypatch.setattr(dist, "get_rank", lambda group=None, r=global_rank: r)
        dm = _dm(toy32, world_size=4, local_rank=local_rank)
        shards.append(dm.train_objects)
        assert dm.rng.integers(1 << 30) == np.random.default_rng(dm.config.seed + global_rank).integers(1 << 30)
    assert sorted(o for shard in shards for o in shard) == list(range(6))


def test_prefetching_workers_give_the_same_batches_as_the_training_process(toy32):
    """Workers only decode; which views a batch holds is drawn in the training process, so the run is the same."""
    inline = _dm(toy32, objects_per_batch=2, num_workers=0, image_cache_size=0, target_depth=True)
    workers = _dm(toy32, objects_per_batch=2, num_workers=2, image_cache_size=0, target_depth=True)
    for step in range(6):
        a, _ = inline.next_train(step)
        b, _ = workers.next_train(step)
        assert a.target_depth is not None
        for key, value in vars(a).items():
            other = getattr(b, key)
            assert value.dtype == other.dtype and torch.equal(value, other), key
    assert a.target_image.dtype == torch.float32 and 0 <= a.target_image.min() <= a.target_image.max() <= 1


def test_start_up_does_not_index_every_camera(toy32, monkeypatch):
    """nerfstudio's VanillaDataManager looks at each training camera one TensorDataclass index at a time (442k
    indexings, 340 s for a split of SRN cars' shape); the genvs datamanager must not scale like that."""
    from nerfstudio.cameras.cameras import Cameras

    calls = []
    real = Cameras.__getitem__
    monkeypatch.setattr(Cameras, "__getitem__", lambda self, index: calls.append(index) or real(self, index))
    dm = _dm(toy32)
    assert len(dm.train_dataset) == 48 and dm.eval_pairs
    assert len(calls) < 10


def test_batches_carry_the_targets_true_depth_only_for_a_model_that_trains_on_it(toy32):
    from genvs_ns.data.depth_maps import read_depth
    from genvs_ns.geometry import ray_distance

    dm = _dm(toy32, objects_per_batch=3, target_depth=True)
    ds = dm.train_dataset
    batch, _ = dm.next_train(0)
    assert batch.target_depth.shape == (3, 1, 32, 32)
    for b, target in enumerate(batch.target_index.tolist()):
        z = torch.from_numpy(read_depth(ds.image_filenames[target]))
        torch.testing.assert_close(batch.target_depth[b, 0], ray_distance(z[None], ds.K[target][None])[0])
        # Depth where the image shows the object, none on the white background.
        background = (batch.target_image[b] > 0.99).all(0)
        assert bool((batch.target_depth[b, 0][background] == 0).all())
        assert float((batch.target_depth[b, 0][~background] > 0).float().mean()) > 0.95
    plain, _ = _dm(toy32, objects_per_batch=3).next_train(0)
    assert plain.target_depth is None


def test_training_on_depth_refuses_data_without_depth_maps_naming_the_image(toy_copy):
    missing = sorted((toy_copy / "cars_train").iterdir())[2] / "depth"
    shutil.rmtree(missing)
    _dm(toy_copy)  # training without the depth loss needs none
    with pytest.raises(DataError, match="no depth map beside this image") as info:
        _dm(toy_copy, target_depth=True)
    message = str(info.value)
    assert str(missing.parent) in message and "--pipeline.model.depth-loss-mult" in message and "--depth" in message
