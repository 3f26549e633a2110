"""Triton Python-backend model that serves a production ONNX model through onnxruntime.

The Triton server bundled with nvidia-pytriton has only the Python backend, so the local
repository wraps each ONNX file in this generic model. It runs inside Triton's Python stub
(`triton_python_backend_utils` exists only there) and imports nothing from cfxray: it is
copied verbatim into every version folder as `model.py`. Names, dtypes, shapes and batching
come from the model's own config, so it behaves like the ONNX Runtime backend would.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in (config.get("parameters") or {}).items()}
        folder = Path(args["model_repository"]) / args["model_version"]
        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        threads = int(params.get("intra_op_thread_count", 0))
        if threads > 0:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(folder / params.get("onnx_file", "model.onnx")),
                                            options, providers=["CPUExecutionProvider"])
        self.name = config["name"]
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]

    def execute(self, requests):
        """Run every queued request in one onnxruntime call (Triton's dynamic batching)."""
        # Triton's core has already checked names, dtypes, shapes and batch sizes against the
        # config (as it does for the ONNX Runtime backend), so every request here is well formed.
        arrays = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs}
                  for r in requests]
        feeds = {n: np.concatenate([a[n] for a in arrays]) for n in self.inputs}
        try:
            results = self.session.run(self.outputs, feeds)
        except Exception as exc:  # onnxruntime's own message is the useful part
            return [_error(f"{self.name}: onnxruntime failed: {exc}") for _ in requests]
        responses, start = [], 0
        for a in arrays:
            stop = start + len(a[self.inputs[0]])
            tensors = [pb_utils.Tensor(n, r[start:stop])
                       for n, r in zip(self.outputs, results, strict=True)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = stop
        return responses


def _error(message):
    return pb_utils.InferenceResponse(
        output_tensors=[], error=pb_utils.TritonError(message, pb_utils.TritonError.INTERNAL))
