"""The issue's targets, checked against one run's results: PASS or MISS, with the numbers."""

from __future__ import annotations

from typing import Any

ONNX_SPEEDUP = 1.3  # onnxruntime over PyTorch eager per image, at batch 8 on CPU
TRITON_OVERHEAD = 0.15  # at concurrency 4 with dynamic batching, vs in-process onnxruntime
INT8_SPEEDUP, INT8_SSIM = 1.5, 0.98
LOADER_RATIO = 3.0  # input pipeline at least 3x the training step's throughput
EXPLAIN_RATIO = 1.15  # explain at most this times one generator + two classifier passes


def _verdict(name: str, passed: bool, measured: str, target: str) -> dict[str, Any]:
    return {"target": name, "status": "PASS" if passed else "MISS", "measured": measured,
            "required": target}


def onnx_target(results: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.inference import onnx_speedups

    rows = results["inference"]["rows"]
    batch = max(r["batch"] for r in rows)
    speedups = onnx_speedups(rows, batch)
    worst = min(s["speedup"] for s in speedups)
    detail = ", ".join(f"{s['model']} {s['size']}px {s['speedup']:.2f}x" for s in speedups)
    return _verdict(f"onnxruntime vs PyTorch eager, batch {batch}", worst >= ONNX_SPEEDUP,
                    f"worst {worst:.2f}x ({detail})", f">= {ONNX_SPEEDUP}x for every model/size")


def triton_target(results: dict[str, Any]) -> dict[str, Any]:
    serving = results["serving"]
    levels = sorted({o["concurrency"] for o in serving["overhead"]})
    level = 4 if 4 in levels else max(levels)
    points = [o for o in serving["overhead"]
              if o["concurrency"] == level and o["dynamic_batching"]]
    worst = max(o["overhead"] for o in points)
    detail = ", ".join(f"{o['protocol']} {o['overhead']:.1%}" for o in points)
    return _verdict(f"Triton overhead, concurrency {level}, dynamic batching",
                    worst <= TRITON_OVERHEAD, f"worst {worst:.1%} ({detail})",
                    f"<= {TRITON_OVERHEAD:.0%} (HTTP and gRPC)")


def int8_target(results: dict[str, Any]) -> dict[str, Any]:
    row = next(r for r in results["quantization"]["rows"] if r["target_case"])
    passed = row["speedup"] >= INT8_SPEEDUP and row["ssim_min"] >= INT8_SSIM
    return _verdict(f"int8 generator ({row['model']}, {row['size']}px, {row['variant']})", passed,
                    f"{row['speedup']:.2f}x, worst SSIM {row['ssim_min']:.4f}",
                    f">= {INT8_SPEEDUP}x and SSIM >= {INT8_SSIM}")


def loader_target(results: dict[str, Any]) -> dict[str, Any]:
    rows = results["training"]["rows"]
    worst = min(rows, key=lambda r: r["loader_to_step"])
    return _verdict("input pipeline vs training step", worst["loader_to_step"] >= LOADER_RATIO,
                    f"worst {worst['loader_to_step']:.3g}x ({worst['trainer']} {worst['config']})",
                    f">= {LOADER_RATIO:g}x for every trainer and configuration")


def explain_target(results: dict[str, Any]) -> dict[str, Any]:
    rows = {r["what"]: r for r in results["explain"]["rows"]}
    row = rows["explain"]
    before = rows.get("explain_both_generators")
    was = f" (both generators, as before: {before['ratio_to_parts']:.2f}x)" if before else ""
    return _verdict(f"explain vs one generator + two classifier passes ({row['model']}, "
                    f"{row['size']}px, batch {row['batch']})",
                    row["ratio_to_parts"] <= EXPLAIN_RATIO,
                    f"{row['ratio_to_parts']:.2f}x{was}", f"<= {EXPLAIN_RATIO}x")


CHECKS = {"inference": onnx_target, "explain": explain_target, "serving": triton_target, "quantization": int8_target,
          "training": loader_target}


def check(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One verdict per target whose area ran (and did not fail)."""
    out = []
    for area, fn in CHECKS.items():
        section = results.get(area)
        if isinstance(section, dict) and "error" not in section:
            out.append(fn(results))
    return out
