"""``genvs-sample``: generate novel views of an object along a camera path, autoregressively, from a checkpoint."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import List, Literal, NoReturn, Union

import torch
import tyro
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torchvision.utils import save_image

from genvs_ns.cpu_runtime import apply_cpu_settings
from genvs_ns.data.images import load_rgb
from genvs_ns.errors import GeNVSError, user_errors_exit
from genvs_ns.geometry import intrinsics_matrix
from genvs_ns.sampling import SamplerSettings
from genvs_ns.sampling.trajectories import Trajectory, from_spherical, look_at, nearest_first, orbit
from genvs_ns.scripts.checkpoint import check_config, load_model, load_pipeline
from genvs_ns.scripts.scene_export import export_nerfstudio
from genvs_ns.video import write_video


@dataclass
class SampleArgs:
    """Generate novel views of a data set object (or of your own --image) with a genvs checkpoint."""

    load_config: Path
    """config.yml written by ns-train."""
    output_dir: Path
    """Folder for frames/, samples.mp4, nerf_rgb.mp4, contact_sheet.png, consistency.json and run.json."""
    object: Union[int, str] = 0
    """Object of the data set split: an index or an instance id."""
    split: Literal["test", "val", "train"] = "test"
    """Data set split to take the object from."""
    input_views: List[int] = field(default_factory=list)
    """View indices of the object to condition on (1-3); default: view 64 where it exists, else the first."""
    image: Path | None = None
    """Your own picture instead of a data set object (RGB or RGBA on white, object centred)."""
    elevation: float = 20.0
    """--image only: assumed camera elevation in degrees."""
    azimuth: float = 0.0
    """--image only: assumed camera azimuth in degrees."""
    radius: float = 1.3
    """--image only: assumed camera distance from the object's centre (SRN: 1.3)."""
    focal: float | None = None
    """--image only: focal length in pixels of the model's image size (default: SRN's 131.25 at 128 px)."""
    trajectory: Trajectory | None = None
    """spiral or circle around the object starting at the input camera; rings (three elevation rings over the upper
    hemisphere); or the data set's own views of the object. Default: spiral, or rings with --export-nerfstudio."""
    num_frames: int = 24
    """Frames to generate."""
    sampling: tyro.conf.OmitArgPrefixes[SamplerSettings] = field(default_factory=SamplerSettings)
    """How each frame's diffusion sample is drawn."""
    unconditional: bool = False
    """Ignore the input: sample from the unconditional branch (guidance scale 0)."""
    autoregressive: bool = True
    """Condition each frame on earlier frames as well (--no-autoregressive: on the input alone)."""
    max_earlier_frames: int = 4
    """Autoregressive: up to this many random earlier frames besides the previous one."""
    seed: int = 0
    """Same seed, same frames."""
    fps: int = 10
    """Frame rate of the videos."""
    export_nerfstudio: Path | None = None
    """Also write the input view(s) and the samples here as a nerfstudio data set (images/, transforms.json), to fit
    a 3D scene with `ns-train nerfacto --data <folder>`."""
    save_progress: bool = False
    """Also save each frame's denoising trajectory (progress/00000.png: the denoised estimate at every step)."""


def _fail(message: str) -> NoReturn:
    raise GeNVSError(message)


def _object_index(ds, obj: Union[int, str]) -> int:
    ids = ds.metadata["object_ids"]
    if isinstance(obj, str) and not obj.isdigit():
        if obj not in ids:
            _fail(f"no object with instance id {obj!r} in this split")
        return ids.index(obj)
    index = int(obj)
    if not 0 <= index < len(ids):
        _fail(f"object index {index} out of range: this split has {len(ids)} objects (0-{len(ids) - 1})")
    return index


def main(args: SampleArgs) -> dict:
    # Cheap checks first: loading nerfstudio and the checkpoint takes many seconds.
    check_config(args.load_config)
    if args.trajectory is None:
        args = replace(args, trajectory="rings" if args.export_nerfstudio is not None else "spiral")
    if args.export_nerfstudio is not None and (args.export_nerfstudio / "transforms.json").exists():
        _fail(f"{args.export_nerfstudio}: already holds a transforms.json; choose a new --export-nerfstudio folder")
    if args.num_frames < 1:
        _fail("--num-frames must be at least 1")
    if args.sampling.steps < 1:
        _fail("--steps must be at least 1")
    if args.sampling.guidance_scale < 0:
        _fail("--guidance-scale must be at least 0 (1: plain conditional sampling)")
    if args.image is not None and not args.image.is_file():
        _fail(f"{args.image}: no such image")
    from genvs_ns.evaluation.consistency import path_scores, summary
    from genvs_ns.sampling.autoregressive import ContextPolicy, generate_path
    from genvs_ns.sampling.diffusion import get_sampler

    get_sampler(args.sampling.sampler)
    if args.image is not None and args.trajectory == "dataset":
        _fail("--trajectory dataset needs a data set object, not --image")
    gt_frames = None
    if args.image is not None:
        # The user's own picture needs no data set: the checkpoint carries image size, near/far and the world's up.
        model = load_model(args.load_config)
        if model.device.type == "cpu":  # what the pipeline does at its start, for this model without one
            apply_cpu_settings(model.config.cpu_reuse_freed_memory, model.config.cpu_flush_denormals)
        up, (H, W) = model.world_up.float().cpu(), model.image_hw
        image = torch.from_numpy(load_rgb(args.image, size=(W, H))).permute(2, 0, 1)
        f = args.focal if args.focal is not None else 131.25 * W / 128
        K = intrinsics_matrix(*(torch.tensor([v]) for v in (f, f, W / 2, H / 2)))[0]
        position = from_spherical(args.radius, math.radians(args.elevation), math.radians(args.azimuth), up)
        input_images, input_c2w, input_K = image[None], look_at(position, up)[None], K[None]
    else:
        split = {"train": "train", "val": "val", "test": "test"}.get(args.split)
        if split is None:
            _fail(f"--split must be train, val or test, not {args.split!r}")
        pipeline = load_pipeline(args.load_config, test_mode="test" if split == "test" else "val")
        pipeline.eval()
        model = pipeline.model
        up, (H, W) = model.world_up.float().cpu(), model.image_hw
        ds = pipeline.datamanager.train_dataset if split == "train" else pipeline.datamanager.eval_dataset
        obj = _object_index(ds, args.object)
        images = ds.object_images[obj]
        views = {int(ds.view_index[i]): i for i in images}
        wanted = args.input_views or [int(ds.view_index[ds.view_image(obj, 64)])]
        if not 1 <= len(wanted) <= 3:
            _fail("give 1 to 3 --input-views")
        missing = [v for v in wanted if v not in views]
        if missing:
            _fail(f"object {obj} has no view {missing[0]} (views: {min(views)}-{max(views)})")
        chosen = [views[v] for v in wanted]
        input_images = torch.stack([ds.image(i) for i in chosen])
        input_c2w, input_K = ds.c2w[chosen], ds.K[chosen]
        if args.trajectory == "dataset":
            others = [i for i in images if i not in chosen]
            order = nearest_first(input_c2w[0], ds.c2w[others], args.num_frames)
            targets = [others[k] for k in order]
            gt_frames = torch.stack([ds.image(i) for i in targets])
            target_c2w, target_K = ds.c2w[targets], ds.K[targets]
    if args.trajectory != "dataset":
        target_c2w = orbit(input_c2w[0], up, args.num_frames, kind=args.trajectory)
        target_K = input_K[:1].expand(len(target_c2w), 3, 3)

    settings = replace(args.sampling, guidance_scale=0.0) if args.unconditional else args.sampling
    policy = ContextPolicy(args.autoregressive, args.max_earlier_frames)
    start = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
    ) as progress:
        frames_task = progress.add_task("frames", total=len(target_c2w))
        steps_task = progress.add_task("steps", total=settings.steps)

        def on_frame(i: int) -> None:
            progress.advance(frames_task)
            progress.reset(steps_task)

        result = generate_path(
            model, input_images, input_c2w, input_K, target_c2w, target_K, settings, policy, args.seed,
            save_progress=args.save_progress, on_frame=on_frame, on_step=lambda info: progress.advance(steps_task),
        )  # fmt: skip
    seconds = time.perf_counter() - start

    out = args.output_dir
    (out / "frames").mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(result.samples):
        save_image(frame, out / "frames" / f"{i:05d}.png")
    write_video(out / "samples.mp4", result.samples, args.fps)
    write_video(out / "nerf_rgb.mp4", result.nerf_rgb, args.fps)
    if args.save_progress:
        (out / "progress").mkdir(exist_ok=True)
        for i, steps in enumerate(result.progress):
            save_image(steps, out / "progress" / f"{i:05d}.png", nrow=len(steps), padding=0)
    rows = [result.samples, result.nerf_rgb] + ([gt_frames] if gt_frames is not None else [])
    per_row = len(result.samples)
    pad = torch.ones(max(0, per_row - len(input_images)), 3, H, W)
    inputs = torch.cat([input_images, pad])[:per_row]  # first row: the input view(s)
    save_image(torch.cat([inputs, *rows]), out / "contact_sheet.png", nrow=per_row, padding=1, pad_value=1.0)
    consistency = path_scores(
        result.samples, result.nerf_rgb, result.depth, result.accumulation, target_c2w, target_K, gt_frames, args.seed
    )
    (out / "consistency.json").write_text(json.dumps(consistency, indent=1))
    run = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(args).items()},
        "frames": len(result.samples),
        "seconds": round(seconds, 2),
        "seconds_per_frame": round(seconds / len(result.samples), 3),
        "context": result.context,
        "consistency": {k: summary(v) for k, v in consistency.items() if isinstance(v, dict)},
        "outputs": ["frames/", "samples.mp4", "nerf_rgb.mp4", "contact_sheet.png", "consistency.json"],
    }
    if args.export_nerfstudio is not None:
        scene = export_nerfstudio(
            args.export_nerfstudio,
            torch.cat([input_images, result.samples]),
            torch.cat([input_c2w, target_c2w.cpu()]),
            torch.cat([input_K, target_K.cpu()]),
        )
        run["outputs"].append(str(scene))
    (out / "run.json").write_text(json.dumps(run, indent=1))
    return run


def entrypoint() -> None:
    with user_errors_exit():
        run = main(tyro.cli(SampleArgs))
    print(json.dumps({k: run[k] for k in ("frames", "seconds", "seconds_per_frame")}))


if __name__ == "__main__":
    entrypoint()
