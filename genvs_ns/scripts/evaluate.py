"""genvs-eval: the SRN protocol at its full scale, batched and resumable.

    genvs-eval --load-config outputs/.../config.yml --output-dir eval/cars_test
    genvs-eval --load-config CFG --output-dir D --objects 50 --target-views 25 --outputs nerf

Every requested object of the split is evaluated on all (or N evenly spread) of its views, given its source view(s)
(SRN protocol: view 64; an object without it uses its first view). Each object's source views are encoded once; the
target views of all objects, in order, are rendered and sampled in batches of ``--batch-size`` that run across
object boundaries, so the denoiser always sees a full batch. When an object is done, its rows are appended to
``per_image.csv`` and ``per_object.csv``: a rerun skips the objects listed there. The batches are fixed by the
settings and each image's noise by (seed, object, view), so a run killed and rerun ends with the same numbers as one
that was not.
``metrics.json`` holds mean and std over all images of each output (full-frame and object-crop PSNR / SSIM, LPIPS where
torchvision's VGG-16 weights are on disk), FID of all generated against all ground-truth images where the Inception
weights are (3DiM's protocol), the settings and the commit.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator, List, Literal

import numpy as np
import torch
import tyro
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from genvs_ns import checks
from genvs_ns.errors import DataError, GeNVSError, user_errors_exit
from genvs_ns.evaluation.results import SCORES, ObjectResults, claim_output_dir, commit_hash, read_csv, write_csv
from genvs_ns.sampling import SamplerFlags
from genvs_ns.sampling.context import ContextPolicy
from genvs_ns.scripts.checkpoint import check_model_source

# "input": the input view itself, unchanged, scored as if it were the prediction: the baseline a generative model
# must beat (LPIPS prefers its right textures in the wrong place to a blur).
Output = Literal["nerf", "sample", "input"]


@dataclass
class EvalArgs:
    output_dir: Path
    """Results go here (per_image.csv, per_object.csv, metrics.json, images/); a rerun continues what is there."""
    load_config: Path | None = None
    """config.yml written by ns-train (or give --load-model)."""
    load_model: Path | None = None
    """A model folder written by genvs-export (or give --load-config); needs --data."""
    data: Path | None = None
    """Evaluate on this data set instead of the run's own (its folder moved, or objects of another kind)."""
    split: Literal["train", "val", "test"] = "test"
    """Which split's objects to evaluate."""
    objects: List[str] = field(default_factory=lambda: ["all"])
    """all; N (the split's first N objects, sorted by id); or instance ids."""
    source_views: List[int] = field(default_factory=lambda: [64])
    """Input view indices (SRN protocol: 64; e.g. 64 104 for two); an object lacking one uses its first other view."""
    target_views: str = "all"
    """all of an object's other views, or N of them spread evenly."""
    outputs: List[Output] = field(default_factory=lambda: ["nerf", "sample", "input"])
    """What is scored: the NeRF render, the diffusion sample, and the input view copied unchanged (the baseline)."""
    sampling: tyro.conf.OmitArgPrefixes[SamplerFlags] = field(default_factory=SamplerFlags)
    """How the diffusion samples are drawn (genvs-sample's defaults)."""
    seed: int = 0
    """Each image's sampling noise is seeded by (seed, object index in the split, view): the same whichever images
    share its batch."""
    batch_size: int = 16
    """Target views rendered and sampled at once, across objects."""
    save_images: bool = True
    """Write every output image to images/<object id>/ (FID reads them back at the end)."""
    consistency_objects: int = 0
    """Also generate an autoregressive path along the data set's own views (nearest the input first) for the first N
    objects, and score its 3D consistency (TSED, reprojection; consistency.csv)."""
    consistency_frames: int = 23
    """Frames of each of those paths."""
    consistency_autoregressive: bool = True
    """Generate those paths autoregressively, each frame conditioned on earlier generated frames too (GeNVS's
    recipe)."""
    consistency_control: bool = True
    """Also generate each path with every frame on the input view(s) alone, same views and seeds (the control that
    shows what autoregression buys); consistency.csv's path column tells them apart."""

    def check(self) -> None:
        """Refuses bad settings before anything is loaded."""
        check_model_source(self.load_config, self.load_model)
        if self.load_model is not None and self.data is None:
            raise GeNVSError("--load-model needs --data: a model folder holds no data set")
        if self.data is not None and not self.data.is_dir():
            raise DataError(self.data, "no such data folder (--data)")
        checks.writable_folder("--output-dir", self.output_dir)
        checks.at_least("--batch-size", self.batch_size, 1)
        checks.seed("--seed", self.seed)
        checks.at_least("--consistency-objects", self.consistency_objects, 0)
        checks.at_least("--consistency-frames", self.consistency_frames, 1)
        if any(v < 0 for v in self.source_views):
            raise GeNVSError(f"--source-views must be view indices of 0 or more, not {self.source_views}")
        if not self.outputs:
            raise GeNVSError("--outputs needs at least one of nerf, sample, input")
        if not self.objects or (len(self.objects) == 1 and self.objects[0].isdigit() and int(self.objects[0]) < 1):
            raise GeNVSError(f"--objects must be all, a number of at least 1, or instance ids, not {self.objects}")
        if "sample" in self.outputs:
            self.sampling.check()
        if self.target_views != "all" and not (self.target_views.isdigit() and int(self.target_views) >= 1):
            raise GeNVSError(f"--target-views must be all or a positive number, not {self.target_views!r}")
        if not 1 <= len(self.source_views) <= 3:
            raise GeNVSError("give 1 to 3 --source-views")

    def result_settings(self) -> dict:
        """What an object's numbers depend on: a rerun into the same folder must use the same, or it would mix two
        evaluations."""
        settings = asdict(self)
        keys = (
            "load_config", "data", "split", "source_views", "target_views", "outputs", "sampling", "seed", "batch_size",
            "consistency_frames", "consistency_autoregressive", "consistency_control",
        )  # fmt: skip
        settings = {k: settings[k] for k in keys}
        for key in ("load_config", "load_model"):  # load_model only where given: older folders lack the key
            if getattr(self, key) is not None:
                settings[key] = str(Path(getattr(self, key)).resolve())
        if self.load_config is None:
            settings["load_config"] = None
        settings["data"] = str(Path(settings["data"]).resolve()) if settings["data"] is not None else None
        # Folders of the first genvs-eval (one noise generator per object) are not continued with these draws.
        settings["noise_seeds"] = "per image: (seed, object, view)"
        # The consistency paths follow the sampler's path defaults, which change with what is measured (fill views
        # since 2026-12-05): a folder's paths are continued only under the policy they began with.
        settings["path_policy"] = asdict(ContextPolicy())
        return settings


def main(args: EvalArgs) -> dict:
    args.check()
    from genvs_ns.evaluation.protocol import object_views, plan_batches, select_objects
    from genvs_ns.sampling.diffusion import get_sampler
    from genvs_ns.scripts.checkpoint import model_sampling, open_pipeline

    if "sample" in args.outputs or args.consistency_objects > 0:
        # From here on the flags are complete settings: the model's default under what was given (recorded so).
        args = replace(args, sampling=args.sampling.over(model_sampling(args.load_config, args.load_model)))
    if "sample" in args.outputs:
        get_sampler(args.sampling.sampler)
    out = args.output_dir
    claim_output_dir(out, args.result_settings())
    results = ObjectResults(out, list(args.outputs))
    pipeline = open_pipeline(args.load_config, args.load_model, args.data, "test" if args.split == "test" else "val")
    pipeline.eval()
    ds = pipeline.datamanager.train_dataset if args.split == "train" else pipeline.datamanager.eval_dataset
    chosen = select_objects(ds.metadata["object_ids"], list(args.objects))
    # An object with no view besides its sources has nothing to score.
    objects = [
        object_views(ds, o, args.source_views, args.target_views)
        for o in chosen
        if len(ds.object_images[o]) > len(args.source_views)
    ]
    # Batches holding no unfinished object are skipped; the others are rendered whole, as in the first run.
    batches = [b for b in plan_batches(objects, args.batch_size) if any(i.obj.object_id not in results.done for i in b)]
    _score_batches(args, pipeline.model, ds, batches, results)
    _consistency(args, pipeline.model, ds, objects[: args.consistency_objects])
    return _summary(args, ds, objects, results)


def _image_file(out: Path, object_id: str, view: int, name: str) -> Path:
    return out / "images" / object_id / f"{view:06d}_{name}.png"


def _score_batches(args: EvalArgs, model, ds, batches: list, results: ObjectResults) -> None:
    """Renders the batches and scores each image; an object's rows are written once all its views are scored."""
    from torchvision.utils import save_image

    from genvs_ns.evaluation.batches import render_batches
    from genvs_ns.evaluation.metrics import lpips_network
    from genvs_ns.evaluation.quality import image_scores, perceptual_scores

    lpips = lpips_network()
    sampling = args.sampling if "sample" in args.outputs else None
    rows: dict[str, list[dict]] = defaultdict(list)
    seconds: dict[str, float] = defaultdict(float)  # an object's share of its batches' time
    total = sum(len(b) for b in batches)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, TimeRemainingColumn(), transient=True) as progress:
        task = progress.add_task("images", total=total)
        for k, batch in enumerate(render_batches(model, ds, batches, sampling, args.seed)):
            truths = torch.stack([ds.image(item.image) for item in batch.items])
            rendered = {"nerf": batch.nerf, "sample": batch.sample}
            images = {name: rendered[name] for name in args.outputs if rendered.get(name) is not None}
            if "input" in args.outputs:
                images["input"] = torch.stack([ds.image(item.obj.sources[0]) for item in batch.items])
            unscored = [{"lpips": float("nan"), "crop_lpips": float("nan")}] * len(truths)
            # LPIPS of the whole batch at once (one network call per output for the frames).
            perceptual = {
                name: perceptual_scores(lpips, images[name], truths) if lpips is not None else unscored
                for name in args.outputs
            }
            for j, item in enumerate(batch.items):
                obj = item.obj
                if obj.object_id in results.done:  # finished in an earlier run; its batch holds unfinished ones
                    continue
                view = int(ds.view_index[item.image])
                row: dict = {"object": obj.object_id, "view": view}
                for name in args.outputs:
                    image = images[name][j]
                    scores = {**image_scores(image, truths[j]), **perceptual[name][j]}
                    row.update({f"{name}_{s}": round(scores[s], 5) for s in SCORES})
                    if args.save_images:
                        path = _image_file(args.output_dir, obj.object_id, view, name)
                        path.parent.mkdir(parents=True, exist_ok=True)
                        save_image(image, path)
                rows[obj.object_id].append(row)
                seconds[obj.object_id] += batch.seconds / len(batch.items)
                if len(rows[obj.object_id]) == len(obj.targets):
                    results.add(obj.object_id, rows.pop(obj.object_id), seconds.pop(obj.object_id))
            progress.advance(task, len(batch.items))
            if k == 0 and len(batches) > 1:
                projected = batch.seconds * total / len(batch.items)
                progress.console.print(
                    f"genvs-eval: {batch.seconds:.1f} s for the first batch of {len(batch.items)} images, about "
                    f"{projected / 3600:.2f} h for all {total}"
                )


def _consistency(args: EvalArgs, model, ds, objects: list) -> None:
    """consistency.csv: per object, the 3D consistency of an autoregressive path along its own views (paths.py);
    appended per object, resumable."""
    from genvs_ns.evaluation.metrics import lpips_network
    from genvs_ns.evaluation.paths import CONSISTENCY_FIELDS, consistency_row

    path = args.output_dir / "consistency.csv"
    done = {(row["object"], row["path"]) for row in read_csv(path)}
    if not path.is_file():
        write_csv(path, CONSISTENCY_FIELDS, [], "w")
    kinds = [k for k, on in ((True, args.consistency_autoregressive), (False, args.consistency_control)) if on]
    lpips = lpips_network() if objects else None
    for obj in objects:
        for autoregressive in kinds:
            if (obj.object_id, "autoregressive" if autoregressive else "input-only") in done:
                continue
            row = consistency_row(
                model, ds, obj, args.sampling, ContextPolicy(autoregressive), args.consistency_frames,
                args.seed + obj.index, lpips,
            )  # fmt: skip
            write_csv(path, CONSISTENCY_FIELDS, [row], "a")


def _saved_images(args: EvalArgs, ds, objects: list) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """(ground truth, {output: generated images read back}) per object, for FID."""
    from genvs_ns.data.images import load_rgb

    for obj in objects:
        truth = torch.stack([ds.image(i) for i in obj.targets])
        views = [int(ds.view_index[i]) for i in obj.targets]
        yield (
            truth,
            {
                name: torch.stack(
                    [torch.from_numpy(load_rgb(_image_file(args.output_dir, obj.object_id, v, name))) for v in views]
                ).permute(0, 3, 1, 2)
                for name in args.outputs
            },
        )


def _summary(args: EvalArgs, ds, objects: list, results: ObjectResults) -> dict:
    from genvs_ns.evaluation.metrics import lpips_missing, streamed_fid
    from genvs_ns.evaluation.paths import CONSISTENCY_FIELDS

    wanted = {o.object_id for o in objects}
    rows = [r for r in results.image_rows() if r["object"] in wanted]
    metrics: dict = {"images": len(rows), "objects": len({r["object"] for r in rows})}
    for name in args.outputs:
        for s in SCORES:
            values = np.array([float(r[f"{name}_{s}"]) for r in rows], dtype=np.float64)
            if len(values) and not np.isnan(values).all():
                metrics[f"{name}_{s}"] = round(float(values.mean()), 4)
                metrics[f"{name}_{s}_std"] = round(float(values.std()), 4)
    if not any(k.endswith("_lpips") for k in metrics):
        metrics["lpips_skipped"] = lpips_missing()
    if args.save_images:
        finished = [o for o in objects if o.object_id in results.done]
        metrics.update(streamed_fid(list(args.outputs), _saved_images(args, ds, finished)))
    else:
        metrics["fid_skipped"] = "--no-save-images: the generated images were not kept"
    paths = [r for r in read_csv(args.output_dir / "consistency.csv") if r["object"] in wanted]
    for kind, key in (("autoregressive", "consistency"), ("input-only", "consistency_input_only")):
        rows_of_kind = [r for r in paths if r["path"] == kind]
        if rows_of_kind:
            consistency: dict = {"paths": len(rows_of_kind)}
            for field_name in CONSISTENCY_FIELDS[3:]:
                values = np.array([float(r.get(field_name) or "nan") for r in rows_of_kind])
                consistency[field_name] = round(float(np.nanmean(values)), 4) if not np.isnan(values).all() else None
            metrics[key] = consistency
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(args).items()}
    summary = {"metrics": metrics, "settings": settings, "commit": commit_hash()}
    (args.output_dir / "metrics.json").write_text(json.dumps(summary, indent=1))
    return summary


def entrypoint() -> None:
    with user_errors_exit():
        summary = main(tyro.cli(EvalArgs))
    print(json.dumps(summary["metrics"]))


if __name__ == "__main__":
    entrypoint()
