"""The `export` section of params.yaml: how Triton serves the models (`ServingSettings`, written
into every config.pbtxt) plus where the export reads and writes and how close onnxruntime must
stay to PyTorch (`ExportSettings`)."""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields
from typing import Literal

from cfxray.data.settings import ResizeMode
from cfxray.errors import UserError

InstanceKind = Literal["KIND_AUTO", "KIND_CPU", "KIND_GPU"]
INSTANCE_KINDS: tuple[str, ...] = typing.get_args(InstanceKind)


@dataclass(frozen=True)
class ServingSettings:
    """How Triton batches and places the models, and how clients fit images to them; every
    field lands in each model's config.pbtxt."""

    max_batch_size: int = 16
    preferred_batch_sizes: tuple[int, ...] = (4, 8, 16)
    max_queue_delay_microseconds: int = 2000
    instance_count: int = 1
    instance_kind: InstanceKind = "KIND_AUTO"
    intra_op_threads: int = 0  # 0: onnxruntime's default
    resize: ResizeMode = "pad"  # how clients fit images to the model's size: preprocess's mode

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


@dataclass(frozen=True)
class ExportSettings(ServingSettings):
    classifier: str = "models/classifier/classifier.pt"
    generators: str = "models/cyclegan"  # the CycleGAN folder holding generators.pt
    out: str = "model_repository"
    # Max |onnxruntime - PyTorch| on any output of any sample image, else nothing is published;
    # float32 reorderings give ~1e-6 on [0, 1] images and probabilities.
    parity_atol: float = 1e-4
    resize: ResizeMode | None = None  # None: the preprocess section's mode

    def serving(self, preprocess_resize: ResizeMode) -> ServingSettings:
        """The serving part, clients resizing as `resize` says, else as the training data was."""
        values = {f.name: getattr(self, f.name) for f in fields(ServingSettings)}
        return ServingSettings(**{**values, "resize": self.resize or preprocess_resize})
