"""``genvs-contact-sheet``: input view, ground truth, NeRF RGB and diffusion sample for held-out objects."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import tyro
from torchvision.utils import save_image

from genvs_ns import checks
from genvs_ns.errors import DataError, user_errors_exit
from genvs_ns.sampling import SamplerFlags
from genvs_ns.sampling.views import render_pairs
from genvs_ns.scripts.checkpoint import check_model_source, open_pipeline


@dataclass
class ContactSheetArgs:
    """Rows: held-out objects (eval pairs); columns: input view, ground truth, NeRF RGB, diffusion sample."""

    load_config: Path | None = None
    """config.yml written by ns-train (or give --load-model)."""
    load_model: Path | None = None
    """A model folder written by genvs-export (or give --load-config); needs --data."""
    data: Path | None = None
    """The data set whose held-out objects are shown: with --load-model, or instead of the run's own."""
    output: Path = Path("contact_sheet.png")
    """Where to write the PNG."""
    num_rows: int = 6
    """Held-out (object, target view) pairs to show."""
    sampling: tyro.conf.OmitArgPrefixes[SamplerFlags] = field(default_factory=SamplerFlags)
    """How the diffusion samples are drawn (unset: the model's default)."""
    seed: int = 0
    """Same seed, same samples."""

    def check(self) -> None:
        check_model_source(self.load_config, self.load_model)
        checks.existing_folder("--data", self.data)
        if self.output.is_dir():
            raise DataError(self.output, "is a folder; --output names the PNG to write")
        checks.writable_folder("--output", self.output.parent)
        checks.at_least("--num-rows", self.num_rows, 1)
        self.sampling.check()
        checks.seed("--seed", self.seed)


def main(args: ContactSheetArgs) -> dict:
    args.check()
    pipeline = open_pipeline(args.load_config, args.load_model, args.data, "test")
    settings = args.sampling.over(pipeline.config.sampling)
    dm = pipeline.datamanager
    pairs = dm.eval_pairs[: args.num_rows]
    generator = torch.Generator(device=pipeline.device).manual_seed(args.seed)
    rows, psnr = [], []
    start = time.perf_counter()
    for pair in pairs:
        batch = dm.eval_batch([pair])
        out = render_pairs(pipeline.model, batch, settings, generator)
        metrics, _ = pipeline.model.get_image_metrics_and_images(out, batch)
        psnr.append(metrics)
        rows.append(torch.cat([batch.source_images[0, 0], batch.target_image[0], out.rgb[0], out.sample[0]], -1))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat(rows, dim=-2).cpu(), args.output)
    summary = {
        "contact_sheet": str(args.output),
        "rows": len(rows),
        "seconds_per_row": round((time.perf_counter() - start) / max(1, len(rows)), 3),
    }
    for key in psnr[0]:
        summary[f"mean_{key}"] = round(sum(m[key] for m in psnr) / len(psnr), 4)
    return summary


def entrypoint() -> None:
    with user_errors_exit():
        print(json.dumps(main(tyro.cli(ContactSheetArgs))))


if __name__ == "__main__":
    entrypoint()
