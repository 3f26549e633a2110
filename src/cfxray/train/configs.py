"""Trainer settings as plain dataclasses, importable without torch.

The CLI builds its options from these classes before any heavy import (`cfxray --help`
stays instant); each field is a key of the trainer's `params.yaml` section.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cfxray.train.augment import AugmentConfig


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """Every knob of a classifier run; each is a `train_classifier` key in params.yaml."""

    arch: str = "resnet18"
    stem: str = "auto"  # resnet18: auto | small | standard (cfxray.models.classifier.STEMS)
    image_size: int = 0  # 0: the data's size (the model resizes inside `forward` otherwise)
    epochs: int = 10
    batch_size: int = 64  # global batch, split across torchrun processes
    lr: float = 2e-3  # peak of the one-cycle schedule
    weight_decay: float = 1e-4
    patience: int = 4  # epochs without a better validation AUC before stopping
    auc_tolerance: float = 0.002  # val AUCs this close to the best tie; lower val loss wins
    seed: int = 1234
    balanced_loss: bool = True  # class-weighted cross-entropy against class imbalance
    init_weights: str = ""  # local weights file to start from; empty: random init
    aug_rotate_deg: float = 5.0
    aug_translate: float = 0.04
    aug_scale: float = 0.05
    aug_brightness: float = 0.05
    aug_contrast: float = 0.1
    aug_hflip: bool = False
    # Operational settings below change speed or output, never the result, so a run may be
    # resumed with other values.
    checkpoint_every: int = 50  # optimiser steps between mid-epoch checkpoints; 0: epochs only
    log_every: int = 10  # steps between progress-bar loss refreshes (each is one host sync)
    eval_batch_size: int = 256
    device: str = "auto"
    max_steps: int = 0  # stop (with a checkpoint) after this many steps in total; 0: no limit

    @property
    def augment(self) -> AugmentConfig:
        from cfxray.train.augment import AugmentConfig

        return AugmentConfig(rotate_deg=self.aug_rotate_deg, translate=self.aug_translate,
                             scale=self.aug_scale, brightness=self.aug_brightness,
                             contrast=self.aug_contrast, hflip=self.aug_hflip)

    def run_config(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues."""
        operational = {"checkpoint_every", "log_every", "eval_batch_size", "device",
                       "max_steps"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in operational}
