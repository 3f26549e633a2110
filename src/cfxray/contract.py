"""The serving contract: model names, tensor names, dtypes and shapes, in one place.

The Triton configs (production ONNX and local Python backend), the ONNX wrappers, the client,
the model cards and the docs (docs/SERVING.md) all read these definitions, so none of them can
drift; the module sits below export, serving and audit so each imports it without the others. Shapes
exclude the batch axis, as in Triton's `dims`; `SIZE` stands for the model's image size.
Importing this module is cheap (no torch, no onnx).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CLASSIFIER = "classifier"
GENERATOR_P2N = "generator_p2n"
GENERATOR_N2P = "generator_n2p"
EXPLAIN = "explain"
MODEL_NAMES: tuple[str, ...] = (CLASSIFIER, GENERATOR_P2N, GENERATOR_N2P, EXPLAIN)
GENERATOR_MODELS: dict[str, str] = {"p2n": GENERATOR_P2N, "n2p": GENERATOR_N2P}

# Triton's repository layout: REPO/<model>/config.pbtxt beside integer version folders
# REPO/<model>/<N>/ (docs/SERVING.md).
CONFIG_FILE = "config.pbtxt"


def model_versions(model_dir: str | Path) -> list[int]:
    """The integer version folders of a model folder, ascending ([] when it does not exist)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())

IMAGE = "IMAGE"  # raw grayscale pixels, UINT8 [batch, SIZE, SIZE]
TARGET_CLASS = "TARGET_CLASS"  # INT32 [batch, 1]: AUTO_TARGET, 0 (NORMAL) or 1 (PNEUMONIA)
PROBABILITIES = "PROBABILITIES"  # FP32 [batch, 2], softmax, class order of CLASSES
LOGITS = "LOGITS"  # FP32 [batch, 2]
COUNTERFACTUAL = "COUNTERFACTUAL"  # FP32 [batch, SIZE, SIZE] in [0, 1]
COUNTERFACTUAL_PROBABILITIES = "COUNTERFACTUAL_PROBABILITIES"  # FP32 [batch, 2]
DIFFERENCE = "DIFFERENCE"  # FP32 [batch, SIZE, SIZE] in [-1, 1]: counterfactual - original
TARGET_CLASS_USED = "TARGET_CLASS_USED"  # INT32 [batch, 1]: the class the counterfactual aims at

# TARGET_CLASS value that asks for the opposite of the predicted class. Any value other than 0
# or 1 means the same, and TARGET_CLASS_USED reports what was applied.
AUTO_TARGET = -1
SIZE = "SIZE"
NUM_CLASSES = 2


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # Triton data type without the TYPE_ prefix: UINT8, INT32, FP32
    dims: tuple[int | str, ...]  # without the batch axis; SIZE is replaced by the image size

    def resolved(self, size: int) -> tuple[int, ...]:
        return tuple(size if d == SIZE else int(d) for d in self.dims)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    description: str


_IMAGE_IN = TensorSpec(IMAGE, "UINT8", (SIZE, SIZE))
_COUNTERFACTUAL = TensorSpec(COUNTERFACTUAL, "FP32", (SIZE, SIZE))

MODEL_SPECS: dict[str, ModelSpec] = {
    CLASSIFIER: ModelSpec(
        CLASSIFIER, (_IMAGE_IN,),
        (TensorSpec(PROBABILITIES, "FP32", (NUM_CLASSES,)),
         TensorSpec(LOGITS, "FP32", (NUM_CLASSES,))),
        "pneumonia classifier: raw pixels -> class probabilities and logits"),
    GENERATOR_P2N: ModelSpec(
        GENERATOR_P2N, (_IMAGE_IN,), (_COUNTERFACTUAL,),
        "CycleGAN generator F: PNEUMONIA -> NORMAL"),
    GENERATOR_N2P: ModelSpec(
        GENERATOR_N2P, (_IMAGE_IN,), (_COUNTERFACTUAL,),
        "CycleGAN generator G: NORMAL -> PNEUMONIA"),
    EXPLAIN: ModelSpec(
        EXPLAIN, (_IMAGE_IN, TensorSpec(TARGET_CLASS, "INT32", (1,))),
        (TensorSpec(PROBABILITIES, "FP32", (NUM_CLASSES,)),
         _COUNTERFACTUAL,
         TensorSpec(COUNTERFACTUAL_PROBABILITIES, "FP32", (NUM_CLASSES,)),
         TensorSpec(DIFFERENCE, "FP32", (SIZE, SIZE)),
         TensorSpec(TARGET_CLASS_USED, "INT32", (1,))),
        "one request: prediction, counterfactual, its probabilities, signed difference map"),
}

NUMPY_DTYPES: dict[str, str] = {"UINT8": "uint8", "INT32": "int32", "FP32": "float32",
                                "INT64": "int64"}
