"""genvs-eval's results on disk: appended per object and flushed, so that a killed run loses at most the objects it
was working on and a rerun continues where it stopped."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import numpy as np

from genvs_ns.errors import DataError, GeNVSError

SCORES = ("psnr", "ssim", "crop_psnr", "crop_ssim", "lpips", "crop_lpips")


def commit_hash() -> str:
    """The genvs-ns checkout's commit (empty outside a git checkout), for results to record."""
    try:
        here = Path(__file__).parent
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here
        ).stdout.strip()
    except OSError:
        return ""


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, fields: list[str], rows: list[dict], mode: str) -> None:
    """Writes (mode "w", with the header) or appends rows, on disk before it returns."""
    with open(path, mode, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if mode == "w":
            writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())


def claim_output_dir(out: Path, settings: dict) -> None:
    """Creates ``out`` and records ``settings`` there, or checks that its earlier results used the same ones, before
    anything slow runs: one folder never mixes two evaluations, and nothing in it is touched when it is refused."""
    path = out / "settings.json"
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not path.is_file():
            path.write_text(json.dumps(settings, indent=1))
            return
    except OSError as exc:
        raise DataError(out, f"cannot write the results here ({exc.strerror or exc})") from None
    earlier = json.loads(path.read_text())
    changed = [k for k in settings if earlier.get(k) != settings[k]]
    if changed:
        raise DataError(
            out,
            f"holds results of other settings ({', '.join(changed)} differ); choose a new --output-dir or the same "
            "settings to continue",
        )


class ObjectResults:
    """per_image.csv and per_object.csv: an object's rows are appended (and flushed to disk) once all its views are
    scored; ``done`` holds the objects a rerun skips."""

    def __init__(self, out: Path, outputs: list[str]) -> None:
        self.image_path, self.object_path = out / "per_image.csv", out / "per_object.csv"
        self.image_fields = ["object", "view"] + [f"{o}_{s}" for o in outputs for s in SCORES]
        self.object_fields = ["object", "views", "seconds"] + [f"{o}_{s}" for o in outputs for s in SCORES]
        self.done: set[str] = set()
        if self.object_path.is_file():
            with open(self.object_path, newline="") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames != self.object_fields:
                    raise GeNVSError(
                        f"{self.object_path}: its columns are not these (other --outputs, or an older genvs-eval); "
                        "choose a new --output-dir"
                    )
                self.done = {row["object"] for row in reader}
        # Rows of an object that was being written when a run was killed are dropped: it is evaluated again.
        rows = self.image_rows()
        kept = [r for r in rows if r["object"] in self.done]
        if len(kept) != len(rows) or not self.image_path.is_file():
            write_csv(self.image_path, self.image_fields, kept, "w")
        if not self.object_path.is_file():
            write_csv(self.object_path, self.object_fields, [], "w")

    def image_rows(self) -> list[dict]:
        return read_csv(self.image_path)

    def add(self, object_id: str, image_rows: list[dict], seconds: float) -> None:
        write_csv(self.image_path, self.image_fields, image_rows, "a")
        means = {k: round(float(np.mean([float(r[k]) for r in image_rows])), 5) for k in self.object_fields[3:]}
        row = {"object": object_id, "views": len(image_rows), "seconds": round(seconds, 2), **means}
        write_csv(self.object_path, self.object_fields, [row], "a")
        self.done.add(object_id)
