"""Process-wide CPU settings that training and rendering on the CPU need: commands apply them when they start.

Freed memory kept for reuse (glibc only). glibc serves every allocation above 32 MB with a fresh ``mmap`` and unmaps
it on free, so each of the training step's large activations (a paper-size field layer is 134 MB) page-faults in
again, step after step. Measured on 2 cores: ReLU over such a tensor ran at 2 GB/s, all of it page faults. Served
from the heap, and with the heap never trimmed, field+render forward and backward went from 1.46 to 1.03 s and the
genvs-tiny step from 0.49 to 0.45 s, with the same peak RSS. This is what jemalloc or tcmalloc would give PyTorch on
the CPU, without a preloaded library. One malloc arena for all threads: glibc gives each thread that allocates an
arena of its own (up to 8 per core), and with nothing trimmed, what was freed in one served only that thread
(ns-train genvs-tiny at step 380: 2.34 GB with an arena per thread, 2.15 GB with one). A heap that is never trimmed
also needs long-lived allocations made early or in one block; see SRNDataset's image cache.

Denormal floats flushed to zero (x86's FTZ/DAZ). Adam's first moments of weights that get no gradient (dead ReLU
channels) decay by 0.9 a step and become denormal, and every operation on them takes a slow microcode path:
genvs-tiny's fused Adam step went from 13 ms to 98 ms after about 550 steps, and the whole step from 0.37 to
0.45-0.50 s. The flags are per thread and new threads inherit them, so they must be set before PyTorch's (and
numba's) worker threads start; ``flush_denormals`` checks that every thread of a parallel operation flushes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import torch

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_applied = False


def reuse_freed_memory() -> bool:
    """Serve large allocations from the heap, never trim it, and share one arena among all threads. Process-wide and
    idempotent; False where unsupported (not glibc), in which case nothing changes. Threads that already have an arena
    keep it: call this before PyTorch's (and numba's) worker threads start."""
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    # The trim threshold is a C int: INT_MAX bytes (2 GiB) of free memory at the heap's top stay mapped.
    _applied = all(
        libc.mallopt(param, value)
        for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
    )
    return _applied


def denormals_flushed() -> bool:
    """Whether every thread of a parallel elementwise operation treats denormal inputs as zero."""
    # 4 MB of the smallest positive denormal, made from its bits (converting 1e-45 would itself be flushed on this
    # thread): enough elements that at::parallel_for hands a chunk to every thread.
    probe = torch.ones(1 << 20, dtype=torch.int32).view(torch.float32)
    return bool((probe * 2.0 == 0).all())


def flush_denormals() -> bool:
    """Flush denormal floats to zero on this thread and on the threads it starts from now on. True if every thread
    of a parallel operation now flushes; False where the CPU has no such mode, or where PyTorch's worker threads were
    already running (they keep their own flags: set this before the first large tensor operation)."""
    return torch.set_flush_denormal(True) and denormals_flushed()


def apply_cpu_settings(reuse_memory: bool, flush: bool) -> None:
    """The settings above that a config asks for; only where a command starts (the pipeline, before it builds
    anything), since denormal flushing reaches only threads started after it."""
    if reuse_memory:
        reuse_freed_memory()
    if flush and not flush_denormals():
        from rich.console import Console

        Console(stderr=True).print(
            "[yellow]genvs-ns: denormal floats are not flushed to zero on every CPU thread (the threads started "
            "earlier); training may slow down once Adam's state turns denormal"
        )
