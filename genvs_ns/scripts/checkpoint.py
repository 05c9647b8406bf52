"""Loading a ``genvs`` checkpoint that ``ns-train`` wrote, with one-line errors for the usual mistakes."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from genvs_ns.errors import DataError

if TYPE_CHECKING:
    from genvs_ns.model.genvs_model import GeNVSModel
    from genvs_ns.pipeline import GeNVSPipeline


REFUSAL = "refused: it holds Python objects besides tensors and plain data, and loading them could run code"


def check_config(config_path: Path) -> Path:
    """The checkpoint folder of a genvs ``config.yml``; fails with one line, before any slow import, otherwise."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise DataError(config_path, "no such config (pass the config.yml that ns-train wrote)")
    text = config_path.read_text(errors="replace")
    # The method name is read from the text: unpickling the YAML would import every class it names (slowly).
    method = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("method_name:")), None)
    if method is None:
        raise DataError(config_path, "not a config.yml written by ns-train (no method_name)")
    if method not in ("genvs", "genvs-tiny"):
        raise DataError(config_path, f"a {method!r} checkpoint, not genvs or genvs-tiny")
    checkpoint_dir = (config_path.parent / "nerfstudio_models").resolve()
    if not sorted(checkpoint_dir.glob("step-*.ckpt")):
        raise DataError(checkpoint_dir, "no checkpoint in it")
    return checkpoint_dir


def newest_checkpoint(checkpoint_dir: Path) -> Path:
    """The checkpoint of the highest step (by number, whatever the widths of the names)."""

    def step(path: Path) -> int:
        try:
            return int(path.stem.split("-", 1)[1])
        except ValueError:
            return -1

    return max(Path(checkpoint_dir).glob("step-*.ckpt"), key=step)


def _load_state(checkpoint: Path) -> dict:
    import torch

    try:
        # Tensors, numbers and dicts only: loading a checkpoint must never run code from it.
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise DataError(checkpoint, REFUSAL) from None
    except (RuntimeError, EOFError) as exc:
        raise DataError(checkpoint, f"not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "pipeline" not in state or "step" not in state:
        raise DataError(checkpoint, "not a checkpoint written by ns-train (no pipeline state)")
    return state


def model_state(state: dict) -> dict:
    """The model's weights and buffers in a checkpoint's pipeline state, under the model's own names: DDP training
    saves them under "_model.module.", single-process training under "_model."."""
    prefixed = state["pipeline"].items()
    return {k.removeprefix("_model.").removeprefix("module."): v for k, v in prefixed if k.startswith("_model.")}


def locate_data(config, config_path: Path) -> None:
    """A relative ``--data`` is relative to the folder ns-train ran in, which may not be today's working directory:
    that folder is where the run folder's relative path (output_dir/experiment/method/timestamp) starts."""
    dm = config.pipeline.datamanager
    data = Path(dm.data) if dm.data is not None else None
    if data is None or data.is_absolute() or data.exists():
        return
    run_dir = Path(config_path).resolve().parent
    relative_run = Path(config.output_dir) / config.experiment_name / config.method_name / config.timestamp
    if relative_run.is_absolute() or len(run_dir.parts) <= len(relative_run.parts):
        return
    training_dir = run_dir.parents[len(relative_run.parts) - 1]
    if training_dir / relative_run == run_dir and (training_dir / data).exists():
        dm.data = training_dir / data


def load_pipeline(
    config_path: Path, test_mode: Literal["test", "val", "inference"] = "test", data: Path | None = None
) -> GeNVSPipeline:
    """The pipeline of ``config_path`` (an ns-train ``config.yml``) with its latest checkpoint, on CUDA if present;
    ``data`` replaces the training run's data set (to evaluate on objects of another kind)."""
    config_path = Path(config_path)
    checkpoint_dir = check_config(config_path)
    import torch

    from genvs_ns.pipeline import GeNVSPipeline
    from genvs_ns.scripts.run_config import read_config

    # nerfstudio's eval_setup, but with the config read by the safe loader (run_config.py) and the checkpoint by
    # torch's weights-only one: a run folder from elsewhere cannot run code through either file. The checkpoint is
    # the newest beside the config (nerfstudio looks relative to where training ran, and a run resumed with
    # --load-step N records a step of the run it started from).
    config = read_config(config_path)
    config.pipeline.model.backbone_weights = None  # the checkpoint holds the weights; the file may be elsewhere
    if data is not None:
        config.pipeline.datamanager.data = Path(data)
    else:
        locate_data(config, config_path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipeline = config.pipeline.setup(device=device, test_mode=test_mode)
    assert isinstance(pipeline, GeNVSPipeline)
    pipeline.eval()
    state = _load_state(newest_checkpoint(checkpoint_dir))
    pipeline.load_pipeline(state["pipeline"], state["step"])
    return pipeline


def load_model(config_path: Path) -> GeNVSModel:
    """The model of ``config_path`` with its latest checkpoint, without the training data (which may live on another
    machine, or at a path relative to where training ran): for inputs from outside the data set."""
    checkpoint_dir = check_config(Path(config_path))
    import torch
    from nerfstudio.data.scene_box import SceneBox

    from genvs_ns.scripts.run_config import read_config

    config = read_config(Path(config_path))
    config.pipeline.model.backbone_weights = None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scene_box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    model = config.pipeline.model.setup(scene_box=scene_box, num_train_data=0, metadata={}, device=device)
    checkpoint = newest_checkpoint(checkpoint_dir)
    state = model_state(_load_state(checkpoint))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if set(missing) == {"near_far", "image_size", "world_up"} and not unexpected:
        raise DataError(
            checkpoint,
            "written before genvs-ns saved the camera facts that inputs from outside the data set need; sample a "
            "data set object instead",
        )
    if missing or unexpected:
        raise DataError(
            checkpoint, f"does not match its config.yml (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.to(device).eval()


def check_model_source(load_config: Path | None, load_model: Path | None) -> None:
    """Exactly one of an ns-train run (--load-config) and a genvs-export folder (--load-model), checked cheaply."""
    from genvs_ns.errors import GeNVSError

    if (load_config is None) == (load_model is None):
        raise GeNVSError("give exactly one of --load-config (an ns-train run) and --load-model (genvs-export's)")
    if load_config is not None:
        check_config(load_config)
    elif not Path(load_model).is_dir():
        raise DataError(Path(load_model), "no such model folder (--load-model)")


def open_pipeline(
    load_config: Path | None,
    load_model: Path | None,
    data: Path | None,
    test_mode: Literal["test", "val", "inference"] = "test",
) -> GeNVSPipeline:
    """``load_pipeline`` for a run, or the exported model over ``data`` (which a model folder needs)."""
    if load_config is not None:
        return load_pipeline(load_config, test_mode=test_mode, data=data)
    from genvs_ns.scripts.model_folder import load_pipeline_folder

    return load_pipeline_folder(Path(load_model), data, test_mode=test_mode)  # type: ignore[arg-type]


def model_sampling(load_config: Path | None, load_model: Path | None):
    """The model's default sampler (``SamplerSettings``), read from its settings without building it."""
    from genvs_ns.sampling import SamplerSettings

    if load_config is not None:
        from genvs_ns.scripts.run_config import read_config

        return read_config(Path(load_config)).pipeline.sampling
    from genvs_ns.scripts.model_folder import folder_sampling

    return folder_sampling(Path(load_model)) if load_model is not None else SamplerSettings()
