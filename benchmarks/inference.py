"""Generator inference: PyTorch eager, channels_last, torch.compile and onnxruntime.

Every backend runs the served module (uint8 pixels in, [0, 1] images out) on the same
phantom X-rays, with the same thread count. Achieved GFLOP/s counts the generator's
convolution FLOPs (FlopCounterMode) and is set against the measured matmul peak.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.common import Profile, measure, measure_interleaved, rounded, xray_images
from benchmarks.models import (
    flops_per_image,
    generator,
    onnx_generator,
    ort_session,
    serving_module,
)

BACKENDS = ("eager", "channels_last", "compile", "onnxruntime")


def _torch_runner(module: torch.nn.Module, images: np.ndarray) -> Callable[[], object]:
    x = torch.from_numpy(images)

    def run() -> object:
        with torch.inference_mode():
            return module(x)
    return run


def _compiled(module: torch.nn.Module, images: np.ndarray) -> tuple[Callable[[], object], float]:
    """A torch.compile'd runner, and the seconds its first call (the compilation) took."""
    compiled = torch.compile(module, dynamic=False)
    run = _torch_runner(compiled, images)
    started = time.perf_counter()
    run()
    return run, time.perf_counter() - started


def _row(model: str, size: int, batch: int, backend: str, seconds: float, flops: int,
         peak_gflops: float, **extra: Any) -> dict[str, Any]:
    gflops = flops * batch / seconds / 1e9
    return {"model": model, "size": size, "batch": batch, "backend": backend,
            "images_per_s": rounded(batch / seconds), "ms_per_image": rounded(seconds / batch * 1e3),
            "gflops": rounded(gflops), "fraction_of_peak": rounded(gflops / peak_gflops, 3),
            **extra}


def run(profile: Profile, peak_gflops: float, threads: int, workdir: Path) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    exports: dict[str, float] = {}
    points = [(m, s) for m in profile.generators for s in profile.sizes]
    bar = tqdm(points, desc="inference", leave=False)
    for name, size in bar:
        ngf, blocks = profile.generators[name]
        model = generator(ngf, blocks, size)
        flops = flops_per_image(ngf, blocks, size)
        started = time.perf_counter()
        path = onnx_generator(workdir, ngf, blocks)
        exports.setdefault(name, round(time.perf_counter() - started, 1))
        session = ort_session(path, threads)
        eager = serving_module(model)
        channels_last = serving_module(
            generator(ngf, blocks, size).to(memory_format=torch.channels_last))
        for batch in profile.batches:
            bar.set_postfix(model=name, size=size, batch=batch)
            images = xray_images(batch, size)
            runners: dict[str, Callable[[], object]] = {
                "eager": _torch_runner(eager, images),
                "channels_last": _torch_runner(channels_last, images),
                "onnxruntime": lambda s=session, x=images: s.run(None, {"IMAGE": x}),
            }
            timings = measure_interleaved(runners, profile.min_repeats, profile.min_seconds)
            for backend, t in timings.items():
                rows.append(_row(name, size, batch, backend, t.median_s, flops, peak_gflops,
                                 spread_s=[rounded(t.min_s), rounded(t.max_s)]))
            if profile.compile and _compile_here(name, size, batch, profile):
                fn, compile_s = _compiled(serving_module(generator(ngf, blocks, size)), images)
                t = measure(fn, profile.min_repeats, profile.min_seconds)
                rows.append(_row(name, size, batch, "compile", t.median_s, flops, peak_gflops,
                                 spread_s=[rounded(t.min_s), rounded(t.max_s)],
                                 compile_s=round(compile_s, 1)))
        del session
    if profile.compile:
        notes.append(f"torch.compile (inductor, dynamic=False) is measured for the demo "
                     f"generator at {min(profile.sizes)} px, batch {max(profile.batches)} only: "
                     "every new shape recompiles, for minutes on 2 cores.")
    else:
        notes.append("torch.compile skipped in this profile (compilation takes minutes).")
    return {"rows": rows, "flops_per_image": _flops_table(profile), "export_seconds": exports,
            "notes": notes}


def _compile_here(name: str, size: int, batch: int, profile: Profile) -> bool:
    return name == "demo" and size == min(profile.sizes) and batch == max(profile.batches)


def _flops_table(profile: Profile) -> dict[str, dict[str, float]]:
    return {name: {str(s): rounded(flops_per_image(ngf, blocks, s) / 1e9)
                   for s in profile.sizes}
            for name, (ngf, blocks) in profile.generators.items()}


def onnx_speedups(rows: list[dict[str, Any]], batch: int) -> list[dict[str, Any]]:
    """onnxruntime's per-image speed over PyTorch eager at `batch`, per model and size."""
    by_key = {(r["model"], r["size"], r["batch"], r["backend"]): r for r in rows}
    out = []
    for (model, size, b, backend), row in by_key.items():
        if backend == "onnxruntime" and b == batch and (model, size, b, "eager") in by_key:
            eager = by_key[(model, size, b, "eager")]
            out.append({"model": model, "size": size, "batch": b,
                        "speedup": rounded(eager["ms_per_image"] / row["ms_per_image"], 3)})
    return out
