"""CycleGAN trainer settings as a plain dataclass, importable without torch.

Each field is a key of the `train_cyclegan` section of params.yaml and a `--kebab-case`
option of `cfxray train-cyclegan`; every loss weight is one of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

# Settings that change speed or what is written, never the trained weights: a run may be
# resumed with other values of these.
OPERATIONAL = frozenset({"checkpoint_every", "log_every", "eval_batch_size", "device",
                         "max_steps", "sample_count"})


@dataclass(frozen=True)
class CycleGANTrainConfig:
    """Every knob of a counterfactual CycleGAN run. The defaults are the demo configuration
    that the phantom measurements chose (docs/CYCLEGAN.md), not the published objective
    (`counter_form=mse, sparsity=0, mu_identity=5, variant=plain, upsampling=transpose`)."""

    # Generators (cfxray.models.networks.GeneratorConfig; image size comes from the data).
    ngf: int = 16
    n_blocks: int = 6
    n_downsampling: int = 2
    variant: str = "mask"  # plain | mask
    upsampling: str = "resize"  # transpose | resize
    # Discriminators: PatchGAN, 3 layers = 70x70 patches; fewer suit small images.
    ndf: int = 32
    d_layers: int = 3
    # Objective (cfxray.models.cyclegan.LossConfig).
    adversarial: float = 1.0
    lambda_cycle: float = 10.0
    mu_identity: float = 0.0
    gamma_counter: float = 1.0
    counter_form: str = "margin"  # mse (the published form) | margin
    counter_margin: float = 5.0
    sparsity: float = 5.0  # weight of the mean absolute change: keeps counterfactuals minimal
    tv_change: float = 150.0  # weight of the change map's total variation: smooth edits, no stripes
    # Optimisation.
    epochs: int = 7
    decay_epochs: int = 3  # the last epochs, over which the learning rate falls linearly to 0
    batch_size: int = 4  # images per domain and step, split across torchrun processes
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    pool_size: int = 50
    seed: int = 0
    # Operational.
    checkpoint_every: int = 100  # steps between mid-epoch checkpoints; 0: epochs only
    log_every: int = 10  # steps between progress-bar refreshes (each is one host sync)
    eval_batch_size: int = 64
    sample_count: int = 4  # images per direction in each epoch's sample grid
    device: str = "auto"
    max_steps: int = 0  # stop (with a checkpoint) after this many steps in total; 0: no limit

    def settings_for(self, settings_class: type, **given: Any) -> Any:
        """A model-side settings dataclass (GeneratorConfig, LossConfig) filled from this
        config's fields of the same names, plus `given`. Its field list is the only list: a
        field added there and not here fails loudly instead of taking that class's default."""
        values = {f.name: getattr(self, f.name) for f in fields(settings_class)
                  if f.name not in given}
        return settings_class(**given, **values)

    def run_config(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in OPERATIONAL}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
