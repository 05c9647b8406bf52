"""GPU smoke check of the paths only a GPU takes; prints one JSON object, exits 1 if any check failed.

    .venv/bin/python scripts/gpu_smoke.py [--out DIR] [--steps 60]

On a machine without CUDA the GPU parts are skipped (each says so in the JSON) and the rest still runs: the tests run
it that way. On one H200 the whole takes a few minutes (training 60 steps of the paper preset at 128 px, a search for
the largest batch). Checks:
- device: name, bf16 in hardware, tiny-cuda-nn importable;
- trilinear: grid_sample on the device against the numba CPU kernel, values and volume gradients on the same inputs;
- field_tcnn: the field with tiny-cuda-nn's MLP (where installed): forward and backward shapes, finite values, and
  the same field loaded into torch layers (checkpoint conversion) giving the same outputs;
- render_compile: the paper network's render compiled against eager on the device (values, gradients);
- train: the `genvs` preset as a user gets it (objects per batch "auto", the U-Net, encoder and renders compiled), 60
  steps on 128-px toy data through nerfstudio's Trainer (config.yml written, as ns-train writes it): objects/s, median
  step time, peak GPU memory, GPU utilisation (NVML), the share of the step spent waiting for data, the losses and the
  graphs compiled;
- train_eager: the same with --pipeline.model.compile off, and whether its losses match the compiled run's;
- train_8: the preset at 8 objects a batch (the default before "auto"), for the objects/s it gave;
- step_profile: one 2-object training step under torch.profiler (scripts/benchmark.py): kernel launches, dtype casts,
  host reads, the GPU's busy share of the step and the top kernels, compiled and eager;
- nonfinite: a NaN loss injected at step 3 stops the run (read asynchronously) before any checkpoint holds it;
- mixed_precision: `ns-train genvs --mixed-precision True` for 3 steps, through the CLI;
- sample: `genvs-sample --sampler heun --churn 1` on the trained checkpoint, through the CLI;
- evaluate: `genvs-eval` on the training split with that checkpoint (NeRF RGB and 15-step samples, batch 32, across
  objects): images per second, and the hours that projects for SRN cars' test split (704 objects x 250 views);
- max_batch: the largest objects_per_batch (doubling from 8) whose training step fits, with peak memory per object.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

NO_CUDA = "skipped: no CUDA device"


def _command(name: str) -> Path:
    """A console script: on PATH, or beside the interpreter (a venv); under `pip install --target` it is in the
    target's bin/, which gpu_smoke.sh puts on PATH."""
    import shutil

    found = shutil.which(name) or (Path(sys.executable).parent / name if (Path(sys.executable).parent / name).exists()
                                   else None)  # fmt: skip
    if found is None:
        raise FileNotFoundError(f"{name}: not on PATH nor beside {sys.executable}")
    return Path(found)


def _check(name: str, fn: Callable[[], dict], results: dict) -> None:
    start = time.perf_counter()
    try:
        results[name] = {**fn(), "seconds": round(time.perf_counter() - start, 1)}
    except Exception as exc:  # noqa: BLE001 - every failure is reported, and the rest still runs
        results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}


def device_info() -> dict:
    from genvs_ns.model.precision import native_bf16

    try:
        import tinycudann  # noqa: F401

        tcnn = True
    except ImportError:
        tcnn = False
    cuda = torch.cuda.is_available()
    return {
        "cuda": cuda,
        "name": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "native_bf16": native_bf16("cuda" if cuda else "cpu"),
        "tcnn": tcnn,
    }


def trilinear() -> dict:
    """The device's grid_sample path against the numba kernel (the CPU path), on the same inputs, for both poolings."""
    from genvs_ns.model.trilinear import _cpu_function, trilinear_pool

    if _cpu_function() is None:
        return {"status": "skipped: numba kernel unavailable"}
    gen = torch.Generator().manual_seed(0)
    volumes = torch.randn(2, 3, 16, 8, 12, 10, generator=gen)
    coords = torch.rand(2, 3, 4000, 3, generator=gen) * 2.4 - 1.2  # some points outside the volumes
    grad_out = torch.randn(2, 4000, 16, generator=gen)

    def run(device: str, pooling: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        vol = volumes.to(device, copy=True).requires_grad_()
        out, coverage = trilinear_pool(vol, coords.to(device), pooling)  # type: ignore[arg-type]
        out.backward(grad_out.to(device))
        return out.detach().cpu(), coverage.cpu(), vol.grad.detach().cpu()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    result: dict = {"reference": "grid_sample on " + device}
    for pooling in ("visible", "mean"):
        kernel = run("cpu", pooling)
        if device == "cpu":
            # The reference on the CPU: grid_sample as the CUDA path calls it.
            import genvs_ns.model.trilinear as tri

            original = tri._cpu_function
            tri._cpu_function = lambda: None  # type: ignore[assignment]
            try:
                ref = run("cpu", pooling)
            finally:
                tri._cpu_function = original  # type: ignore[assignment]
        else:
            ref = run(device, pooling)
        errors = [float((a - b).abs().max()) for a, b in zip(ref, kernel)]
        result[pooling] = {
            "max_abs_diff_values": errors[0],
            "max_abs_diff_coverage": errors[1],
            "max_abs_diff_grads": errors[2],
        }
    result["ok"] = all(r["max_abs_diff_values"] < 1e-4 and r["max_abs_diff_coverage"] < 1e-4 and
                       r["max_abs_diff_grads"] < 1e-3 for r in (result["visible"], result["mean"]))  # fmt: skip
    return result


def field_tcnn() -> dict:
    if not torch.cuda.is_available():
        return {"status": NO_CUDA}
    try:
        import tinycudann  # noqa: F401
    except ImportError:
        return {"status": "skipped: tiny-cuda-nn not installed"}
    from genvs_ns.model.field import FrustumField

    # "mean" pooling: a 16-wide input, which the torch layers below take as they are (with "visible" the field pads
    # the input for tcnn only, tests/test_tcnn_params.py).
    field = FrustumField(16, 64, 3, 16, implementation="tcnn", colour_inputs=True, pooling="mean").cuda()
    features = torch.rand(2, 4096, 16, device="cuda", requires_grad=True)
    density, latent = field(features)
    (density.sum() + latent.sum()).backward()
    finite = bool(torch.isfinite(density).all() and torch.isfinite(latent).all())
    # The checkpoint conversion (model/tcnn_params.py) follows tcnn's documented layout: check it on tcnn itself.
    torch_field = FrustumField(16, 64, 3, 16, implementation="torch", colour_inputs=True, pooling="mean").cuda()
    torch_field.load_state_dict(field.state_dict())
    with torch.no_grad():
        converted_err = max(
            (a.float() - b.float()).abs().max().item() for a, b in zip(torch_field(features), field(features))
        )
    ok = finite and converted_err < 1e-2
    return {
        "density_shape": list(density.shape),
        "latent_shape": list(latent.shape),
        "finite": finite,
        "max_abs_diff_torch_converted": converted_err,
        "ok": ok,
    }


class _GpuUtilisation:
    """Mean GPU utilisation (NVML) sampled every 0.1 s in a thread."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _GpuUtilisation:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        except Exception:  # noqa: BLE001 - NVML missing: utilisation is reported as None
            return self

        def sample() -> None:
            while not self._stop.wait(0.1):
                self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return round(statistics.mean(self.samples), 1) if self.samples else None


def _paper_config(data: Path, out: Path, steps: int, objects: int | str, compile: str = "auto"):
    from genvs_ns.config import genvs_trainer

    config = genvs_trainer()
    config.pipeline.datamanager.data = data
    config.pipeline.datamanager.objects_per_batch = objects
    config.pipeline.model.compile = compile
    config.output_dir, config.experiment_name, config.timestamp = out, "smoke", f"b{objects}-{compile}"
    config.max_num_iterations = steps
    config.vis = "tensorboard"
    config.steps_per_save = steps
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10**9
    return config


def render_compile() -> dict:
    """The paper preset's network rendering on the device, compiled (as compile auto does for training) against
    eager: a render of 3 source views with importance samples, values and gradients to the volumes and the field.
    Evenly spaced samples: compiled graphs draw random numbers from another stream than eager code. On the CPU the
    tests check the same (test_compiled_and_eager_renders_agree)."""
    if not torch.cuda.is_available():
        return {"status": NO_CUDA}
    from genvs_ns.config import genvs_trainer
    from genvs_ns.geometry import look_at, rays_through_pixels
    from genvs_ns.model.network import Conditioning, GeNVSNetwork
    from genvs_ns.model.renderer import RenderSettings

    config, device = genvs_trainer().pipeline.model, "cuda"
    torch.manual_seed(0)
    net = GeNVSNetwork(config).to(device)
    up = torch.tensor([0.0, 0.0, 1.0])
    angles = torch.tensor([0.0, 1.0, 2.0, 2.5])
    c2w = torch.stack([look_at(1.3 * torch.stack([a.cos(), a.sin(), torch.tensor(0.4)]), up) for a in angles])
    K = torch.tensor([[131.25, 0.0, 64.0], [0.0, 131.25, 64.0], [0.0, 0.0, 1.0]]).expand(4, 3, 3)
    c2w, K = c2w.to(device), K.to(device)
    C, D, R = config.volume_channels, config.volume_depth, config.volume_resolution
    volumes = torch.randn(3, C, D, R, R, device=device).contiguous(memory_format=torch.channels_last_3d)
    volumes = volumes.view(1, 3, C, D, R, R).requires_grad_()
    cond = Conditioning(volumes, c2w[None, :3], K[None, :3], (128, 128))
    uv = torch.rand(1, 4096, 2, device=device) * 128
    origins, directions = rays_through_pixels(c2w[3:], K[3:], uv)
    rs = RenderSettings(config.object_radius, config.num_coarse_samples, config.num_importance_samples, False)
    (eager, eager_grads, _), (comp, comp_grads, compile_s) = eager_then_compiled_render(
        net, cond, origins, directions, rs
    )
    value_error = float((comp - eager).abs().max())
    grad_errors = [float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) for a, b in zip(comp_grads, eager_grads)]
    return {
        "max_abs_diff_values": value_error,
        "max_relative_diff_grads": max(grad_errors),
        "first_compiled_call_s": round(compile_s, 1),
        "ok": value_error < 1e-3 and max(grad_errors) < 1e-2,
    }


def eager_then_compiled_render(net, cond, origins, directions, rs) -> list[tuple[torch.Tensor, list, float]]:
    """``net.render`` eager, then compiled (``compile_render``): for each, the values (features, depth, opacity), the
    gradients of one function of them to the volumes and the field's parameters, and the seconds it took."""
    results = []
    for compiled in (False, True):
        if compiled:
            net.compile_render()
        net.zero_grad()
        cond.volumes.grad = None
        start = time.perf_counter()
        out = net.render(cond, origins, directions, rs)
        values = torch.cat([out.features, out.depth[..., None], out.accumulation[..., None]], -1)
        (values.square().sum() + out.features.sum()).backward()
        if values.is_cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        grads = [cond.volumes.grad] + [p.grad for p in net.field.parameters()]
        results.append((values.detach(), [g.detach().clone() for g in grads], seconds))
    return results


def train(data: Path, out: Path, steps: int, objects: int | str = "auto", compile: str = "auto") -> dict:
    if not torch.cuda.is_available():
        return {"status": NO_CUDA}
    config = _paper_config(data, out, steps, objects, compile)
    config.set_timestamp()
    config.save_config()  # what ns-train does first: genvs-sample and genvs-eval read it
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    dm = trainer.pipeline.datamanager
    data_s: list[float] = []
    step_s: list[float] = []
    losses: list[float] = []
    next_train, train_iteration = dm.next_train, trainer.train_iteration

    def timed_next_train(step: int):
        start = time.perf_counter()
        batch = next_train(step)
        data_s.append(time.perf_counter() - start)
        return batch

    def timed_iteration(step: int):
        torch.cuda.synchronize()
        start = time.perf_counter()
        result = train_iteration(step)
        torch.cuda.synchronize()
        step_s.append(time.perf_counter() - start)
        losses.append(float(result[0]))
        return result

    dm.next_train = timed_next_train  # type: ignore[method-assign]
    trainer.train_iteration = timed_iteration  # type: ignore[method-assign]
    torch.cuda.reset_peak_memory_stats()
    from torch._dynamo.utils import counters

    graphs_before = counters["stats"]["unique_graphs"]
    with _GpuUtilisation() as util:
        trainer.train()
    warm = slice(10, None)  # the first steps compile kernels and start the data workers
    median = statistics.median(step_s[warm])
    return {
        "steps": len(step_s),
        "objects_per_batch": dm.objects_per_batch,
        "compile": compile,
        "objects_per_s": round(dm.objects_per_batch / median, 1),
        "median_step_s": round(median, 4),
        "data_share": round(sum(data_s[warm]) / sum(step_s[warm]), 4),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "gpu_utilisation_percent": util.mean,
        "losses": [round(x, 5) for x in losses],
        # Graphs dynamo compiled in this run (U-Net, encoder per source-view count, renders per shape until dynamic).
        "compiled_graphs": counters["stats"]["unique_graphs"] - graphs_before,
        "config": str(config.get_base_dir() / "config.yml"),
        "ok": len(step_s) == steps,
    }


def losses_match(compiled: dict, eager: dict) -> dict:
    """The compiled run's losses against the eager run's (same seed, same batches): means over windows of 10 steps,
    whose difference should stay within the steps' own spread."""
    if not torch.cuda.is_available():
        return {"status": NO_CUDA}
    a, b = compiled.get("losses"), eager.get("losses")
    if not a or not b:
        return {"error": "a train check failed"}
    windows = [(statistics.mean(a[i : i + 10]), statistics.mean(b[i : i + 10])) for i in range(0, len(a) - 9, 10)]
    spread = statistics.pstdev(b[-20:])
    worst = max(abs(x - y) for x, y in windows)
    return {"window_means": [[round(x, 4), round(y, 4)] for x, y in windows], "spread": round(spread, 4),
            "worst_window_difference": round(worst, 4), "ok": worst <= 2 * spread}  # fmt: skip


def nonfinite(data: Path, out: Path) -> dict:
    """A NaN loss at step 3 (of 20, checkpoints every 2 steps): the asynchronous check (loss_guard.py) stops the run
    with one GeNVSError a step or two later, and no checkpoint holds an update from step 3 on."""
    if not torch.cuda.is_available():
        return {"status": NO_CUDA}
    from genvs_ns.errors import GeNVSError

    config = _paper_config(data, out, 20, 2, compile="off")
    config.timestamp, config.steps_per_save, config.save_only_latest_checkpoint = "nonfinite", 2, False
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    model = trainer.pipeline.model
    real = model.get_loss_dict

    def poisoned(outputs, batch, metrics=None):
        losses = real(outputs, batch, metrics)
        if trainer.step == 3:
            losses["rgb_loss"] = losses["rgb_loss"] * float("nan")
        return losses

    model.get_loss_dict = poisoned  # type: ignore[method-assign]
    try:
        trainer.train.__wrapped__(trainer)  # type: ignore[attr-defined]  # the GeNVSError, not its one-line exit
        return {"error": "no stop on a NaN loss", "ok": False}
    except GeNVSError as exc:
        saved = sorted(int(p.stem.split("-")[1]) for p in trainer.checkpoint_dir.glob("step-*.ckpt"))
        return {"message": str(exc), "stopped_at": trainer.step, "checkpoints": saved,
                "ok": str(exc).startswith("step 3: non-finite loss") and all(s < 3 for s in saved)}  # fmt: skip


def step_profile() -> dict:
    if not torch.cuda.is_available():
        return {"status": NO_CUDA}
    sys.path.insert(0, str(Path(__file__).parent))
    import benchmark

    return {"eager": benchmark.step_profile(compile="off"), "compiled": benchmark.step_profile(compile="on")}


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600)


def mixed_precision(data: Path, out: Path) -> dict:
    if not torch.cuda.is_available():
        return {"status": NO_CUDA}
    res = _cli(
        _command("ns-train"), "genvs", "--data", data, "--max-num-iterations", "3", "--mixed-precision", "True",
        "--vis", "tensorboard", "--output-dir", out, "--experiment-name", "mixed", "--timestamp", "t",
    )  # fmt: skip
    return {"returncode": res.returncode, "stderr_tail": res.stderr[-800:], "ok": res.returncode == 0}


def sample(config: str | None, out: Path) -> dict:
    if not torch.cuda.is_available():
        return {"status": NO_CUDA}
    if config is None or not Path(config).exists():
        return {"error": "no checkpoint: the train check failed"}
    res = _cli(
        _command("genvs-sample"), "--load-config", config, "--output-dir", out, "--sampler", "heun", "--churn", "1",
        "--num-frames", "4", "--steps", "10",
    )  # fmt: skip
    return {"returncode": res.returncode, "stderr_tail": res.stderr[-800:], "ok": res.returncode == 0}


SRN_CARS_TEST_IMAGES = 704 * 250


def evaluate(config: str | None, out: Path) -> dict:
    if not torch.cuda.is_available():
        return {"status": NO_CUDA}
    if config is None or not Path(config).exists():
        return {"error": "no checkpoint: the train check failed"}
    res = _cli(
        _command("genvs-eval"), "--load-config", config, "--output-dir", out, "--split", "train", "--batch-size", "32",
        "--no-save-images",
    )  # fmt: skip
    if res.returncode != 0:
        return {"returncode": res.returncode, "stderr_tail": res.stderr[-800:], "ok": False}
    with open(out / "per_object.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    images, seconds = sum(int(r["views"]) for r in rows), sum(float(r["seconds"]) for r in rows)
    per_s = images / seconds  # the first batch's warm-up included: a lower bound
    return {
        "images": images,
        "seconds": round(seconds, 1),
        "images_per_s": round(per_s, 2),
        "srn_cars_test_hours": round(SRN_CARS_TEST_IMAGES / per_s / 3600, 2),
        "ok": images > 0,
    }


def max_batch(data: Path, out: Path) -> dict:
    """Doubling from 8 objects until a training step runs out of memory (or 512 fits)."""
    if not torch.cuda.is_available():
        return {"status": NO_CUDA}
    from nerfstudio.engine.optimizers import Optimizers

    peaks: dict[int, float] = {}
    objects = 1
    while objects <= 512:
        config = _paper_config(data, out, 1, objects)
        config.pipeline.datamanager.num_workers = 0
        try:
            pipeline = config.pipeline.setup(device="cuda", test_mode="val")
            optimizers = Optimizers(config.optimizers, pipeline.get_param_groups())
            torch.cuda.reset_peak_memory_stats()
            _, losses, _ = pipeline.get_train_loss_dict(0)
            sum(losses.values()).backward()
            optimizers.optimizer_step_all()
            torch.cuda.synchronize()
            peaks[objects] = torch.cuda.max_memory_allocated() / 2**30
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            pipeline = optimizers = losses = None  # noqa: F841 - freed before the next size
            torch.cuda.empty_cache()
        objects = 8 if objects == 1 else objects * 2
    sizes = sorted(peaks)
    per_object = (peaks[sizes[-1]] - peaks[sizes[0]]) / (sizes[-1] - sizes[0]) if len(sizes) > 1 else None
    return {
        "largest_fitting": sizes[-1] if sizes else 0,
        "peak_gib_by_objects": {k: round(v, 2) for k, v in peaks.items()},
        "gib_per_object": round(per_object, 3) if per_object else None,
        "total_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
        "ok": bool(sizes),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="where runs and samples go (default: a temporary dir)")
    parser.add_argument("--steps", type=int, default=60, help="training steps of the train check")
    args = parser.parse_args()
    from genvs_ns.cpu_runtime import flush_denormals, reuse_freed_memory
    from genvs_ns.data.toy import generate

    reuse_freed_memory()
    flush_denormals()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        results: dict = {}
        _check("device", device_info, results)
        _check("trilinear", trilinear, results)
        _check("field_tcnn", field_tcnn, results)
        data = out / "data"
        if torch.cuda.is_available():
            generate(data, num_objects=24, num_views=12, resolution=128, seed=0)
        _check("render_compile", render_compile, results)
        _check("train", lambda: train(data, out / "runs", args.steps), results)
        _check("train_eager", lambda: train(data, out / "runs", args.steps, compile="off"), results)
        _check("losses_match", lambda: losses_match(results["train"], results["train_eager"]), results)
        _check("train_8", lambda: train(data, out / "runs", args.steps, objects=8), results)
        _check("step_profile", step_profile, results)
        _check("nonfinite", lambda: nonfinite(data, out / "runs"), results)
        _check("mixed_precision", lambda: mixed_precision(data, out / "runs"), results)
        _check("sample", lambda: sample(results["train"].get("config"), out / "sample"), results)
        _check("evaluate", lambda: evaluate(results["train"].get("config"), out / "eval"), results)
        _check("max_batch", lambda: max_batch(data, out / "runs"), results)
    failed = [name for name, r in results.items() if "error" in r or r.get("ok") is False]
    results["failed"] = failed
    print(json.dumps(results, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
