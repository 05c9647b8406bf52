"""3D-consistency scores of a generated view sequence with known cameras: reprojection error and TSED.

- Reprojection consistency: each frame's pixels are lifted with a depth map (the model's rendered depth, or the truth)
  where its accumulation is high, projected into the other frames, kept where that frame's own depth agrees
  (occlusion test), and the colours at corresponding points compared. Lower is more consistent. Its control is the
  same score with the frames shuffled (``shuffled``): what unrelated views of the object score.
- TSED (Yu et al. 2023, "Long-Term Photometric Consistent Novel View Synthesis with Diffusion Models"): SIFT matches
  between neighbouring frames must lie on the epipolar lines the known cameras predict. Needs no depth; higher is
  more consistent.

Cameras are nerfstudio's (OpenGL c2w, pixel intrinsics); all camera math is ``genvs_ns.geometry``'s.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from genvs_ns.geometry import fundamental_matrix, pixel_centres, rays_through_pixels, world_to_frustum

# Yu et al.'s thresholds at 256 px: a pair is consistent with >= 10 matches whose median epipolar distance is < 2 px.
TSED_THRESHOLD_AT_256 = 2.0
TSED_MIN_MATCHES = 10
# SIFT finds few keypoints in a 64 px image (its smallest blobs are a few pixels across), so smaller frames are
# upsampled to this size first; distances are still measured in the frames' own pixels.
SIFT_SIZE = 256


@dataclass
class Reprojection:
    l1: float | None  # mean |colour difference| over corresponding points and channels, colours in [0, 1]
    rmse: float | None  # root mean squared colour difference, same points
    points: int  # corresponding points compared (source pixel, target frame), over all ordered pairs
    pairs: int  # ordered frame pairs with at least one corresponding point


@dataclass
class PairTSED:
    pair: tuple[int, int]
    matches: int  # SIFT matches that passed the ratio test
    median_sed_px: float | None  # median symmetric epipolar distance in the frames' pixels; None without matches
    consistent: bool


@dataclass
class TSED:
    score: float | None  # consistent pairs / neighbouring pairs; None for a single frame
    consistent: int
    pairs: int
    threshold_px: float  # T_e in the frames' own pixels
    min_matches: int
    sift_scale: float  # frames were upsampled by this factor before SIFT (1: not at all)
    details: list[PairTSED] = field(default_factory=list)


@torch.no_grad()
def reprojection_consistency(
    frames: Float[Tensor, "frames 3 H W"],
    depth: Float[Tensor, "frames H W"],
    accumulation: Float[Tensor, "frames H W"],
    c2w: Float[Tensor, "frames 3 4"],
    K: Float[Tensor, "frames 3 3"],
    min_accumulation: float = 0.9,
    depth_tolerance: float = 0.03,
    max_gap: int | None = None,
) -> Reprojection:
    """Colour difference of every frame's surface points seen again in the other frames.

    ``depth`` is distance along the pixel's unit ray (what the renderer composites), not camera z. A point of frame i
    counts in frame j where it lands inside j's image, j is opaque there (accumulation >= ``min_accumulation``) and
    j's depth at that pixel is within ``depth_tolerance`` (relative) of the point's distance from j's camera; j's
    colour is read bilinearly. ``max_gap``: compare only frames at most this many apart in the sequence (default all).
    """
    n, _, H, W = frames.shape
    frames, depth, accumulation = frames.float().cpu(), depth.float().cpu(), accumulation.float().cpu()
    c2w, K = c2w.float().cpu(), K.float().cpu()
    uv = pixel_centres(H, W)
    abs_sum = sq_sum = 0.0
    points = pairs = 0
    for i in range(n):
        targets = [j for j in range(n) if j != i and (max_gap is None or abs(i - j) <= max_gap)]
        opaque = accumulation[i].reshape(-1) >= min_accumulation
        if not targets or not opaque.any():
            continue
        origins, directions = rays_through_pixels(c2w[i], K[i], uv[opaque])
        world = origins + directions * depth[i].reshape(-1)[opaque, None]
        colour = frames[i].reshape(3, -1)[:, opaque]  # [3, P]
        # near 0, far 1: only x, y (the image, in grid_sample's coordinates) are used; behind a camera lands outside.
        xy = world_to_frustum(world.expand(len(targets), -1, -1), c2w[targets], K[targets], (H, W), 0.0, 1.0)[..., :2]
        grid = xy[:, None]  # [J, 1, P, 2]
        seen_depth = F.grid_sample(depth[targets, None], grid, mode="nearest", align_corners=False)[:, 0, 0]
        seen_acc = F.grid_sample(accumulation[targets, None], grid, mode="nearest", align_corners=False)[:, 0, 0]
        seen_colour = F.grid_sample(frames[targets], grid, mode="bilinear", align_corners=False)[:, :, 0]  # [J, 3, P]
        distance = (world[None] - c2w[targets, None, :, 3]).norm(dim=-1)  # [J, P]
        visible = (xy.abs() < 1).all(-1) & (seen_acc >= min_accumulation)
        visible &= (seen_depth - distance).abs() <= depth_tolerance * distance
        diff = (seen_colour - colour[None]).transpose(1, 2)[visible]  # [M, 3]
        abs_sum += float(diff.abs().sum())
        sq_sum += float((diff**2).sum())
        points += int(visible.sum())
        pairs += int(visible.any(-1).sum())
    if points == 0:
        return Reprojection(None, None, 0, 0)
    return Reprojection(abs_sum / (3 * points), (sq_sum / (3 * points)) ** 0.5, points, pairs)


def derangement(n: int, seed: int = 0) -> list[int]:
    """A permutation of range(n) that moves every element (the identity for n < 2, where none exists)."""
    order = list(range(n))
    if n < 2:
        return order
    rng = random.Random(seed)
    while any(k == v for k, v in enumerate(order)):
        rng.shuffle(order)
    return order


def shuffled(frames: Float[Tensor, "frames 3 H W"], seed: int = 0) -> Float[Tensor, "frames 3 H W"]:
    """The frames in a deranged order, for the control score: the same colours, no longer where the cameras say."""
    return frames[derangement(len(frames), seed)]


def _sift_gray(frame: Float[Tensor, "3 H W"], scale: float) -> np.ndarray:
    rgb = (frame.float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if scale == 1:
        return gray
    H, W = gray.shape
    return cv2.resize(gray, (round(W * scale), round(H * scale)), interpolation=cv2.INTER_CUBIC)


def _ratio_matches(a, b, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates [M, 2] (OpenCV's: pixel centres at integers) of the matches passing Lowe's ratio test."""
    (kp_a, des_a), (kp_b, des_b) = a, b
    if des_a is None or des_b is None or len(des_a) < 2 or len(des_b) < 2:
        return np.zeros((0, 2)), np.zeros((0, 2))
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(des_a, des_b, k=2)
    good = [m[0] for m in knn if len(m) == 2 and m[0].distance < ratio * m[1].distance]
    pa = np.array([kp_a[m.queryIdx].pt for m in good], dtype=np.float64).reshape(-1, 2)
    pb = np.array([kp_b[m.trainIdx].pt for m in good], dtype=np.float64).reshape(-1, 2)
    return pa, pb


def symmetric_epipolar_distance(
    F_ab: np.ndarray, uv_a: Float[np.ndarray, "n 2"], uv_b: Float[np.ndarray, "n 2"]
) -> Float[np.ndarray, " n"]:
    """Mean of the two point-to-epipolar-line distances (pixels) of matches, F with x_b^T F x_a = 0."""
    xa = np.concatenate([uv_a, np.ones((len(uv_a), 1))], axis=1)
    xb = np.concatenate([uv_b, np.ones((len(uv_b), 1))], axis=1)
    line_b, line_a = xa @ F_ab.T, xb @ F_ab  # epipolar lines in b of the points of a, and in a of those of b
    residual = np.abs((xb * line_b).sum(-1))
    return 0.5 * (residual / np.linalg.norm(line_b[:, :2], axis=1) + residual / np.linalg.norm(line_a[:, :2], axis=1))


def tsed(
    frames: Float[Tensor, "frames 3 H W"],
    c2w: Float[Tensor, "frames 3 4"],
    K: Float[Tensor, "frames 3 3"],
    threshold_px: float | None = None,
    min_matches: int = TSED_MIN_MATCHES,
    ratio: float = 0.8,
    sift_size: int = SIFT_SIZE,
) -> TSED:
    """Thresholded symmetric epipolar distance over neighbouring frames (i, i + 1).

    A pair is consistent when at least ``min_matches`` SIFT matches (Lowe's ratio test at ``ratio``) have a median
    symmetric epipolar distance (the mean of the two point-to-epipolar-line distances, F from the known cameras)
    below T_e. T_e defaults to Yu et al.'s 2 px at 256 px scaled with the frames' size:
    2 * max(H, W) / 256 px (0.5 px at 64 px, 1 px at 128 px). Frames smaller than ``sift_size`` are upsampled
    (bicubic) to it before SIFT, which finds few keypoints at 64 px; keypoints are mapped back to the frames' own
    pixels, so distances and T_e are in those.
    """
    n, _, H, W = frames.shape
    size = max(H, W)
    T_e = threshold_px if threshold_px is not None else TSED_THRESHOLD_AT_256 * size / 256
    scale = max(1.0, sift_size / size)
    sift = cv2.SIFT_create()
    features = [sift.detectAndCompute(_sift_gray(f, scale), None) for f in frames]
    F_pairs = fundamental_matrix(c2w[:-1], K[:-1], c2w[1:], K[1:]).cpu().numpy()
    details = []
    for i in range(n - 1):
        pa, pb = _ratio_matches(features[i], features[i + 1], ratio)
        # OpenCV's pixel centres are integers, ours at + 0.5; undo the upsampling's scale.
        sed = symmetric_epipolar_distance(F_pairs[i], (pa + 0.5) / scale, (pb + 0.5) / scale)
        median = float(np.median(sed)) if len(sed) else None
        ok = len(sed) >= min_matches and median is not None and median < T_e
        details.append(PairTSED((i, i + 1), len(sed), median, ok))
    consistent = sum(d.consistent for d in details)
    score = consistent / len(details) if details else None
    return TSED(score, consistent, len(details), T_e, min_matches, scale, details)


def sequence_scores(
    frames: Float[Tensor, "frames 3 H W"],
    c2w: Float[Tensor, "frames 3 4"],
    K: Float[Tensor, "frames 3 3"],
    depth: Float[Tensor, "frames H W"] | None = None,
    accumulation: Float[Tensor, "frames H W"] | None = None,
    seed: int = 0,
) -> dict:
    """Both scores of one sequence as plain data: TSED, and with a depth the reprojection score and its control."""
    scores: dict = {"tsed": asdict(tsed(frames, c2w, K))}
    if depth is not None and accumulation is not None:
        scores.update(reprojection_scores(frames, depth, accumulation, c2w, K, seed))
    return scores


def reprojection_scores(
    frames: Float[Tensor, "frames 3 H W"],
    depth: Float[Tensor, "frames H W"],
    accumulation: Float[Tensor, "frames H W"],
    c2w: Float[Tensor, "frames 3 4"],
    K: Float[Tensor, "frames 3 3"],
    seed: int = 0,
) -> dict:
    """The reprojection score and its shuffled-frames control, as plain data."""
    return {
        "reprojection": asdict(reprojection_consistency(frames, depth, accumulation, c2w, K)),
        "reprojection_shuffled": asdict(reprojection_consistency(shuffled(frames, seed), depth, accumulation, c2w, K)),
    }


def summary(scores: dict) -> dict:
    """The headline numbers of ``sequence_scores``' output, for run.json."""
    out = {"tsed": scores["tsed"]["score"], "tsed_pairs": scores["tsed"]["pairs"]}
    if "reprojection" in scores:
        out["reprojection_l1"] = scores["reprojection"]["l1"]
        out["reprojection_l1_shuffled"] = scores["reprojection_shuffled"]["l1"]
        out["reprojection_points"] = scores["reprojection"]["points"]
    if "true_geometry" in scores:
        out["true_reprojection_l1"] = scores["true_geometry"]["reprojection"]["l1"]
        out["true_reprojection_l1_shuffled"] = scores["true_geometry"]["reprojection_shuffled"]["l1"]
    return out


def path_scores(
    samples: Float[Tensor, "frames 3 H W"],
    nerf_rgb: Float[Tensor, "frames 3 H W"],
    depth: Float[Tensor, "frames H W"],
    accumulation: Float[Tensor, "frames H W"],
    c2w: Float[Tensor, "frames 3 4"],
    K: Float[Tensor, "frames 3 3"],
    ground_truth: Float[Tensor, "frames 3 H W"] | None = None,
    seed: int = 0,
    true_depth: Float[Tensor, "frames H W"] | None = None,
) -> dict:
    """Scores of a generated path (consistency.json): the diffusion samples, and the NeRF RGB frames as the
    reference, both lifted with the NeRF's own depth; the data set's views (TSED only) where they exist. With
    ``true_depth`` (ray distance, 0 on background: toy data's depth maps) each sequence is also scored lifted with the
    true geometry (``true_geometry``), where the model's own depth cannot flatter it."""
    scores = {
        "depth": "the model's rendered depth where its accumulation >= 0.9, per frame",
        "samples": sequence_scores(samples, c2w, K, depth, accumulation, seed),
        "nerf_rgb": sequence_scores(nerf_rgb, c2w, K, depth, accumulation, seed),
    }
    if ground_truth is not None:
        scores["ground_truth"] = sequence_scores(ground_truth, c2w, K)
    if true_depth is not None:
        covered = (true_depth > 0).float()
        for name, frames in (("samples", samples), ("nerf_rgb", nerf_rgb), ("ground_truth", ground_truth)):
            if frames is not None:
                scores[name]["true_geometry"] = reprojection_scores(frames, true_depth, covered, c2w, K, seed)
    return scores
