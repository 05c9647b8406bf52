"""Process-wide CPU settings: freed memory stays with the process for reuse (glibc), and denormals are flushed to
zero on every thread. Each probe runs in a fresh process: the settings are process-wide and earlier tests leave them
in any state."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

_MEMORY_PROBE = """
import json, resource, torch
from genvs_ns.cpu_runtime import reuse_freed_memory

def faults_per_cycle(cycles=20, measured=5):
    # A training step's pattern in miniature: large tensors of a few sizes, allocated, written and freed.
    for i in range(cycles):
        if i == cycles - measured:
            start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        x = torch.ones(16 * 2**20)
        y = torch.ones(8 * 2**20)
        del x
        z = torch.ones(17 * 2**20)
        del y, z
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / measured

before = faults_per_cycle()
applied = reuse_freed_memory()
print(json.dumps({"before": before, "applied": applied, "after": faults_per_cycle()}))
"""


def _probe(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_large_allocations_reuse_freed_pages_instead_of_faulting_them_in():
    r = _probe(_MEMORY_PROBE)
    pages = (16 + 8 + 17) * 2**20 * 4 // 4096  # what one cycle writes
    assert r["before"] > 0.9 * pages  # glibc's default: every cycle faults all of its pages in again
    assert r["applied"]
    assert r["after"] < 0.05 * pages


_ARENA_PROBE = """
import ctypes, ctypes.util, json, sys, threading, torch
from genvs_ns.cpu_runtime import reuse_freed_memory

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.open_memstream.restype = ctypes.c_void_p

def malloc_arenas():
    buf, size = ctypes.c_char_p(), ctypes.c_size_t()
    stream = ctypes.c_void_p(libc.open_memstream(ctypes.byref(buf), ctypes.byref(size)))
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    return buf.value.decode().count("<heap nr=")

applied = reuse_freed_memory() if sys.argv[1] == "on" else None
torch.set_num_threads(2)
# What a training process does besides its main thread: PyTorch's worker threads and a Python thread (a writer).
thread = threading.Thread(target=lambda: torch.ones(2**20) * 2)
thread.start()
thread.join()
torch.randn(1024, 1024) @ torch.randn(1024, 1024)
print(json.dumps({"applied": applied, "arenas": malloc_arenas()}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_all_threads_share_one_malloc_arena_so_memory_freed_in_one_serves_all():
    assert _probe(_ARENA_PROBE, "on") == {"applied": True, "arenas": 1}
    # Control: glibc's default gives the other threads arenas of their own.
    assert _probe(_ARENA_PROBE, "off")["arenas"] > 1


_DENORMAL_LATE = """
import json, torch
torch.set_num_threads(2)
from genvs_ns.cpu_runtime import denormals_flushed, flush_denormals
before = denormals_flushed()  # starts PyTorch's worker threads, without the flags
print(json.dumps({"before": before, "applied": flush_denormals()}))
"""

_DENORMAL_EARLY = """
import json, torch
torch.set_num_threads(2)
from genvs_ns.cpu_runtime import denormals_flushed, flush_denormals
applied = flush_denormals()  # before any parallel operation: the worker threads inherit the flags
print(json.dumps({"applied": applied, "still": denormals_flushed()}))
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 FTZ/DAZ")
def test_denormals_flush_on_every_thread_when_set_before_the_threads_start():
    assert _probe(_DENORMAL_EARLY) == {"applied": True, "still": True}


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 FTZ/DAZ")
def test_flushing_set_after_the_threads_started_is_reported_as_incomplete():
    assert _probe(_DENORMAL_LATE) == {"before": False, "applied": False}


_PIPELINE = """
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(2)
from genvs_ns.config import genvs_tiny_trainer
from genvs_ns.cpu_runtime import denormals_flushed, flush_denormals
config = genvs_tiny_trainer()
config.pipeline.datamanager.data = Path(sys.argv[1])
config.pipeline.model.cpu_flush_denormals = sys.argv[2] == "on"
pipeline = config.pipeline.setup(device="cpu", test_mode="val")
print(json.dumps({"flushed": denormals_flushed(), "flushed_when_set_now": flush_denormals()}))
"""


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 FTZ/DAZ")
def test_the_pipeline_flushes_denormals_before_setting_up_starts_the_threads(tmp_path):
    from genvs_ns.data.toy import generate

    # Enough cameras (3600) that the datamanager's setup runs parallel operations, starting PyTorch's worker threads.
    generate(tmp_path, num_objects=150, num_views=24, resolution=16, seed=0)

    assert _probe(_PIPELINE, str(tmp_path), "on")["flushed"]
    # Control: without the pipeline's early call, flushing once it is set up comes too late for the worker threads.
    assert _probe(_PIPELINE, str(tmp_path), "off") == {"flushed": False, "flushed_when_set_now": False}
