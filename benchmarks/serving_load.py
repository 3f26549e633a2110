"""`python -m benchmarks.serving_load`: a bounded load test of the `explain` model on loopback.

Concurrent closed-loop clients (each sends a request, waits for the answer, sends the next)
share a fixed number of requests to a Triton server on this machine, over HTTP or gRPC. It
reports throughput and p50/p99 latency and exits 1 if any request failed. Without `--url` it
exports tiny random-weight models, starts its own server on free loopback ports and stops it
afterwards; `--model-repo` serves an existing repository instead. Only loopback addresses
are accepted as targets, and the run stops after `--requests` or `--max-seconds`.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serving_load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running server's host:port (loopback only)")
    p.add_argument("--model-repo", type=Path, help="serve this repository (default: tiny models)")
    p.add_argument("--protocol", choices=("http", "grpc"), default="http")
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--batch", type=int, default=1, help="images per request")
    p.add_argument("--max-seconds", type=float, default=300.0, help="hard stop for the run")
    p.add_argument("--size", type=int, default=64, help="image size of the tiny models")
    p.add_argument("--json", type=Path, help="also write the summary here")
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.batch < 1:
        p.error("--requests, --concurrency and --batch must be positive")
    return args


def require_loopback(url: str) -> None:
    host = url.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    if not addresses or not all(ipaddress.ip_address(a).is_loopback for a in addresses):
        raise SystemExit(f"refusing to load {url}: the load test only targets loopback")


def tiny_repository(root: Path, size: int) -> Path:
    """Random-weight classifier and generators exported by the real exporter."""
    import torch

    from cfxray.checkpoint import save_atomic
    from cfxray.export.exporter import export_repository
    from cfxray.export.settings import ServingSettings
    from cfxray.models.classifier import ClassifierConfig, build_classifier, classifier_state
    from cfxray.models.networks import GeneratorConfig, build_generator, generators_state

    torch.manual_seed(0)
    classifier = root / "classifier.pt"
    save_atomic(classifier_state(build_classifier(ClassifierConfig(arch="smallcnn",
                                                                   image_size=size))), classifier)
    config = GeneratorConfig(image_size=size, ngf=8, n_blocks=1)
    save_atomic(generators_state(build_generator(config), build_generator(config), config),
                root / "cyclegan" / "generators.pt")
    settings = ServingSettings(max_batch_size=16, preferred_batch_sizes=(8, 16),
                               max_queue_delay_microseconds=1000, instance_kind="KIND_CPU",
                               intra_op_threads=1)
    export_repository(classifier, root / "cyclegan", root / "repo", settings=settings,
                      progress=lambda _: None)
    return root / "repo"


def run_load(url: str, protocol: str, requests: int, concurrency: int, batch: int,
             max_seconds: float) -> dict[str, Any]:
    from cfxray.serving.client import ExplainClient

    with ExplainClient(url, protocol) as probe:
        size = probe.served.size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size), dtype=np.uint8)
    lock = threading.Lock()
    remaining = [requests]
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        try:
            client = ExplainClient(url, protocol)
        except Exception as exc:
            with lock:
                failures.append(f"connect: {exc}")
            return
        with client:
            while time.monotonic() < deadline:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                start = time.perf_counter()
                try:
                    results = client.explain(images)
                    if len(results) != batch:
                        raise RuntimeError(f"{len(results)} results for {batch} images")
                except Exception as exc:
                    with lock:
                        failures.append(str(exc))
                    continue
                with lock:
                    latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 30)
    elapsed = time.perf_counter() - began
    done = len(latencies)
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "protocol": protocol, "concurrency": concurrency, "batch": batch,
        "requests_planned": requests, "requests_ok": done, "requests_failed": len(failures),
        "requests_not_sent": requests - done - len(failures),
        "seconds": round(elapsed, 3),
        "requests_per_s": round(done / elapsed, 2), "images_per_s": round(done * batch / elapsed, 2),
        "latency_ms_p50": round(float(np.percentile(ms, 50)), 2),
        "latency_ms_p99": round(float(np.percentile(ms, 99)), 2),
        "latency_ms_max": round(float(ms.max()), 2),
        "first_failures": failures[:5],
    }


def main(argv: list[str] | None = None) -> int:
    from cfxray.serving.triton import LocalTritonServer, Ports, free_ports

    args = parse_args(argv)
    with ExitStack() as stack:
        url = args.url
        if url:
            require_loopback(url)
        else:
            repo = args.model_repo
            if repo is None:
                root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cfxray-load-")))
                print("exporting tiny random-weight models ...", flush=True)
                repo = tiny_repository(root, args.size)
            server = stack.enter_context(LocalTritonServer(repo, Ports(*free_ports(3))))
            url = server.endpoints[args.protocol]
        print(f"{args.requests} requests of {args.batch} image(s), {args.concurrency} "
              f"concurrent clients, {args.protocol} -> {url}", flush=True)
        summary = run_load(url, args.protocol, args.requests, args.concurrency, args.batch,
                           args.max_seconds)
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    ok = summary["requests_failed"] == 0 and summary["requests_not_sent"] == 0
    print("PASS: zero failed requests" if ok else "FAIL: some requests failed or were not sent")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
