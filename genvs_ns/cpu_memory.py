"""Keep freed CPU memory for reuse instead of handing it back to the operating system (glibc only).

glibc serves every allocation above 32 MB with a fresh ``mmap`` and unmaps it on free, so each of the training step's
large activations (a paper-size field layer is 134 MB) page-faults in again, step after step. Measured on 2 cores:
ReLU over such a tensor ran at 2 GB/s, all of it page faults. Served from the heap, and with the heap never trimmed,
field+render forward and backward went from 1.46 to 1.03 s and the genvs-tiny step from 0.49 to 0.45 s, with the same
peak RSS. This is what jemalloc or tcmalloc would give PyTorch on the CPU, without a preloaded library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_applied = False


def reuse_freed_memory() -> bool:
    """Serve large allocations from the heap and never trim it. Process-wide and idempotent; False where unsupported
    (not glibc), in which case nothing changes."""
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    # The trim threshold is a C int: INT_MAX bytes (2 GiB) of free memory at the heap's top stay mapped.
    _applied = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied
