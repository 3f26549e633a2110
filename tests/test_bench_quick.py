"""`python -m benchmarks.run --quick`: every area runs for real and reports sane numbers.

One smoke run of the real command (tiny models, a real Triton server, real onnxruntime
quantization); no timing is asserted, only that every section is there, complete and
positive, and that the Markdown report and the target verdicts agree with the JSON.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, str]:
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--threads", "1",
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "latest.json").read_text()), (out / "RESULTS.md").read_text(), \
        done.stdout


def test_machine_and_peak(quick_run):
    results, _, _ = quick_run
    assert results["run"]["profile"] == "quick"
    assert results["machine"]["cpu_model"] and results["machine"]["usable_cpus"] >= 1
    assert _positive(results["peak"]["gflops"])


def test_inference_rows(quick_run):
    results, _, _ = quick_run
    rows = results["inference"]["rows"]
    assert {r["backend"] for r in rows} == {"eager", "channels_last", "onnxruntime"}
    assert {r["model"] for r in rows} == {"demo", "full"}
    for r in rows:
        for key in ("images_per_s", "ms_per_image", "gflops", "fraction_of_peak"):
            assert _positive(r[key]), (key, r)
        assert r["images_per_s"] * r["ms_per_image"] == pytest.approx(1000, rel=0.01)


def test_explain_against_its_parts(quick_run):
    results, _, _ = quick_run
    rows = {r["what"]: r for r in results["explain"]["rows"]}
    assert set(rows) == {"explain", "one_generator_two_classifier_passes"}
    assert rows["one_generator_two_classifier_passes"]["ratio_to_parts"] == 1.0
    for r in rows.values():
        assert _positive(r["ms_per_image"]) and _positive(r["ratio_to_parts"])


def test_serving_points(quick_run):
    results, _, _ = quick_run
    s = results["serving"]
    assert [p["concurrency"] for p in s["in_process"]] == [1, 2]
    keys = {(t["protocol"], t["dynamic_batching"], t["concurrency"]) for t in s["triton"]}
    assert keys == {(p, b, c) for p in ("http", "grpc") for b in (True, False) for c in (1, 2)}
    for point in s["in_process"] + s["triton"]:
        assert point["requests"] >= 1
        assert _positive(point["images_per_s"]) and _positive(point["p50_ms"])
        assert point["p99_ms"] >= point["p50_ms"]
    assert len(s["overhead"]) == len(s["triton"])
    assert _positive(s["server_peak_rss_mb"])


def test_training_and_memory(quick_run):
    results, _, _ = quick_run
    rows = results["training"]["rows"]
    assert {(r["trainer"], r["config"]) for r in rows} == {
        (t, c) for t in ("cyclegan", "classifier") for c in ("demo", "full")}
    for r in rows:
        for key in ("step_s", "samples_per_s", "loader_images_per_s", "loader_to_step",
                    "peak_rss_mb"):
            assert _positive(r[key]), (key, r)
        assert r["peak_rss_mb"] >= r["rss_before_mb"] * 0.5


def test_memory_summary(quick_run):
    results, _, _ = quick_run
    rows = results["memory"]["rows"]
    assert len(rows) == len(results["training"]["rows"]) + 1  # every training step, the server
    assert all(_positive(r["peak_rss_mb"]) for r in rows)


def test_quantization(quick_run):
    results, _, _ = quick_run
    rows = results["quantization"]["rows"]
    assert [r["variant"] for r in rows] == ["mask", "plain"]
    for r in rows:
        assert _positive(r["speedup"]) and _positive(r["int8_ms_per_image"])
        assert 0 < r["ssim_min"] <= r["ssim_mean"] <= 1.0 + 1e-6
        assert r["int8_mb"] < r["fp32_mb"]  # int8 weights really are stored


def test_gpu_skipped_or_measured(quick_run):
    results, _, _ = quick_run
    gpu = results["gpu"]
    import torch

    assert gpu["skipped"] is (not torch.cuda.is_available())


def test_targets_and_report_agree(quick_run):
    results, markdown, stdout = quick_run
    verdicts = results["targets"]
    assert len(verdicts) == 5
    for v in verdicts:
        assert v["status"] in ("PASS", "MISS")
        assert f"{v['status']}  {v['target']}" in stdout
        assert v["target"] in markdown
    for heading in ("## Machine", "## Targets", "## Generator inference", "## explain",
                    "## Serving",
                    "## Training", "## int8 quantization", "## Peak memory", "## GPU"):
        assert heading in markdown
