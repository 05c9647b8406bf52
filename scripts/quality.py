"""Sample quality of a genvs checkpoint on held-out objects; prints (and writes) one JSON object.

    .venv/bin/python scripts/quality.py --load-config outputs/demo/runs/demo/genvs-tiny/run/config.yml
    .venv/bin/python scripts/quality.py --load-config CFG --data outputs/mixed --output q.json --sheet q.png

Outputs scored against the ground truth (genvs_ns/evaluation/quality.py: full frame and object crop, gradient-energy
ratio; LPIPS on both where its weights are on disk, see genvs-lpips-weights):
- ``nerf``: the feature field's RGB at the target view, conditioned on the input view;
- ``sample``: the diffusion sample (default sampler, seeded);
- ``input_copy``: the input view itself, unchanged: right textures in the wrong place, the baseline a generative model
  must beat (LPIPS prefers it to a blur);
- ``white``: an all-white image, the baseline a mostly-white frame hands every figure;
- ``autoregressive``: a path along the data set's own views of each object (nearest the input first), every frame
  conditioned on the input, earlier frames and the previous one (``sample``), beside the same views each sampled on
  the input alone with the same seeds (``sample_input_only``), and the NeRF RGB conditioned on the generated frames
  (``nerf_autoregressive``) and on the input alone (``nerf_input_only``): PSNR and LPIPS of each path's first and last
  thirds, and where the data set has depth maps (``genvs-toy-data --depth``) the colour disagreement between frames at
  the true geometry (``true_depth_disagreement``: mean |difference| of corresponding points, in 1/255), with the ground
  truth's and unrelated (shuffled) frames' as its floor and ceiling; and the same disagreement at each path's own
  rendered geometry (``rendered_depth_disagreement``: how well the frames agree with each other where the model puts
  the surface; the ground truth's there measures what that geometry's errors alone cost);
- ``denoiser_by_sigma`` (``--sigma-sweep``): MSE (in [0, 1] image units) of the denoiser's one-step estimate of the
  target at fixed noise levels, beside the render's own MSE (the estimate "the sample is the render");
- ``trajectory`` (``--trajectory``): per sampler step, the denoised estimate's crop PSNR and gradient-energy ratio.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import tyro
from torchvision.utils import save_image

from genvs_ns.data.datamanager import evaluation_pairs
from genvs_ns.data.prefetch import ObjectBatch
from genvs_ns.errors import user_errors_exit
from genvs_ns.evaluation.metrics import lpips_missing, lpips_network
from genvs_ns.evaluation.quality import image_scores, perceptual_scores, summarise, thirds
from genvs_ns.evaluation.results import commit_hash
from genvs_ns.model.denoiser import to_denoiser_range, to_pixels
from genvs_ns.sampling import SamplerFlags, SamplerSettings
from genvs_ns.sampling.context import ContextPolicy
from genvs_ns.sampling.views import render_pairs
from genvs_ns.scripts.checkpoint import load_pipeline

SIGMAS = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 80.0)


@dataclass
class QualityArgs:
    load_config: Path
    """config.yml written by ns-train."""
    data: Path | None = None
    """Evaluate on this data set instead of the run's own (e.g. mixed toy objects for a model trained on cars)."""
    objects: int = 16
    """Held-out objects (the first N of the split); 0: only the autoregressive paths."""
    views_per_object: int = 2
    """Target views per object, evenly spread over its views (the input view excluded)."""
    autoregressive_objects: int = 4
    """Objects whose whole view set is generated autoregressively (0: none)."""
    autoregressive_frames: int = 23
    """Frames of each autoregressive path."""
    context: ContextPolicy = field(default_factory=ContextPolicy)
    """Which views condition each frame of the autoregressive paths (genvs-sample's defaults)."""
    sampling: tyro.conf.OmitArgPrefixes[SamplerFlags] = field(default_factory=SamplerFlags)
    """How the diffusion samples are drawn (unset: the model's default, as genvs-sample)."""
    seed: int = 0
    """Same seed, same noise."""
    weights: Literal["ema", "raw"] = "ema"
    """The EMA weights (as genvs-sample and ns-eval use) or the last trained weights (to check the EMA)."""
    batch_size: int = 8
    """Pairs sampled at once."""
    sigma_sweep: bool = True
    """Also measure the denoiser's one-step error at fixed noise levels."""
    trajectory: bool = True
    """Also score the denoised estimate at every sampler step."""
    output: Path | None = None
    """Also write the JSON here."""
    sheet: Path | None = None
    """A contact sheet (input | truth | NeRF RGB | sample, one pair per row, the first 8 pairs)."""


@torch.no_grad()
def main(args: QualityArgs) -> dict:
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # nerfstudio's loading messages: stdout carries only the JSON
        pipeline = load_pipeline(args.load_config, test_mode="test", data=args.data)
    pipeline.eval()
    model, dm = pipeline.model, pipeline.datamanager
    settings = args.sampling.over(pipeline.config.sampling)
    lpips = lpips_network()

    def score(predictions: torch.Tensor, truths: torch.Tensor) -> list[dict]:
        scores = [image_scores(p, t) for p, t in zip(predictions, truths)]
        if lpips is not None:
            for s, extra in zip(scores, perceptual_scores(lpips, predictions, truths)):
                s.update(extra)
        return scores

    if args.weights == "raw":
        model.ema = model.net  # every sampling path reads model.ema
    ds = dm.eval_dataset
    pairs = evaluation_pairs(ds, args.objects, args.views_per_object)
    generator = torch.Generator(device=model.device).manual_seed(args.seed)
    scores: dict[str, list[dict]] = {"nerf": [], "nerf_lowres": [], "sample": [], "input_copy": [], "white": []}
    sweep = {s: {"denoiser": 0.0, "render": 0.0} for s in SIGMAS}
    steps_seen: list[list[dict]] = []
    rows = []
    for b in range(0, len(pairs), args.batch_size):
        batch = dm.eval_batch(pairs[b : b + args.batch_size])
        truth = batch.target_image
        per_step: list[dict] = []

        def callback(info: dict, per_step: list = per_step, truth: torch.Tensor = truth) -> None:
            denoised = to_pixels(info["denoised"].float())
            scores_now = [image_scores(d, t) for d, t in zip(denoised, truth)]
            per_step.append({"sigma": float(info["sigma"].flatten()[0]), "scores": scores_now})

        out = render_pairs(model, batch, settings, generator, callback if args.trajectory else None)
        steps_seen.append(per_step)
        # The denoiser's view of the render: RGB rendered at its lower resolution, upsampled (the residual's base).
        lowres = model.ema.upsample(out.features, tuple(truth.shape[-2:]))[:, :3].float().clamp(0, 1)
        scores["nerf"] += score(out.rgb, truth)
        scores["nerf_lowres"] += score(lowres, truth)
        scores["sample"] += score(out.sample, truth)
        scores["input_copy"] += score(batch.source_images[:, 0], truth)
        scores["white"] += score(torch.ones_like(truth), truth)  # the floor any figure must be read against
        for i in range(len(truth)):
            if len(rows) < 8:
                rows.append(torch.cat([batch.source_images[i, 0], truth[i], out.rgb[i], out.sample[i]], -1))
        if args.sigma_sweep:
            _sigma_sweep(model, batch, out.features, sweep, args.seed + b)

    result: dict = {
        "checkpoint": str(args.load_config),
        "data": str(args.data or dm.config.data),
        "commit": commit_hash(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(args).items()},
        "sampling": asdict(settings),
        "pairs": len(pairs),
        **({} if lpips is not None else {"lpips_skipped": lpips_missing()}),
    }
    result.update({name: summarise(s).as_dict() for name, s in scores.items() if s})
    if args.sigma_sweep and pairs:
        res = sweep.pop("residual")
        result["residual"] = {
            "rms": round((res["sum_sq"] / res["count"]) ** 0.5, 4),
            "fraction_below_0.04": round(res["near_zero"] / res["count"], 4),
            "sigma_data": model.ema.denoiser.sigma_data,
        }
        result["denoiser_by_sigma"] = [
            {
                "sigma": s,
                "denoiser_mse": round(v["denoiser"] / len(pairs), 5),
                "render_mse": round(v["render"] / len(pairs), 5),
            }
            for s, v in sweep.items()
        ]
    if args.trajectory and steps_seen:
        result["trajectory"] = []
        for k in range(len(steps_seen[0])):
            at_k = [sc for per_step in steps_seen for sc in per_step[k]["scores"]]
            summary = summarise(at_k)
            result["trajectory"].append(
                {
                    "step": k,
                    "sigma": round(steps_seen[0][k]["sigma"], 4),
                    "crop_psnr": round(summary.crop_psnr, 3),
                    "gradient_ratio": round(summary.gradient_ratio, 3),
                }
            )
    if args.autoregressive_objects > 0:
        result["autoregressive"] = _autoregressive(model, ds, args, settings, score)
    result["seconds"] = round(time.perf_counter() - start, 1)
    if args.sheet is not None and rows:
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        save_image(torch.stack(rows).cpu(), args.sheet, nrow=1, padding=1, pad_value=1.0)
    return result


def _sigma_sweep(model, batch: ObjectBatch, features: torch.Tensor, sweep: dict, seed: int) -> None:
    """Adds the batch's summed per-image MSEs at each noise level (the same noise for every level and model)."""
    net = model.ema
    H, W = batch.target_image.shape[-2:]
    cond = net.upsample(features, (H, W))
    x0 = to_denoiser_range(batch.target_image)
    render = cond[:, :3].float().clamp(0, 1)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(x0.device)
    render_mse = ((render - batch.target_image) ** 2).flatten(1).mean(1).sum()
    # What the residual denoiser denoises, in its [-1, 1] units (compare with the JSON's sigma_data).
    residual = 2 * (batch.target_image - render)
    sweep.setdefault("residual", {"sum_sq": 0.0, "count": 0, "near_zero": 0})
    sweep["residual"]["sum_sq"] += float((residual**2).sum())
    sweep["residual"]["count"] += residual.numel()
    sweep["residual"]["near_zero"] += int((residual.abs() < 0.04).sum())
    for s in SIGMAS:
        sigma = torch.full((len(x0),), s, device=x0.device)
        with model.autocast():
            denoised = net.denoiser(x0 + s * noise, sigma, cond).float()
        estimate = to_pixels(denoised)
        sweep[s]["denoiser"] += float(((estimate - batch.target_image) ** 2).flatten(1).mean(1).sum())
        sweep[s]["render"] += float(render_mse)


def _autoregressive(model, ds, args: QualityArgs, settings: SamplerSettings, score) -> dict:
    """Each object's path generated autoregressively and, on the same views with the same seed, every frame on the
    input alone; scored per frame, summarised per third and for consistency at the true geometry."""
    from dataclasses import replace

    from genvs_ns.evaluation.consistency import reprojection_consistency, shuffled
    from genvs_ns.sampling.autoregressive import generate_path
    from genvs_ns.sampling.trajectories import nearest_first

    names = ("sample", "sample_input_only", "nerf_autoregressive", "nerf_input_only")
    per_image: dict[str, list[dict]] = {name: [] for name in names}
    per_object: dict[str, list[list[dict]]] = {name: [] for name in names}
    disagreement: dict[str, list[float]] = {name: [] for name in (*names, "ground_truth", "shuffled_ground_truth")}
    # At each path's own rendered depth.
    at_rendered: dict[str, list[float]] = {name: [] for name in (*names, "ground_truth")}
    for obj in range(min(args.autoregressive_objects, ds.num_objects)):
        source = ds.view_image(obj, 64)
        others = [i for i in ds.object_images[obj] if i != source]
        order = nearest_first(ds.c2w[source], ds.c2w[others], args.autoregressive_frames)
        targets = [others[k] for k in order]
        truth = torch.stack([ds.image(i) for i in targets])
        image = ds.image(source)[None]
        paths = {
            autoregressive: generate_path(
                model,
                image,
                ds.c2w[[source]],
                ds.K[[source]],
                ds.c2w[targets],
                ds.K[targets],
                settings,
                replace(args.context, autoregressive=autoregressive),
                seed=args.seed + obj,
            )  # fmt: skip
            for autoregressive in (True, False)
        }
        ar, alone = paths[True], paths[False]
        # Each sequence beside the path whose rendered geometry it is scored at (the ground truth at the AR path's).
        made = {
            "sample": (ar.samples, ar),
            "sample_input_only": (alone.samples, alone),
            "nerf_autoregressive": (ar.nerf_rgb, ar),
            "nerf_input_only": (alone.nerf_rgb, alone),
        }
        frames = {name: sequence for name, (sequence, _) in made.items()}
        depth = ds.depths(targets)
        c2w, K = ds.c2w[targets], ds.K[targets]
        for name, sequence in frames.items():
            s = score(sequence, truth)
            per_image[name] += s
            per_object[name].append(s)
        if depth is not None:
            covered = (depth > 0).float()
            controls = {"ground_truth": truth, "shuffled_ground_truth": shuffled(truth)}
            for name, sequence in {**frames, **controls}.items():
                l1 = reprojection_consistency(sequence, depth, covered, c2w, K).l1
                if l1 is not None:
                    disagreement[name].append(l1 * 255)
        for name, (sequence, path) in {**made, "ground_truth": (truth, ar)}.items():
            l1 = reprojection_consistency(sequence, path.depth, path.accumulation, c2w, K).l1
            if l1 is not None:
                at_rendered[name].append(l1 * 255)

    def mean_thirds(objects: list[list[dict]], key: str) -> dict:
        firsts, lasts = zip(*(thirds([x[key] for x in frames]) for frames in objects))
        return {
            f"first_third_{key}": round(sum(firsts) / len(firsts), 4),
            f"last_third_{key}": round(sum(lasts) / len(lasts), 4),
        }

    result: dict = {"objects": len(per_object["sample"]), "frames": args.autoregressive_frames}
    for name in names:
        result[name] = summarise(per_image[name]).as_dict()
        for key in ("psnr", "lpips"):
            if all(key in x for x in per_image[name]):
                result[name].update(mean_thirds(per_object[name], key))
    if any(disagreement.values()):
        result["true_depth_disagreement"] = {name: round(sum(v) / len(v), 3) for name, v in disagreement.items() if v}
    result["rendered_depth_disagreement"] = {name: round(sum(v) / len(v), 3) for name, v in at_rendered.items() if v}
    return result


def entrypoint() -> None:
    args = tyro.cli(QualityArgs)
    with user_errors_exit():
        result = main(args)
    text = json.dumps(result, indent=1)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    entrypoint()
