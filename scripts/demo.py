"""`make demo`: the whole system end to end on the phantom data, as an operator would run it.

Each step is the real command (DVC, the Kubeflow pipeline on the local runner, the Triton
server, the client, the audit), run in order; the demo stops at the first step that fails
and says which. An operator script, not part of the library: it runs the installed `cfxray`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from cfxray.contract import model_versions
from cfxray.evaluation.figures import render_readme_figure
from cfxray.serving.triton import free_ports

OUT = Path("outputs/demo")
MODEL_REPO = Path("model_repository")
PIPELINE_ROOT = Path("outputs/pipeline")


def main() -> int:
    started = time.monotonic()
    env = _environment()
    _step("1/5 data: phantom radiographs and preprocessing under DVC (dvc repro)")
    _run(["dvc", "repro", "preprocess"], env)

    _step("2/5 Kubeflow pipeline on the local runner: train, evaluate, gate, publish")
    _run(["cfxray", "pipeline", "run", "--local", "--model-repo", str(MODEL_REPO),
          "--root", str(PIPELINE_ROOT)], env)
    version = _latest_version(MODEL_REPO / "explain")

    _step(f"3/5 serve version {version} on a local Triton server and explain test images")
    images = _test_images(Path("data/phantom"), per_class=2)
    _serve_and_explain(images, env)

    _step(f"4/5 audit: trace the served version {version} back to the raw data")
    _run(["cfxray", "audit", "--model-repo", str(MODEL_REPO), "--version", str(version),
          "--graph", str(OUT / "lineage.png")], env)

    _step("5/5 summary")
    _summarise(version, time.monotonic() - started)
    return 0


def _environment() -> dict[str, str]:
    """The venv's bin first on PATH, so every step runs the same installed `cfxray`."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def _run(cmd: list[str], env: dict[str, str]) -> None:
    print("$", " ".join(cmd), flush=True)
    result = subprocess.run(cmd, env=env, check=False)
    if result.returncode != 0:
        print(f"demo: step failed (exit {result.returncode}): {' '.join(cmd)}", file=sys.stderr)
        raise SystemExit(result.returncode)


def _latest_version(model_dir: Path) -> int:
    versions = model_versions(model_dir)
    if not versions:
        raise SystemExit(f"demo: no published version in {model_dir}")
    return max(versions)


def _test_images(dataset: Path, per_class: int) -> list[Path]:
    images: list[Path] = []
    for label in ("NORMAL", "PNEUMONIA"):
        images += sorted((dataset / "test" / label).glob("*.png"))[:per_class]
    return images


def _serve_and_explain(images: list[Path], env: dict[str, str]) -> None:
    http, grpc, metrics = free_ports(3)
    cmd = ["cfxray", "serve", "--model-repo", str(MODEL_REPO), "--http-port", str(http),
           "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    print("$", " ".join(cmd), "&", flush=True)
    server = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        _wait_ready(server, f"http://127.0.0.1:{http}/v2/health/ready", timeout_s=300)
        shutil.rmtree(OUT / "explanations", ignore_errors=True)
        _run(["cfxray", "explain", *map(str, images), "--url", f"127.0.0.1:{http}",
              "--out", str(OUT / "explanations")], env)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    print(f"server stopped (exit {server.returncode})", flush=True)


def _wait_ready(server: subprocess.Popen, url: str, timeout_s: float) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"demo: the Triton server exited early (exit {server.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise SystemExit(f"demo: the Triton server was not ready within {timeout_s:.0f}s")


def _summarise(version: int, seconds: float) -> None:
    metrics_path = _find_metrics()
    print(f"published model version : {version} in {MODEL_REPO}/")
    if metrics_path is not None:
        metrics = json.loads(metrics_path.read_text())
        report = metrics_path.parent / "report.html"
        print(f"evaluation report       : {report}")
        figure = OUT / "example.png"
        render_readme_figure(metrics_path.parent, figure)
        print(f"example figure          : {figure}")
        for key in sorted(k for k in metrics if _headline(k)):
            print(f"  {key:40s} {metrics[key]}")
    print(f"explanations            : {OUT / 'explanations'}/")
    print(f"total time              : {seconds / 60:.1f} min")


def _find_metrics() -> Path | None:
    candidates = sorted((p for p in PIPELINE_ROOT.rglob("metrics.json")
                         if (p.parent / "report.html").exists()), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def _headline(key: str) -> bool:
    return not key.endswith(("_ci_low", "_ci_high")) and any(
        word in key for word in ("auc", "validity", "oracle", "ssim", "lesion", "gate"))


if __name__ == "__main__":
    sys.exit(main())
