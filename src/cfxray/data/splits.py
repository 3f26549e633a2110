"""Patient identities and patient-aware splits.

Images of one patient are near-duplicates for a classifier; if they straddle train and test,
test scores measure memory, not generalisation. So splits are made over patients, and a
source's own splits are checked for patients that appear in more than one.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from cfxray.conventions import SPLITS
from cfxray.errors import UserError

# Kermany: person1946_bacteria_4874 -> person1946; IM-0115-0001 / NORMAL2-IM-1427-0001 -> IM-0115.
_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)[_-]", re.IGNORECASE),
    re.compile(r"^((?:NORMAL\d*-)?IM-\d+)-\d+", re.IGNORECASE),
)


def patient_id_from_name(stem: str) -> str:
    """The patient a file name names; a name in no known scheme is its own patient."""
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(stem)
        if match:
            return match.group(1)
    return stem


def check_split_fractions(fractions: Sequence[float]) -> None:
    if len(fractions) != len(SPLITS) or min(fractions) < 0 or sum(fractions) <= 0:
        raise UserError(f"split fractions must be three non-negative numbers for {SPLITS}, "
                        f"got {list(fractions)}")


def assign_splits(images_per_patient: Mapping[str, int] | Mapping[int, int],
                  fractions: Sequence[float], rng: np.random.Generator) -> dict:
    """Shuffle patients and fill train, val, test in turn until each holds its image share."""
    check_split_fractions(fractions)
    patients = sorted(images_per_patient)
    total = sum(images_per_patient.values())
    targets = np.cumsum(np.asarray(fractions, dtype=float) / sum(fractions)) * total
    split_of, filled, k = {}, 0, 0
    for i in rng.permutation(len(patients)).tolist():
        patient = patients[i]
        while k < len(SPLITS) - 1 and filled >= targets[k] - 1e-9:
            k += 1
        split_of[patient] = SPLITS[k]
        filled += images_per_patient[patient]
    return split_of


def stratified_patient_splits(labels_by_patient: Mapping[str, Sequence[str]],
                              fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Patient-aware splits made separately per patient class, so class balance carries over.

    A patient's class is the most severe among their images (any PNEUMONIA makes PNEUMONIA).
    """
    rng = np.random.default_rng(seed)
    groups: dict[str, dict[str, int]] = defaultdict(dict)
    for patient, labels in labels_by_patient.items():
        group = "PNEUMONIA" if "PNEUMONIA" in labels else "NORMAL"
        groups[group][patient] = len(labels)
    split_of: dict[str, str] = {}
    for group in sorted(groups):
        split_of.update(assign_splits(groups[group], fractions, rng))
    return split_of


def patients_in_several_splits(split_by_image: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """Patients whose images sit in more than one split: (patient, split) pairs in."""
    seen: dict[str, set[str]] = defaultdict(set)
    for patient, split in split_by_image:
        seen[patient].add(split)
    return {p: sorted(s, key=SPLITS.index) for p, s in sorted(seen.items()) if len(s) > 1}
