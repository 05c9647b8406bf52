"""The 3D-consistency scores on exact toy renders: near perfect on the truth, worse when frames no longer fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genvs_ns.data.toy import SRN_FOCAL_128, look_at_c2w_opencv, pixel_rays, random_car, render_rays
from genvs_ns.evaluation.consistency import (
    derangement,
    path_scores,
    reprojection_consistency,
    shuffled,
    summary,
    tsed,
)
from genvs_ns.geometry import intrinsics_matrix, ray_distance

RES, FRAMES, STEP_DEG, SUPERSAMPLE = 64, 6, 15.0, 4
REPLACED = 3


def _orbit(seed: int) -> tuple[torch.Tensor, ...]:
    """Frames, ray-distance depth, coverage, OpenGL c2w and K of a toy car seen along an arc of neighbouring views.

    The colours are 4x4 supersampled: SIFT puts keypoints on the staircase edges of a one-ray-per-pixel render, where
    the pixel grid and not the object decides, and a real render (or a sample) is antialiased. Depth is that of the
    ray through each pixel centre, as the model renders it.
    """
    car = random_car(np.random.default_rng(seed))
    hi, f = RES * SUPERSAMPLE, SRN_FOCAL_128 * RES / 128
    frames, hits, depth, c2w = [], [], [], []
    for k in range(FRAMES):
        azimuth, elevation = np.radians(30 + STEP_DEG * k), np.radians(25)
        position = 1.3 * np.array(
            [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)]
        )
        c2w_cv = look_at_c2w_opencv(position)
        rgb, t = render_rays(car, *pixel_rays(c2w_cv, f * SUPERSAMPLE, hi))
        frames.append(rgb.reshape(hi, hi, 3))
        hits.append(np.isfinite(t).reshape(hi, hi))
        o, d = pixel_rays(c2w_cv, f, RES)
        _, t = render_rays(car, o, d)  # t is camera z (unit camera-z directions): scale to distance along the ray
        depth.append(np.where(np.isfinite(t), t * np.linalg.norm(d, axis=1), 0).reshape(RES, RES))
        c2w.append((c2w_cv @ np.diag([1.0, -1.0, -1.0, 1.0]))[:3])
    as_tensor = lambda x: torch.tensor(np.stack(x), dtype=torch.float32)  # noqa: E731
    rgb = F.avg_pool2d(as_tensor(frames).permute(0, 3, 1, 2), SUPERSAMPLE)
    depth_t = as_tensor(depth)
    coverage = F.avg_pool2d(as_tensor(hits)[:, None], SUPERSAMPLE)[:, 0] * (depth_t > 0)
    K = intrinsics_matrix(*(torch.tensor([v]) for v in (f, f, RES / 2, RES / 2)))[0].expand(FRAMES, 3, 3)
    return rgb, depth_t, coverage, as_tensor(c2w), K


@pytest.fixture(scope="module")
def truth():
    return _orbit(seed=0)


@pytest.fixture(scope="module")
def replaced(truth):
    """The truth with one frame swapped for another car's view from the same camera."""
    frames = truth[0].clone()
    frames[REPLACED] = _orbit(seed=100)[0][REPLACED]
    return frames


def test_reprojection_is_near_zero_on_the_truth_and_grows_when_frames_do_not_fit(truth, replaced):
    frames, depth, coverage, c2w, K = truth
    exact = reprojection_consistency(frames, depth, coverage, c2w, K)
    assert exact.points > 10_000 and exact.pairs == FRAMES * (FRAMES - 1)
    # What is left: colours blended across edges by the antialiasing and the bilinear read (measured 0.026).
    assert exact.l1 < 0.04
    mixed = reprojection_consistency(shuffled(frames), depth, coverage, c2w, K)
    assert mixed.l1 > 5 * exact.l1  # measured 0.22
    one_off = reprojection_consistency(replaced, depth, coverage, c2w, K)
    assert one_off.l1 > 2 * exact.l1  # measured 0.063: 10 of the 30 ordered pairs involve the replaced frame
    # Without the occlusion test, surfaces hidden in the other view count too (measured 0.040, 12% more points).
    assert reprojection_consistency(frames, depth, coverage, c2w, K, depth_tolerance=1e9).l1 > 1.3 * exact.l1


def test_reprojection_with_neighbours_only_and_without_opaque_pixels(truth):
    frames, depth, coverage, c2w, K = truth
    near = reprojection_consistency(frames, depth, coverage, c2w, K, max_gap=1)
    assert near.pairs == 2 * (FRAMES - 1) and near.l1 < 0.04
    empty = reprojection_consistency(frames, depth, torch.zeros_like(coverage), c2w, K)
    assert empty.l1 is None and empty.points == 0


def test_tsed_is_perfect_on_the_truth_and_fails_pairs_that_do_not_fit(truth, replaced):
    frames, _, _, c2w, K = truth
    exact = tsed(frames, c2w, K)
    assert exact.pairs == FRAMES - 1 and exact.threshold_px == 0.5 and exact.sift_scale == 4.0
    assert exact.score == 1.0, exact.details  # medians 0.13-0.34 px against T_e 0.5 px, 19-26 matches
    assert tsed(shuffled(frames), c2w, K).score == 0.0
    one_off = tsed(replaced, c2w, K)
    # The two pairs with the other car fail (the other three are untouched).
    assert one_off.score == pytest.approx(0.6)
    assert [d.pair for d in one_off.details if not d.consistent] == [(2, 3), (3, 4)]


def test_tsed_of_a_single_frame_has_no_pairs(truth):
    frames, _, _, c2w, K = truth
    single = tsed(frames[:1], c2w[:1], K[:1])
    assert single.score is None and single.pairs == 0


def test_derangement_moves_every_frame():
    for n in range(2, 9):
        order = derangement(n, seed=n)
        assert sorted(order) == list(range(n)) and all(k != v for k, v in enumerate(order))
    assert derangement(1) == [0]


def test_path_scores_are_plain_data_with_a_summary(truth):
    frames, depth, coverage, c2w, K = truth
    scores = path_scores(frames, frames, depth, coverage, c2w, K, ground_truth=frames)
    assert set(scores) == {"depth", "samples", "nerf_rgb", "ground_truth"}
    assert "reprojection" not in scores["ground_truth"]  # no depth of its own: TSED only
    heads = summary(scores["samples"])
    assert heads["tsed"] == 1.0 and heads["reprojection_l1"] < 0.04 < heads["reprojection_l1_shuffled"]


def test_ray_distance_turns_toy_z_depth_into_the_renderers_depth():
    f = SRN_FOCAL_128 * RES / 128
    o, d = pixel_rays(look_at_c2w_opencv(np.array([0.9, -0.6, 0.7])), f, RES)
    _, t = render_rays(random_car(np.random.default_rng(1)), o, d)  # camera z: pixel_rays' directions have unit z
    z = torch.tensor(np.where(np.isfinite(t), t, 0).reshape(1, RES, RES), dtype=torch.float32)
    expected = torch.tensor(np.where(np.isfinite(t), t * np.linalg.norm(d, axis=1), 0).reshape(1, RES, RES))
    K = intrinsics_matrix(*(torch.tensor([v]) for v in (f, f, RES / 2, RES / 2)))
    assert (z > 0).float().mean() > 0.1
    torch.testing.assert_close(ray_distance(z, K), expected.float())


def test_path_scores_with_the_true_geometry(truth):
    frames, depth, coverage, c2w, K = truth
    # The NeRF's depth is made wrong (10% too far): its own reprojection suffers, the true-geometry one does not.
    scores = path_scores(frames, frames, depth * 1.1, coverage, c2w, K, ground_truth=frames, true_depth=depth)
    for seq in ("samples", "nerf_rgb", "ground_truth"):
        heads = summary(scores[seq])
        assert heads["true_reprojection_l1"] < 0.04 < heads["true_reprojection_l1_shuffled"], seq
    assert (
        summary(scores["samples"])["reprojection_points"] < scores["samples"]["true_geometry"]["reprojection"]["points"]
    )
