"""What the viewer costs a training run on this machine; prints one JSON object.

    .venv/bin/python scripts/viewer_cost.py --data outputs/demo/data --steps 150
    .venv/bin/python scripts/viewer_cost.py --data D --browser /usr/bin/chromium   # a browser watching, headless

Runs ``ns-train genvs-tiny`` for ``--steps`` steps once per case, one after another, each in its own process:
- ``tensorboard``: ``--vis tensorboard``;
- ``viewer``: ``--vis viewer+tensorboard`` with nobody connected;
- ``browser_here``: the same with a headless browser (Chromium, software WebGL, lowest CPU priority) showing the
  viewer from the start, on the same cores: a user watching training from a browser on the training machine;
- ``browser_elsewhere``: the same, but the browser is frozen (SIGSTOP) once the viewer has rendered for it: its
  connection and camera stay, its own CPU use goes, as for a browser on another machine (through ``ssh -L``).
For each: the median and mean step time over the steps after the first ``--warmup`` (from timestamps taken around
nerfstudio's ``Trainer.train_iteration``), and how many renders the viewer made (``GeNVSModel.get_outputs_for_camera``
calls). The browser cases need a Chromium or Chrome binary (Debian's ``chromium`` package); without one they are
skipped, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal

import tyro

Case = Literal["tensorboard", "viewer", "browser_here", "browser_elsewhere"]

# Runs ns-train in this interpreter with two probes: step end times and the viewer's render count, written as JSON
# to $GENVS_VIEWER_COST when the process exits.
_PROBE = """
import atexit, json, os, sys, time
from nerfstudio.engine import trainer
from nerfstudio.scripts.train import entrypoint
from genvs_ns.model import genvs_model
ends, renders = [], [0]
step = trainer.Trainer.train_iteration
def timed(self, *a, **k):
    out = step(self, *a, **k)
    ends.append(time.perf_counter())
    return out
trainer.Trainer.train_iteration = timed
render = genvs_model.GeNVSModel.get_outputs_for_camera
def counted(self, *a, **k):
    out = render(self, *a, **k)
    renders[0] += 1
    if renders[0] == 1:
        open(os.environ["GENVS_VIEWER_COST"] + ".rendered", "w").close()
    return out
genvs_model.GeNVSModel.get_outputs_for_camera = counted
def report():
    with open(os.environ["GENVS_VIEWER_COST"], "w") as f:
        json.dump({"ends": ends, "renders": renders[0]}, f)
atexit.register(report)
sys.argv = ["ns-train"] + sys.argv[1:]
entrypoint()
"""


@dataclass
class ViewerCostArgs:
    data: Path
    """An SRN-layout data set (e.g. the demo's, from genvs-toy-data)."""
    steps: int = 150
    """Training steps per run."""
    warmup: int = 20
    """Steps left out of the timing (compilation, caches, the browser connecting)."""
    browser: str = "chromium"
    """Chromium / Chrome executable for the watched run (name on PATH or a path)."""
    port: int = 7017
    """Viewer port for the runs with the viewer."""
    cases: List[Case] = field(default_factory=lambda: ["tensorboard", "viewer", "browser_here", "browser_elsewhere"])
    """Which runs to make."""


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 600.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.5)
    return False


def _run(args: ViewerCostArgs, case: Case, browser: str | None, work: Path) -> dict:
    result_file = work / f"{case}.json"
    vis = "tensorboard" if case == "tensorboard" else "viewer+tensorboard"
    cmd = [
        sys.executable, "-c", _PROBE, "genvs-tiny", "--data", str(args.data), "--output-dir", str(work / "runs"),
        "--max-num-iterations", str(args.steps), "--vis", vis, "--viewer.websocket-host", "127.0.0.1",
        "--viewer.websocket-port", str(args.port), "--viewer.quit-on-train-completion", "True",
        "--steps-per-save", str(10 * args.steps),
    ]  # fmt: skip
    env = {**os.environ, "GENVS_VIEWER_COST": str(result_file)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    viewer = None
    try:
        if case.startswith("browser"):
            if not _wait_for_port(args.port, proc):
                raise RuntimeError("the viewer never listened on its port")
            viewer = subprocess.Popen(
                ["nice", "-n", "19", browser, "--headless=new", "--no-sandbox", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader", f"--user-data-dir={work / case}", "--window-size=1280,720",
                 f"http://127.0.0.1:{args.port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        if case == "browser_elsewhere":
            rendered = Path(f"{result_file}.rendered")
            while not rendered.exists() and proc.poll() is None:
                time.sleep(0.2)
            os.killpg(viewer.pid, signal.SIGSTOP)
        _, err = proc.communicate()
    finally:
        if proc.poll() is None:  # the viewer never came up: no training run is left behind
            proc.kill()
            proc.wait()
        if viewer is not None:
            os.killpg(viewer.pid, signal.SIGKILL)
            os.killpg(viewer.pid, signal.SIGCONT)
            viewer.wait()
    if proc.returncode != 0 or not result_file.is_file():
        raise RuntimeError(f"ns-train --vis {vis} failed: {err.strip().splitlines()[-1:] or proc.returncode}")
    probe = json.loads(result_file.read_text())
    steps = [b - a for a, b in zip(probe["ends"], probe["ends"][1:])][args.warmup :]
    return {
        "median_step_s": round(statistics.median(steps), 4),
        "mean_step_s": round(statistics.fmean(steps), 4),
        "steps_timed": len(steps),
        "viewer_renders": probe["renders"],
    }


def main(args: ViewerCostArgs) -> dict:
    browser = shutil.which(args.browser)
    result: dict = {"steps": args.steps, "warmup": args.warmup, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            if case.startswith("browser") and browser is None:
                result[f"{case}_skipped"] = f"no browser executable {args.browser!r} on PATH"
            else:
                result[case] = _run(args, case, browser, Path(tmp))
    return result


if __name__ == "__main__":
    print(json.dumps(main(tyro.cli(ViewerCostArgs)), indent=1))
