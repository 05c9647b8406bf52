"""Benchmarks of genvs-ns on this machine; prints one JSON object.

    .venv/bin/python scripts/benchmark.py                 # everything (several minutes on 2 cores)
    .venv/bin/python scripts/benchmark.py --only matmul denoiser

Each case runs in its own process so that its peak RSS is its own, with freed memory kept for reuse and denormals
flushed, as the pipeline sets them on the CPU (genvs_ns/cpu_runtime.py). Numbers:
- matmul: fp32 and bf16 GFLOP/s of a 2048^3 matmul (the machine's ceiling for the rest);
- train_step_tiny / train_step_paper: median seconds of a full training step (forward, backward, optimizer) after
  warm-up, and peak RSS, for genvs-tiny at its default batch and for genvs (paper sizes) at batch 1, 3 views, 128 px;
- data_time: the share of a training step spent waiting for its batch, at paper size (128 px, 3 source views, 2
  objects a batch), with no image cache (SRN cars' 123k training images make the default cache's hit rate ~3%), with
  the images decoded in the training process (0 workers) and by 2 background workers (the default);
- field_render: samples/s through field + renderer, forward and backward, at the paper field size, with the MLP's
  FLOP/s as a fraction of the measured fp32 matmul rate; beside it the MLP alone and the volume lookup alone on as
  many points, and the time the whole would have to take to reach half the fp32 matmul rate;
- denoiser: denoiser evaluations/s (batch 1, no grad) of the tiny U-Net at 64 px and the paper U-Net at 128 px;
- step_profile: what one paper-size training step (2 objects, 3 source views, 128 px, the model's autocast, the EMA
  update) asks of the framework, counted with torch.profiler: aten operators, copies by .to() (aten::_to_copy: tensor
  dtype casts, Python numbers cast for an operator, memory-format copies), host reads of tensor values
  (aten::_local_scalar_dense: .item(), bool(), float() of a tensor; on a GPU each one waits for it), the operators
  by the part of the step that made them, and the step time; on CUDA also kernel launches and the GPU's busy share.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ["matmul", "train_step_tiny", "train_step_paper", "data_time", "field_render", "denoiser", "step_profile"]


def _timeit(fn, warmup: int, repeat: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul() -> dict:
    import torch

    n = 2048
    result = {}
    for name, dtype in [("fp32", torch.float32), ("bf16", torch.bfloat16)]:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        t = statistics.median(_timeit(lambda a=a, b=b: a @ b, 2, 5))
        result[f"{name}_gflops"] = round(2 * n**3 / t / 1e9, 1)
    return result


def _setup_step(
    preset: str, tmp: str, objects: int | None = None, sources: int | None = None, device: str = "cpu",
    compile: str = "auto", workers: int = 0, image_cache_size: int | None = None,
):  # fmt: skip
    """A pipeline, its optimizers and one training step (forward, backward, optimizer, EMA) as a function."""
    from nerfstudio.engine.optimizers import Optimizers

    from genvs_ns.config import genvs_tiny_trainer, genvs_trainer
    from genvs_ns.data.toy import generate

    if preset == "tiny":
        config = genvs_tiny_trainer()
        generate(Path(tmp), num_objects=12, num_views=8, resolution=64, seed=0)
    else:
        config = genvs_trainer()
        generate(Path(tmp), num_objects=6, num_views=8, resolution=128, seed=0)
    dm = config.pipeline.datamanager
    if objects is not None:
        dm.objects_per_batch = objects
    if sources is not None:
        dm.min_source_views = dm.max_source_views = sources
    dm.data, dm.num_workers = Path(tmp), workers
    if image_cache_size is not None:
        dm.image_cache_size = image_cache_size
    config.pipeline.model.compile = compile
    pipeline = config.pipeline.setup(device=device, test_mode="val")
    optimizers = Optimizers(config.optimizers, pipeline.get_param_groups())
    callbacks = pipeline.get_training_callbacks(None)
    counter = iter(range(1 << 62))

    def step() -> None:
        i = next(counter)
        optimizers.zero_grad_all()
        _, losses, _ = pipeline.get_train_loss_dict(i)
        sum(losses.values()).backward()
        optimizers.optimizer_step_all()
        for cb in callbacks:
            cb.run_callback_at_location(i, cb.where_to_run[0])

    return pipeline, step


def _outside(events, name: str, ancestor_prefix: str) -> int:
    """Events called ``name`` (or, ending in ``::``, whose name starts with it) with no ancestor whose name starts
    with ``ancestor_prefix``."""

    named = (lambda n: n.startswith(name)) if name.endswith("::") else (lambda n: n == name)
    return sum(1 for e in events if named(e.name) and not _inside(e, ancestor_prefix))


def _inside(event, ancestor_prefix: str) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(ancestor_prefix):
            return True
        parent = parent.cpu_parent
    return False


_PART = "part: "


def _label_parts(pipeline) -> None:
    """Profiler labels on the training step's parts, on this pipeline's objects only (the model is not changed): the
    encoder and field modules, the target and warp renders, the auxiliary ray renders, the denoising loss, the EMA
    update."""
    from torch.profiler import record_function

    import genvs_ns.model.genvs_model as genvs_model

    net = pipeline.model.net

    def labelled(label: str, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with record_function(_PART + label):
                return function(*args, **kwargs)

        return wrapper

    net.encode = labelled("encoder", net.encode)  # a method around the (maybe compiled) encoder, not its forward
    net.field.forward = labelled("field", net.field.forward)
    net.render_image = labelled("target and warp renders", net.render_image)
    net.render_pixels = labelled("auxiliary ray renders", net.render_pixels)
    net.denoiser.loss = labelled("denoiser loss (U-Net)", net.denoiser.loss)
    genvs_model.ema_update = labelled("EMA update", genvs_model.ema_update)


def _operators_by_part(events) -> dict[str, int]:
    parts: dict[str, int] = {}
    for event in events:
        if not event.name.startswith("aten::"):
            continue
        part, parent = "other", event.cpu_parent
        while parent is not None:
            if parent.name.startswith(_PART):
                part = parent.name[len(_PART) :]
                break
            if parent.name.startswith("Optimizer.step"):
                part = "optimizer step"
                break
            if parent.name.startswith("autograd::engine"):
                part = "backward"
                break
            parent = parent.cpu_parent
        parts[part] = parts.get(part, 0) + 1
    return dict(sorted(parts.items(), key=lambda kv: -kv[1]))


def _to_copy_kinds(events, outside: str | None = None) -> dict[str, int]:
    """``aten::_to_copy`` calls (every ``.to()`` that copies) by what they copy: ``tensor_dtype_casts`` (a tensor to
    another dtype: autocast's weight casts, their gradients cast back), ``scalar_casts`` (a 0-dim input: a Python number
    an operator wrapped as a host tensor and converts to its operand's dtype; ``x * 0.5`` makes one) and
    ``layout_copies`` (no other dtype asked for: a memory-format or device copy, as oneDNN's convolution backward makes
    of channels-last weights). With ``outside``, only calls with no ancestor whose name starts with it. Needs a profile
    with record_shapes."""
    kinds = {"tensor_dtype_casts": 0, "scalar_casts": 0, "layout_copies": 0}
    names = _dtype_names()
    for event in events:
        if event.name != "aten::_to_copy" or (outside is not None and _inside(event, outside)):
            continue
        shape = event.input_shapes[0] if event.input_shapes else None
        asked = event.concrete_inputs[1] if len(event.concrete_inputs) > 1 else None
        same = asked is None or names.get(asked) == (event.input_dtypes[0] if event.input_dtypes else None)
        kinds["scalar_casts" if shape == [] else "layout_copies" if same else "tensor_dtype_casts"] += 1
    return kinds


@functools.cache
def _dtype_names() -> dict[int, str]:
    """The profiler records a ``.to()``'s dtype argument as its ScalarType number and its input's dtype as a C++ type
    name: which number is which name, read off profiles of known casts (an unknown number counts as a dtype cast)."""
    import torch
    from torch.profiler import profile

    dtypes = [torch.uint8, torch.int8, torch.int32, torch.int64, torch.float16, torch.bfloat16, torch.float32,
              torch.float64, torch.bool]  # fmt: skip
    names = {}
    for dtype in dtypes:
        other = torch.float64 if dtype == torch.float32 else torch.float32
        with profile(record_shapes=True) as prof:
            torch.zeros(2, dtype=dtype).to(other)
            torch.zeros(2, dtype=other).to(dtype)
        casts = [e for e in prof.events() if e.name == "aten::_to_copy"]
        names[casts[1].concrete_inputs[1]] = casts[0].input_dtypes[0]
    return names


def step_profile(compile: str = "auto") -> dict:
    """Operators, casts and host reads of one paper-size training step (see the module docstring)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        pipeline, step = _setup_step("paper", tmp, objects=2, sources=3, device=device, compile=compile)

        def synced_step() -> None:
            step()
            if device == "cuda":
                torch.cuda.synchronize()

        # Labelled before the first step: a compiled render relabelled later would compile again in the profile.
        _label_parts(pipeline)
        times = _timeit(synced_step, 3, 3)  # a compiled U-Net compiles in the first
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with profile(activities=activities, record_shapes=True) as prof:
            synced_step()
    events = prof.key_averages()
    count = {e.key: e.count for e in events}
    result = {
        "device": device,
        "objects_per_batch": 2,
        "source_views": 3,
        "precision": pipeline.model.config.precision,
        "compile": compile,
        "median_step_s": round(statistics.median(times), 3),
        "aten_operators": sum(n for k, n in count.items() if k.startswith("aten::")),
        # Every copying .to(), as the issue counted them (its "dtype casts"), and split by what they copy.
        "to_copy_calls": count.get("aten::_to_copy", 0),
        **_to_copy_kinds(prof.events()),
        "host_reads": count.get("aten::_local_scalar_dense", 0),
        # The CPU's fused Adam reads each parameter's step counter inside its kernel (~750 a step here, no wait on a
        # CPU; on CUDA the counters stay on the device): the reads the step's own code makes are the others.
        "host_reads_outside_fused_adam": _outside(prof.events(), "aten::_local_scalar_dense", "aten::_fused_adam"),
        # On the CPU torch's Adam/AdamW step also increments every parameter's step counter one tensor at a time
        # (_foreach_add_ has no CPU kernel: an add_ and a scalar cast each, 783 here); on CUDA that is one fused
        # kernel. What the model's own forward, backward and EMA ask for are the figures outside the optimizer step.
        "aten_operators_outside_optimizer": _outside(prof.events(), "aten::", "Optimizer.step"),
        "outside_optimizer": _to_copy_kinds(prof.events(), outside="Optimizer.step"),
        # Which part of the step makes them: each operator counted under its nearest labelled caller (a forward
        # part, the backward, the optimizer step); "other" is the step's glue (losses, data on the device).
        "aten_operators_by_part": _operators_by_part(prof.events()),
        "top_operators": dict(sorted(((k, n) for k, n in count.items() if k.startswith("aten::")),
                                     key=lambda kv: -kv[1])[:12]),
    }  # fmt: skip
    if device == "cuda":
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        result["kernel_launches"] = len(kernels)
        result["gpu_busy_share"] = round(sum(e.device_time for e in kernels) / 1e6 / max(times[-1], 1e-9), 3)
        by_kernel: dict[str, float] = {}
        for e in kernels:
            by_kernel[e.name] = by_kernel.get(e.name, 0.0) + e.device_time / 1e3
        result["top_kernels_ms"] = {
            k[:80]: round(v, 2) for k, v in sorted(by_kernel.items(), key=lambda kv: -kv[1])[:10]
        }
        result["fused_attention"] = any("flash" in k.lower() or "efficient_attention" in k.lower() for k in by_kernel)
    return result


def _train_step(preset: str, steps: int, workers: int | None = None) -> dict:
    import torch

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        # The paper preset at batch 1 (3 views), or at 2 objects with no image cache when data loading is measured.
        objects = (2 if workers is not None else 1) if preset == "paper" else None
        pipeline, step = _setup_step(
            preset, tmp, objects=objects, sources=3 if preset == "paper" else None, workers=workers or 0,
            image_cache_size=0 if workers is not None else None,
        )  # fmt: skip
        dm = pipeline.datamanager
        data_times = []
        next_train = dm.next_train

        def timed_next_train(step: int):
            start = time.perf_counter()
            out = next_train(step)
            data_times.append(time.perf_counter() - start)
            return out

        dm.next_train = timed_next_train  # type: ignore[method-assign]
        times = _timeit(step, 2, steps)
        params = {k: round(sum(p.numel() for p in v) / 1e6, 2) for k, v in pipeline.get_param_groups().items()}
    data = data_times[-steps:]
    cfg = dm.config
    return {
        "median_step_s": round(statistics.median(times), 3),
        "median_data_s": round(statistics.median(data), 4),
        "data_share": round(sum(data) / sum(times), 4),
        "steps_timed": steps,
        "objects_per_batch": getattr(dm, "objects_per_batch", cfg.objects_per_batch),  # older commits: the config
        "source_views": [cfg.min_source_views, cfg.max_source_views],
        "num_workers": cfg.num_workers,
        "image_cache_size": cfg.image_cache_size,
        "params_millions": params,
        "peak_rss_mb": round(_peak_rss_mb()),
    }


def train_step_tiny() -> dict:
    return _train_step("tiny", 20)


def train_step_paper() -> dict:
    return _train_step("paper", 4)


def data_time() -> dict:
    out = {}
    for workers in (0, 2):
        run = _train_step("paper", 4, workers)
        out[f"workers_{workers}"] = {k: run[k] for k in ("median_step_s", "median_data_s", "data_share")}
    return {**out, "objects_per_batch": 2, "resolution": 128, "source_views": 3, "image_cache_size": 0}


def field_render() -> dict:
    import numpy as np
    import torch

    from genvs_ns.data.toy import look_at_c2w_opencv, random_camera_positions
    from genvs_ns.geometry import image_rays
    from genvs_ns.model.field import FrustumField
    from genvs_ns.model.renderer import RenderSettings, render_rays

    rates = matmul()
    torch.manual_seed(0)
    B, V, C, D, hw, rays, coarse, fine = 1, 3, 16, 64, 64, 64 * 64, 64, 64
    field = FrustumField(C, 64, 3, 16, "torch", colour_inputs=True)  # as the model builds it (rgb_skip)
    # Laid out as GeNVSNetwork.encode lays them out (channels-last).
    volumes = torch.randn(B * V, C, D, hw, hw).contiguous(memory_format=torch.channels_last_3d)
    volumes = volumes.view(B, V, C, D, hw, hw).requires_grad_()
    positions = random_camera_positions(np.random.default_rng(0), V + 1)
    cams = np.stack([look_at_c2w_opencv(p) @ np.diag([1, -1, -1, 1]) for p in positions])
    c2w = torch.tensor(cams[:, :3], dtype=torch.float32)
    K = torch.tensor([[131.25, 0, 64], [0, 131.25, 64], [0, 0, 1]]).expand(V + 1, 3, 3)
    origins, directions = image_rays(c2w[None, V], K[None, V], (128, 128), (hw, hw))
    background = torch.ones(16)
    result = {"rays": rays, "samples_per_ray": coarse + fine, "views": V}
    mlp_flops = 2 * (field.mlp.in_dim * 64 + 64 * 64 + 64 * 17)  # per sample, forward

    def fn(autocast: bool) -> None:
        def field_fn(points):
            feats = field.lookup(volumes, points, c2w[None, :V], K[None, :V], (128, 128), 0.5)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return field(feats)

        out = render_rays(field_fn, origins, directions, RenderSettings(0.5, coarse, fine, True), background)
        (out.features.sum() + out.depth.sum()).backward()

    samples = rays * (coarse + fine)
    feats = torch.rand(B, samples, field.mlp.in_dim, requires_grad=True)

    def mlp_alone(autocast: bool) -> None:
        # The field's MLP on as many points, nothing else: what its matmuls reach at this shape (the ceiling).
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            density, latent = field(feats)
        (density.sum() + latent.sum()).backward()

    # As many ray samples as field_render looks up (stratified along the same rays), through the lookup alone.
    depths = (torch.arange(coarse + fine) + torch.rand(rays, coarse + fine)) / (coarse + fine) * (1.8 - 0.8) + 0.8
    points = (origins[0, :, None] + directions[0, :, None] * depths[..., None]).reshape(B, -1, 3)

    def lookup_alone() -> None:
        field.lookup(volumes, points, c2w[None, :V], K[None, :V], (128, 128), 0.5).sum().backward()

    lookup_s = statistics.median(_timeit(lookup_alone, 1, 3))
    result["lookup_alone_seconds"] = round(lookup_s, 3)
    # What the whole of field_render may take to reach half the fp32 matmul rate.
    result["seconds_at_half_of_fp32_matmul"] = round(3 * mlp_flops * samples / (0.5 * rates["fp32_gflops"] * 1e9), 3)

    # Both precisions are measured against the fp32 matmul rate (the yardstick); bf16 autocast is what the
    # model runs.
    for name, autocast in [("fp32", False), ("bf16", True)]:
        entry = {}
        for case, case_fn in [("field_render", fn), ("mlp_alone", mlp_alone)]:
            t = statistics.median(_timeit(functools.partial(case_fn, autocast), 1, 3))
            achieved = 3 * mlp_flops * samples / t  # forward + backward ~ 3x forward
            entry[case] = {
                "seconds": round(t, 3),
                "samples_per_s": round(samples / t),
                "mlp_gflops": round(achieved / 1e9, 1),
                "fraction_of_fp32_matmul": round(achieved / 1e9 / rates["fp32_gflops"], 3),
            }
        result[name] = entry
    result["matmul"] = rates
    return result


def _denoise(den, x, sigma, cond, autocast: bool):
    import torch

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return den(x, sigma, cond).float()


def denoiser() -> dict:
    import torch

    from genvs_ns.model.denoiser import ConditionedDenoiser

    result = {}
    for name, config, px in [("tiny_64px", "denoiser_tiny.json", 64), ("paper_128px", "denoiser_paper.json", 128)]:
        den = ConditionedDenoiser(config, 16).eval()
        # k-diffusion zero-initialises the output layer; without this every precision would agree trivially.
        torch.nn.init.normal_(den.denoiser.inner_model.proj_out.weight, std=0.05)
        x, cond, sigma = torch.randn(1, 3, px, px), torch.randn(1, 16, px, px), torch.full((1,), 2.0)
        entry = {"params_millions": round(sum(p.numel() for p in den.parameters()) / 1e6, 2)}
        reference = None
        for prec, autocast in [("fp32", False), ("bf16", True)]:
            fn = functools.partial(_denoise, den, x, sigma, cond, autocast)
            t = statistics.median(_timeit(fn, 1, 5 if px == 64 else 3))
            entry[f"{prec}_evals_per_s"] = round(1 / t, 2)
            out = fn()
            if reference is None:
                reference = out
            else:
                entry["bf16_rel_err_vs_fp32"] = round(float((out - reference).norm() / reference.norm()), 5)
        result[name] = entry
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=CASES, default=CASES)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        from genvs_ns.cpu_runtime import flush_denormals, reuse_freed_memory

        # As the pipeline does on the CPU, for every case alike (before any worker thread starts).
        reuse_freed_memory()
        flush_denormals()
        print(json.dumps(globals()[args.case]()))
        return
    results = {}
    for case in args.only:
        res = subprocess.run([sys.executable, __file__, "--case", case], capture_output=True, text=True)
        if res.returncode != 0:
            results[case] = {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
        else:
            results[case] = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
