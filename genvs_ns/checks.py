"""Checks of settings where they are read: one line naming the flag and what it accepts, before any long work.

Every command and config checks its own numbers with these, so a bad value ends as
``<command>: error: --radius must be a finite number greater than 0, not 0.0`` (errors.py) instead of a
ZeroDivisionError, a tensor-size error deep in torch, or a run that finishes with nonsense.
"""

from __future__ import annotations

import math
from pathlib import Path

from genvs_ns.errors import DataError, GeNVSError


def _number(flag: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GeNVSError(f"{flag} must be a finite number, not {value!r}")
    return float(value)


def at_least(flag: str, value: float, low: float) -> None:
    if _number(flag, value) < low:
        raise GeNVSError(f"{flag} must be at least {low}, not {value!r}")


def greater_than(flag: str, value: float, low: float) -> None:
    if _number(flag, value) <= low:
        raise GeNVSError(f"{flag} must be a finite number greater than {low}, not {value!r}")


def between(flag: str, value: float, low: float, high: float) -> None:
    if not low <= _number(flag, value) <= high:
        raise GeNVSError(f"{flag} must be between {low} and {high}, not {value!r}")


def below(flag: str, value: float, high: float) -> None:
    if _number(flag, value) >= high:
        raise GeNVSError(f"{flag} must be below {high}, not {value!r}")


def finite(flag: str, value: float) -> None:
    _number(flag, value)


def seed(flag: str, value: int) -> None:
    """Seeds feed torch, NumPy and Python generators alike: 0 to 2^63 - 1."""
    if not 0 <= _number(flag, value) < 2**63:
        raise GeNVSError(f"{flag} must be between 0 and 2^63 - 1, not {value!r}")


def existing_file(flag: str, path: Path | None) -> None:
    if path is not None and not Path(path).is_file():
        raise DataError(Path(path), f"no such file ({flag})")


def existing_folder(flag: str, path: Path | None) -> None:
    if path is not None and not Path(path).is_dir():
        raise DataError(Path(path), f"no such folder ({flag})")


def writable_folder(flag: str, path: Path) -> None:
    """A folder that may be created: refused where a file is in the way."""
    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise DataError(blocker, f"is a file, not a folder ({flag})")
