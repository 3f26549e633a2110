"""Triton serving against in-process onnxruntime, on the same ONNX generator and machine.

One local Triton server (the launcher `cfxray serve` uses) serves the generator twice from
one repository, the same ONNX file under both generator names: `generator_p2n` with dynamic
batching and `generator_n2p` without (one server start instead of two). Closed-loop clients
(each sends one image, waits for the answer, sends the next) load it at each concurrency over
HTTP and gRPC. The in-process reference is the same closed loop calling one shared
onnxruntime session from as many threads: what serving costs is the throughput lost between
the two.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Profile, rounded, xray_images
from benchmarks.models import onnx_generator

BATCHED, UNBATCHED = "generator_p2n", "generator_n2p"


def serving_settings(profile: Profile, threads: int) -> Any:
    """Triton's scheduler settings: one model instance per core, one onnxruntime thread each.

    Measured here at concurrency 4: one instance with 2 intra-op threads lost 30% to
    in-process onnxruntime, two single-threaded instances lost about 1% (and the in-process
    reference itself is faster with single-threaded sessions): a convolution at batch 1-4
    splits poorly over threads, while independent requests keep both cores busy. No queue
    delay: with a delay (500 µs measured) the scheduler holds the second of two concurrent
    requests to batch it with the first, so one instance runs a batch of two while the other
    idles (throughput at concurrency 2 half of in-process). Without one, a request goes to
    any free instance at once, and batches form only from requests that queued while every
    instance was busy, which is when batching pays.
    """
    from cfxray.export.settings import ServingSettings

    top = max(profile.concurrency)
    return ServingSettings(max_batch_size=top, preferred_batch_sizes=(top,),
                           max_queue_delay_microseconds=0, instance_count=threads,
                           instance_kind="KIND_CPU", intra_op_threads=1)


def write_repository(onnx_path: Path, repo: Path, size: int, settings: Any) -> None:
    from cfxray.contract import MODEL_SPECS
    from cfxray.export.model_repository import (
        ONNX_FILE,
        config_header,
        production_config,
        write_config,
    )

    for name, batching in ((BATCHED, True), (UNBATCHED, False)):
        spec = MODEL_SPECS[name]
        config = production_config(spec, size, settings)
        if not batching:
            del config["dynamic_batching"]
        write_config(repo / name, config, config_header(spec))
        (repo / name / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(onnx_path, repo / name / "1" / ONNX_FILE)


# ----- closed-loop load ------------------------------------------------------------------------
def closed_loop(make_call: Callable[[int], Callable[[np.ndarray], object]], images: np.ndarray,
                concurrency: int, seconds: float, warmup_calls: int = 2) -> dict[str, Any]:
    """`concurrency` threads, each calling its own `make_call(i)` back to back for `seconds`."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []
    clock = {"start": 0.0, "stop": 0.0}

    def open_gate() -> None:  # run once, by the last thread to arrive, before any is released
        clock["start"] = time.perf_counter()
        clock["stop"] = clock["start"] + seconds

    start_gate = threading.Barrier(concurrency + 1, action=open_gate)

    def worker(i: int) -> None:
        try:
            call = make_call(i)
            for k in range(warmup_calls):
                call(images[(i + k) % len(images)][None])
        except BaseException as exc:  # reported below, after every thread has joined
            errors.append(exc)
        start_gate.wait()
        k = 0
        while not errors and (k == 0 or time.perf_counter() < clock["stop"]):
            t0 = time.perf_counter()
            try:
                call(images[(i + k) % len(images)][None])
            except BaseException as exc:
                errors.append(exc)
                break
            latencies[i].append(time.perf_counter() - t0)
            k += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    start_gate.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - clock["start"]
    if errors:
        raise RuntimeError(f"load at concurrency {concurrency} failed: {errors[0]!r}")
    done = sorted(x for per in latencies for x in per)
    if not done:
        raise RuntimeError(f"no request finished within {seconds} s at concurrency {concurrency}")
    return {"concurrency": concurrency, "requests": len(done),
            "images_per_s": rounded(len(done) / elapsed),
            "p50_ms": rounded(_percentile(done, 50) * 1e3),
            "p99_ms": rounded(_percentile(done, 99) * 1e3),
            "mean_ms": rounded(statistics.fmean(done) * 1e3)}


def _percentile(sorted_values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(sorted_values), q))


def triton_call(protocol: str, url: str, model: str) -> Callable[[int], Callable[[np.ndarray], object]]:
    """One tritonclient client per thread (clients are not shared between threads)."""
    def make(_: int) -> Callable[[np.ndarray], object]:
        if protocol == "http":
            import tritonclient.http as client
        else:
            import tritonclient.grpc as client
        connection = client.InferenceServerClient(url)

        def call(batch: np.ndarray) -> object:
            inp = client.InferInput("IMAGE", list(batch.shape), "UINT8")
            inp.set_data_from_numpy(batch)
            out = connection.infer(model, [inp],
                                   outputs=[client.InferRequestedOutput("COUNTERFACTUAL")])
            return out.as_numpy("COUNTERFACTUAL")
        return call
    return make


def server_like_session(path: Path, settings: Any) -> Any:
    """An onnxruntime session with the options the served model gets (its `model.py`):
    intra-op threads from the config, one inter-op thread, onnxruntime's default graph
    optimisation. Same model, same options: the difference is what serving costs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    if settings.intra_op_threads > 0:
        options.intra_op_num_threads = settings.intra_op_threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_call(session: Any) -> Callable[[int], Callable[[np.ndarray], object]]:
    def make(_: int) -> Callable[[np.ndarray], object]:
        return lambda batch: session.run(["COUNTERFACTUAL"], {"IMAGE": batch})
    return make


# ----- server memory ---------------------------------------------------------------------------
def _server_group_pids() -> list[int]:
    """tritonserver (a child of this process) and its Python-backend stubs (its group)."""
    import os

    leaders = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            name = stat.read_text().split("(", 1)[1].rsplit(")", 1)[0]
        except (OSError, IndexError):
            continue
        if int(fields[1]) == os.getpid() and name == "tritonserver":
            leaders.append(int(stat.parent.name))
    group = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pgid = int(stat.read_text().rsplit(")", 1)[1].split()[2])
        except (OSError, IndexError, ValueError):
            continue
        if pgid in leaders:
            group.append(int(stat.parent.name))
    return group


class RssSampler:
    """The server group's summed RSS, sampled every 50 ms; `peak_mb` is the largest sum."""

    def __init__(self, pids: list[int]) -> None:
        self.pids, self.peak_mb = pids, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        from benchmarks.common import rss_mb

        while not self._stop.is_set():
            total = 0.0
            for pid in self.pids:
                with contextlib.suppress(OSError):
                    total += rss_mb(pid)
            self.peak_mb = max(self.peak_mb, total)
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ----- the area --------------------------------------------------------------------------------
def run(profile: Profile, threads: int, workdir: Path) -> dict[str, Any]:
    from cfxray.serving.triton import LocalTritonServer, Ports, free_ports

    ngf, blocks = profile.generators[profile.serving_model]
    size = profile.serving_size
    images = xray_images(8, size, seed=1)
    settings = serving_settings(profile, threads)
    result: dict[str, Any] = {
        "model": profile.serving_model, "size": size, "request_batch": 1,
        "settings": {"max_batch_size": settings.max_batch_size,
                     "preferred_batch_sizes": list(settings.preferred_batch_sizes),
                     "max_queue_delay_microseconds": settings.max_queue_delay_microseconds,
                     "instance_count": settings.instance_count,
                     "intra_op_threads": settings.intra_op_threads},
        "seconds_per_point": profile.serving_seconds,
        "backend_note": "local Triton serves ONNX through its Python backend running "
                        "onnxruntime (the bundled server has no ONNX Runtime backend)",
    }
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        onnx_path = onnx_generator(workdir, ngf, blocks)
        session = server_like_session(onnx_path, settings)
        result["in_process"] = [closed_loop(ort_call(session), images, c, profile.serving_seconds)
                                for c in profile.concurrency]
        del session
        repo = Path(tmp) / "repo"
        write_repository(onnx_path, repo, size, settings)
        http, grpc, metrics = free_ports(3)
        triton: list[dict[str, Any]] = []
        with LocalTritonServer(repo, Ports(http, grpc, metrics)) as server:
            pids = _server_group_pids()
            result["server_idle_rss_mb"] = rounded(sum(_safe_rss(p) for p in pids))
            with RssSampler(pids) as sampler:
                for protocol, port in (("http", http), ("grpc", grpc)):
                    url = f"{server.host}:{port}"
                    for model, batching in ((BATCHED, True), (UNBATCHED, False)):
                        for c in profile.concurrency:
                            point = closed_loop(triton_call(protocol, url, model), images, c,
                                                profile.serving_seconds)
                            triton.append({"protocol": protocol, "dynamic_batching": batching,
                                           **point})
            result["server_peak_rss_mb"] = rounded(sampler.peak_mb)
        result["triton"] = triton
    result["overhead"] = overhead_table(result["in_process"], triton)
    return result


def _safe_rss(pid: int) -> float:
    from benchmarks.common import rss_mb

    try:
        return rss_mb(pid)
    except OSError:
        return 0.0


def overhead_table(in_process: list[dict[str, Any]], triton: list[dict[str, Any]]
                   ) -> list[dict[str, Any]]:
    """Per Triton point: 1 - its throughput / in-process throughput at the same concurrency."""
    reference = {p["concurrency"]: p["images_per_s"] for p in in_process}
    return [{"protocol": t["protocol"], "dynamic_batching": t["dynamic_batching"],
             "concurrency": t["concurrency"],
             "overhead": rounded(1 - t["images_per_s"] / reference[t["concurrency"]], 3)}
            for t in triton if t["concurrency"] in reference]
