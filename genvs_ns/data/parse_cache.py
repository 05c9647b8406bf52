"""Parsed SRN instances kept between runs, so a full SRN split starts in seconds rather than minutes.

Parsing reads every pose file and, with ``verify_images``, every image in full: on a folder of SRN cars' shape (2212
train objects x 50 views at 128 px) that took 87 s before ``ns-train`` could start, every run. The cache keeps each
instance's parsed views under a signature of its files (names, sizes, modification times): a changed, added or
removed file re-parses that instance alone, and an instance parsed without image verification is verified when a
run asks for it. It lives in ``$XDG_CACHE_HOME/genvs-ns/srn`` (``~/.cache``), one JSON file per data folder, never
in the data folder itself; loading it runs no code. Where the cache cannot be read or written the run goes on
uncached, with one warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from genvs_ns.data.srn_files import Instance, Intrinsics, View

VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genvs-ns" / "srn"


def signature(folder: Path) -> str:
    """Names, sizes and modification times of the files an instance is parsed from."""
    entries = []
    for sub in ("rgb", "pose", "intrinsics"):
        try:
            with os.scandir(folder / sub) as it:
                for entry in it:
                    st = entry.stat()
                    entries.append(f"{sub}/{entry.name}:{st.st_size}:{st.st_mtime_ns}")
        except FileNotFoundError:
            entries.append(f"{sub}:absent")
    try:
        st = (folder / "intrinsics.txt").stat()
        entries.append(f"intrinsics.txt:{st.st_size}:{st.st_mtime_ns}")
    except FileNotFoundError:
        entries.append("intrinsics.txt:absent")
    return hashlib.sha1("\n".join(sorted(entries)).encode()).hexdigest()


def _encode(instance: Instance) -> list:
    return [
        [
            view.image.relative_to(instance.folder).as_posix(),
            view.index,
            view.c2w_opengl.flatten().tolist(),
            [view.intrinsics.fx, view.intrinsics.fy, view.intrinsics.cx, view.intrinsics.cy],
            view.width,
            view.height,
        ]
        for view in instance.views
    ]


def _decode(folder: Path, views: list) -> Instance:
    return Instance(
        folder,
        [
            View(folder / image, index, np.asarray(c2w, dtype=np.float64).reshape(4, 4), Intrinsics(*k), width, height)
            for image, index, c2w, k, width, height in views
        ],
    )


@dataclass
class ParseCache:
    """One data folder's parsed instances, keyed by instance folder."""

    data: str  # the data folder, resolved: stored in the file, so a hash collision cannot serve another folder
    path: Path
    warn: Callable[[str], None] = print
    entries: dict = field(default_factory=dict)
    hits: int = 0
    dirty: bool = False

    @classmethod
    def for_data(cls, data: Path, warn: Callable[[str], None] = print) -> ParseCache:
        resolved = str(Path(data).resolve())
        cache = cls(resolved, default_cache_dir() / f"{hashlib.sha1(resolved.encode()).hexdigest()[:16]}.json", warn)
        try:
            stored = json.loads(cache.path.read_text())
            if stored.get("version") == VERSION and stored.get("data") == resolved:
                cache.entries = stored["instances"]
        except (FileNotFoundError, NotADirectoryError):
            pass
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            warn(f"genvs-ns: warning: parse cache {cache.path} unreadable ({exc}); parsing anew")
        return cache

    def get(self, folder: Path, folder_signature: str, verify: bool) -> Instance | None:
        """The cached parse of ``folder`` if its files still have ``folder_signature`` (taken before any reading)."""
        entry = self.entries.get(str(folder))
        if entry is None or entry["signature"] != folder_signature or (verify and not entry["verified"]):
            return None
        self.hits += 1
        return _decode(folder, entry["views"])

    def put(self, instance: Instance, folder_signature: str, verified: bool) -> None:
        self.entries[str(instance.folder)] = {
            "signature": folder_signature,
            "verified": verified,
            "views": _encode(instance),
        }
        self.dirty = True

    def save(self) -> None:
        """Written to a temporary name and renamed: concurrent runs never read half a file."""
        if not self.dirty:
            return
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            payload = {"version": VERSION, "data": self.data, "instances": self.entries}
            tmp.write_text(json.dumps(payload, separators=(",", ":")))
            os.replace(tmp, self.path)
            self.dirty = False
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            self.warn(f"genvs-ns: warning: parse cache not written to {self.path} ({exc}); the next run parses anew")
