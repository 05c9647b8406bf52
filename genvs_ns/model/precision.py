"""The dtype the encoder, field MLP and U-Net run in: bf16 only where the device computes it natively.

On a CPU without AVX512-BF16/AMX (an AVX2-only AMD EPYC here) oneDNN has no bf16 kernels and PyTorch falls back to
scalar loops: a 2048^3 bf16 matmul ran at 0.27 GFLOP/s against 98 GFLOP/s in fp32, and a genvs-tiny step took 17 s
instead of 1.2 s. CUDA GPUs before Ampere (V100, T4) likewise emulate bf16 slowly; they compute fp16 natively, whose
narrow range needs loss scaling (the trainer's GradScaler turns on with ``fp16``).
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch

Precision = Literal["auto", "bf16", "fp16", "fp32"]


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` has bf16 arithmetic in hardware (not emulated)."""
    return _native_bf16(torch.device(device).type)


@functools.cache
def _native_bf16(device_type: str) -> bool:
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device_type == "cpu":
        try:
            # oneDNN's own test: AVX512 (BW/VL/DQ, which it runs bf16 on quickly), AVX512-BF16 or AMX.
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def autocast_dtype(precision: Precision, device: torch.device | str) -> torch.dtype | None:
    """bf16 for ``"bf16"``, and for ``"auto"`` where the device has it natively; fp16 for ``"fp16"``; None (fp32)
    otherwise."""
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        return torch.bfloat16
    return None


def autocast(dtype: torch.dtype | None, device: torch.device | str) -> AbstractContextManager:
    """Autocast to ``dtype`` on ``device``'s type, or nothing for None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
