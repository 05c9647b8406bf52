"""Freed CPU memory stays with the process for reuse (glibc), instead of being unmapped and page-faulted in again."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

# In a fresh process: the allocator's settings are process-wide, and earlier tests leave it in any state.
_PROBE = """
import json, resource, torch
from genvs_ns.cpu_memory import reuse_freed_memory

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


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_large_allocations_reuse_freed_pages_instead_of_faulting_them_in():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    pages = (16 + 8 + 17) * 2**20 * 4 // 4096  # what one cycle writes
    assert r["before"] > 0.9 * pages  # glibc's default: every cycle faults all of its pages in again
    assert r["applied"]
    assert r["after"] < 0.05 * pages
