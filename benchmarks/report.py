"""Results as Markdown tables (benchmarks/results/RESULTS.md, quoted by the README)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_section(r: dict[str, Any]) -> str:
    m, peak = r["machine"], r["peak"]
    gpu = m["gpu"]["name"] if m.get("gpu") else "none"
    return "\n".join([
        "## Machine",
        f"- CPU: {m['cpu_model']} ({m['usable_cpus']} usable of {m['logical_cpus']} logical "
        f"CPUs; {', '.join(m['cpu_flags'])})",
        f"- memory {m['memory_gb']} GB; GPU: {gpu}",
        f"- torch {m['torch']} ({m['torch_threads']} threads), onnxruntime {m['onnxruntime']}, "
        f"Python {m['python']}",
        f"- measured fp32 matmul peak (the practical limit): **{peak['gflops']:.1f} GFLOP/s** "
        f"(n={peak['n']}, best; median {peak['gflops_median']:.1f}; again at the end of the "
        f"run: {r.get('peak_at_end', peak)['gflops']:.1f})",
        f"- load average at start: {m['load_average_1m']} (higher than the CPU count means "
        "other work shared the machine and every number below is pessimistic)",
    ])


def inference_section(r: dict[str, Any]) -> str:
    inf = r["inference"]
    rows = [(x["model"], x["size"], x["batch"], x["backend"], x["images_per_s"],
             x["ms_per_image"], x["gflops"], f"{x['fraction_of_peak']:.1%}")
            for x in inf["rows"]]
    flops = "; ".join(f"{m}: " + ", ".join(f"{s}px {g} GFLOP" for s, g in sizes.items())
                      for m, sizes in inf["flops_per_image"].items())
    compiles = [f"{x['model']} {x['size']}px batch {x['batch']}: {x['compile_s']} s"
                for x in inf["rows"] if "compile_s" in x]
    parts = ["## Generator inference (CPU)", f"FLOPs per image: {flops}.", "",
             table(("model", "px", "batch", "backend", "images/s", "ms/image", "GFLOP/s",
                    "of peak"), rows)]
    if compiles:
        parts.append(f"\ntorch.compile time: {'; '.join(compiles)}.")
    parts += [f"\n{n}" for n in inf["notes"]]
    return "\n".join(parts)


def serving_section(r: dict[str, Any]) -> str:
    s = r["serving"]
    ref = {p["concurrency"]: p for p in s["in_process"]}
    rows = [("in-process onnxruntime", "–", p["concurrency"], p["images_per_s"], p["p50_ms"],
             p["p99_ms"], "–") for p in s["in_process"]]
    overhead = {(o["protocol"], o["dynamic_batching"], o["concurrency"]): o["overhead"]
                for o in s["overhead"]}
    for t in s["triton"]:
        key = (t["protocol"], t["dynamic_batching"], t["concurrency"])
        rows.append((f"Triton {t['protocol'].upper()}", "yes" if t["dynamic_batching"] else "no",
                     t["concurrency"], t["images_per_s"], t["p50_ms"], t["p99_ms"],
                     f"{overhead[key]:.1%}" if t["concurrency"] in ref else "–"))
    st = s["settings"]
    return "\n".join([
        "## Serving: Triton vs in-process onnxruntime",
        f"The {s['model']} generator at {s['size']} px, one image per request, closed-loop "
        f"clients for {s['seconds_per_point']} s per point. Dynamic batching: preferred batch "
        f"{st['preferred_batch_sizes']}, max queue delay {st['max_queue_delay_microseconds']} µs; "
        f"{st['instance_count']} instance, {st['intra_op_threads']} intra-op threads. "
        f"{s['backend_note']}.", "",
        table(("server", "dynamic batching", "concurrency", "images/s", "p50 ms", "p99 ms",
               "overhead"), rows),
        f"\nServer RSS (tritonserver + Python stubs): idle {s['server_idle_rss_mb']} MiB, "
        f"peak under load {s['server_peak_rss_mb']} MiB."])


def training_section(r: dict[str, Any]) -> str:
    t = r["training"]
    rows = []
    for x in t["rows"]:
        arch = (f"ngf {x['ngf']}, {x['n_blocks']} blocks" if x["trainer"] == "cyclegan"
                else "resnet18")
        rows.append((x["trainer"], x["config"], arch, x["size"], x["batch"], x["step_s"],
                     x["samples_per_s"], x["loader_images_per_s"], f"{x['loader_to_step']:.3g}x",
                     x["peak_rss_mb"]))
    return "\n".join(["## Training (CPU) and memory",
                      table(("trainer", "config", "network", "px", "batch", "step s",
                             "samples/s", "loader images/s", "loader/step", "peak RSS MiB"),
                            rows), *[f"\n{n}" for n in t["notes"]]])


def quantization_section(r: dict[str, Any]) -> str:
    q = r["quantization"]
    rows = [(x["variant"] + (" (target case)" if x["target_case"] else " (stress case)"),
             x["model"], x["size"], x["batch"], x["fp32_ms_per_image"], x["int8_ms_per_image"],
             f"{x['speedup']:.2f}x", x["ssim_min"], x["ssim_mean"],
             f"{x['fp32_mb']} -> {x['int8_mb']}") for x in q["rows"]]
    st = q["settings"]
    return "\n".join([
        "## int8 quantization (onnxruntime static, CPU)",
        f"Calibrated on {q['calibration_images']} phantom training images, checked on "
        f"{q['check_images']} others; {st['format']}; {st['calibration_method']} calibration "
        f"({st['percentile']}), per-channel weights {st['per_channel']}, quantized "
        f"convolutions: {st['scope']} (trunk: the residual blocks; the rest stays fp32).", "",
        table(("variant", "model", "px", "batch", "fp32 ms/image", "int8 ms/image", "speedup",
               "SSIM min", "SSIM mean", "MB"), rows), *[f"\n{n}" for n in q["notes"]]])


def explain_section(r: dict[str, Any]) -> str:
    e = r["explain"]
    rows = [(x["what"], x["model"], x["size"], x["batch"], x["ms_per_image"],
             f"{x['spread_ms_per_image'][0]}-{x['spread_ms_per_image'][1]}",
             f"{x['ratio_to_parts']:.2f}x") for x in e["rows"]]
    return "\n".join([
        "## explain against its parts (onnxruntime, CPU)",
        f"Exported in {e['export_seconds']:.0f} s.", "",
        table(("graph", "model", "px", "batch", "ms/image", "spread", "vs parts"), rows),
        *[f"\n{n}" for n in e["notes"]]])


def gpu_section(r: dict[str, Any]) -> str:
    g = r["gpu"]
    if g.get("skipped"):
        return f"## GPU\n{g['note']}."
    train = [(x["trainer"], x["config"], x["precision"], x["channels_last"], x["step_s"],
              x["samples_per_s"], x.get("gpu_peak_allocated_mb")) for x in g["training"]]
    inf = [(x["model"], x["size"], x["batch"], x["backend"], x["images_per_s"],
            x["ms_per_image"]) for x in g["inference"]["rows"]]
    return "\n".join([f"## GPU ({g['device']})",
                      table(("trainer", "config", "precision", "channels_last", "step s",
                             "samples/s", "peak allocated MiB"), train), "",
                      table(("model", "px", "batch", "backend", "images/s", "ms/image"), inf),
                      *[f"\n{n}" for n in g["inference"]["notes"]]])


def memory_section(r: dict[str, Any]) -> str:
    m = r["memory"]
    rows = [(x["what"], x.get("peak_rss_mb"), x.get("gpu_peak_allocated_mb")) for x in m["rows"]]
    return "\n".join(["## Peak memory", table(("what", "peak RSS MiB", "GPU peak MiB"), rows),
                      f"\n{m['note']}."])


SECTIONS = {"inference": inference_section, "explain": explain_section,
            "serving": serving_section,
            "training": training_section, "quantization": quantization_section,
            "memory": memory_section, "gpu": gpu_section}


def targets_section(verdicts: list[dict[str, Any]]) -> str:
    rows = [(v["status"], v["target"], v["measured"], v["required"]) for v in verdicts]
    return "## Targets\n" + table(("", "target", "measured", "required"), rows)


def markdown(results: dict[str, Any]) -> str:
    meta = results["run"]
    parts = [f"# cfxray benchmarks ({meta['profile']} profile)",
             f"Run {meta['started_utc']} UTC, {meta['seconds']:.0f} s in all; "
             "`make bench` (`python -m benchmarks.run`) writes this file and latest.json.",
             machine_section(results), targets_section(results.get("targets", []))]
    for area, render in SECTIONS.items():
        section = results.get(area)
        if isinstance(section, dict) and "error" in section:
            parts.append(f"## {area}\nFAILED: {section['error']}")
        elif section is not None:
            parts.append(render(results))
    return "\n\n".join(parts) + "\n"


def readme_block(results: dict[str, Any]) -> str:
    """The summary the README shows: the machine, its peak and the target verdicts."""
    m, peak = results["machine"], results["peak"]
    return "\n".join([
        README_START,
        f"Measured {results['run']['started_utc']} UTC on {m['cpu_model']} "
        f"({m['usable_cpus']} CPUs, fp32 matmul peak {peak['gflops']:.0f} GFLOP/s, "
        f"GPU: {m['gpu']['name'] if m.get('gpu') else 'none'}); every table in "
        "[benchmarks/results/RESULTS.md](benchmarks/results/RESULTS.md).", "",
        targets_section(results.get("targets", [])).split("\n", 1)[1],
        README_END])


def update_readme(results: dict[str, Any], readme: Path) -> bool:
    """Replace the README's marked benchmark block; False when it has no markers."""
    if not readme.exists():
        return False
    text = readme.read_text()
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.DOTALL)
    if not pattern.search(text):
        return False
    readme.write_text(pattern.sub(lambda _: readme_block(results), text, count=1))
    return True
