"""The production server's ONNX Runtime: which opset it runs, and running every model in it.

The Triton image pinned in `serving/k8s` (and in `export.triton_image`) embeds an older ONNX
Runtime than the one export checks parity with here. A model it cannot load (a newer opset
or IR version, an operator kernel it lacks) must not be published as a success, so export
(1) writes a pinned opset, (2) checks each file's opset and IR version against the image's
runtime, and (3) runs every parity batch again in that exact ONNX Runtime release, installed
from PyPI into a side environment built on first use (`~/.cache/cfxray/ort-<version>`,
`CFXRAY_CACHE` moves it), with the same bound. Sources of the mapping: docs/SERVING.md.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cfxray.errors import UserError

RUNNER = Path(__file__).with_name("ort_runner.py")


@dataclass(frozen=True)
class ServerRuntime:
    """What a Triton image runs ONNX models with (docs/SERVING.md gives the sources)."""

    triton: str  # release and server version
    onnxruntime: str  # the ONNX Runtime release of its onnxruntime backend
    max_opset: int  # highest default-domain opset that release implements
    max_ir_version: int  # highest ONNX IR version it loads

    def describe(self) -> str:
        return f"onnxruntime {self.onnxruntime} (tritonserver {self.triton})"


TRITON_RUNTIMES: dict[str, ServerRuntime] = {
    "nvcr.io/nvidia/tritonserver:25.01-py3": ServerRuntime(
        triton="25.01 / 2.54.0", onnxruntime="1.20.1", max_opset=21, max_ir_version=10),
}
# The opset every model is exported at: what torch's exporter writes natively (no version
# conversion pass), within every runtime above.
EXPORT_OPSET = 20


def server_runtime(image: str) -> ServerRuntime:
    try:
        return TRITON_RUNTIMES[image]
    except KeyError:
        raise UserError(f"no ONNX Runtime known for Triton image {image!r} (known: "
                        f"{sorted(TRITON_RUNTIMES)}); add its release to "
                        "cfxray.export.compat.TRITON_RUNTIMES with its source") from None


def check_versions(path: str | Path, runtime: ServerRuntime) -> list[str]:
    """Why `runtime` cannot load the file (its opset or IR version), empty when it can."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    problems = []
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > runtime.max_opset:
            problems.append(f"opset {opset.version} > {runtime.max_opset}")
    if model.ir_version > runtime.max_ir_version:
        problems.append(f"IR version {model.ir_version} > {runtime.max_ir_version}")
    return problems


def cache_root() -> Path:
    base = os.environ.get("CFXRAY_CACHE") or \
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cfxray"
    return Path(base)


def runtime_python(runtime: ServerRuntime, progress=print) -> Path:
    """The Python of a side environment holding exactly `runtime.onnxruntime`, built once.

    Built in a temporary folder and renamed into place, under a lock, so concurrent exports
    share one environment and an interrupted build leaves nothing half-installed.
    """
    root = cache_root()
    target = root / f"ort-{runtime.onnxruntime}"
    python = target / "bin" / "python"
    if python.exists():
        return python
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".ort-{runtime.onnxruntime}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists():
            return python
        progress(f"  building a side environment with onnxruntime {runtime.onnxruntime} "
                 f"(once, in {target}) ...")
        staging = Path(tempfile.mkdtemp(prefix=f".ort-{runtime.onnxruntime}-", dir=root))
        try:
            _run([sys.executable, "-m", "venv", str(staging)], "create a virtual environment")
            _run([str(staging / "bin" / "python"), "-m", "pip", "install", "--quiet",
                  "--disable-pip-version-check", f"onnxruntime=={runtime.onnxruntime}",
                  "numpy<2"], f"install onnxruntime=={runtime.onnxruntime} from PyPI")
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return python


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"cannot {what} for the production-runtime check: "
                        f"{(done.stderr or done.stdout).strip()[-800:]}; refusing to publish")


def run_models(python: Path, path: str | Path, feeds: list[dict[str, np.ndarray]],
               outputs: list[str]) -> tuple[list[list[np.ndarray]], str | None]:
    """Run `feeds` through the ONNX file in the side environment: outputs per feed, or the
    runtime's error (a model it cannot load or run) and no outputs."""
    with tempfile.TemporaryDirectory(prefix="cfxray-ort-") as tmp:
        inputs, results = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(inputs, **{f"{i}/{name}": array for i, feed in enumerate(feeds)
                            for name, array in feed.items()})
        done = subprocess.run([str(python), str(RUNNER), str(path), str(inputs), str(results),
                               *outputs], capture_output=True, text=True)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            return [], (lines[-1] if lines else f"exit status {done.returncode}")
        with np.load(results) as data:
            return [[data[f"{i}/{name}"] for name in outputs] for i in range(len(feeds))], None
