"""The declared lower bounds are true: every torch feature newer than the oldest torch one might install is listed
here with the release that introduced it (PyTorch's release notes), and the floor in pyproject.toml is at least each.

How the floor was found (2026-12-04): the code's torch calls were listed (grep for torch.amp, torch.cuda, signature
keywords), and the ones missing from earlier releases are below. An older torch can only be installed here as a
multi-GB CUDA build, so the floor is not run in CI; what CI checks is that nothing newer slipped in unlisted for the
features it knows and that the installed torch has them all.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import tomllib
import torch

ROOT = Path(__file__).parent.parent
# (what, introduced in, where the code relies on it, check on the installed torch, pattern that finds its use)
FEATURES = [
    (
        "torch.cuda.is_bf16_supported(including_emulation=...)",
        (2, 4),
        "genvs_ns/model/precision.py",
        lambda: "including_emulation" in inspect.signature(torch.cuda.is_bf16_supported).parameters,
        r"is_bf16_supported\(including_emulation",
    ),
    (
        "torch.amp.GradScaler (device-generic loss scaling)",
        (2, 3),
        "genvs_ns/trainer.py",
        lambda: hasattr(torch.amp, "GradScaler"),
        r"torch\.amp\.GradScaler",
    ),
]


def _lower_bound(package: str) -> tuple[int, ...]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if re.match(rf"{package}\b", d)]
    return tuple(int(x) for x in re.search(r">=\s*([\d.]+)", spec).group(1).split("."))


def test_the_torch_floor_has_every_feature_the_code_uses():
    floor = _lower_bound("torch")
    for what, since, where, available, pattern in FEATURES:
        assert floor >= since, f"{what} needs torch {since}, pyproject allows {floor}"
        assert available(), f"{what}: missing from the installed torch {torch.__version__}"
        assert re.search(pattern, (ROOT / where).read_text()), f"{where} no longer uses {what}: update the table"


def test_torchvision_floor_is_the_one_paired_with_the_torch_floor():
    # torchvision 0.N pairs with torch 2.(N - 15) since torch 2.0 / torchvision 0.15.
    torch_floor, vision_floor = _lower_bound("torch"), _lower_bound("torchvision")
    assert vision_floor[:2] == (0, torch_floor[1] + 15)
