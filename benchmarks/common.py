"""What every benchmark area shares: the run profile, timing, peak memory and test images.

Timing takes the median of repeated calls after warm-up calls (first calls pay for oneDNN
primitive creation, onnxruntime's arena growth and lazy initialisation); the machine is
shared, so the median is the honest summary and the spread is kept next to it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cfxray.train.cyclegan_config import CycleGANTrainConfig

# (ngf, n_blocks): the demo configuration (the CycleGAN trainer's defaults) and the classic
# full-size CycleGAN generator (ngf 64, 9 residual blocks).
DEMO_GENERATOR = (CycleGANTrainConfig.ngf, CycleGANTrainConfig.n_blocks)
GENERATORS: dict[str, tuple[int, int]] = {"demo": DEMO_GENERATOR, "full": (64, 9)}


@dataclass(frozen=True)
class Profile:
    """How much each area measures; `quick` is a smoke run of seconds with tiny models."""

    name: str
    generators: dict[str, tuple[int, int]]
    sizes: tuple[int, ...]
    batches: tuple[int, ...]
    compile: bool  # try torch.compile (minutes of compilation on 2 cores)
    min_repeats: int
    min_seconds: float  # keep repeating a timed call until this much time has passed
    matmul_size: int
    serving_size: int  # image size of the served generator
    serving_model: str  # key of `generators`
    concurrency: tuple[int, ...]
    serving_seconds: float  # load duration per (protocol, batching, concurrency) point
    training: dict[str, dict[str, Any]] = field(default_factory=dict)
    train_steps: int = 3
    quant_model: str = "full"
    quant_size: int = 256
    quant_batch: int = 1
    calibration_images: int = 16
    check_images: int = 8  # held-out phantoms the int8 output is compared on (SSIM)
    explain_model: str = "full"  # explain vs its parts: this generator, at this size
    explain_size: int = 256
    explain_before: bool = True  # also time the graph that ran both generators (one export more)


DEFAULT = Profile(
    name="default", generators=GENERATORS, sizes=(128, 256), batches=(1, 8), compile=True,
    min_repeats=3, min_seconds=2.0, matmul_size=2048, serving_size=128, serving_model="demo",
    concurrency=(1, 2, 4, 8), serving_seconds=6.0,
    training={
        # The demo: prepared data at 64 px, the CycleGAN trainer's defaults and the classifier
        # batch and stem of params.yaml.
        "demo": {"size": 64, "ngf": DEMO_GENERATOR[0], "n_blocks": DEMO_GENERATOR[1],
                 "cyclegan_batch": CycleGANTrainConfig.batch_size,
                 "classifier_batch": 64, "classifier_stem": "small"},
        # Full size: 256 px, ngf 64, 9 blocks, batch 1 (the CycleGAN paper's setting); the
        # classifier at 256 px with a batch of 32 and torchvision's stem.
        "full": {"size": 256, "ngf": 64, "n_blocks": 9, "cyclegan_batch": 1,
                 "classifier_batch": 32, "classifier_stem": "standard"},
    },
    train_steps=3, quant_model="full", quant_size=256, quant_batch=1, calibration_images=16,
)

QUICK = Profile(
    name="quick", generators={"demo": (8, 1), "full": (8, 2)}, sizes=(32,), batches=(1, 2),
    compile=False, min_repeats=2, min_seconds=0.0, matmul_size=256, serving_size=32,
    serving_model="demo", concurrency=(1, 2), serving_seconds=0.5,
    training={"demo": {"size": 32, "ngf": 8, "n_blocks": 1, "cyclegan_batch": 2,
                       "classifier_batch": 8, "classifier_stem": "small"},
              "full": {"size": 32, "ngf": 8, "n_blocks": 2, "cyclegan_batch": 1,
                       "classifier_batch": 4, "classifier_stem": "standard"}},
    train_steps=2, quant_model="full", quant_size=32, quant_batch=2, calibration_images=4,
    check_images=4, explain_size=32, explain_before=False,
)


@dataclass(frozen=True)
class Timing:
    median_s: float
    min_s: float
    max_s: float
    repeats: int

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median_s, "min_s": self.min_s, "max_s": self.max_s,
                "repeats": self.repeats}


HEAVY_CALL_S = 3.0  # a warm-up call slower than this: two timed calls are enough
VERY_HEAVY_CALL_S = 20.0  # ... slower than this: one (a full-size CycleGAN step)


def measure(fn: Callable[[], object], min_repeats: int, min_seconds: float,
            warmup: int = 1, max_repeats: int = 50) -> Timing:
    """Median wall time of `fn()` over at least `min_repeats` calls and `min_seconds`.

    Calls of several seconds vary little relative to their length, so they get at most two
    timed repeats (one past 20 s): that keeps the full-size networks inside `make bench`'s
    15-minute budget on 2 cores.
    """
    warm_s = 0.0
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        warm_s = time.perf_counter() - t0
    if warm_s > HEAVY_CALL_S:
        min_repeats, min_seconds = min(min_repeats, 1 if warm_s > VERY_HEAVY_CALL_S else 2), 0.0
    return _timing(_timed_calls(fn, min_repeats, min_seconds, max_repeats))


def _timed_calls(fn: Callable[[], object], min_repeats: int, min_seconds: float,
                 max_repeats: int = 50) -> list[float]:
    """Wall times of calls to `fn`: at least `min_repeats` and `min_seconds`, at most
    `max_repeats` calls."""
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max_repeats and (len(times) < min_repeats
                                         or time.perf_counter() - started < min_seconds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _timing(times: list[float]) -> Timing:
    return Timing(statistics.median(times), min(times), max(times), len(times))


def measure_interleaved(fns: dict[str, Callable[[], object]], min_repeats: int,
                        min_seconds: float, rounds: int = 3) -> dict[str, Timing]:
    """`measure` for backends compared with each other: timed in `rounds` blocks each, the
    blocks interleaved (order rotating), so every backend sees the same machine. On a shared
    2-core VM, windows a few seconds apart differ by 10-20 %, as much as the speed-ups being
    measured. Each block starts with an untimed call: the other backend's thread pool may still
    be spinning (onnxruntime and OpenMP both spin-wait after work): timed call by call, the
    demo generator's eager median came out 30 % slower right after onnxruntime calls."""
    warm = {name: _timed_calls(fn, 1, 0.0)[0] for name, fn in fns.items()}  # warm-up calls
    if max(warm.values()) > HEAVY_CALL_S:
        min_repeats, min_seconds, rounds = min(min_repeats, 2), 0.0, 1
    per_block = max(1, -(-min_repeats // rounds))
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fns[name]()
            times[name] += _timed_calls(fns[name], per_block, min_seconds / rounds)
    return {name: _timing(t) for name, t in times.items()}


# ----- memory ---------------------------------------------------------------------------------
def _status_kb(pid: int | str, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> bool:
    """Restart this process's peak-RSS counter (Linux clear_refs "5"); False when refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident set size (VmHWM) since start or the last reset, in MiB."""
    return _status_kb(pid, "VmHWM") / 1024


def rss_mb(pid: int | str = "self") -> float:
    return _status_kb(pid, "VmRSS") / 1024


# ----- test images ----------------------------------------------------------------------------
def xray_images(count: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 [count, size, size] phantom chest X-rays (both classes), like training images."""
    from cfxray.data.phantom import render

    return np.stack([render(size, seed, i, i, pneumonia=bool(i % 2)).image
                     for i in range(count)])


def rounded(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")
