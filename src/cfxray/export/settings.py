"""The `export` section of params.yaml: how Triton serves the models (`ServingSettings`, written
into every config.pbtxt and configs/gpu.pbtxt) plus where the export reads and writes, how close
onnxruntime must stay to PyTorch, which server the models must run in and how many versions
stay (`ExportSettings`)."""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields
from typing import Literal

from cfxray.data.settings import ResizeMode
from cfxray.errors import UserError

InstanceKind = Literal["KIND_AUTO", "KIND_CPU", "KIND_GPU"]
INSTANCE_KINDS: tuple[str, ...] = typing.get_args(InstanceKind)
TensorRTPrecision = Literal["FP32", "FP16"]


@dataclass(frozen=True)
class ServingSettings:
    """How Triton batches, places and warms up the models, and how clients fit images to them;
    every field lands in each model's config.pbtxt and configs/gpu.pbtxt."""

    max_batch_size: int = 16
    preferred_batch_sizes: tuple[int, ...] = (4, 8, 16)
    max_queue_delay_microseconds: int = 2000
    instance_count: int = 1
    instance_kind: InstanceKind = "KIND_AUTO"
    intra_op_threads: int = 0  # 0: onnxruntime's default
    resize: ResizeMode = "pad"  # how clients fit images to the model's size: preprocess's mode
    # Warm-up samples in every config, one per batch size (per class for the explain graph).
    warmup_batch_sizes: tuple[int, ...] = (1,)
    # configs/gpu.pbtxt (`tritonserver --model-config-name=gpu`): GPU instances, CUDA EP.
    gpu_instance_count: int = 1
    gpu_tensorrt: bool = False  # TensorRT EP in front of CUDA (not measured: no GPU here)
    gpu_tensorrt_precision: TensorRTPrecision = "FP16"

    def validate(self) -> None:
        if self.max_batch_size < 1:
            raise UserError("max_batch_size must be at least 1")
        if any(not 1 <= b <= self.max_batch_size for b in self.preferred_batch_sizes):
            raise UserError(f"preferred batch sizes {self.preferred_batch_sizes} must lie in "
                            f"1..max_batch_size ({self.max_batch_size})")
        if self.instance_count < 1:
            raise UserError("instance_count must be at least 1")
        if self.instance_kind not in INSTANCE_KINDS:
            raise UserError(f"instance_kind must be one of {INSTANCE_KINDS}")
        if any(not 1 <= b <= self.max_batch_size for b in self.warmup_batch_sizes):
            raise UserError(f"warm-up batch sizes {self.warmup_batch_sizes} must lie in "
                            f"1..max_batch_size ({self.max_batch_size})")
        if self.gpu_instance_count < 1:
            raise UserError("gpu_instance_count must be at least 1")


@dataclass(frozen=True)
class ExportSettings(ServingSettings):
    classifier: str = "models/classifier/classifier.pt"
    generators: str = "models/cyclegan"  # the CycleGAN folder holding generators.pt
    out: str = "model_repository"
    # Max |onnxruntime - PyTorch| on any output of any sample image, else nothing is published;
    # float32 reorderings give ~1e-6 on [0, 1] images and probabilities.
    parity_atol: float = 1e-4
    # The production server: export verifies every model in its ONNX Runtime as well
    # (cfxray.export.compat) and refuses to publish what it cannot run.
    triton_image: str = "nvcr.io/nvidia/tritonserver:25.01-py3"
    keep_versions: int = 5  # versions kept per model after a publish (the served one always)
    resize: ResizeMode | None = None  # None: the preprocess section's mode

    def serving(self, preprocess_resize: ResizeMode) -> ServingSettings:
        """The serving part, clients resizing as `resize` says, else as the training data was."""
        values = {f.name: getattr(self, f.name) for f in fields(ServingSettings)}
        return ServingSettings(**{**values, "resize": self.resize or preprocess_resize})
