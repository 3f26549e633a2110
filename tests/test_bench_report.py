"""Target verdicts and the README block: the logic that turns numbers into PASS/MISS."""

from __future__ import annotations

from benchmarks import targets
from benchmarks.report import README_END, README_START, update_readme


def _results(onnx_ms: float, triton_ips: float, int8_speedup: float, ssim: float,
             loader_ratio: float) -> dict:
    inference = [{"model": "demo", "size": 128, "batch": b, "backend": k, "ms_per_image": ms}
                 for b in (1, 8) for k, ms in (("eager", 10.0), ("onnxruntime", onnx_ms))]
    return {
        "machine": {"cpu_model": "cpu", "usable_cpus": 2, "gpu": None},
        "peak": {"gflops": 100.0},
        "run": {"started_utc": "2026-01-01 00:00", "profile": "default"},
        "inference": {"rows": inference},
        "serving": {"overhead": [
            {"protocol": p, "dynamic_batching": True, "concurrency": 4,
             "overhead": 1 - triton_ips / 10.0} for p in ("http", "grpc")]},
        "quantization": {"rows": [{"variant": "mask", "model": "full", "size": 256,
                                   "target_case": True, "speedup": int8_speedup,
                                   "ssim_min": ssim}]},
        "training": {"rows": [{"trainer": "cyclegan", "config": "demo",
                               "loader_to_step": loader_ratio}]},
    }


def test_all_targets_pass_within_their_bounds():
    verdicts = targets.check(_results(10 / 1.3, 8.6, 1.5, 0.98, 3.0))
    assert [v["status"] for v in verdicts] == ["PASS"] * 4


def test_each_target_misses_just_past_its_bound():
    verdicts = targets.check(_results(10 / 1.29, 8.4, 1.6, 0.979, 2.9))
    assert [v["status"] for v in verdicts] == ["MISS"] * 4


def test_failed_area_gets_no_verdict():
    results = _results(5.0, 9.0, 2.0, 0.99, 10.0)
    results["serving"] = {"error": "RuntimeError: boom"}
    assert [v["target"].split()[0] for v in targets.check(results)] == \
        ["onnxruntime", "int8", "input"]


def test_readme_block_replaced_between_markers_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{README_START}\nold\n{README_END}\nafter\n")
    results = _results(5.0, 9.0, 2.0, 0.99, 10.0)
    results["targets"] = targets.check(results)
    assert update_readme(results, readme)
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith(f"{README_END}\nafter\n")
    assert "\nold\n" not in text and "| PASS |" in text
    assert text.count(README_START) == 1
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    assert not update_readme(results, plain)
    assert plain.read_text() == "no markers\n"
