"""Triton model configurations (`config.pbtxt`) as Triton's own protobuf messages.

Every config is built, read and written through tritonclient's `model_config_pb2` and
protobuf's text format (`cfxray.contract.parse_config`, `config_to_text`), so a misspelt field
or a wrong enum fails at export, not when a server loads the repository.

Two files per model: `config.pbtxt` (what a server reads by default) and
`configs/gpu.pbtxt`, the same model on GPU instances with the CUDA execution provider (and
TensorRT when asked), which `tritonserver --model-config-name=gpu` picks instead
(serving/k8s/overlays/gpu). The version policy in both comes from the rollout state
(`cfxray.export.rollout`), never from the export itself; export records every file it writes
in the model folder (`model_files`) in the version's lineage.json, without that policy, for
the audit (`cfxray.audit.repository`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cfxray.contract import (
    CONFIG_FILE,
    CUSTOM_CONFIG_DIR,
    IMAGE,
    TARGET_CLASS,
    WARMUP_DIR,
    ModelSpec,
    TensorSpec,
    config_schema,
    config_to_text,
    parse_config,
    set_version_policy,
)
from cfxray.conventions import NORMAL, PNEUMONIA
from cfxray.errors import UserError
from cfxray.export.settings import ServingSettings

GPU_CONFIG = "gpu"  # configs/gpu.pbtxt: `tritonserver --model-config-name=gpu`
ONNX_FILE = "model.onnx"


def _tensors(target: Any, specs: tuple[TensorSpec, ...], size: int) -> None:
    mc = config_schema()
    for t in specs:
        tensor = target.add(name=t.name, data_type=mc.DataType.Value(f"TYPE_{t.dtype}"),
                            dims=list(t.resolved(size)))
        if t.optional:
            tensor.optional = True


def _set_parameters(config: Any, values: dict[str, str]) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = value


def production_config(spec: ModelSpec, size: int, settings: ServingSettings,
                      served_version: int | None = None) -> Any:
    """The ONNX Runtime backend config of one model (the default, `config.pbtxt`).

    `served_version` None serves the newest version present; a number pins that one.
    """
    mc = config_schema()
    config = mc.ModelConfig(name=spec.name, backend="onnxruntime",
                            max_batch_size=settings.max_batch_size,
                            default_model_filename=ONNX_FILE)
    set_version_policy(config, served_version)
    _tensors(config.input, spec.inputs, size)
    _tensors(config.output, spec.outputs, size)
    config.dynamic_batching.preferred_batch_size.extend(settings.preferred_batch_sizes)
    config.dynamic_batching.max_queue_delay_microseconds = settings.max_queue_delay_microseconds
    config.instance_group.add(count=settings.instance_count,
                              kind=mc.ModelInstanceGroup.Kind.Value(settings.instance_kind))
    parameters = {"image_size": str(size), "resize": settings.resize}
    if settings.intra_op_threads > 0:
        parameters["intra_op_thread_count"] = str(settings.intra_op_threads)
    _set_parameters(config, parameters)
    _add_warmup(config, spec, size, settings.warmup_batch_sizes)
    return config


def gpu_config(config: Any, settings: ServingSettings) -> Any:
    """`config` on GPU instances: CUDA execution provider with an exhaustive cuDNN algorithm
    search (paid for by the warm-up at load, not by the first requests), TensorRT in front
    of it when `settings.gpu_tensorrt`. CPU thread settings do not apply."""
    mc = config_schema()
    gpu = mc.ModelConfig()
    gpu.CopyFrom(config)
    del gpu.instance_group[:]
    gpu.instance_group.add(count=settings.gpu_instance_count,
                           kind=mc.ModelInstanceGroup.Kind.KIND_GPU)
    if "intra_op_thread_count" in gpu.parameters:
        del gpu.parameters["intra_op_thread_count"]
    accelerators = gpu.optimization.execution_accelerators.gpu_execution_accelerator
    if settings.gpu_tensorrt:
        trt = accelerators.add(name="tensorrt")
        trt.parameters["precision_mode"] = settings.gpu_tensorrt_precision
        trt.parameters["trt_engine_cache_enable"] = "1"
        trt.parameters["trt_engine_cache_path"] = "/tmp/cfxray-trt-cache"
    else:
        cuda = accelerators.add(name="cuda")
        cuda.parameters["cudnn_conv_algo_search"] = "EXHAUSTIVE"
    return gpu


def _add_warmup(config: Any, spec: ModelSpec, size: int, batch_sizes: tuple[int, ...]) -> None:
    """Warm-up samples per batch size, random pixels. Triton sends a sample as that many
    single-image requests with the same data, so a model with TARGET_CLASS gets one sample
    per class: each of the explain graph's two generator branches warms up at every size."""
    mc = config_schema()
    targets = [None]
    if any(t.name == TARGET_CLASS for t in spec.inputs):
        targets = list(WARMUP_TARGETS)
    for batch in batch_sizes:
        for target in targets:
            name = f"batch_{batch}" + (f"_{WARMUP_TARGETS[target]}" if target is not None else "")
            sample = config.model_warmup.add(name=name, batch_size=batch)
            for t in spec.inputs:
                warm = sample.inputs[t.name]
                warm.data_type = mc.DataType.Value(f"TYPE_{t.dtype}")
                warm.dims.extend(t.resolved(size))
                if t.name == TARGET_CLASS:
                    warm.input_data_file = WARMUP_TARGETS[target]
                elif t.name == IMAGE:
                    warm.random_data = True
                else:
                    warm.zero_data = True


WARMUP_TARGETS = {NORMAL: "target_normal", PNEUMONIA: "target_pneumonia"}  # data file names


def warmup_files(config: Any) -> dict[str, bytes]:
    """The data files `config`'s warm-up samples name (one INT32 class index each)."""
    named = {warm.input_data_file for sample in config.model_warmup
             for warm in sample.inputs.values() if warm.input_data_file}
    return {name: np.int32(target).astype("<i4").tobytes()
            for target, name in WARMUP_TARGETS.items() if name in named}


def config_header(spec: ModelSpec) -> str:
    return (f"# {spec.name}: {spec.description}\n"
            "# Written by `cfxray export`; contract in docs/SERVING.md.\n")


def config_path(model_dir: str | Path, name: str | None = None) -> Path:
    """`config.pbtxt`, or `configs/<name>.pbtxt` for a custom configuration name."""
    model_dir = Path(model_dir)
    return model_dir / CONFIG_FILE if name is None else \
        model_dir / CUSTOM_CONFIG_DIR / f"{name}.pbtxt"


def read_config(model_dir: str | Path, name: str | None = None) -> Any:
    path = config_path(model_dir, name)
    if not path.exists():
        raise UserError(f"{model_dir} is not a Triton model folder ({path.name} missing)")
    try:
        return parse_config(path.read_text())
    except ValueError as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc


def write_file(path: Path, data: bytes) -> None:
    """Replace a file in one rename: a polling server never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def config_parameters(config: Any) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def model_files(spec: ModelSpec, size: int, settings: ServingSettings,
                served_version: int | None) -> dict[str, bytes]:
    """Every file export writes in a model folder beside its versions, by path relative to
    it, in writing order: the warm-up data before the configs that name it, `config.pbtxt`
    (what a server reads by default) last."""
    config = production_config(spec, size, settings, served_version)
    header = config_header(spec)
    files = {f"{WARMUP_DIR}/{name}": data for name, data in warmup_files(config).items()}
    gpu = gpu_config(config, settings)
    files[f"{CUSTOM_CONFIG_DIR}/{GPU_CONFIG}.pbtxt"] = (header + config_to_text(gpu)).encode()
    files[CONFIG_FILE] = (header + config_to_text(config)).encode()
    return files


def write_model_configs(model_dir: Path, spec: ModelSpec, size: int, settings: ServingSettings,
                        served_version: int | None) -> None:
    """`config.pbtxt`, `configs/gpu.pbtxt` and the warm-up data of one model, serving
    `served_version`."""
    for relative, data in model_files(spec, size, settings, served_version).items():
        write_file(model_dir / relative, data)
