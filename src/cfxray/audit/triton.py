"""Ask a running Triton server what it serves, through `tritonclient.http`.

The repository index says which versions are ready; a fixed probe sent to a served version
and to the recorded ONNX file (onnxruntime) says whether the server really runs that file.
tritonclient is imported inside the functions, so `cfxray --help` and a repository-only audit
never load it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from cfxray.errors import UserError


def _host(url: str) -> str:
    """tritonclient takes host:port; people also write http://host:port."""
    url = url.rstrip("/")
    return url.split("://", 1)[1] if "://" in url else url


@contextmanager
def _client(url: str, timeout: float) -> Iterator[Any]:
    """A client whose every failure (refused, timed out, an error answer) is one UserError."""
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = None
    try:
        client = triton.InferenceServerClient(_host(url), connection_timeout=timeout,
                                              network_timeout=timeout)
        yield client
    except InferenceServerException as exc:
        raise UserError(f"the Triton server at {url} answered: {exc.message() or exc}") from exc
    except (OSError, ValueError) as exc:  # refused, unreachable, a non-JSON answer
        raise UserError(f"cannot reach the Triton server at {url}: {exc}") from exc
    finally:
        if client is not None:
            client.close()


def loaded_versions(url: str, timeout: float = 10.0) -> list[tuple[str, int]]:
    """(model, version) pairs the server reports READY in its repository index."""
    with _client(url, timeout) as client:
        index = client.get_model_repository_index()
    return [(str(entry["name"]), int(entry["version"])) for entry in index
            if entry.get("state") == "READY" and str(entry.get("version", "")).isdigit()]


def _probe_inputs(metadata: dict[str, Any], batch: int, seed: int) -> dict[str, np.ndarray]:
    """Fixed inputs for every tensor the model declares: random pixels for images, zeros for
    integer controls (class 0 is a valid target), so the probe is the same on every run."""
    from tritonclient.utils import triton_to_np_dtype

    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in metadata["inputs"]:
        shape = [batch if int(d) < 0 else int(d) for d in spec["shape"]]
        dtype = np.dtype(triton_to_np_dtype(spec["datatype"]))
        if dtype == np.uint8:
            arrays[spec["name"]] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        elif np.issubdtype(dtype, np.floating):
            arrays[spec["name"]] = rng.random(shape).astype(dtype)
        else:
            arrays[spec["name"]] = np.zeros(shape, dtype=dtype)
    return arrays


def _served_answer(url: str, model: str, version: int, seed: int,
                   timeout: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(probe inputs, the served version's outputs)."""
    import tritonclient.http as triton

    with _client(url, timeout) as client:
        metadata = client.get_model_metadata(model, str(version))
        inputs = _probe_inputs(metadata, batch=2, seed=seed)
        requests = []
        for spec in metadata["inputs"]:
            tensor = triton.InferInput(spec["name"], list(inputs[spec["name"]].shape),
                                       spec["datatype"])
            tensor.set_data_from_numpy(inputs[spec["name"]])
            requests.append(tensor)
        result = client.infer(model, requests, model_version=str(version))
        outputs = {o["name"]: result.as_numpy(o["name"]) for o in metadata["outputs"]}
    return inputs, outputs


def probe_served_model(url: str, model: str, version: int, onnx_file: Path,
                       atol: float = 1e-4, seed: int = 0, timeout: float = 30.0) -> str | None:
    """Send the same fixed inputs to the served version and to the recorded ONNX file (in
    onnxruntime); a difference means the server runs another model than the file the lineage
    vouches for (a stale load, another repository). Returns what differs, or None."""
    import onnxruntime as ort

    inputs, served = _served_answer(url, model, version, seed, timeout)
    try:
        session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        local = dict(zip(names, session.run(names, inputs), strict=True))
    except Exception as exc:  # onnxruntime raises its own types for unreadable or odd files
        return f"onnxruntime cannot run the recorded {onnx_file}: {exc}"
    for name, value in served.items():
        if name not in local:
            return f"the server returns output {name} that {onnx_file.name} does not have"
        diff = float(np.max(np.abs(np.asarray(value, dtype=np.float64)
                                   - np.asarray(local[name], dtype=np.float64))))
        if not diff <= atol:
            return (f"the served {model}/{version} answers a fixed probe differently from the "
                    f"recorded {onnx_file.name} (output {name}: max |diff| {diff:.3g} > {atol:g})")
    return None
