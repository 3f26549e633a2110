"""Conventions every step shares, kept in one place so no step can drift from another.

Image tensors inside the library are float32 in [0, 1], shape [B, 1, H, W]. Every model
(classifier, generators) consumes and produces that range; each model maps it to its own
internal range itself. That is what keeps the classifier seeing the same normalisation in
training, in the counterfactual loss, in evaluation and in serving.
"""

from __future__ import annotations

CLASSES: tuple[str, str] = ("NORMAL", "PNEUMONIA")
NORMAL, PNEUMONIA = 0, 1
SPLITS: tuple[str, str, str] = ("train", "val", "test")

# Generator directions: n2p translates NORMAL -> PNEUMONIA (G), p2n PNEUMONIA -> NORMAL (F).
DIRECTIONS: dict[str, tuple[int, int]] = {"n2p": (NORMAL, PNEUMONIA), "p2n": (PNEUMONIA, NORMAL)}

MANIFEST_NAME = "manifest.csv"
MANIFEST_FIELDS: tuple[str, ...] = (
    "file",  # image path relative to the dataset root
    "label",  # NORMAL or PNEUMONIA
    "split",  # train, val or test
    "patient_id",
    "sha256",  # of the image file's bytes
    "lesion_mask",  # relative path, empty when unknown; all-zero PNG for NORMAL phantoms
    "lung_mask",  # relative path, empty when unknown
    "twin",  # relative path of the lesion-free twin (phantom PNEUMONIA only), else empty
)

CLASSIFIER_FILE = "classifier.pt"
GENERATORS_FILE = "generators.pt"
LINEAGE_FILE = "lineage.json"
