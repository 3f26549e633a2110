"""The machine the numbers come from, and its practical fp32 limit.

The limit is a measured square fp32 matmul (torch, all threads): the fastest dense arithmetic
this CPU (or GPU) sustains through the same libraries the models use. A convolution network
reaching a large fraction of it leaves little to gain from further tuning.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from benchmarks.common import Profile, measure, rounded


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The vector and matrix extensions that decide fp32 and int8 speed."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                  if ln.startswith("flags")), [])
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
              "amx_int8")
    return [f for f in wanted if f in flags]


def memory_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return 0.0


def describe() -> dict[str, Any]:
    import onnxruntime
    import torch

    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": memory_gb(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": props.name, "memory_gb": round(props.total_memory / 1024**3, 1),
                       "count": torch.cuda.device_count()}
    return info


def matmul_peak_gflops(n: int, profile: Profile, device: str = "cpu",
                       dtype: str = "float32") -> dict[str, Any]:
    """Sustained GFLOP/s of an n x n x n matmul: 2 n^3 flops per call, best of the repeats."""
    import torch

    kind = getattr(torch, dtype)
    a = torch.randn(n, n, device=device, dtype=kind)
    b = torch.randn(n, n, device=device, dtype=kind)

    def call() -> None:
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()

    timing = measure(call, max(profile.min_repeats, 5), profile.min_seconds, warmup=2)
    flops = 2 * n**3
    return {"n": n, "dtype": dtype, "device": device,
            "gflops": rounded(flops / timing.min_s / 1e9),
            "gflops_median": rounded(flops / timing.median_s / 1e9)}
