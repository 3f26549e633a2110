"""The models every area measures: seeded random-init generators, their ONNX files, sessions.

Speed does not depend on trained weights, so the benchmarks build generators from a seed
(no training, no downloads). The measured module is the served one, `GeneratorServing`:
raw uint8 pixels in, [0, 1] floats out, so PyTorch and onnxruntime run the same computation
that Triton serves, exported by the same `cfxray export` code.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import torch

from cfxray.models.networks import GeneratorConfig, ResnetGenerator


def generator(ngf: int, n_blocks: int, size: int, variant: str = "mask",
              seed: int = 0) -> ResnetGenerator:
    from cfxray.models.networks import build_generator, init_weights

    torch.manual_seed(seed)
    model = build_generator(GeneratorConfig(image_size=size, ngf=ngf, n_blocks=n_blocks,
                                            variant=variant))
    init_weights(model)
    return model.eval()


def serving_module(model: ResnetGenerator) -> torch.nn.Module:
    from cfxray.export.wrappers import GeneratorServing

    return GeneratorServing(model).eval()


def export_generator(model: ResnetGenerator, path: Path) -> Path:
    """One ONNX file with dynamic batch and image size, by the exporter `cfxray export` uses."""
    import warnings

    from cfxray.contract import GENERATOR_P2N, MODEL_SPECS
    from cfxray.export.onnx_export import export_onnx

    stride = 2 ** model.config.n_downsampling
    side = model.config.image_size + 2 * stride  # not the native size, as export_onnx asks
    example = torch.randint(0, 256, (2, side, side), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_onnx(serving_module(model), MODEL_SPECS[GENERATOR_P2N], (example,), path,
                           stride)


def onnx_generator(workdir: Path, ngf: int, n_blocks: int, variant: str = "mask",
                   half_open: bool = False) -> Path:
    """The exported generator for these settings, exported once per run into `workdir`.

    The file does not depend on an image size (height and width are dynamic axes), so every
    area shares it; exporting takes tens of seconds on 2 cores.
    """
    path = Path(workdir) / f"generator_ngf{ngf}_b{n_blocks}_{variant}{'_open' if half_open else ''}.onnx"
    if not path.exists():
        model = generator(ngf, n_blocks, 64, variant=variant)
        if half_open:
            open_mask(model)
        export_generator(model, path)
    return path


def open_mask(model: ResnetGenerator) -> ResnetGenerator:
    """Mask variant: mask logits biased to 0 (sigmoid 0.5), so generated content makes half of
    every output pixel. A random-init mask starts nearly closed, which would hide the network's
    own output (and its int8 error) behind a copy of the input."""
    if model.config.variant == "mask":
        with torch.no_grad():
            model.head[1].bias[model.config.channels:] = 0.0
    return model


def ort_options(threads: int, tuned: bool = True) -> Any:
    """Session options for a CPU-bound convolution network.

    Tuned: every graph optimisation (NCHWc layout, conv+activation fusion), one inter-op
    thread (the graph is a chain), intra-op threads = the cores, and denormals flushed to
    zero (instance-normalised activations near zero otherwise hit slow denormal arithmetic).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if tuned:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    else:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return options


def ort_session(path: str | Path, threads: int, tuned: bool = True,
                providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), ort_options(threads, tuned), providers=list(providers))


@cache
def flops_per_image(ngf: int, n_blocks: int, size: int) -> int:
    """Forward FLOPs of one image (torch's FlopCounterMode: convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = generator(ngf, n_blocks, size)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.rand(1, 1, size, size))
    return int(counter.get_total_flops())
