"""The preprocessed dataset format every training, evaluation and export step reads.

`DIR/{split}.pt` holds a dict of tensors (so a whole split loads in one read), and
`DIR/meta.json` the image size, resize mode and the source dataset's content hash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cfxray.conventions import CLASSES, SPLITS
from cfxray.errors import UserError


def unit_images(pixels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B, H, W] pixels -> [B, 1, H, W] in [0, 1]: how stored images, twins, batches and
    served requests all enter the library's float convention. Traceable (the served graphs
    start with it) and never in place, so a float input is left as it was."""
    return pixels.unsqueeze(1).to(dtype) / 255.0


@dataclass
class SplitData:
    images: torch.Tensor  # uint8 [N, H, W]
    labels: torch.Tensor  # int64 [N], 0 NORMAL, 1 PNEUMONIA
    files: list[str]  # manifest paths, for reports and lineage
    patient_ids: list[str]
    lesion_masks: torch.Tensor | None = None  # bool [N, H, W]; None when unknown (real data)
    lung_masks: torch.Tensor | None = None  # bool [N, H, W]
    twins: torch.Tensor | None = None  # uint8 [N, H, W], lesion-free twin; zeros where none
    has_twin: torch.Tensor | None = None  # bool [N]
    # Phantoms made with the shortcut marker only (else None): the marker's region, whether
    # each image carries the marker, and each image rendered with the marker toggled.
    shortcut_masks: torch.Tensor | None = None  # bool [N, H, W]
    has_shortcut: torch.Tensor | None = None  # bool [N]
    shortcut_twins: torch.Tensor | None = None  # uint8 [N, H, W]

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def as_float(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Images as float [B, 1, H, W] in [0, 1] (the library's convention)."""
        return unit_images(self.images if index is None else self.images[index])

    def class_indices(self, label: int) -> torch.Tensor:
        return torch.nonzero(self.labels == label).flatten()


def save_split(data: SplitData, out_dir: str | Path, split: str) -> Path:
    """Unknown (None) fields are left out; loading restores them as None."""
    path = Path(out_dir) / f"{split}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v for k, v in data.__dict__.items() if v is not None}, path)
    return path


def load_split(data_dir: str | Path, split: str) -> SplitData:
    path = Path(data_dir) / f"{split}.pt"
    if not path.exists():
        raise UserError(f"{data_dir} has no preprocessed '{split}' split ({path.name} missing); "
                        "run `cfxray data preprocess` first")
    try:
        return SplitData(**torch.load(path, map_location="cpu", weights_only=False))
    except Exception as exc:  # truncated, overwritten or not a split file: one line, not a trace
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read {path}: {reason}; "
                        "run `cfxray data preprocess` again") from exc


def require_both_classes(data: SplitData, what: str) -> None:
    present = set(data.labels.unique().tolist())
    missing = [CLASSES[c] for c in range(len(CLASSES)) if c not in present]
    if missing:
        raise UserError(f"{what} has no {' or '.join(missing)} images; both classes are needed")


def load_meta(data_dir: str | Path) -> dict[str, Any]:
    path = Path(data_dir) / "meta.json"
    if not path.exists():
        raise UserError(f"{data_dir} is not a preprocessed dataset (meta.json missing)")
    return json.loads(path.read_text())


def load_training_splits(data_dir: str | Path) -> dict[str, SplitData]:
    """All three splits, checked before any training: both classes, one size, 1 channel."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"data folder {data_dir} does not exist")
    splits = {name: load_split(data_dir, name) for name in SPLITS}
    for name, data in splits.items():
        require_both_classes(data, f"the {name} split of {data_dir}")
    sizes = {data.size for data in splits.values()}
    if len(sizes) != 1:
        raise UserError(f"the splits of {data_dir} have different image sizes {sorted(sizes)}")
    if splits["train"].images.ndim != 3:
        raise UserError(f"{data_dir} holds images of shape {tuple(splits['train'].images.shape)}"
                        "; expected 1-channel images [N, H, W]")
    return splits
