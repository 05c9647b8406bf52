"""nerfstudio's ``Trainer`` with checkpoints that survive a kill: written atomically, and resumed from the newest one
that loads.

nerfstudio writes ``step-N.ckpt`` in place and then deletes the others: a kill (or a full disk) during ``torch.save``
left a truncated newest checkpoint and nothing else, a week-long run lost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Type

import numpy as np
import torch
import tyro
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.decorators import check_main_thread
from nerfstudio.utils.rich_utils import CONSOLE

from genvs_ns.errors import DataError, exits_on_user_error
from genvs_ns.model.precision import autocast_dtype


@dataclass
class GeNVSTrainerConfig(TrainerConfig):
    """nerfstudio's trainer settings; checkpoints are written atomically."""

    _target: Type = field(default_factory=lambda: GeNVSTrainer)
    prompt: tyro.conf.Suppress[str | None] = None
    """nerfstudio's alias of --pipeline.model.prompt (text-to-NeRF methods): hidden, GeNVS takes no prompt."""


def _step_of(path: Path) -> int:
    return int(path.stem.split("-", 1)[1])


def _plain(state):
    """numpy scalars as Python numbers: nerfstudio's schedulers compute learning rates with numpy (kept in their state
    and in the optimizers' param groups), and one numpy scalar in a checkpoint made every
    ``torch.load(weights_only=True)`` (ns-eval, ns-render, genvs-sample, resume) refuse it."""
    if isinstance(state, dict):
        return {k: _plain(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_plain(v) for v in state)
    return state.item() if isinstance(state, np.generic) else state


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class GeNVSTrainer(Trainer):
    config: GeNVSTrainerConfig

    def __init__(self, config: GeNVSTrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, local_rank, world_size)
        precision = getattr(config.pipeline.model, "precision", "auto")
        if autocast_dtype(precision, self.device) == torch.float16:
            # fp16 gradients underflow without loss scaling. torch.amp's scaler, not nerfstudio's torch.cuda.amp one,
            # which switches itself off away from CUDA.
            self.use_grad_scaler = True
            self.grad_scaler = torch.amp.GradScaler(torch.device(self.device).type)  # type: ignore[assignment]

    # ns-train enters the plugin here: a user's mistake (bad data, a checkpoint folder without checkpoints, a
    # non-finite loss) ends the run with one line.
    @exits_on_user_error
    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        super().setup(test_mode)

    @exits_on_user_error
    def train(self) -> None:
        super().train()

    @check_main_thread
    def save_checkpoint(self, step: int) -> None:
        """nerfstudio's checkpoint, written to a temporary file beside the checkpoint folder (never listed by
        nerfstudio's loaders), flushed to disk and renamed into place; only then are older checkpoints deleted."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        partial = self.checkpoint_dir.parent / f".{self.checkpoint_dir.name}-{path.name}.partial"
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline  # type: ignore
        state = {
            "step": step,
            "pipeline": pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        }
        with open(partial, "wb") as f:
            torch.save(_plain(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
        _fsync_dir(self.checkpoint_dir)
        if self.config.save_only_latest_checkpoint:
            for old in self.checkpoint_dir.glob("*.ckpt"):
                if old != path:
                    old.unlink()

    def _load_checkpoint(self) -> None:
        """``--load-dir`` without ``--load-step``: the newest checkpoint that loads (a damaged one is reported and
        skipped); everything else as nerfstudio does it."""
        load_dir = self.config.load_dir
        if load_dir is None or self.config.load_step is not None:
            return super()._load_checkpoint()
        candidates = sorted(Path(load_dir).glob("step-*.ckpt"), key=_step_of, reverse=True)
        if not candidates:
            raise DataError(load_dir, "no checkpoint (step-*.ckpt) in it")
        for path in candidates:
            try:
                # Tensors, numbers and dicts only: loading never runs code from the file.
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - truncated, corrupt, or not a checkpoint
                CONSOLE.print(f"[yellow]genvs-ns: {path}: cannot be loaded ({type(exc).__name__}); trying an older one")
                continue
            self._start_step = state["step"] + 1
            self.pipeline.load_pipeline(state["pipeline"], state["step"])
            self.optimizers.load_optimizers(state["optimizers"])
            if "schedulers" in state and self.config.load_scheduler:
                self.optimizers.load_schedulers(state["schedulers"])
            self.grad_scaler.load_state_dict(state["scalers"])
            CONSOLE.print(f"Done loading Nerfstudio checkpoint from {path}")
            return None
        raise DataError(candidates[0], "cannot be loaded, nor can any older checkpoint beside it")
