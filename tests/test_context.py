"""Which views condition an autoregressive frame (sampling/context.py), and how much generated frames count."""

from __future__ import annotations

import random

import pytest
import torch

from genvs_ns.errors import GeNVSError
from genvs_ns.geometry import look_at
from genvs_ns.model.network import Conditioning
from genvs_ns.sampling.context import ContextPolicy, choose_context


def _cameras(azimuths_deg: list[float]) -> torch.Tensor:
    up = torch.tensor([0.0, 0.0, 1.0])
    positions = [torch.tensor([torch.cos(torch.tensor(a).deg2rad()), torch.sin(torch.tensor(a).deg2rad()), 0.5])
                 for a in azimuths_deg]  # fmt: skip
    return torch.stack([look_at(p, up) for p in positions])


def test_random_earlier_frames_plus_the_previous_one():
    c2w = _cameras([10.0 * i for i in range(10)])
    picker = random.Random(0)
    assert choose_context(0, c2w, ContextPolicy(), picker) == []
    chosen = choose_context(9, c2w, ContextPolicy(max_earlier_frames=4), picker)
    assert len(chosen) == 5 and chosen[-1] == 8 and chosen[:-1] == sorted(chosen[:-1]) and 8 not in chosen[:-1]
    assert choose_context(9, c2w, ContextPolicy(max_earlier_frames=0), picker) == [8]
    assert choose_context(9, c2w, ContextPolicy(autoregressive=False), picker) == []


def test_nearest_earlier_frames_are_the_cameras_closest_to_the_new_one():
    # Frame 5 sits at 0 degrees; of the earlier frames 0-3 (4 is the previous one), 1 and 2 are closest to it.
    c2w = _cameras([90.0, 10.0, -15.0, 170.0, 60.0, 0.0])
    chosen = choose_context(5, c2w, ContextPolicy(max_earlier_frames=2, earlier_frames="nearest"), random.Random(0))
    assert chosen == [1, 2, 4]


def test_generated_frames_are_weighted_against_the_input():
    volumes = torch.zeros(1, 1, 4, 2, 2, 2)
    cams, K = torch.eye(4)[:3][None, None], torch.eye(3)[None, None]
    inputs = Conditioning(volumes, cams, K, (8, 8))
    frame = Conditioning(volumes, cams, K, (8, 8))
    assert Conditioning.cat([inputs, frame]).weights is None  # no weights: the unweighted pooling, bit for bit
    both = Conditioning.cat([inputs, frame.weighted(0.1), frame.weighted(0.1)])
    torch.testing.assert_close(both.weights, torch.tensor([[1.0, 0.1, 0.1]]))
    assert both.select(slice(1, 3)).weights.shape == (1, 2)
    assert ContextPolicy().generated_frame_weight == 0.01
    with pytest.raises(GeNVSError, match="generated-frame-weight"):
        ContextPolicy(generated_frame_weight=0.0).check()


def test_genvs_sample_takes_the_policy_whole_under_its_own_flag_names():
    import tyro

    from genvs_ns.scripts.sample import SampleArgs

    flags = ["--output-dir", "out", "--no-autoregressive", "--max-earlier-frames", "2", "--no-include-previous",
             "--earlier-frames", "nearest", "--no-joint", "--known-views", "nearest", "--fill-views", "6",
             "--generated-edge-margin", "1", "--generated-frame-weight", "0.5"]  # fmt: skip
    args = tyro.cli(SampleArgs, args=flags)
    assert args.context == ContextPolicy(
        autoregressive=False, max_earlier_frames=2, include_previous=False, earlier_frames="nearest", joint=False,
        known_views="nearest", fill_views=6, generated_edge_margin=1, generated_frame_weight=0.5,
    )  # fmt: skip
    assert tyro.cli(SampleArgs, args=["--output-dir", "out"]).context == ContextPolicy()
