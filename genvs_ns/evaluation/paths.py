"""Paths along a data set's own views, scored for 3D consistency (genvs-eval --consistency-objects): the generated
frames beside the NeRF RGB frames of the same path and the data set's images of those views; and their quality per
third of the path (nearest the input first, so the last third is the hardest). A path is generated autoregressively
(``autoregressive``) or with every frame on the input alone (``input-only``, the control: what autoregression buys)."""

from __future__ import annotations

import torch

from genvs_ns.data.dataset import SRNDataset
from genvs_ns.evaluation.consistency import path_scores, summary
from genvs_ns.evaluation.protocol import ObjectViews
from genvs_ns.model.genvs_model import GeNVSModel
from genvs_ns.sampling import SamplerSettings
from genvs_ns.sampling.autoregressive import generate_path
from genvs_ns.sampling.context import ContextPolicy
from genvs_ns.sampling.trajectories import nearest_first

SEQUENCES = ("samples", "nerf_rgb", "ground_truth")
CONSISTENCY_SCORES = ("tsed", "reprojection_l1", "reprojection_l1_shuffled")
# true_*: lifted with the data set's own depth maps (toy data made with --depth); empty without them.
TRUE_GEOMETRY_SCORES = ("true_reprojection_l1", "true_reprojection_l1_shuffled")
# The samples' quality on the path's first and last third (PSNR, and LPIPS where its weights are on disk).
THIRDS_SCORES = tuple(f"samples_{third}_third_{s}" for third in ("first", "last") for s in ("psnr", "lpips"))
CONSISTENCY_FIELDS = (
    ["object", "path", "frames"]
    + [
        f"{seq}_{score}"
        for seq, scores in zip(SEQUENCES, (CONSISTENCY_SCORES, CONSISTENCY_SCORES, ("tsed",)))
        for score in scores + TRUE_GEOMETRY_SCORES
    ]
    + list(THIRDS_SCORES)
)


def consistency_row(
    model: GeNVSModel,
    ds: SRNDataset,
    obj: ObjectViews,
    sampling: SamplerSettings,
    policy: ContextPolicy,
    frames: int,
    seed: int,
    lpips=None,
) -> dict:
    """One consistency.csv row: a path of ``frames`` of the object's views, nearest its (first) source view first,
    generated as ``policy`` says (``lpips``: lpips_network()'s network, for the per-third LPIPS)."""
    from genvs_ns.evaluation.quality import image_scores, perceptual_scores, thirds

    others = [i for i in ds.object_images[obj.index] if i not in obj.sources]
    sources = list(obj.sources)
    order = nearest_first(ds.c2w[sources[0]], ds.c2w[others], frames)
    targets = [others[k] for k in order]
    images = torch.stack([ds.image(i) for i in sources])
    generated = generate_path(
        model, images, ds.c2w[sources], ds.K[sources], ds.c2w[targets], ds.K[targets], sampling, policy, seed=seed,
    )  # fmt: skip
    truth = torch.stack([ds.image(i) for i in targets])
    scores = path_scores(
        generated.samples, generated.nerf_rgb, generated.depth, generated.accumulation, ds.c2w[targets],
        ds.K[targets], truth, seed, ds.depths(targets),
    )  # fmt: skip
    row: dict = {
        "object": obj.object_id,
        "path": "autoregressive" if policy.autoregressive else "input-only",
        "frames": len(targets),
    }
    per_frame = {"psnr": [image_scores(p, t)["psnr"] for p, t in zip(generated.samples, truth)]}
    if lpips is not None:
        per_frame["lpips"] = [x["lpips"] for x in perceptual_scores(lpips, generated.samples, truth)]
    for score, values in per_frame.items():
        first, last = thirds(values)
        row[f"samples_first_third_{score}"], row[f"samples_last_third_{score}"] = round(first, 5), round(last, 5)
    for seq in SEQUENCES:
        headline = summary(scores[seq])
        for key in CONSISTENCY_SCORES + TRUE_GEOMETRY_SCORES:
            if key in headline:  # None: no opaque pixel to lift (an untrained field)
                row[f"{seq}_{key}"] = round(float(headline[key]), 5) if headline[key] is not None else "nan"
    return row
