"""``genvs-data-info DATA``: parse an SRN folder with the ``srn`` dataparser and print a JSON summary per split.

Checks a data set before a long ``ns-train`` run: every malformed file fails here with one line naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import tyro

from genvs_ns import checks
from genvs_ns.data.srn_dataparser import SRNDataParserConfig
from genvs_ns.data.srn_files import SPLITS
from genvs_ns.errors import user_errors_exit


@dataclass
class DataInfoArgs:
    """Summarise an SRN root, split or instance folder."""

    data: tyro.conf.Positional[Path]
    """SRN root, split folder or instance folder."""
    downscale_factor: int = 1
    """As the dataparser's --downscale-factor."""


def summarise(data: Path, downscale_factor: int = 1) -> dict:
    checks.existing_folder("DATA", data)
    checks.at_least("--downscale-factor", downscale_factor, 1)
    parser = SRNDataParserConfig(data=data, downscale_factor=downscale_factor).setup()
    summary: dict = {"data": str(data)}
    for split in SPLITS:
        out = parser.get_dataparser_outputs(split=split)
        cams = out.cameras
        radius = cams.camera_to_worlds[:, :, 3].norm(dim=-1)
        summary[split] = {
            "objects": len(out.metadata["object_ids"]),
            "images": len(out.image_filenames),
            "image_sizes": sorted({(int(w), int(h)) for w, h in zip(cams.width[:, 0], cams.height[:, 0])}),
            "fx": sorted({round(float(f), 3) for f in cams.fx[:, 0]})[:4],
            "camera_radius": [round(float(radius.min()), 3), round(float(radius.max()), 3)],
            "near_far": [out.metadata["near"], out.metadata["far"]],
            "category": out.metadata["category"],
        }
    return summary


def entrypoint() -> None:
    args = tyro.cli(DataInfoArgs)
    with user_errors_exit():
        summary = summarise(args.data, args.downscale_factor)
    print("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in summary.items()) + "\n}")


if __name__ == "__main__":
    entrypoint()
