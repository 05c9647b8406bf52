"""``genvs-sample``: generate novel views of an object along a camera path, autoregressively, from a checkpoint.

One function a job: ``SampleArgs.check`` refuses bad settings before anything loads; ``load_inputs`` opens the model
(a run's config.yml or an exported model folder) and the input view(s); ``camera_path`` chooses the target cameras;
``generate`` samples the frames; ``write_outputs`` writes them; ``main`` strings them together.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import List, Literal, Union

import torch
import tyro
from jaxtyping import Float
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor
from torchvision.utils import save_image

from genvs_ns import checks
from genvs_ns.errors import DataError, GeNVSError
from genvs_ns.sampling import SamplerFlags, SamplerSettings
from genvs_ns.sampling.context import ContextPolicy
from genvs_ns.sampling.trajectories import Trajectory

VideoFormat = Literal["mp4", "gif", "webp"]


@dataclass
class SampleArgs:
    """Generate novel views of a data set object (or of your own --image) with a genvs checkpoint."""

    output_dir: Path
    """Folder for frames/, samples.mp4, nerf_rgb.mp4, contact_sheet.png, consistency.json and run.json."""
    load_config: Path | None = None
    """config.yml written by ns-train (or give --load-model)."""
    load_model: Path | None = None
    """A model folder written by genvs-export (or give --load-config); with a data set object, also --data."""
    data: Path | None = None
    """The data set (SRN root) to take the object from: with --load-model, or instead of the run's own."""
    object: Union[int, str] = 0
    """Object of the data set split: an index or an instance id."""
    split: Literal["test", "val", "train"] = "test"
    """Data set split to take the object from."""
    input_views: List[int] = field(default_factory=list)
    """View indices of the object to condition on (1-3); default: view 64 where it exists, else the first."""
    image: Path | None = None
    """Your own picture instead of a data set object (RGB, RGBA on white, greyscale or 16-bit; object centred; a
    non-square one is padded with white to a square)."""
    elevation: float = 20.0
    """--image only: assumed camera elevation in degrees (-90 to 90)."""
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
    sampling: tyro.conf.OmitArgPrefixes[SamplerFlags] = field(default_factory=SamplerFlags)
    """How each frame's diffusion sample is drawn (unset: the model's default)."""
    unconditional: bool = False
    """Ignore the input: sample from the unconditional branch (guidance scale 0)."""
    context: tyro.conf.OmitArgPrefixes[ContextPolicy] = field(default_factory=ContextPolicy)
    """Which views condition each frame: the input(s), earlier frames, the known views warped in
    (sampling/context.py)."""
    seed: int = 0
    """Same seed, same frames."""
    fps: int = 10
    """Frame rate of the videos."""
    formats: List[VideoFormat] = field(default_factory=lambda: ["mp4"])
    """Video formats of samples.*, nerf_rgb.* and turntable.* (input | sample | NeRF RGB side by side): mp4, and gif
    or webp for pages and chats that show no video."""
    video_scale: int = 1
    """Integer upscale (nearest neighbour) of the videos: 64 px frames are small on a page."""
    export_nerfstudio: Path | None = None
    """Also write the input view(s) and the samples here as a nerfstudio data set (images/, transforms.json), to fit
    a 3D scene with `ns-train nerfacto --data <folder>`."""
    save_progress: bool = False
    """Also save each frame's denoising trajectory (progress/00000.png: the denoised estimate at every step)."""

    def check(self) -> None:
        """Every setting, before anything slow: one line naming the flag and what it accepts."""
        from genvs_ns.scripts.checkpoint import check_model_source

        check_model_source(self.load_config, self.load_model)
        checks.existing_folder("--data", self.data)
        checks.writable_folder("--output-dir", self.output_dir)
        if self.export_nerfstudio is not None:
            checks.writable_folder("--export-nerfstudio", self.export_nerfstudio)
            if (self.export_nerfstudio / "transforms.json").exists():
                raise DataError(self.export_nerfstudio, "already holds a transforms.json; choose a new folder")
        if isinstance(self.object, int) or self.object.isdigit():
            checks.at_least("--object", int(self.object), 0)
        if self.input_views and not 1 <= len(self.input_views) <= 3:
            raise GeNVSError(f"give 1 to 3 --input-views, not {len(self.input_views)}")
        if any(v < 0 for v in self.input_views):
            raise GeNVSError(f"--input-views must be view indices of 0 or more, not {self.input_views}")
        checks.existing_file("--image", self.image)
        checks.between("--elevation", self.elevation, -90, 90)
        checks.finite("--azimuth", self.azimuth)
        checks.greater_than("--radius", self.radius, 0)
        if self.focal is not None:
            checks.greater_than("--focal", self.focal, 0)
        if self.image is not None and self.trajectory == "dataset":
            raise GeNVSError("--trajectory dataset needs a data set object, not --image")
        checks.at_least("--num-frames", self.num_frames, 1)
        self.sampling.check()
        self.context.check()
        checks.seed("--seed", self.seed)
        checks.between("--fps", self.fps, 1, 240)
        checks.between("--video-scale", self.video_scale, 1, 16)
        if not self.formats:
            raise GeNVSError("--formats needs at least one of mp4, gif, webp")


@dataclass
class Inputs:
    """What a path is generated from: the model, the input view(s) and their cameras, the world's up."""

    model: object  # GeNVSModel (imported lazily: nerfstudio takes seconds to import)
    images: Float[Tensor, "views 3 H W"]
    c2w: Float[Tensor, "views 3 4"]
    K: Float[Tensor, "views 3 3"]
    up: Float[Tensor, "3"]
    dataset: object | None = None  # SRNDataset of the object, None for --image
    object_images: list[int] = field(default_factory=list)  # the object's images in ``dataset``
    chosen: list[int] = field(default_factory=list)  # its input images


@dataclass
class CameraPath:
    c2w: Float[Tensor, "frames 3 4"]
    K: Float[Tensor, "frames 3 3"]
    truth: Float[Tensor, "frames 3 H W"] | None = None  # the data set's own views, with --trajectory dataset


def _object_index(ds, obj: Union[int, str]) -> int:
    ids = ds.metadata["object_ids"]
    if isinstance(obj, str) and not obj.isdigit():
        if obj not in ids:
            raise GeNVSError(f"--object: no object with instance id {obj!r} in this split")
        return ids.index(obj)
    index = int(obj)
    if not 0 <= index < len(ids):
        raise GeNVSError(f"--object {index} out of range: this split has {len(ids)} objects (0-{len(ids) - 1})")
    return index


def _picture(args: SampleArgs) -> Inputs:
    """The user's own picture: needs no data set (the checkpoint carries image size, near/far and the world's up)."""
    from genvs_ns.cpu_runtime import apply_cpu_settings
    from genvs_ns.data.images import load_rgb
    from genvs_ns.geometry import intrinsics_matrix, look_at
    from genvs_ns.sampling.trajectories import from_spherical
    from genvs_ns.scripts.checkpoint import load_model
    from genvs_ns.scripts.model_folder import load_model_folder

    model = load_model(args.load_config) if args.load_config is not None else load_model_folder(args.load_model)
    if model.device.type == "cpu":  # what the pipeline does at its start, for this model without one
        apply_cpu_settings(model.config.cpu_reuse_freed_memory, model.config.cpu_flush_denormals)
    up, (H, W) = model.world_up.float().cpu(), model.image_hw
    image = torch.from_numpy(load_rgb(args.image, size=(W, H), pad_square=True)).permute(2, 0, 1)
    f = args.focal if args.focal is not None else 131.25 * W / 128
    K = intrinsics_matrix(*(torch.tensor([v]) for v in (f, f, W / 2, H / 2)))[0]
    position = from_spherical(args.radius, math.radians(args.elevation), math.radians(args.azimuth), up)
    return Inputs(model, image[None], look_at(position, up)[None], K[None], up)


def _data_set_object(args: SampleArgs) -> Inputs:
    from genvs_ns.scripts.checkpoint import open_pipeline

    test_mode = "test" if args.split == "test" else "val"
    pipeline = open_pipeline(args.load_config, args.load_model, args.data, test_mode)
    model = pipeline.model
    ds = pipeline.datamanager.train_dataset if args.split == "train" else pipeline.datamanager.eval_dataset
    obj = _object_index(ds, args.object)
    images = ds.object_images[obj]
    views = {int(ds.view_index[i]): i for i in images}
    wanted = args.input_views or [int(ds.view_index[ds.view_image(obj, 64)])]
    missing = [v for v in wanted if v not in views]
    if missing:
        raise GeNVSError(f"--input-views: object {obj} has no view {missing[0]} (views: {min(views)}-{max(views)})")
    chosen = [views[v] for v in wanted]
    return Inputs(
        model, torch.stack([ds.image(i) for i in chosen]), ds.c2w[chosen], ds.K[chosen],
        model.world_up.float().cpu(), ds, list(images), chosen,
    )  # fmt: skip


def load_inputs(args: SampleArgs) -> Inputs:
    return _picture(args) if args.image is not None else _data_set_object(args)


def camera_path(args: SampleArgs, inputs: Inputs) -> CameraPath:
    from genvs_ns.sampling.trajectories import nearest_first, orbit

    if args.trajectory == "dataset":
        ds = inputs.dataset
        others = [i for i in inputs.object_images if i not in inputs.chosen]
        targets = [others[k] for k in nearest_first(inputs.c2w[0], ds.c2w[others], args.num_frames)]
        return CameraPath(ds.c2w[targets], ds.K[targets], torch.stack([ds.image(i) for i in targets]))
    c2w = orbit(inputs.c2w[0], inputs.up, args.num_frames, kind=args.trajectory)
    return CameraPath(c2w, inputs.K[:1].expand(len(c2w), 3, 3))


def generate(args: SampleArgs, inputs: Inputs, path: CameraPath, settings: SamplerSettings):
    """The frames (a ``GeneratedPath``), with rich progress bars, and the seconds they took."""
    from genvs_ns.sampling.autoregressive import generate_path

    settings = replace(settings, guidance_scale=0.0) if args.unconditional else settings
    start = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        frames_task = progress.add_task("frames", total=len(path.c2w))
        steps_task = progress.add_task("steps", total=settings.steps)

        def on_frame(i: int) -> None:
            progress.advance(frames_task)
            progress.reset(steps_task)

        result = generate_path(
            inputs.model, inputs.images, inputs.c2w, inputs.K, path.c2w, path.K, settings, args.context, args.seed,
            save_progress=args.save_progress, on_frame=on_frame, on_step=lambda info: progress.advance(steps_task),
        )  # fmt: skip
    return result, time.perf_counter() - start


def write_outputs(args: SampleArgs, inputs: Inputs, path: CameraPath, result) -> list[str]:
    """Frames, videos, the contact sheet and (with --save-progress) the denoising trajectories; their names."""
    from genvs_ns.video import write_video

    out = args.output_dir
    (out / "frames").mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(result.samples):
        save_image(frame, out / "frames" / f"{i:05d}.png")
    written = ["frames/"]
    H, W = inputs.images.shape[-2:]
    gap = torch.ones(len(result.samples), 3, H, 2)
    first = inputs.images[:1].expand(len(result.samples), -1, -1, -1)
    turntable = torch.cat([first, gap, result.samples, gap, result.nerf_rgb], dim=-1)
    videos = {"samples": result.samples, "nerf_rgb": result.nerf_rgb, "turntable": turntable}
    for fmt in dict.fromkeys(args.formats):
        for name, frames in videos.items():
            if args.video_scale > 1:
                frames = torch.nn.functional.interpolate(frames, scale_factor=args.video_scale, mode="nearest")
            write_video(out / f"{name}.{fmt}", frames, args.fps)
            written.append(f"{name}.{fmt}")
    if args.save_progress:
        (out / "progress").mkdir(exist_ok=True)
        for i, steps in enumerate(result.progress):
            save_image(steps, out / "progress" / f"{i:05d}.png", nrow=len(steps), padding=0)
        written.append("progress/")
    rows = [result.samples, result.nerf_rgb] + ([path.truth] if path.truth is not None else [])
    per_row = len(result.samples)
    pad = torch.ones(max(0, per_row - len(inputs.images)), 3, H, W)
    first_row = torch.cat([inputs.images, pad])[:per_row]  # the input view(s)
    save_image(torch.cat([first_row, *rows]), out / "contact_sheet.png", nrow=per_row, padding=1, pad_value=1.0)
    written.append("contact_sheet.png")
    if args.export_nerfstudio is not None:
        from genvs_ns.scripts.scene_export import export_nerfstudio

        scene = export_nerfstudio(
            args.export_nerfstudio,
            torch.cat([inputs.images, result.samples]),
            torch.cat([inputs.c2w, path.c2w.cpu()]),
            torch.cat([inputs.K, path.K.cpu()]),
        )
        written.append(str(scene))
    return written


def main(args: SampleArgs) -> dict:
    if args.trajectory is None:
        args = replace(args, trajectory="rings" if args.export_nerfstudio is not None else "spiral")
    args.check()
    from genvs_ns.evaluation.consistency import path_scores, summary
    from genvs_ns.sampling.diffusion import get_sampler
    from genvs_ns.scripts.checkpoint import model_sampling

    settings = args.sampling.over(model_sampling(args.load_config, args.load_model))
    get_sampler(settings.sampler)
    inputs = load_inputs(args)
    path = camera_path(args, inputs)
    result, seconds = generate(args, inputs, path, settings)
    written = write_outputs(args, inputs, path, result)
    consistency = path_scores(
        result.samples, result.nerf_rgb, result.depth, result.accumulation, path.c2w, path.K, path.truth, args.seed
    )
    (args.output_dir / "consistency.json").write_text(json.dumps(consistency, indent=1))
    run = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(args).items()},
        "sampling": asdict(settings),  # the flags over the model's default
        "frames": len(result.samples),
        "seconds": round(seconds, 2),
        "seconds_per_frame": round(seconds / len(result.samples), 3),
        "context": result.context,
        "consistency": {k: summary(v) for k, v in consistency.items() if isinstance(v, dict)},
        "outputs": [*written, "consistency.json"],
    }
    (args.output_dir / "run.json").write_text(json.dumps(run, indent=1))
    return run


def entrypoint() -> None:
    from genvs_ns.errors import user_errors_exit

    with user_errors_exit():
        run = main(tyro.cli(SampleArgs))
    print(json.dumps({k: run[k] for k in ("frames", "seconds", "seconds_per_frame")}))


if __name__ == "__main__":
    entrypoint()
