"""nerfstudio's ``Trainer`` with checkpoints that survive a kill: written atomically, resumed from the newest one that
loads, and resumed as the same run.

nerfstudio writes ``step-N.ckpt`` in place and then deletes the others: a kill (or a full disk) during ``torch.save``
left a truncated newest checkpoint and nothing else, a week-long run lost. It also saves no random state: a resumed
run drew its first batches again, in the order of step 0. Here every random state a step draws from (the training
sampler's generator, torch's CPU and CUDA generators, Python's and NumPy's) is saved with the checkpoint, for every
DDP rank, and restored: N steps, or N/2 steps and a resume for the rest, end with the same weights on the CPU.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Type

import numpy as np
import torch
import torch.distributed as dist
import tyro
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.decorators import check_main_thread
from nerfstudio.utils.rich_utils import CONSOLE

from genvs_ns import checks
from genvs_ns.errors import DataError, exits_on_user_error
from genvs_ns.model.precision import autocast_dtype


@dataclass
class GeNVSTrainerConfig(TrainerConfig):
    """nerfstudio's trainer settings; checkpoints are written atomically."""

    _target: Type = field(default_factory=lambda: GeNVSTrainer)
    prompt: tyro.conf.Suppress[str | None] = None
    """nerfstudio's alias of --pipeline.model.prompt (text-to-NeRF methods): hidden, GeNVS takes no prompt."""

    # ns-train's main writes config.yml before it builds anything: a bad setting is refused here, before that.
    @exits_on_user_error
    def save_config(self) -> None:
        pipeline = self.pipeline
        if hasattr(pipeline, "check"):
            pipeline.check()
        checks.at_least("--max-num-iterations", self.max_num_iterations, 1)
        for name in ("steps_per_save", "steps_per_eval_batch", "steps_per_eval_image", "steps_per_eval_all_images"):
            checks.at_least("--" + name.replace("_", "-"), getattr(self, name), 0)
        checks.seed("--machine.seed", self.machine.seed)
        super().save_config()


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


def _write_failure(exc: BaseException, folder: Path) -> str:
    """What stopped a write into ``folder``, in words: the OS's reason or torch's first line, and the space left there
    (where the folder can still be asked)."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else lines[0]
    try:
        return f"{reason}; {shutil.disk_usage(folder).free / 2**20:.0f} MiB free on its disk"
    except OSError:  # gone with a lost mount
        return reason


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

    def _pipeline(self):
        return self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline  # type: ignore

    def _random_states(self) -> dict:
        """This process's random states, as plain data and tensors (a weights-only load reads them back)."""
        numpy_state = np.random.get_state()
        return {
            "sampler": self._pipeline().datamanager.sampler_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
            "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        }

    def _restore_random_states(self, saved: list[dict] | None, path: Path) -> None:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else self.local_rank
        if not saved or len(saved) != self.world_size:
            what = (
                "no random states"
                if not saved
                else f"the random states of {len(saved)} processes, not {self.world_size}"
            )
            CONSOLE.print(
                f"[yellow]genvs-ns: {path} holds {what}: the run continues with fresh ones, so its batches differ from "
                "those of the run that wrote it"
            )
            return
        state = saved[rank]
        self._pipeline().datamanager.load_sampler_state(state["sampler"])
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, *rest = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))

    def save_checkpoint(self, step: int) -> None:
        """nerfstudio's checkpoint, written to a temporary file beside the checkpoint folder (never listed by
        nerfstudio's loaders), flushed to disk and renamed into place; only then are older checkpoints deleted.

        Every rank enters (nerfstudio's is main-process only): each hands its random states to the main process.
        Nothing is written before every step's loss is known to be finite (loss_guard.py)."""
        self._pipeline().loss_guard.check(wait=True, now=step)
        self._check_weights_finite(step)
        states = [self._random_states()]
        # The viewer's save button calls this from its own thread, on the main process only: no gathering there.
        gather = threading.current_thread() is threading.main_thread()
        if gather and self.world_size > 1 and dist.is_available() and dist.is_initialized():
            states = [None] * self.world_size  # type: ignore[list-item]
            dist.all_gather_object(states, self._random_states())
        self._write_checkpoint(step, states)

    @torch.no_grad()
    def _check_weights_finite(self, step: int) -> None:
        """A finite loss can come with a gradient whose update leaves weights that are not finite (a long genvs-tiny
        run went from finite losses to all NaN at step 8865): checked once before every checkpoint, so that no
        checkpoint ever holds them."""
        params = [p for p in self._pipeline().model.parameters() if p.requires_grad]
        if params and not bool(torch.isfinite(torch.stack(torch._foreach_norm(params))).all()):
            raise DataError(
                self.checkpoint_dir,
                f"step {step}: the weights are no longer finite (an update from a non-finite gradient); stopped "
                "without writing a checkpoint, the ones so far are intact",
            )

    @check_main_thread
    def _write_checkpoint(self, step: int, random_states: list[dict]) -> None:
        path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        partial = self.checkpoint_dir.parent / f".{self.checkpoint_dir.name}-{path.name}.partial"
        state = {
            "step": step,
            "pipeline": self._pipeline().state_dict(),
            "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
            "random_states": random_states,  # one per DDP rank
        }
        # A full disk (or a lost mount) used to end a run with torch's zip writer's "unexpected pos 64 vs 0" and a
        # traceback, the partial file left behind; the checkpoints before it were intact, which the user is now told.
        try:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as f:
                torch.save(_plain(state), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
            _fsync_dir(self.checkpoint_dir)
        except (OSError, RuntimeError) as exc:
            why = _write_failure(exc, partial.parent)  # the space left while the partial file holds its share
            with contextlib.suppress(OSError):  # a lost mount: the one line still comes
                partial.unlink(missing_ok=True)
            before = any(self.checkpoint_dir.glob("*.ckpt"))
            kept = "the checkpoints before it are intact" if before else "no checkpoint was written before it"
            raise DataError(path, f"cannot be written ({why}); the run stopped at step {step}, {kept}") from None
        if self.config.save_only_latest_checkpoint:
            for old in self.checkpoint_dir.glob("*.ckpt"):
                if old != path:
                    old.unlink()

    def _load_checkpoint(self) -> None:
        """nerfstudio's ``--load-dir`` (with or without ``--load-step``) and ``--load-checkpoint``, read weights-only;
        without ``--load-step`` the newest checkpoint that loads (a damaged one is reported and skipped). The random
        states are restored too, so the run continues as if it had not stopped."""
        load_dir, load_file = self.config.load_dir, self.config.load_checkpoint
        if load_dir is not None and self.config.load_step is not None:
            candidates = [Path(load_dir) / f"step-{self.config.load_step:09d}.ckpt"]
        elif load_dir is not None:
            candidates = sorted(Path(load_dir).glob("step-*.ckpt"), key=_step_of, reverse=True)
            if not candidates:
                raise DataError(load_dir, "no checkpoint (step-*.ckpt) in it")
        elif load_file is not None:
            candidates = [Path(load_file)]
        else:
            CONSOLE.print("No Nerfstudio checkpoint to load, so training from scratch.")
            return
        for path in candidates:
            if len(candidates) == 1 and not path.is_file():
                raise DataError(path, "no such checkpoint")
            try:
                # Tensors, numbers and dicts only: loading never runs code from the file.
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - truncated, corrupt, or not a checkpoint
                if len(candidates) == 1:
                    raise DataError(path, f"cannot be loaded ({type(exc).__name__})") from None
                CONSOLE.print(f"[yellow]genvs-ns: {path}: cannot be loaded ({type(exc).__name__}); trying an older one")
                continue
            self._start_step = state["step"] + 1
            self.pipeline.load_pipeline(state["pipeline"], state["step"])
            try:
                self.optimizers.load_optimizers(state["optimizers"])
            except (ValueError, KeyError) as exc:  # torch: "...a parameter group that doesn't match the size..."
                raise DataError(
                    path,
                    f"its optimizer state does not fit this model's parameters ({str(exc).splitlines()[0]}): it was "
                    "written by an older genvs-ns or with other model settings; resume it with that version",
                ) from None
            if "schedulers" in state and self.config.load_scheduler:
                self.optimizers.load_schedulers(state["schedulers"])
            self.grad_scaler.load_state_dict(state["scalers"])
            self._restore_random_states(state.get("random_states"), path)
            CONSOLE.print(f"Done loading Nerfstudio checkpoint from {path}")
            return None
        raise DataError(candidates[0], "cannot be loaded, nor can any older checkpoint beside it")
