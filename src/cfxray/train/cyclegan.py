"""Train the counterfactual CycleGAN against a frozen classifier.

The output folder holds `generators.pt` (the `load_generators` contract, rewritten every
epoch), `checkpoints/last.pt` (the driver's, with both generators and discriminators, both
optimisers and schedulers and every rank's image pools), `log.csv`, `loss.png`,
`samples/epoch_NNN.png`, and once training ends `summary.json` (test-split counterfactual
metrics and the training time) and `lineage.json`. The loop, checkpoints, resume and
torchrun are `cfxray.train.driver`'s.

Training is unpaired: each step draws a batch of NORMAL and a batch of PNEUMONIA images from
two independent per-epoch orders. An epoch covers the larger class once; the smaller class's
order wraps around, so no image of the larger class is wasted.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cfxray.checkpoint import save_atomic, seed_everything
from cfxray.conventions import GENERATORS_FILE, NORMAL, PNEUMONIA
from cfxray.data.tensors import load_training_splits
from cfxray.errors import UserError
from cfxray.lineage import sha256_file
from cfxray.models.classifier import load_classifier
from cfxray.models.cyclegan import (
    LOSS_KEYS,
    CycleGANStep,
    DiscriminatorPair,
    GeneratorPair,
    ImagePool,
    LossConfig,
    linear_decay,
)
from cfxray.models.networks import (
    GeneratorConfig,
    build_discriminator,
    build_generator,
    generators_state,
    init_weights,
)
from cfxray.train import distributed as D
from cfxray.train.batches import DeviceBatches
from cfxray.train.cyclegan_config import CycleGANTrainConfig
from cfxray.train.cyclegan_report import (
    format_summary,
    sample_images,
    save_sample_grid,
    summarise,
    val_row,
)
from cfxray.train.driver import Outcome, Trainer, autocast, prepare_model, run_training

SUMMARY_FILE = "summary.json"


class CycleGANTrainer(Trainer):
    checkpoint_kind = "cfxray-cyclegan-run"
    title = "CycleGAN"
    shown = ("g_total", "counter", "cycle", "d_p", "d_n", "flip_n2p", "flip_p2n")

    def __init__(self, data_dir: Path, classifier_path: Path, oracle_path: Path | None,
                 out_dir: Path, cfg: CycleGANTrainConfig, ctx: D.DistContext,
                 device: torch.device) -> None:
        super().__init__(out_dir, cfg, ctx, device)
        self.data_dir = data_dir
        self.classifier_path, self.oracle_path = classifier_path, oracle_path
        self.splits = load_training_splits(data_dir)
        train = self.splits["train"]
        size = train.size
        self.classifier = prepare_model(load_classifier(classifier_path, expect_size=size), device)
        self.oracle = (prepare_model(load_classifier(oracle_path, expect_size=size), device)
                       if oracle_path else None)
        self.gen_config = cfg.settings_for(GeneratorConfig, image_size=size, channels=1)
        self.gen_config.validate()
        self.losses = cfg.settings_for(LossConfig)
        self.losses.validate()
        if not 0 <= cfg.decay_epochs <= cfg.epochs:
            raise UserError("need 0 <= decay_epochs <= epochs")

        seed_everything(cfg.seed)  # identical initial weights on every rank
        n2p, p2n = build_generator(self.gen_config), build_generator(self.gen_config)
        d_p = build_discriminator(1, cfg.ndf, cfg.d_layers)
        d_n = build_discriminator(1, cfg.ndf, cfg.d_layers)
        for net in (n2p, p2n, d_p, d_n):
            init_weights(net)
        self.gens_net = prepare_model(GeneratorPair(n2p, p2n), device)
        self.discs_net = prepare_model(DiscriminatorPair(d_p, d_n), device)
        self.gens = D.wrap_model(self.gens_net, ctx, device)
        self.discs = D.wrap_model(self.discs_net, ctx, device)
        random.seed(cfg.seed + 7919 * ctx.rank)  # each rank's own image-pool choices

        largest = max(len(train.class_indices(label)) for label in (NORMAL, PNEUMONIA))
        self.steps_per_epoch = max(1, largest // cfg.batch_size)
        self.loss_keys = LOSS_KEYS
        self.domains = {}
        for label in (NORMAL, PNEUMONIA):
            index = train.class_indices(label)
            self.domains[label] = DeviceBatches(
                train.images[index], train.labels[index], self.steps_per_epoch,
                cfg.batch_size, ctx, device,
                seed=lambda epoch, label=label: cfg.seed * 1_000_003 + epoch * 2 + label)

        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.gens_net.parameters(), lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discs_net.parameters(), lr=cfg.lr, betas=betas)
        factor = linear_decay(cfg.epochs * self.steps_per_epoch,
                              cfg.decay_epochs * self.steps_per_epoch)
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, factor)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, factor)
        self.pool_p, self.pool_n = ImagePool(cfg.pool_size), ImagePool(cfg.pool_size)
        self.step_fn = CycleGANStep(self.gens, self.discs, self.classifier, self.losses,
                                    self.opt_g, self.opt_d, self.pool_p, self.pool_n,
                                    autocast=lambda: autocast(device))
        self.samples = sample_images(self.splits["val"], cfg.sample_count)
        self.classifier_sha = sha256_file(classifier_path)

    # ----- the run -----------------------------------------------------------------------
    def trained_modules(self) -> list[nn.Module]:
        return [self.gens, self.discs]

    def start_epoch(self, epoch: int) -> None:
        for batches in self.domains.values():
            batches.set_epoch(epoch)

    def step(self, index: int) -> torch.Tensor:
        terms = self.step_fn(self.domains[NORMAL][index][0], self.domains[PNEUMONIA][index][0])
        self.sched_g.step()
        self.sched_d.step()
        return torch.stack([terms[k] for k in LOSS_KEYS])

    def end_epoch(self, means: dict[str, float]) -> dict[str, float]:
        """Validation numbers and samples; rewrite generators.pt (rank 0)."""
        epoch = self.progress.epoch
        row = {"lr": float(self.sched_g.get_last_lr()[0])}
        if self.ctx.is_main:
            self.gens_net.eval()
            val = summarise(self.gens_net, self.classifier, self.oracle, self.splits["val"],
                            self.device, self.cfg.eval_batch_size)
            row.update(val_row(val))
            save_sample_grid(self.gens_net, self.classifier, self.samples, self.device,
                             self.out_dir / "samples" / f"epoch_{epoch:03d}.png",
                             f"epoch {epoch}: validation samples")
            save_atomic(generators_state(self.gens_net.n2p, self.gens_net.p2n, self.gen_config),
                        self.out_dir / GENERATORS_FILE)
        return row

    def describe_epoch(self, row: dict[str, float]) -> str:
        val = "  ".join(f"{k[4:]} {v:.3f}" for k, v in row.items() if k.startswith("val_"))
        return (f"epoch {int(row['epoch'])}/{self.cfg.epochs}: G {row['g_total']:.3f} "
                f"(counter {row['counter']:.3f}, cycle {row['cycle']:.3f}) D_P {row['d_p']:.3f} "
                f"D_N {row['d_n']:.3f} | val {val}")

    def plot_title(self) -> str:
        return (f"counterfactual CycleGAN ({self.gen_config.variant}, "
                f"{self.losses.counter_form})")

    def finish(self, train_seconds: float) -> Outcome:
        """Measure the counterfactuals on the test split; write summary.json."""
        self.gens_net.eval()
        test = summarise(self.gens_net, self.classifier, self.oracle, self.splits["test"],
                         self.device, self.cfg.eval_batch_size)
        p = self.progress
        summary = {"test": test, "train_seconds": round(train_seconds, 1), "steps": p.step,
                   "epochs": p.epoch, "world_size": self.ctx.world_size,
                   "device": str(self.device), "generator": asdict(self.gen_config),
                   "loss": asdict(self.losses)}
        (self.out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        inputs: dict[str, str | Path] = {"data": self.data_dir,
                                         "classifier": self.classifier_path}
        if self.oracle_path:
            inputs["oracle"] = self.oracle_path
        return Outcome(
            result=summary, kind="cyclegan", inputs=inputs,
            params={**asdict(self.cfg), "generator": asdict(self.gen_config)},
            metrics={"test": test, "train_seconds": summary["train_seconds"]},
            message=(f"trained {p.step} steps in {train_seconds:.0f} s; test-split "
                     f"counterfactuals:\n{format_summary(test)}\n"
                     f"-> {self.out_dir / GENERATORS_FILE}"))

    # ----- the checkpoint ----------------------------------------------------------------
    def configs(self) -> dict[str, tuple[dict[str, Any], str]]:
        return {"generator_config": (asdict(self.gen_config), "the generators in "),
                "run_config": (self.cfg.run_config(), "")}

    def state(self) -> dict[str, Any]:
        return {"classifier_sha256": self.classifier_sha,
                "generators": self.gens_net.state_dict(),
                "discriminators": self.discs_net.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict()}

    def load_state(self, ckpt: dict[str, Any], path: Path) -> None:
        if ckpt["classifier_sha256"] != self.classifier_sha:
            raise UserError(f"checkpoint {path} was trained against another classifier than "
                            f"{self.classifier_path}; resume with the same classifier file")
        self.gens_net.load_state_dict(ckpt["generators"])
        self.discs_net.load_state_dict(ckpt["discriminators"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        self.opt_d.load_state_dict(ckpt["opt_d"])
        self.sched_g.load_state_dict(ckpt["sched_g"])
        self.sched_d.load_state_dict(ckpt["sched_d"])

    def rank_state(self) -> dict[str, Any]:
        return {"pool_p": self.pool_p.state_dict(), "pool_n": self.pool_n.state_dict()}

    def load_rank_state(self, state: dict[str, Any]) -> None:
        self.pool_p.load_state_dict(state["pool_p"], self.device)
        self.pool_n.load_state_dict(state["pool_n"], self.device)


def train_cyclegan(data_dir: str | Path, classifier_path: str | Path, out_dir: str | Path,
                   cfg: CycleGANTrainConfig, oracle_path: str | Path | None = None,
                   resume: bool = False) -> dict[str, Any]:
    """Train (or continue) a CycleGAN run; returns the test summary on rank 0, else {}."""
    data_dir, out_dir, classifier_path = Path(data_dir), Path(out_dir), Path(classifier_path)
    oracle = Path(oracle_path) if oracle_path else None
    return run_training(
        lambda ctx, device: CycleGANTrainer(data_dir, classifier_path, oracle, out_dir, cfg,
                                            ctx, device),
        out_dir, cfg, resume)
