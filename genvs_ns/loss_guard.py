"""Stopping a run on a non-finite loss: on every DDP rank at the same step, and without a host sync on a GPU.

A NaN or inf loss would otherwise train on silently into a NaN model and overwrite the good checkpoints one save
interval later. The check used to read the loss on the host between forward and backward, which on a GPU makes the
CPU wait for the whole forward before it can launch the backward (issue 24); and under DDP only the rank whose loss
was bad stopped, while the others waited in the next all-reduce until nerfstudio's 30-minute timeout.

Now each step's flag ("some loss is not finite") is reduced over the ranks (MAX), so every rank sees the same flag
at the same step. On the CPU (where reading it costs nothing) it is read at once and the run stops before the update.
On a GPU it is copied to pinned host memory behind the step and read once that copy has landed, a step or two later
(the update of the bad step has then happened, in memory only); before every checkpoint every pending flag is read,
waiting if need be, so no update from a non-finite loss is ever saved.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from genvs_ns.errors import GeNVSError


@dataclass
class _Pending:
    step: int
    names: list[str]
    values: Tensor  # the step's losses, on the device
    flag: Tensor  # pinned host copy of the reduced flag, valid once ``landed`` has completed
    landed: torch.cuda.Event


def _world() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class NonFiniteGuard:
    def __init__(self) -> None:
        self.pending: deque[_Pending] = deque()

    def record(self, step: int, losses: dict[str, Tensor]) -> None:
        """Flags step ``step``'s losses; on the CPU raises at once if any rank's are not finite."""
        names = list(losses)
        values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
        flag = (~torch.isfinite(values)).any().to(torch.int32)
        if _world():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.device.type != "cuda":
            if flag.item():
                self._stop(step, names, values, now=step)
            return
        host = torch.empty((), dtype=torch.int32, pin_memory=True)
        host.copy_(flag, non_blocking=True)
        landed = torch.cuda.Event()
        landed.record()
        self.pending.append(_Pending(step, names, values, host, landed))
        self.check(wait=False, now=step)

    def check(self, wait: bool, now: int | None = None) -> None:
        """Reads the flags whose copies have landed (all of them, waiting, with ``wait``); raises for a bad one."""
        while self.pending and (wait or self.pending[0].landed.query()):
            entry = self.pending.popleft()
            entry.landed.synchronize()
            if int(entry.flag):
                self._stop(entry.step, entry.names, entry.values, now)

    @staticmethod
    def _stop(step: int, names: list[str], values: Tensor, now: int | None) -> None:
        bad = [f"{name} {value}" for name, value in zip(names, values.tolist()) if not math.isfinite(value)]
        where = ", ".join(bad) if bad else "on another DDP process"
        when = "before its update" if now == step else "before any checkpoint held its update"
        raise GeNVSError(f"step {step}: non-finite loss ({where}); stopped {when}, checkpoints so far are intact")
