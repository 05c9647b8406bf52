"""``genvs-toy-data``: write procedural toy objects (cars, or mixed chairs, tables, rings, lamps, mugs) as SRN."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from genvs_ns import checks
from genvs_ns.data.toy import generate
from genvs_ns.errors import DataError, user_errors_exit


@dataclass
class ToyDataArgs:
    """Procedural SRN-layout toy objects: OUT/{kind}_train, _val, _test (80/10/10 of the objects)."""

    out: tyro.conf.Positional[Path]
    """Output folder (created; existing object folders make it fail rather than be overwritten)."""
    num_objects: int = 40
    """Objects in all splits together."""
    num_views: int = 24
    """Views per object, random on the upper hemisphere at radius 1.3."""
    resolution: int = 64
    """Image side in pixels (focal length 131.25 * resolution / 128, as SRN)."""
    seed: int = 0
    """Same seed, byte-identical files."""
    depth: bool = False
    """Also write depth/<view>.npy (float32 z-depth, 0 on background) for geometry tests."""
    kind: Literal["cars", "mixed"] = "cars"
    """cars: body, cabin, four wheels. mixed: each object a chair, table, ring, lamp or mug."""

    def check(self) -> None:
        checks.writable_folder("OUT", self.out)
        checks.at_least("--num-objects", self.num_objects, 1)
        checks.at_least("--num-views", self.num_views, 1)
        checks.at_least("--resolution", self.resolution, 4)
        checks.seed("--seed", self.seed)


def main(args: ToyDataArgs) -> None:
    args.check()
    start = time.perf_counter()
    try:
        counts = generate(
            args.out, args.num_objects, args.num_views, args.resolution, args.seed, args.depth, kind=args.kind
        )
    except FileExistsError as exc:
        raise DataError(exc.filename, "already exists; choose a new output folder") from None
    summary = {
        "out": str(args.out),
        "kind": args.kind,
        "objects": counts,
        "views": args.num_views,
        "resolution": args.resolution,
    }
    summary["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(summary))


def entrypoint() -> None:
    with user_errors_exit():
        main(tyro.cli(ToyDataArgs))


if __name__ == "__main__":
    entrypoint()
