"""A portable model folder: what ``genvs-export`` writes and ``--load-model`` reads, with no pickle and no YAML tags.

    model.safetensors   the EMA weights (safetensors: tensors only, nothing to run) and the camera facts
    model.json          the settings as plain JSON: model, data parsing, batches, ns-render's defaults
    denoiser.json       the k-diffusion U-Net config the weights belong to
    README.md           a model card: what it was trained on, for how long, from which commit, how it scores

A run folder's ``config.yml`` and ``step-*.ckpt`` need care to open safely (run_config.py, weights-only loads);
nerfstudio's own tools open them with loaders that can run code. This folder is the way to share a model.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from genvs_ns.errors import DataError

if TYPE_CHECKING:
    from genvs_ns.model.genvs_model import GeNVSModel
    from genvs_ns.pipeline import GeNVSPipeline

FORMAT = "genvs-ns model folder"
VERSION = 1
WEIGHTS, SETTINGS, DENOISER, CARD = "model.safetensors", "model.json", "denoiser.json", "README.md"
# nerfstudio's per-scene settings that a GeNVS model ignores, and what describes a training run rather than a model.
_SKIPPED = {"_target", "enable_collider", "collider_params", "loss_coefficients", "eval_num_rays_per_chunk", "prompt"}
_DATA_FIELDS = {"data", "dataparser", "pixel_sampler", "collate_fn", "camera_optimizer"}


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"not plain data: {type(value).__name__}")


def settings_of(config: Any, skip: set[str] = frozenset()) -> dict:  # type: ignore[assignment]
    """A config dataclass's own fields as plain JSON values (nested dataclasses and suppressed fields left out)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in _SKIPPED or f.name in skip or dataclasses.is_dataclass(value) or callable(value):
            continue
        out[f.name] = _plain(value)
    return out


def config_from(cls: type, settings: dict, where: Path, legacy: dict | None = None) -> Any:
    """``cls`` filled from plain settings: the defaults for fields a folder from an older genvs-ns lacks (``legacy``
    for those whose default changed since), lists back into tuples, unknown fields refused."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        raise DataError(where, f"unknown setting {unknown[0]!r} for {cls.__name__} (written by a newer genvs-ns?)")
    values = {**(legacy or {}), **settings}
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if isinstance(value, list) and typing.get_origin(hints.get(name)) is tuple:
            values[name] = tuple(value)
        if value is not None and hints.get(name) in (Path, Path | None):
            values[name] = Path(value)
    return cls(**values)


def export_model(config_path: Path, out: Path, eval_results: Path | None = None) -> dict:
    """Writes ``out`` (a new folder) from an ns-train run: its newest checkpoint's EMA weights and its settings."""
    from safetensors.torch import save_file

    from genvs_ns.evaluation.results import commit_hash
    from genvs_ns.model.denoiser import resolve_config
    from genvs_ns.scripts.checkpoint import _load_state, check_config, model_state, newest_checkpoint
    from genvs_ns.scripts.run_config import read_config

    checkpoint_dir = check_config(config_path)
    if out.exists() and any(out.iterdir()):
        raise DataError(out, "exists and is not empty; choose a new folder for the export")
    results = None
    if eval_results is not None:
        metrics = eval_results / "metrics.json" if eval_results.is_dir() else eval_results
        try:
            results = json.loads(metrics.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(metrics, f"not genvs-eval's metrics.json ({type(exc).__name__})") from None
    config = read_config(config_path)
    checkpoint = newest_checkpoint(checkpoint_dir)
    state = _load_state(checkpoint)
    saved_model = model_state(state)
    weights = {k: v.contiguous() for k, v in saved_model.items() if k.startswith("ema.")}
    for name in ("near_far", "image_size", "world_up"):
        if name not in saved_model:
            raise DataError(checkpoint, "written before genvs-ns saved the camera facts a model folder needs")
        weights[name] = saved_model[name]
    if not any(k.startswith("ema.") for k in weights):
        raise DataError(checkpoint, "holds no EMA weights")
    pipeline = config.pipeline
    dm = pipeline.datamanager
    settings = {
        "format": FORMAT,
        "version": VERSION,
        "method": config.method_name,
        "model": settings_of(pipeline.model, skip={"denoiser_config", "backbone_weights"}),
        "dataparser": settings_of(dm.dataparser, skip=_DATA_FIELDS),
        "datamanager": settings_of(dm, skip=_DATA_FIELDS),
        "pipeline": settings_of(pipeline),
        "renders": settings_of(pipeline.renders),
        "sampling": settings_of(pipeline.sampling),
        "training": {
            "step": int(state["step"]),
            "data": str(dm.data if dm.data is not None else dm.dataparser.data),
            "seed": config.machine.seed,
            "run": str(Path(config_path).resolve().parent),
        },
        "camera": {"image_hw": weights["image_size"].tolist(), "near_far": weights["near_far"].tolist()},
        "exported_by_commit": commit_hash(),
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu() for k, v in weights.items()}, str(out / WEIGHTS), metadata={"format": FORMAT})
    (out / DENOISER).write_text(resolve_config(pipeline.model.denoiser_config).read_text())
    (out / SETTINGS).write_text(json.dumps(settings, indent=1))
    parameters = sum(v.numel() for k, v in weights.items() if k.startswith("ema."))
    (out / CARD).write_text(_model_card(settings, results, parameters))
    return {"out": str(out), "step": settings["training"]["step"], "files": [WEIGHTS, SETTINGS, DENOISER, CARD]}


def _model_card(settings: dict, results: dict | None, parameters: int) -> str:
    t = settings["training"]
    lines = [
        f"# genvs-ns model ({settings['method']})",
        "",
        "A GeNVS model (generative novel view synthesis, Chan et al. 2023) trained with genvs-ns. Open it with",
        "`genvs-sample --load-model <this folder> --image photo.png --output-dir out` (your own picture), or",
        "`genvs-eval --load-model <this folder> --data <srn root> --output-dir eval` (a data set).",
        "",
        "| | |",
        "|---|---|",
        f"| trained on | `{t['data']}` |",
        f"| steps | {t['step'] + 1} |",
        f"| training seed | {t['seed']} |",
        f"| image size | {settings['camera']['image_hw'][0]} x {settings['camera']['image_hw'][1]} px |",
        f"| exported from commit | {settings['exported_by_commit'] or 'unknown'} |",
        f"| parameters (EMA network) | {parameters / 1e6:.1f} M |",
        "",
    ]
    if results is not None:
        lines += ["## Quality (genvs-eval)", "", "| score | value |", "|---|---|"]
        for key, value in sorted(results.items()):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                lines.append(f"| {key} | {value:.4g} |")
        lines.append("")
    lines += ["ShapeNet-derived data is for non-commercial research use; check the licence of what it was trained on."]
    return "\n".join(lines) + "\n"


def _read_settings(folder: Path) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "no such model folder (--load-model takes what genvs-export wrote)")
    for name in (WEIGHTS, SETTINGS, DENOISER):
        if not (folder / name).is_file():
            raise DataError(folder / name, "missing from the model folder")
    try:
        settings = json.loads((folder / SETTINGS).read_text())
    except ValueError as exc:
        raise DataError(folder / SETTINGS, f"not JSON ({exc})") from None
    if not isinstance(settings, dict) or settings.get("format") != FORMAT:
        raise DataError(folder / SETTINGS, "not a genvs-ns model folder's settings")
    if settings.get("version") != VERSION:
        raise DataError(folder / SETTINGS, f"format version {settings.get('version')}; this genvs-ns reads {VERSION}")
    return settings


def folder_sampling(folder: Path):
    """The model's default sampler, as its folder records it."""
    from genvs_ns.sampling import SamplerSettings

    return config_from(SamplerSettings, _read_settings(folder).get("sampling", {}), Path(folder) / SETTINGS)


def _model_config(folder: Path, settings: dict):
    from genvs_ns.model.model_config import LEGACY_MODEL_SETTINGS, GeNVSModelConfig

    config = config_from(GeNVSModelConfig, settings["model"], folder / SETTINGS, LEGACY_MODEL_SETTINGS)
    config.denoiser_config = str(Path(folder) / DENOISER)
    config.backbone_weights = None
    config.check("model.json: model.")
    return config


def _weights(folder: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(Path(folder) / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise DataError(Path(folder) / WEIGHTS, f"not readable safetensors ({exc})") from None


def _load_weights(model: GeNVSModel, weights: dict, folder: Path) -> None:
    ema = {k.removeprefix("ema."): v for k, v in weights.items() if k.startswith("ema.")}
    try:
        model.ema.load_state_dict(ema)
        model.net.load_state_dict(ema)  # the trained weights are not shipped: every path sees the EMA ones
        model.load_state_dict({k: weights[k] for k in ("near_far", "image_size", "world_up")}, strict=False)
    except (RuntimeError, KeyError) as exc:
        raise DataError(Path(folder) / WEIGHTS, f"does not match model.json ({str(exc).splitlines()[0]})") from None


def load_model_folder(folder: Path) -> GeNVSModel:
    """The model of an exported folder, on CUDA if present; for inputs from outside a data set."""
    import torch
    from nerfstudio.data.scene_box import SceneBox

    settings = _read_settings(folder)
    config = _model_config(folder, settings)
    weights = _weights(folder)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scene_box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    model = config.setup(scene_box=scene_box, num_train_data=0, metadata={}, device=device)
    _load_weights(model, weights, folder)
    return model.to(device).eval()


def load_pipeline_folder(
    folder: Path, data: Path | None, test_mode: Literal["test", "val", "inference"] = "test"
) -> GeNVSPipeline:
    """An exported model inside a pipeline over ``data`` (an SRN root), with the settings it was trained with."""
    import torch

    from genvs_ns.data.datamanager import GeNVSDataManagerConfig
    from genvs_ns.data.srn_dataparser import SRNDataParserConfig
    from genvs_ns.pipeline import GeNVSPipelineConfig
    from genvs_ns.sampling.camera_renders import CameraRenderConfig

    settings = _read_settings(folder)
    if data is None:
        raise DataError(Path(folder), "a model folder holds no data set: give --data (an SRN root)")
    if not Path(data).is_dir():
        raise DataError(Path(data), "no such data folder (--data)")
    where = Path(folder) / SETTINGS
    dataparser = config_from(SRNDataParserConfig, {**settings["dataparser"], "data": str(data)}, where)
    dm = config_from(GeNVSDataManagerConfig, settings["datamanager"], where)
    dm.dataparser, dm.data = dataparser, Path(data)
    pipeline_settings = {k: v for k, v in settings["pipeline"].items() if k not in ("datamanager", "model")}
    config = config_from(GeNVSPipelineConfig, pipeline_settings, where)
    config.datamanager, config.model = dm, _model_config(folder, settings)
    config.renders = config_from(CameraRenderConfig, settings.get("renders", {}), where)
    config.sampling = folder_sampling(Path(folder))
    weights = _weights(folder)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipeline = config.setup(device=device, test_mode=test_mode)
    pipeline.eval()
    _load_weights(pipeline.model, weights, folder)
    return pipeline
