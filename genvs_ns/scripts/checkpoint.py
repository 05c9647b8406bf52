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
    from nerfstudio.utils.eval_utils import eval_setup

    from genvs_ns.pipeline import GeNVSPipeline

    def beside_the_config(config):
        # nerfstudio looks for checkpoints relative to the folder training ran in; these sit next to the config.
        config.relative_model_dir = checkpoint_dir  # an absolute path wins in pathlib's join
        # The newest checkpoint of this run: a run resumed with --load-step N records N, a step of the run it
        # started from, which its own folder does not hold.
        config.load_step = None
        config.pipeline.model.backbone_weights = None  # the checkpoint holds the weights; the file may be elsewhere
        if data is not None:
            config.pipeline.datamanager.data = Path(data)
        else:
            locate_data(config, config_path)
        return config

    try:
        _, pipeline, _, _ = eval_setup(config_path, test_mode=test_mode, update_config_callback=beside_the_config)
    except pickle.UnpicklingError:  # torch.load's weights_only refusal: the file would run code
        raise DataError(checkpoint_dir, REFUSAL) from None
    assert isinstance(pipeline, GeNVSPipeline)
    return pipeline


def load_model(config_path: Path) -> GeNVSModel:
    """The model of ``config_path`` with its latest checkpoint, without the training data (which may live on another
    machine, or at a path relative to where training ran): for inputs from outside the data set."""
    checkpoint_dir = check_config(Path(config_path))
    import torch
    import yaml
    from nerfstudio.data.scene_box import SceneBox

    config = yaml.load(Path(config_path).read_text(), Loader=yaml.Loader)
    config.pipeline.model.backbone_weights = None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scene_box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    model = config.pipeline.model.setup(scene_box=scene_box, num_train_data=0, metadata={}, device=device)
    checkpoint = max(checkpoint_dir.glob("step-*.ckpt"))
    try:
        # Tensors, numbers and dicts only: loading a checkpoint must never run code from it.
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["pipeline"]
    except pickle.UnpicklingError:
        raise DataError(checkpoint, REFUSAL) from None
    except (RuntimeError, EOFError, KeyError) as exc:
        raise DataError(checkpoint, f"not a readable checkpoint ({type(exc).__name__})") from None
    # DDP training saves the model under "_model.module."; single-process training under "_model.".
    state = {k.removeprefix("_model.").removeprefix("module."): v for k, v in state.items() if k.startswith("_model.")}
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
