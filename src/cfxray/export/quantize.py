"""Static int8 quantization of an exported generator (onnxruntime), checked against fp32.

Static quantization fixes every activation's int8 scale ahead of time from calibration
images, so inference runs integer convolutions (VNNI/AMX on recent x86) with no per-call
range search. The calibration images must be training images at the served size: scales
fitted on other intensity statistics clip real X-rays. Only convolutions are quantized;
instance normalisation, padding, resizing and the output blend stay in float, where int8
would cost accuracy for little speed.

Only the residual trunk is quantized (the convolutions with as many input as output
channels, most of the generator's FLOPs), less its first and last convolution, which read
and write the residual stream at its widest range; activation scales come from the 99.99th
percentile, weights get one scale per output channel. Those choices, and the alternatives
they were measured against, are in docs/SERVING.md ("int8 generators"). A quantized model is
only accepted when its outputs stay structurally identical to the fp32 model's (SSIM against
the fp32 output), because where a generator's mask opens, int8 error shows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cfxray.errors import UserError

IMAGE_INPUT = "IMAGE"
CALIBRATION_PERCENTILE = 99.99  # of |activation|: the activation scales
CALIBRATION_BATCH = 4
MIN_SSIM = 0.98  # worst-image SSIM against fp32 to accept the int8 model
# What the benchmark reports as the settings it measured (benchmarks/quantization.py).
SETTINGS = {"calibration_method": "percentile", "percentile": CALIBRATION_PERCENTILE,
            "per_channel": True, "scope": "trunk"}


def _reader(images: np.ndarray, batch: int) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([images[i:i + batch] for i in range(0, len(images), batch)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            chunk = next(self.batches, None)
            return None if chunk is None else {IMAGE_INPUT: np.ascontiguousarray(chunk)}

    return Reader()


def check_calibration_images(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3:
        raise UserError("calibration images must be a uint8 array [N, H, W]")
    if len(images) < 2:
        raise UserError("static quantization needs at least 2 calibration images")


def quantize_generator(fp32_path: str | Path, out_path: str | Path,
                       calibration: np.ndarray) -> Path:
    """Write the int8 (QDQ, convolutions only) version of an exported generator."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    check_calibration_images(calibration)
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference and graph clean-up first, as onnxruntime recommends before quantizing.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(out_path), _reader(calibration, CALIBRATION_BATCH),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"], per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"CalibPercentile": CALIBRATION_PERCENTILE},
            nodes_to_exclude=float_convolutions(prepared))
    return out_path


def float_convolutions(path: Path) -> list[str]:
    """The Conv nodes that stay in float: all but the residual trunk less its two ends."""
    import onnx

    model = onnx.load(str(path))
    weights = {w.name: tuple(w.dims) for w in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    trunk = [n.name for n in convs
             if len(weights.get(n.input[1], ())) == 4 and weights[n.input[1]][0] ==
             weights[n.input[1]][1]]
    if len(trunk) > 2:  # a one-block trunk has nothing left once its ends are dropped
        trunk = trunk[1:-1]
    return [n.name for n in convs if n.name not in set(trunk)]


def output_ssim(fp32_path: str | Path, int8_path: str | Path, images: np.ndarray,
                batch: int = 4) -> np.ndarray:
    """Per-image SSIM of the int8 model's output against the fp32 model's, on `images`."""
    import torch

    from cfxray.evaluation.metrics import ssim

    sessions = [_session(p) for p in (fp32_path, int8_path)]
    scores = []
    for i in range(0, len(images), batch):
        chunk = np.ascontiguousarray(images[i:i + batch])
        ref, got = (torch.from_numpy(s.run(None, {IMAGE_INPUT: chunk})[0]) for s in sessions)
        scores.append(ssim(got.unsqueeze(1), ref.unsqueeze(1)).numpy())
    return np.concatenate(scores)


def _session(path: str | Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def quantize_checked(fp32_path: str | Path, out_path: str | Path, calibration: np.ndarray,
                     check_images: np.ndarray, min_ssim: float = MIN_SSIM) -> dict[str, float]:
    """Quantize, then refuse the result unless every check image keeps SSIM >= min_ssim."""
    quantize_generator(fp32_path, out_path, calibration)
    scores = output_ssim(fp32_path, out_path, check_images)
    report = {"ssim_min": float(scores.min()), "ssim_mean": float(scores.mean()),
              "min_ssim_required": min_ssim}
    if report["ssim_min"] < min_ssim:
        Path(out_path).unlink(missing_ok=True)
        raise UserError(f"int8 generator {out_path} departs from fp32: worst SSIM "
                        f"{report['ssim_min']:.4f} < {min_ssim}; keep fp32 or "
                        "calibrate on more training images")
    return report


CALIBRATION_COUNT = 32  # training images that fix the activation scales
CHECK_COUNT = 16  # validation images the int8 model must reproduce (SSIM vs fp32)


def served_images(data_dir: str | Path, split: str, size: int, count: int) -> np.ndarray:
    """Up to `count` images of a prepared split, both classes interleaved, at the served size."""
    from cfxray.data.tensors import load_split

    data = load_split(data_dir, split)
    if data.size != size:
        raise UserError(f"{data_dir} holds {data.size}px images but the generators serve "
                        f"{size}px; calibrate on the data the generators were trained on")
    by_class = [data.images[data.labels == label] for label in (0, 1)]
    picked = [im for pair in zip(*(c[: count // 2 + 1] for c in by_class), strict=False)
              for im in pair][:count]
    return np.stack([im.numpy() for im in picked]) if picked else data.images[:count].numpy()


def quantize_in_place(onnx_path: str | Path, data_dir: str | Path,
                      size: int) -> dict[str, float]:
    """Replace an exported fp32 generator by its int8 version (the `--int8-calibration` path).

    Calibrates on the prepared training split and accepts the result only if every checked
    validation image keeps SSIM >= min_ssim against the fp32 output; the fp32 file stays
    when the check fails (a UserError says why).
    """
    import os

    onnx_path = Path(onnx_path)
    calibration = served_images(data_dir, "train", size, CALIBRATION_COUNT)
    check = served_images(data_dir, "val", size, CHECK_COUNT)
    int8_path = onnx_path.with_name(onnx_path.stem + ".int8.onnx")
    report = quantize_checked(onnx_path, int8_path, calibration, check)
    os.replace(int8_path, onnx_path)
    return {**report, "calibration_images": len(calibration), "check_images": len(check)}
