"""``genvs-export``: a trained run as a portable model folder (safetensors weights, JSON settings, a model card).

    genvs-export outputs/demo/runs/demo/genvs-tiny/run/config.yml my-model
    genvs-export RUN/config.yml my-model --eval-results eval/cars_test     # adds genvs-eval's figures to the card

The folder opens with ``genvs-sample --load-model``, ``genvs-eval --load-model`` and ``genvs-contact-sheet
--load-model``, and nothing in it can run code when opened (model_folder.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import tyro

from genvs_ns import checks
from genvs_ns.errors import user_errors_exit


@dataclass
class ExportArgs:
    """Write a trained run's EMA weights and settings as a model folder to share."""

    run_config: tyro.conf.Positional[Path]
    """config.yml written by ns-train (its newest checkpoint is exported)."""
    out: tyro.conf.Positional[Path]
    """The model folder to write (new, or empty)."""
    eval_results: Path | None = None
    """genvs-eval's output folder (or its metrics.json): its figures go into the model card."""

    def check(self) -> None:
        checks.writable_folder("OUT", self.out)
        if self.eval_results is not None and not self.eval_results.exists():
            checks.existing_file("--eval-results", self.eval_results)


def main(args: ExportArgs) -> dict:
    args.check()
    from genvs_ns.scripts.model_folder import export_model

    return export_model(args.run_config, args.out, args.eval_results)


def entrypoint() -> None:
    with user_errors_exit():
        print(json.dumps(main(tyro.cli(ExportArgs))))


if __name__ == "__main__":
    entrypoint()
