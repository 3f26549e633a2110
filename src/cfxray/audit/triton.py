"""Ask a running Triton server what it serves, over its plain HTTP (KServe v2) API.

The repository index says which versions are ready; a fixed probe sent to a served version
and to the recorded ONNX file (onnxruntime) says whether the server really runs that file.
urllib is enough for both, so the audit does not import tritonclient.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from cfxray.errors import UserError


def _base(url: str) -> str:
    url = url.rstrip("/")
    return url if "://" in url else f"http://{url}"


def loaded_versions(url: str, timeout: float = 10.0) -> list[tuple[str, int]]:
    """(model, version) pairs the server reports READY in its repository index."""
    request = urllib.request.Request(f"{_base(url)}/v2/repository/index", method="POST",
                                     data=b'{"ready": true}',
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            index = json.loads(response.read() or b"[]")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UserError(f"cannot read the model index of the Triton server at {url}: {exc}") from exc
    loaded = []
    for entry in index:
        if entry.get("state", "READY") == "READY" and str(entry.get("version", "")).isdigit():
            loaded.append((str(entry["name"]), int(entry["version"])))
    return loaded


def _get_json(url: str, path: str, body: dict[str, Any] | None = None,
              timeout: float = 30.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{_base(url)}{path}", data=data,
                                     method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise UserError(f"Triton at {url} refused {path}: {exc.code} {detail}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UserError(f"cannot reach the Triton server at {url} ({path}): {exc}") from exc


def _probe_inputs(metadata: dict[str, Any], batch: int, seed: int) -> dict[str, np.ndarray]:
    """Fixed inputs for every tensor the model declares: random pixels for images, zeros for
    integer controls (class 0 is a valid target), so the probe is the same on every run."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in metadata["inputs"]:
        shape = [batch if int(d) < 0 else int(d) for d in spec["shape"]]
        dtype = _DTYPES[spec["datatype"]]
        if spec["datatype"] == "UINT8":
            arrays[spec["name"]] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        elif np.issubdtype(dtype, np.floating):
            arrays[spec["name"]] = rng.random(shape).astype(dtype)
        else:
            arrays[spec["name"]] = np.zeros(shape, dtype=dtype)
    return arrays


_DTYPES: dict[str, Any] = {"UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64,
                           "FP32": np.float32, "FP16": np.float16, "FP64": np.float64,
                           "BOOL": np.bool_}


def probe_served_model(url: str, model: str, version: int, onnx_file: Path,
                       atol: float = 1e-4, seed: int = 0) -> str | None:
    """Send the same fixed inputs to the served version and to the recorded ONNX file (in
    onnxruntime); a difference means the server runs another model than the file the lineage
    vouches for (a stale load, another repository). Returns what differs, or None."""
    import onnxruntime as ort

    base = f"/v2/models/{model}/versions/{version}"
    metadata = _get_json(url, base)
    inputs = _probe_inputs(metadata, batch=2, seed=seed)
    body = {"inputs": [{"name": name, "shape": list(a.shape),
                        "datatype": next(s["datatype"] for s in metadata["inputs"]
                                         if s["name"] == name),
                        "data": a.flatten().tolist()} for name, a in inputs.items()]}
    served = {o["name"]: np.asarray(o["data"], dtype=np.float64).reshape(o["shape"])
              for o in _get_json(url, f"{base}/infer", body)["outputs"]}
    try:
        session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        local = dict(zip(names, session.run(names, inputs), strict=True))
    except Exception as exc:  # onnxruntime raises its own types for unreadable or odd files
        return f"onnxruntime cannot run the recorded {onnx_file}: {exc}"
    for name, value in served.items():
        if name not in local:
            return f"the server returns output {name} that {onnx_file.name} does not have"
        diff = float(np.max(np.abs(value - np.asarray(local[name], dtype=np.float64))))
        if not diff <= atol:
            return (f"the served {model}/{version} answers a fixed probe differently from the "
                    f"recorded {onnx_file.name} (output {name}: max |diff| {diff:.3g} > {atol:g})")
    return None
