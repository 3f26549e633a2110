"""`python -m benchmarks.run [--quick] [--out DIR]`: every benchmark area in one run.

Writes DIR/latest.json (every number) and DIR/RESULTS.md (the tables, with the machine
described), and prints PASS or MISS per target. An area that fails is recorded with its
error and the run goes on; the exit status is 1 when any area failed, 0 otherwise (a missed
target is a finding, not a crash).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

AREAS = ("inference", "explain", "serving", "training", "quantization", "gpu")
DEFAULT_OUT = Path(__file__).parent / "results"
README = Path(__file__).resolve().parents[1] / "README.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: tiny models and images, seconds per area")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"folder for latest.json and RESULTS.md (default {DEFAULT_OUT})")
    p.add_argument("--only", action="append", choices=AREAS, default=None,
                   help="run only this area (repeatable); the machine is always described")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for torch and onnxruntime (default: the usable CPUs)")
    return p.parse_args(argv)


def _timed_area(name: str, fn: Callable[[], dict[str, Any]], seconds: dict[str, float]
                ) -> dict[str, Any]:
    print(f"[bench] {name} ...", flush=True)
    started = time.perf_counter()
    try:
        result = fn()
    except Exception as exc:  # recorded in the results; the other areas still run
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
    seconds[name] = round(time.perf_counter() - started, 1)
    print(f"[bench] {name} done in {seconds[name]:.0f} s", flush=True)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from benchmarks import explain, gpu, inference, machine, quantization, serving, training
    from benchmarks.common import DEFAULT, QUICK
    from benchmarks.targets import check

    profile = QUICK if args.quick else DEFAULT
    threads = args.threads or len(os.sched_getaffinity(0))
    if threads < 1:
        raise SystemExit("--threads must be at least 1")
    torch.set_num_threads(threads)
    areas = args.only or list(AREAS)
    started, t0 = datetime.now(UTC), time.perf_counter()
    area_seconds: dict[str, float] = {}
    results: dict[str, Any] = {"machine": machine.describe()}
    results["peak"] = machine.matmul_peak_gflops(profile.matmul_size, profile)
    peak = results["peak"]["gflops"]
    with tempfile.TemporaryDirectory(prefix="cfxray-bench-") as tmp:
        workdir = Path(tmp)  # ONNX files exported once and shared by the areas
        runners: dict[str, Callable[[], dict[str, Any]]] = {
            "inference": lambda: inference.run(profile, peak, threads, workdir),
            "explain": lambda: explain.run(profile, threads, workdir),
            "serving": lambda: serving.run(profile, threads, workdir),
            "training": lambda: training.run(profile),
            "quantization": lambda: quantization.run(profile, threads, workdir),
            "gpu": lambda: gpu.run(profile, workdir),
        }
        for area in AREAS:
            if area in areas:
                results[area] = _timed_area(area, runners[area], area_seconds)
    # The peak again at the end: on a shared machine either measurement may be depressed,
    # and the higher one is the better estimate of the limit (fractions use the first).
    results["peak_at_end"] = machine.matmul_peak_gflops(profile.matmul_size, profile)
    results["memory"] = memory_summary(results)
    results["targets"] = check(results)
    results["run"] = {"profile": profile.name, "threads": threads,
                      "started_utc": started.strftime("%Y-%m-%d %H:%M"),
                      "seconds": round(time.perf_counter() - t0, 1), "area_seconds": area_seconds}
    return results


def memory_summary(results: dict[str, Any]) -> dict[str, Any]:
    """Peak memory from the areas that measured it, in one place."""
    rows = []
    for area in ("training", "gpu"):
        section = results.get(area) or {}
        for r in section.get("rows", section.get("training", [])) if "error" not in section \
                else []:
            rows.append({"what": f"{r['trainer']} training step ({r['config']}, {r['size']} px, "
                                 f"batch {r['batch']}, {r['device']} {r['precision']})",
                         "peak_rss_mb": r.get("peak_rss_mb"),
                         "gpu_peak_allocated_mb": r.get("gpu_peak_allocated_mb")})
    serving = results.get("serving") or {}
    if "server_peak_rss_mb" in serving:
        rows.append({"what": "Triton server under load (all concurrency points)",
                     "peak_rss_mb": serving["server_peak_rss_mb"],
                     "idle_rss_mb": serving["server_idle_rss_mb"]})
    return {"rows": rows, "note": "process peak RSS (VmHWM, reset before each training "
                                  "configuration); the server's is its process group's summed "
                                  "RSS sampled every 50 ms"}


def write(results: dict[str, Any], out: Path) -> None:
    """The JSON and the Markdown; a full run into the committed folder also refreshes the
    README's summary block (smoke runs and other folders never touch the README)."""
    from benchmarks.report import markdown, update_readme

    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "RESULTS.md").write_text(markdown(results))
    if results["run"]["profile"] == "default" and out.resolve() == DEFAULT_OUT.resolve():
        update_readme(results, README)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    write(results, args.out)
    for verdict in results["targets"]:
        print(f"{verdict['status']}  {verdict['target']}: {verdict['measured']} "
              f"(required {verdict['required']})")
    failed = [a for a in AREAS if isinstance(results.get(a), dict) and "error" in results[a]]
    print(f"results: {args.out / 'latest.json'}, {args.out / 'RESULTS.md'} "
          f"({results['run']['seconds']:.0f} s)")
    if failed:
        print(f"areas that failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
