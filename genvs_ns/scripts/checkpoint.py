"""Loading a ``genvs`` checkpoint that ``ns-train`` wrote, with one-line errors for the usual mistakes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from genvs_ns.pipeline import GeNVSPipeline


def check_config(config_path: Path) -> Path:
    """The checkpoint folder of a genvs ``config.yml``; fails with one line, before any slow import, otherwise."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise SystemExit(f"genvs-ns: error: {config_path}: no such config (pass the config.yml that ns-train wrote)")
    text = config_path.read_text(errors="replace")
    # The method name is read from the text: unpickling the YAML would import every class it names (slowly).
    method = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("method_name:")), None)
    if method is None:
        raise SystemExit(f"genvs-ns: error: {config_path}: not a config.yml written by ns-train (no method_name)")
    if method not in ("genvs", "genvs-tiny"):
        raise SystemExit(f"genvs-ns: error: {config_path}: a {method!r} checkpoint, not genvs or genvs-tiny")
    checkpoint_dir = (config_path.parent / "nerfstudio_models").resolve()
    if not sorted(checkpoint_dir.glob("step-*.ckpt")):
        raise SystemExit(f"genvs-ns: error: {checkpoint_dir}: no checkpoint in it")
    return checkpoint_dir


def load_pipeline(config_path: Path, test_mode: Literal["test", "val", "inference"] = "test") -> GeNVSPipeline:
    """The pipeline of ``config_path`` (an ns-train ``config.yml``) with its latest checkpoint, on CUDA if present."""
    checkpoint_dir = check_config(config_path)
    from nerfstudio.utils.eval_utils import eval_setup

    from genvs_ns.pipeline import GeNVSPipeline

    def beside_the_config(config):
        # nerfstudio looks for checkpoints relative to the folder training ran in; these sit next to the config.
        config.relative_model_dir = checkpoint_dir  # an absolute path wins in pathlib's join
        return config

    _, pipeline, _, _ = eval_setup(config_path, test_mode=test_mode, update_config_callback=beside_the_config)
    assert isinstance(pipeline, GeNVSPipeline)
    return pipeline
