"""Python API over the `explain` model (and the raw models) through tritonclient.

    from cfxray.serving.client import ExplainClient
    with ExplainClient("localhost:8000") as client:
        results = client.explain_files(["xray.png"], direction="auto")
        results[0].probabilities, results[0].counterfactual, results[0].difference

The client reads the served image size, resize mode and maximum batch from the model's own
config, checks inputs before sending them (dtype, rank, size), and splits long lists into
batches the server accepts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cfxray import contract as c
from cfxray.conventions import CLASSES, NORMAL, PNEUMONIA
from cfxray.errors import UserError
from cfxray.serving.images import read_image

PROTOCOLS = ("http", "grpc")
# --direction -> TARGET_CLASS: auto flips the predicted class; p2n aims at NORMAL, n2p at PNEUMONIA.
DIRECTION_TARGETS = {"auto": c.AUTO_TARGET, "p2n": NORMAL, "n2p": PNEUMONIA}
TARGET_DIRECTIONS = {NORMAL: "p2n", PNEUMONIA: "n2p"}


class ServingError(UserError):
    """The server refused a request or cannot be reached; the message says which and why."""


@dataclass
class Explanation:
    image: np.ndarray  # uint8 [H, W]: what the model saw
    probabilities: np.ndarray  # [2] before
    counterfactual: np.ndarray  # float32 [H, W] in [0, 1]
    counterfactual_probabilities: np.ndarray  # [2] after
    difference: np.ndarray  # float32 [H, W], counterfactual - original
    target_class: int
    source: str = ""
    model_version: str = ""

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def counterfactual_predicted(self) -> int:
        return int(np.argmax(self.counterfactual_probabilities))

    @property
    def direction(self) -> str:
        return TARGET_DIRECTIONS[self.target_class]

    def summary(self) -> dict[str, Any]:
        """The JSON record written next to the pictures."""
        def probs(p: np.ndarray) -> dict[str, float]:
            return {name: round(float(v), 6) for name, v in zip(CLASSES, p, strict=True)}
        return {
            "source": self.source,
            "model_version": self.model_version,
            "predicted": CLASSES[self.predicted],
            "probabilities_before": probs(self.probabilities),
            "direction": self.direction,
            "target": CLASSES[self.target_class],
            "probabilities_after": probs(self.counterfactual_probabilities),
            "predicted_after": CLASSES[self.counterfactual_predicted],
            "decision_flipped": self.counterfactual_predicted == self.target_class,
            "target_probability_gain": round(float(
                self.counterfactual_probabilities[self.target_class]
                - self.probabilities[self.target_class]), 6),
            "mean_abs_difference": round(float(np.abs(self.difference).mean()), 6),
            "max_abs_difference": round(float(np.abs(self.difference).max()), 6),
            "image_size": list(self.image.shape),
        }


def _protocol_module(protocol: str) -> Any:
    if protocol == "http":
        import tritonclient.http as module
    elif protocol == "grpc":
        import tritonclient.grpc as module
    else:
        raise UserError(f"--protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return module


def _strip_scheme(url: str) -> str:
    for scheme in ("http://", "https://", "grpc://"):
        if url.startswith(scheme):
            return url[len(scheme):]
    return url


class TritonModels:
    """Thin, protocol-neutral access to a Triton server: health, configs, inference."""

    def __init__(self, url: str = "localhost:8000", protocol: str = "http",
                 timeout_s: float = 60.0) -> None:
        self.url, self.protocol, self.timeout_s = _strip_scheme(url), protocol, timeout_s
        self.module = _protocol_module(protocol)
        from tritonclient.utils import InferenceServerException

        self._error = InferenceServerException
        if protocol == "http":
            self.client = self.module.InferenceServerClient(
                self.url, connection_timeout=timeout_s, network_timeout=timeout_s)
        else:
            self.client = self.module.InferenceServerClient(self.url)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> TritonModels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._error as exc:
            raise ServingError(f"{what}: {exc.message() or exc}") from None
        except (ConnectionError, OSError) as exc:
            raise ServingError(f"cannot reach Triton at {self.url} ({self.protocol}): {exc}") from None

    def require_ready(self, model: str) -> None:
        live = self._call("server health", self.client.is_server_live)
        if not live:
            raise ServingError(f"Triton at {self.url} is not live")
        if not self._call(f"model {model}", self.client.is_model_ready, model):
            raise ServingError(f"model {model!r} is not ready on {self.url}; is this a cfxray "
                               "model repository (`cfxray serve --model-repo DIR`)?")

    def config(self, model: str) -> dict[str, Any]:
        if self.protocol == "http":
            return self._call(f"config of {model}", self.client.get_model_config, model)
        return self._call(f"config of {model}", self.client.get_model_config, model,
                          as_json=True)["config"]

    def infer(self, model: str, inputs: dict[str, np.ndarray],
              outputs: Sequence[str]) -> tuple[dict[str, np.ndarray], str]:
        """Raw inference: arrays in, arrays out, and the model version that answered."""
        wire = []
        for name, array in inputs.items():
            tensor = self.module.InferInput(name, list(array.shape), _triton_dtype(array))
            tensor.set_data_from_numpy(array)
            wire.append(tensor)
        requested = [self.module.InferRequestedOutput(n) for n in outputs]
        kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        result = self._call(f"{model} refused the request", self.client.infer, model, wire,
                            outputs=requested, **kwargs)
        response = result.get_response(as_json=True) if self.protocol == "grpc" \
            else result.get_response()
        return {n: result.as_numpy(n) for n in outputs}, str(response.get("model_version", ""))


def _triton_dtype(array: np.ndarray) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return np_to_triton_dtype(array.dtype)


@dataclass(frozen=True)
class ServedModel:
    """What the client needs to know about the served `explain` model."""

    size: int
    resize: str
    max_batch_size: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ServedModel:
        image = next(t for t in config["input"] if t["name"] == c.IMAGE)
        dims = [int(d) for d in image["dims"]]
        params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        return cls(size=dims[0], resize=params.get("resize", "pad"),
                   max_batch_size=int(config.get("max_batch_size") or 1))


class ExplainClient:
    """Counterfactual explanations from a cfxray Triton server, over HTTP or gRPC."""

    def __init__(self, url: str = "localhost:8000", protocol: str = "http",
                 timeout_s: float = 60.0) -> None:
        self.models = TritonModels(url, protocol, timeout_s)
        try:
            self.models.require_ready(c.EXPLAIN)
            self.served = ServedModel.from_config(self.models.config(c.EXPLAIN))
        except BaseException:
            self.models.close()
            raise

    def close(self) -> None:
        self.models.close()

    def __enter__(self) -> ExplainClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_images(self, images: np.ndarray) -> None:
        size = self.served.size
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            raise UserError(f"images must be a uint8 array, got "
                            f"{getattr(images, 'dtype', type(images).__name__)}")
        if images.ndim != 3:
            raise UserError(f"images must be [batch, {size}, {size}], got shape {images.shape}")
        if images.shape[0] == 0:
            raise UserError("no images to explain (empty batch)")
        if images.shape[1:] != (size, size):
            raise UserError(f"images must be {size}x{size} pixels, got "
                            f"{images.shape[1]}x{images.shape[2]}; use explain_files or "
                            "cfxray.serving.images.to_model_input to resize")

    def explain(self, images: np.ndarray, direction: str = "auto",
                sources: Sequence[str] | None = None) -> list[Explanation]:
        """Explain uint8 [N, size, size] images, in batches of the server's maximum."""
        if direction not in DIRECTION_TARGETS:
            raise UserError(f"direction must be one of {tuple(DIRECTION_TARGETS)}, "
                            f"got {direction!r}")
        self.check_images(images)
        sources = list(sources) if sources is not None else [""] * len(images)
        results: list[Explanation] = []
        step = self.served.max_batch_size
        for start in range(0, len(images), step):
            batch = np.ascontiguousarray(images[start:start + step])
            target = np.full((len(batch), 1), DIRECTION_TARGETS[direction], dtype=np.int32)
            out, version = self.models.infer(
                c.EXPLAIN, {c.IMAGE: batch, c.TARGET_CLASS: target},
                [t.name for t in c.MODEL_SPECS[c.EXPLAIN].outputs])
            for i in range(len(batch)):
                results.append(Explanation(
                    image=batch[i], probabilities=out[c.PROBABILITIES][i],
                    counterfactual=out[c.COUNTERFACTUAL][i],
                    counterfactual_probabilities=out[c.COUNTERFACTUAL_PROBABILITIES][i],
                    difference=out[c.DIFFERENCE][i],
                    target_class=int(out[c.TARGET_CLASS_USED][i, 0]),
                    source=sources[start + i], model_version=version))
        return results

    def load(self, path: str | Path, max_bytes: int | None = None) -> np.ndarray:
        return read_image(path, self.served.size, self.served.resize, max_bytes)

    def explain_files(self, paths: Iterable[str | Path], direction: str = "auto"
                      ) -> list[Explanation]:
        paths = [Path(p) for p in paths]
        if not paths:
            raise UserError("no images given")
        images = np.stack([self.load(p) for p in paths])
        return self.explain(images, direction, sources=[str(p) for p in paths])
