"""Loading a ``genvs`` checkpoint that ``ns-train`` wrote, with one-line errors for the usual mistakes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml

from genvs_ns.pipeline import GeNVSPipeline


def load_pipeline(config_path: Path, test_mode: Literal["test", "val", "inference"] = "test") -> GeNVSPipeline:
    """The pipeline of ``config_path`` (an ns-train ``config.yml``) with its latest checkpoint, on CUDA if present."""
    from nerfstudio.utils.eval_utils import eval_setup

    config_path = Path(config_path)
    if not config_path.is_file():
        raise SystemExit(f"genvs-ns: error: {config_path}: no such config (pass the config.yml that ns-train wrote)")
    try:
        config = yaml.load(config_path.read_text(), Loader=yaml.Loader)
    except Exception as exc:  # noqa: BLE001 - anything unreadable is the file's fault
        raise SystemExit(f"genvs-ns: error: {config_path}: not an ns-train config ({exc.__class__.__name__})") from None
    method = getattr(config, "method_name", None)
    if method not in ("genvs", "genvs-tiny"):
        raise SystemExit(f"genvs-ns: error: {config_path}: a {method!r} checkpoint, not genvs or genvs-tiny")
    checkpoints = sorted((config_path.parent / "nerfstudio_models").glob("step-*.ckpt"))
    if not checkpoints:
        raise SystemExit(f"genvs-ns: error: {config_path.parent / 'nerfstudio_models'}: no checkpoint in it")
    _, pipeline, _, _ = eval_setup(config_path, test_mode=test_mode)
    assert isinstance(pipeline, GeNVSPipeline)
    return pipeline
