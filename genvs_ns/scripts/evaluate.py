"""genvs-eval: the SRN protocol at its full scale, batched and resumable.

    genvs-eval --load-config outputs/.../config.yml --output-dir eval/cars_test
    genvs-eval --load-config CFG --output-dir D --objects 50 --target-views 25 --outputs nerf

Every requested object of the split is evaluated on all (or N evenly spread) of its views, given its source view(s)
(SRN protocol: view 64; an object without it uses its first view). Each object's source views are encoded once and
its target views are rendered and sampled in batches of ``--batch-size``. When an object is done, its rows are
appended to ``per_image.csv`` and ``per_object.csv``: a rerun skips the objects listed there, and since object k's
samples are seeded with ``seed + k``, a run killed and rerun ends with the same numbers as one that was not.
``metrics.json`` holds mean and std over all images of each output (full-frame and object-crop PSNR / SSIM, LPIPS where
torchvision's VGG-16 weights are on disk), FID of all generated against all ground-truth images where the Inception
weights are (3DiM's protocol), the settings and the commit.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Literal

import numpy as np
import torch
import tyro
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torchvision.utils import save_image

from genvs_ns.errors import DataError, GeNVSError, user_errors_exit
from genvs_ns.sampling import SamplerSettings
from genvs_ns.scripts.checkpoint import check_config

Output = Literal["nerf", "sample"]
SCORES = ("psnr", "ssim", "crop_psnr", "crop_ssim", "lpips")


@dataclass
class EvalArgs:
    load_config: Path
    """config.yml written by ns-train."""
    output_dir: Path
    """Results go here (per_image.csv, per_object.csv, metrics.json, images/); a rerun continues what is there."""
    split: Literal["train", "val", "test"] = "test"
    """Which split's objects to evaluate."""
    objects: List[str] = field(default_factory=lambda: ["all"])
    """all; N (the split's first N objects, sorted by id); or instance ids."""
    source_views: List[int] = field(default_factory=lambda: [64])
    """Input view indices (SRN protocol: 64; e.g. 64 104 for two); an object lacking one uses its first other view."""
    target_views: str = "all"
    """all of an object's other views, or N of them spread evenly."""
    outputs: List[Output] = field(default_factory=lambda: ["nerf", "sample"])
    """What is scored: the NeRF render, the diffusion sample, or both."""
    sampling: tyro.conf.OmitArgPrefixes[SamplerSettings] = field(default_factory=SamplerSettings)
    """How the diffusion samples are drawn (genvs-sample's defaults)."""
    seed: int = 0
    """Object k (index in the split) is sampled with seed + k."""
    batch_size: int = 16
    """Target views rendered and sampled at once."""
    save_images: bool = True
    """Write every output image to images/<object id>/ (FID reads them back at the end)."""
    consistency_objects: int = 0
    """Also generate an autoregressive path along the data set's own views (nearest the input first) for the first N
    objects, and score its 3D consistency (TSED, reprojection; consistency.csv)."""
    consistency_frames: int = 23
    """Frames of each of those paths."""


def commit_hash() -> str:
    """The genvs-ns checkout's commit (empty outside a git checkout), for results to record."""
    try:
        here = Path(__file__).parent
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here
        ).stdout.strip()
    except OSError:
        return ""


def _select_objects(ids: list[str], wanted: list[str]) -> list[int]:
    if wanted == ["all"]:
        return list(range(len(ids)))
    if len(wanted) == 1 and wanted[0].isdigit():
        return list(range(min(int(wanted[0]), len(ids))))
    missing = [w for w in wanted if w not in ids]
    if missing:
        raise GeNVSError(f"--objects: no object {missing[0]!r} in this split ({len(ids)} objects)")
    return [ids.index(w) for w in wanted]


def _views(ds, obj: int, source_views: list[int], target_views: str) -> tuple[list[int], list[int]]:
    """Image indices of an object's source views and its target views."""
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
    return sources, others


class _Results:
    """per_image.csv and per_object.csv: an object's rows are appended (and flushed to disk) once it is done."""

    def __init__(self, out: Path, outputs: list[str]) -> None:
        self.image_path, self.object_path = out / "per_image.csv", out / "per_object.csv"
        self.image_fields = ["object", "view"] + [f"{o}_{s}" for o in outputs for s in SCORES]
        self.object_fields = ["object", "views", "seconds"] + [f"{o}_{s}" for o in outputs for s in SCORES]
        self.done: set[str] = set()
        if self.object_path.is_file():
            with open(self.object_path, newline="") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames != self.object_fields:
                    raise GeNVSError(f"{self.object_path}: written with other --outputs; choose a new --output-dir")
                self.done = {row["object"] for row in reader}
        # Rows of an object that was being written when a run was killed are dropped: it is evaluated again.
        rows = self.image_rows()
        kept = [r for r in rows if r["object"] in self.done]
        if len(kept) != len(rows) or not self.image_path.is_file():
            self._write(self.image_path, self.image_fields, kept, "w")
        if not self.object_path.is_file():
            self._write(self.object_path, self.object_fields, [], "w")

    def image_rows(self) -> list[dict]:
        return _read_csv(self.image_path)

    @staticmethod
    def _write(path: Path, fields: list[str], rows: list[dict], mode: str) -> None:
        with open(path, mode, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            if mode == "w":
                writer.writeheader()
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())

    def add(self, object_id: str, image_rows: list[dict], seconds: float) -> None:
        self._write(self.image_path, self.image_fields, image_rows, "a")
        means = {k: round(float(np.mean([float(r[k]) for r in image_rows])), 5) for k in self.object_fields[3:]}
        row = {"object": object_id, "views": len(image_rows), "seconds": round(seconds, 2), **means}
        self._write(self.object_path, self.object_fields, [row], "a")
        self.done.add(object_id)


def _lpips_fn():
    """Per-image LPIPS (VGG, pixelNeRF's choice) where the weights are on disk, else None."""
    from genvs_ns.metrics import VGG16_FILE, _weights

    if not _weights(VGG16_FILE).is_file():
        return None
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    metric = LearnedPerceptualImagePatchSimilarity(net_type="vgg", normalize=True, reduction="mean")

    def lpips(pred: torch.Tensor, truth: torch.Tensor) -> float:
        metric.reset()
        return float(metric(pred[None].clamp(0, 1).cpu(), truth[None].cpu()))

    return lpips


def _fid(args: EvalArgs, ds, objects: list[int], out: Path) -> dict:
    from genvs_ns.data.images import load_rgb
    from genvs_ns.metrics import INCEPTION_FILE, _weights, missing_weights

    weights = _weights(INCEPTION_FILE)
    if not weights.is_file():
        return {"fid_skipped": missing_weights(INCEPTION_FILE, "Inception")}
    if not args.save_images:
        return {"fid_skipped": "--no-save-images: the generated images were not kept"}
    from torchmetrics.image.fid import FrechetInceptionDistance

    ids = ds.metadata["object_ids"]
    fids = {
        name: FrechetInceptionDistance(normalize=True, feature_extractor_weights_path=str(weights))
        for name in args.outputs
    }
    for obj in objects:
        _, targets = _views(ds, obj, args.source_views, args.target_views)
        truth = torch.stack([ds.image(i) for i in targets])
        for name, fid in fids.items():
            fid.update(truth, real=True)
            files = [out / "images" / ids[obj] / f"{int(ds.view_index[i]):06d}_{name}.png" for i in targets]
            fid.update(torch.stack([torch.from_numpy(load_rgb(p)).permute(2, 0, 1) for p in files]), real=False)
    return {f"{name}_fid": float(fid.compute()) for name, fid in fids.items()}


# What an object's numbers depend on: a rerun into the same folder must use the same, or it would mix two evaluations.
RESULT_SETTINGS = (
    "load_config", "split", "source_views", "target_views", "outputs", "sampling", "seed", "batch_size",
    "consistency_frames",
)  # fmt: skip


def _claim_output_dir(out: Path, args: EvalArgs) -> None:
    """Creates ``out`` (or checks that its earlier results used these settings) before anything slow runs."""
    settings = asdict(args)
    settings = {k: (str(settings[k]) if isinstance(settings[k], Path) else settings[k]) for k in RESULT_SETTINGS}
    settings["load_config"] = str(Path(settings["load_config"]).resolve())
    path = out / "settings.json"
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not path.is_file():
            path.write_text(json.dumps(settings, indent=1))
            return
    except OSError as exc:
        raise DataError(out, f"cannot write the results here ({exc.strerror or exc})") from None
    earlier = json.loads(path.read_text())
    changed = [k for k in RESULT_SETTINGS if earlier.get(k) != settings[k]]
    if changed:
        raise DataError(
            out,
            f"holds results of other settings ({', '.join(changed)} differ); choose a new --output-dir or the same "
            "settings to continue",
        )


def main(args: EvalArgs) -> dict:
    check_config(args.load_config)
    if args.batch_size < 1:
        raise GeNVSError("--batch-size must be at least 1")
    if args.target_views != "all" and not (args.target_views.isdigit() and int(args.target_views) >= 1):
        raise GeNVSError(f"--target-views must be all or a positive number, not {args.target_views!r}")
    if not 1 <= len(args.source_views) <= 3:
        raise GeNVSError("give 1 to 3 --source-views")
    from genvs_ns.model.network import Conditioning
    from genvs_ns.quality import image_scores
    from genvs_ns.sampling.diffusion import get_sampler
    from genvs_ns.sampling.views import render_views
    from genvs_ns.scripts.checkpoint import load_pipeline

    if "sample" in args.outputs:
        get_sampler(args.sampling.sampler)
    out = args.output_dir
    _claim_output_dir(out, args)
    results = _Results(out, list(args.outputs))
    pipeline = load_pipeline(args.load_config, test_mode="test" if args.split == "test" else "val")
    pipeline.eval()
    model, device = pipeline.model, pipeline.model.device
    ds = pipeline.datamanager.train_dataset if args.split == "train" else pipeline.datamanager.eval_dataset
    ids = ds.metadata["object_ids"]
    objects = _select_objects(ids, list(args.objects))
    todo = [o for o in objects if ids[o] not in results.done and len(ds.object_images[o]) > len(args.source_views)]
    lpips = _lpips_fn()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    started = time.perf_counter()
    with Progress(*columns, TimeRemainingColumn(), transient=True) as progress:
        task = progress.add_task("objects", total=len(todo))
        for k, obj in enumerate(todo):
            start = time.perf_counter()
            sources, targets = _views(ds, obj, args.source_views, args.target_views)
            with torch.no_grad():
                cond = model.encode(
                    torch.stack([ds.image(i) for i in sources])[None].to(device),
                    ds.c2w[sources][None].to(device),
                    ds.K[sources][None].to(device),
                )
            generator = torch.Generator(device=device).manual_seed(args.seed + obj)
            rows = []
            for b in range(0, len(targets), args.batch_size):
                chunk = targets[b : b + args.batch_size]
                n = len(chunk)
                batch_cond = Conditioning(
                    cond.volumes.expand(n, *cond.volumes.shape[1:]),
                    cond.c2w.expand(n, -1, -1, -1),
                    cond.K.expand(n, -1, -1, -1),
                    cond.image_hw,
                )
                sampling = args.sampling if "sample" in args.outputs else None
                views = render_views(
                    model, batch_cond, ds.c2w[chunk].to(device), ds.K[chunk].to(device), sampling=sampling,
                    generator=generator,
                )  # fmt: skip
                for j, image_index in enumerate(chunk):
                    truth = ds.image(image_index)
                    view = int(ds.view_index[image_index])
                    row: dict = {"object": ids[obj], "view": view}
                    for name in args.outputs:
                        image = views["rgb" if name == "nerf" else "sample"][j].float().cpu()
                        scores = image_scores(image, truth)
                        row.update({f"{name}_{s}": round(scores[s], 5) for s in SCORES if s != "lpips"})
                        row[f"{name}_lpips"] = round(lpips(image, truth), 5) if lpips is not None else float("nan")
                        if args.save_images:
                            (out / "images" / ids[obj]).mkdir(parents=True, exist_ok=True)
                            save_image(image, out / "images" / ids[obj] / f"{view:06d}_{name}.png")
                    rows.append(row)
            results.add(ids[obj], rows, time.perf_counter() - start)
            progress.advance(task)
            if k == 0 and len(todo) > 1:
                per_object = time.perf_counter() - started
                progress.console.print(
                    f"genvs-eval: {per_object:.1f} s for the first object, about {per_object * len(todo) / 3600:.2f} h "
                    f"for all {len(todo)}"
                )
    _consistency(args, model, ds, objects[: args.consistency_objects], out)
    return _summary(args, ds, objects, results, out)


CONSISTENCY_SCORES = ("tsed", "reprojection_l1", "reprojection_l1_shuffled")
# true_*: lifted with the data set's own depth maps (toy data made with --depth); empty without them.
TRUE_GEOMETRY_SCORES = ("true_reprojection_l1", "true_reprojection_l1_shuffled")
CONSISTENCY_FIELDS = ["object", "frames"] + [
    f"{seq}_{score}"
    for seq, scores in (("samples", CONSISTENCY_SCORES), ("nerf_rgb", CONSISTENCY_SCORES), ("ground_truth", ("tsed",)))
    for score in scores + TRUE_GEOMETRY_SCORES
]


def _consistency(args: EvalArgs, model, ds, objects: list[int], out: Path) -> None:
    """consistency.csv: per object, the 3D consistency of an autoregressive path along its own views, beside the NeRF
    RGB frames of that path and the data set's views (consistency.py); appended per object, resumable."""
    from genvs_ns.consistency import path_scores, summary
    from genvs_ns.sampling.autoregressive import ContextPolicy, generate_path
    from genvs_ns.sampling.trajectories import nearest_first

    path = out / "consistency.csv"
    done = {row["object"] for row in _read_csv(path)}
    if not path.is_file():
        _Results._write(path, CONSISTENCY_FIELDS, [], "w")
    ids = ds.metadata["object_ids"]
    for obj in objects:
        if ids[obj] in done:
            continue
        sources, others = _views(ds, obj, args.source_views, "all")
        order = nearest_first(ds.c2w[sources[0]], ds.c2w[others], args.consistency_frames)
        targets = [others[k] for k in order]
        images = torch.stack([ds.image(i) for i in sources])
        generated = generate_path(
            model, images, ds.c2w[sources], ds.K[sources], ds.c2w[targets], ds.K[targets], args.sampling,
            ContextPolicy(), seed=args.seed + obj,
        )  # fmt: skip
        truth = torch.stack([ds.image(i) for i in targets])
        scores = path_scores(
            generated.samples, generated.nerf_rgb, generated.depth, generated.accumulation, ds.c2w[targets],
            ds.K[targets], truth, args.seed + obj, _true_depth(ds, targets, truth.shape[-2:]),
        )  # fmt: skip
        row: dict = {"object": ids[obj], "frames": len(targets)}
        for seq in ("samples", "nerf_rgb", "ground_truth"):
            headline = summary(scores[seq])
            for key in CONSISTENCY_SCORES + TRUE_GEOMETRY_SCORES:
                if key in headline:  # None: no opaque pixel to lift (an untrained field)
                    row[f"{seq}_{key}"] = round(float(headline[key]), 5) if headline[key] is not None else "nan"
        _Results._write(path, CONSISTENCY_FIELDS, [row], "a")


def _true_depth(ds, images: list[int], hw: tuple[int, int]) -> torch.Tensor | None:
    """Ray-distance depth of these views from the data set's depth maps, at the images' size; None unless all have
    one."""
    from genvs_ns.consistency import ray_distance
    from genvs_ns.data.toy import read_depth

    maps = [read_depth(ds.image_filenames[i]) for i in images]
    if any(m is None for m in maps):
        return None
    z = torch.from_numpy(np.stack(maps))
    if tuple(z.shape[-2:]) != tuple(hw):  # --downscale-factor: the nearest depth, never a blend across an edge
        z = torch.nn.functional.interpolate(z[:, None], size=tuple(hw), mode="nearest")[:, 0]
    return ray_distance(z, ds.K[images])


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _summary(args: EvalArgs, ds, objects: list[int], results: _Results, out: Path) -> dict:
    ids = ds.metadata["object_ids"]
    wanted = {ids[o] for o in objects}
    rows = [r for r in results.image_rows() if r["object"] in wanted]
    metrics: dict = {"images": len(rows), "objects": len({r["object"] for r in rows})}
    for name in args.outputs:
        for s in SCORES:
            values = np.array([float(r[f"{name}_{s}"]) for r in rows], dtype=np.float64)
            if len(values) and not np.isnan(values).all():
                metrics[f"{name}_{s}"] = round(float(values.mean()), 4)
                metrics[f"{name}_{s}_std"] = round(float(values.std()), 4)
    if not any(k.endswith("_lpips") for k in metrics):
        from genvs_ns.metrics import VGG16_FILE, missing_weights

        metrics["lpips_skipped"] = missing_weights(VGG16_FILE, "VGG-16")
    metrics.update(_fid(args, ds, [o for o in objects if ids[o] in results.done], out))
    paths = [r for r in _read_csv(out / "consistency.csv") if r["object"] in wanted]
    if paths:
        consistency: dict = {"paths": len(paths)}
        for key in CONSISTENCY_FIELDS[2:]:
            values = np.array([float(r.get(key) or "nan") for r in paths])
            consistency[key] = round(float(np.nanmean(values)), 4) if not np.isnan(values).all() else None
        metrics["consistency"] = consistency
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(args).items()}
    summary = {"metrics": metrics, "settings": settings, "commit": commit_hash()}
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    return summary


def entrypoint() -> None:
    with user_errors_exit():
        summary = main(tyro.cli(EvalArgs))
    print(json.dumps(summary["metrics"]))


if __name__ == "__main__":
    entrypoint()
