"""Train the counterfactual CycleGAN against a frozen classifier, resumable and torchrun-ready.

The output folder holds `generators.pt` (the `load_generators` contract, rewritten every
epoch), `checkpoints/last.pt` (both generators and discriminators, both optimisers and
schedulers, both image pools and every rank's RNG streams, the position inside the epoch and
the epoch's running losses), `log.csv`, `loss.png`, `samples/epoch_NNN.png`, and once
training ends `summary.json` (test-split counterfactual metrics and the training time) and
`lineage.json`. A run killed at any point and started again with `--resume` ends with the
same weights as a run that was never interrupted (same seed, CPU).

Training is unpaired: each step draws a batch of NORMAL and a batch of PNEUMONIA images from
two independent per-epoch orders. An epoch covers the larger class once; the smaller class's
order wraps around, so no image of the larger class is wasted. The data lives on the training
device as uint8 and each step's batch is one index gather there: no loader round trip and no
host sync in the hot loop.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cfxray.checkpoint import (
    check_config_matches,
    load_checkpoint,
    rng_state,
    save_atomic,
    seed_everything,
    set_rng_state,
)
from cfxray.conventions import GENERATORS_FILE, NORMAL, PNEUMONIA
from cfxray.data.tensors import load_training_splits, unit_images
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
from cfxray.train.cyclegan_config import CycleGANTrainConfig
from cfxray.train.cyclegan_report import (
    format_summary,
    sample_images,
    save_sample_grid,
    summarise,
    val_row,
)
from cfxray.train.loop_utils import autocast, prepare_model
from cfxray.train.runlog import RunLog

CHECKPOINT_KIND = "cfxray-cyclegan-run"
LAST_CHECKPOINT = Path("checkpoints") / "last.pt"
SUMMARY_FILE = "summary.json"


@dataclass
class Progress:
    """Where the run stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0
    train_seconds: float = 0.0  # time spent training, summed over resumed sessions


def domain_order(count: int, length: int, seed: int) -> torch.Tensor:
    """`length` indices into one domain: seeded permutations of `count`, concatenated."""
    gen = torch.Generator().manual_seed(seed)
    reps = math.ceil(length / count)
    return torch.cat([torch.randperm(count, generator=gen) for _ in range(reps)])[:length]


class CycleGANRun:
    """One CycleGAN training run in one process (of possibly several under torchrun)."""

    def __init__(self, data_dir: Path, classifier_path: Path, oracle_path: Path | None,
                 out_dir: Path, cfg: CycleGANTrainConfig, ctx: D.DistContext,
                 device: torch.device) -> None:
        self.data_dir, self.out_dir, self.cfg = data_dir, out_dir, cfg
        self.classifier_path, self.oracle_path = classifier_path, oracle_path
        self.ctx, self.device = ctx, device
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
        if cfg.batch_size < 1 or cfg.epochs < 1 or not 0 <= cfg.decay_epochs <= cfg.epochs:
            raise UserError("need batch_size >= 1, epochs >= 1 and 0 <= decay_epochs <= epochs")
        if cfg.batch_size % ctx.world_size:
            raise UserError(f"batch_size {cfg.batch_size} does not split evenly over "
                            f"{ctx.world_size} processes")
        self.rank_batch = cfg.batch_size // ctx.world_size

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

        # Each domain on the device as uint8; batches are index gathers there.
        self.domains = {label: train.images[train.class_indices(label)].to(device)
                        for label in (NORMAL, PNEUMONIA)}
        largest = max(len(images) for images in self.domains.values())
        self.steps_per_epoch = max(1, largest // cfg.batch_size)
        total = cfg.epochs * self.steps_per_epoch

        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.gens_net.parameters(), lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discs_net.parameters(), lr=cfg.lr, betas=betas)
        factor = linear_decay(total, cfg.decay_epochs * self.steps_per_epoch)
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, factor)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, factor)
        self.pool_p, self.pool_n = ImagePool(cfg.pool_size), ImagePool(cfg.pool_size)
        self.step_fn = CycleGANStep(self.gens, self.discs, self.classifier, self.losses,
                                    self.opt_g, self.opt_d, self.pool_p, self.pool_n,
                                    autocast=lambda: autocast(device))
        self.progress = Progress()
        self.loss_sums = torch.zeros(len(LOSS_KEYS), device=device)
        self.loss_steps = torch.zeros((), device=device)
        self.log = RunLog(out_dir / "log.csv")
        self.samples = sample_images(self.splits["val"], cfg.sample_count)
        self.classifier_sha = sha256_file(classifier_path)

    # ----- checkpoints -------------------------------------------------------------------
    def _rank_state(self) -> dict[str, Any]:
        return {"rng": rng_state(), "pool_p": self.pool_p.state_dict(),
                "pool_n": self.pool_n.state_dict(), "loss_sums": self.loss_sums.cpu(),
                "loss_steps": self.loss_steps.item()}

    def save_checkpoint(self) -> None:
        """Collective (every rank contributes its pools and RNG streams); rank 0 writes."""
        rank_states = D.gather_objects(self._rank_state(), self.ctx)
        if self.ctx.is_main:
            save_atomic({
                "kind": CHECKPOINT_KIND,
                "run_config": self.cfg.run_config(),
                "generator_config": asdict(self.gen_config),
                "classifier_sha256": self.classifier_sha,
                "world_size": self.ctx.world_size,
                "generators": self.gens_net.state_dict(),
                "discriminators": self.discs_net.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict(),
                "rank_states": rank_states,
                "progress": asdict(self.progress),
            }, self.out_dir / LAST_CHECKPOINT)
        D.barrier(self.ctx)

    def restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        if ckpt.get("kind") != CHECKPOINT_KIND:
            raise UserError(f"{path} is not a CycleGAN training checkpoint")
        check_config_matches(ckpt["generator_config"], asdict(self.gen_config),
                             f"the generators in checkpoint {path}")
        check_config_matches(ckpt["run_config"], self.cfg.run_config(), f"checkpoint {path}")
        if ckpt["classifier_sha256"] != self.classifier_sha:
            raise UserError(f"checkpoint {path} was trained against another classifier than "
                            f"{self.classifier_path}; resume with the same classifier file")
        if ckpt["world_size"] != self.ctx.world_size:
            raise UserError(f"checkpoint {path} was written by {ckpt['world_size']} processes; "
                            f"resume it with the same --nproc_per_node, not {self.ctx.world_size}")
        self.gens_net.load_state_dict(ckpt["generators"])
        self.discs_net.load_state_dict(ckpt["discriminators"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        self.opt_d.load_state_dict(ckpt["opt_d"])
        self.sched_g.load_state_dict(ckpt["sched_g"])
        self.sched_d.load_state_dict(ckpt["sched_d"])
        mine = ckpt["rank_states"][self.ctx.rank]
        set_rng_state(mine["rng"])
        self.pool_p.load_state_dict(mine["pool_p"], self.device)
        self.pool_n.load_state_dict(mine["pool_n"], self.device)
        self.loss_sums.copy_(mine["loss_sums"])
        self.loss_steps.fill_(mine["loss_steps"])
        self.progress = Progress(**ckpt["progress"])
        if self.ctx.is_main:
            self.log.truncate_after(self.progress.epoch)

    # ----- training ----------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.progress.epoch >= self.cfg.epochs

    def _epoch_orders(self, epoch: int) -> dict[int, torch.Tensor]:
        """This rank's per-step batch indices for both domains, [steps, batch] each."""
        cfg, ctx = self.cfg, self.ctx
        length = self.steps_per_epoch * cfg.batch_size
        orders = {}
        for label, images in self.domains.items():
            order = domain_order(len(images), length, cfg.seed * 1_000_003 + epoch * 2 + label)
            steps = order.view(self.steps_per_epoch, ctx.world_size, self.rank_batch)
            orders[label] = steps[:, ctx.rank].to(self.device)
        return orders

    def _batch(self, label: int, index: torch.Tensor) -> torch.Tensor:
        images = unit_images(self.domains[label][index])
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def _step_limit_reached(self) -> bool:
        return bool(self.cfg.max_steps) and self.progress.step >= self.cfg.max_steps

    def _postfix(self) -> dict[str, str]:
        means = (self.loss_sums / self.loss_steps.clamp_min(1)).tolist()
        shown = ("g_total", "counter", "cycle", "d_p", "d_n", "flip_n2p", "flip_p2n")
        return {k: f"{means[LOSS_KEYS.index(k)]:.3f}" for k in shown}

    def train_epoch(self) -> bool:
        """Train to the end of the current epoch; False when `max_steps` stopped it early."""
        from tqdm import tqdm

        p, cfg = self.progress, self.cfg
        orders = self._epoch_orders(p.epoch)
        self.gens.train()
        self.discs.train()
        bar = tqdm(total=self.steps_per_epoch, initial=p.batch_in_epoch, leave=False,
                   desc=f"epoch {p.epoch + 1}/{cfg.epochs}", disable=not self.ctx.is_main)
        started = time.perf_counter()
        while p.batch_in_epoch < self.steps_per_epoch:
            i = p.batch_in_epoch
            terms = self.step_fn(self._batch(NORMAL, orders[NORMAL][i]),
                                 self._batch(PNEUMONIA, orders[PNEUMONIA][i]))
            self.sched_g.step()
            self.sched_d.step()
            self.loss_sums += torch.stack([terms[k] for k in LOSS_KEYS])
            self.loss_steps += 1
            p.step += 1
            p.batch_in_epoch += 1
            bar.update(1)
            if self.ctx.is_main and p.step % cfg.log_every == 0:
                bar.set_postfix(self._postfix())
            stop = self._step_limit_reached()
            if (cfg.checkpoint_every and p.step % cfg.checkpoint_every == 0) or stop:
                p.train_seconds += time.perf_counter() - started
                started = time.perf_counter()
                self.save_checkpoint()
            if stop:
                bar.close()
                return False
        p.train_seconds += time.perf_counter() - started
        bar.close()
        return True

    def end_epoch(self) -> dict[str, float]:
        """Log the epoch's mean losses and validation numbers, save samples and generators."""
        p = self.progress
        totals = D.all_reduce_sum(torch.cat([self.loss_sums, self.loss_steps.view(1)]),
                                  self.ctx)
        means = (totals[:-1] / totals[-1].clamp_min(1)).tolist()
        p.epoch += 1
        p.batch_in_epoch = 0
        self.loss_sums.zero_()
        self.loss_steps.zero_()
        row = {"epoch": float(p.epoch), **dict(zip(LOSS_KEYS, means, strict=True)),
               "lr": float(self.sched_g.get_last_lr()[0])}
        if self.ctx.is_main:
            self.gens_net.eval()
            val = summarise(self.gens_net, self.classifier, self.oracle, self.splits["val"],
                            self.device, self.cfg.eval_batch_size)
            row.update(val_row(val))
            save_sample_grid(self.gens_net, self.classifier, self.samples, self.device,
                             self.out_dir / "samples" / f"epoch_{p.epoch:03d}.png",
                             f"epoch {p.epoch}: validation samples")
            save_atomic(generators_state(self.gens_net.n2p, self.gens_net.p2n, self.gen_config),
                        self.out_dir / GENERATORS_FILE)
            self.log.append(row)
            self.log.plot(self.out_dir / "loss.png", f"counterfactual CycleGAN "
                          f"({self.gen_config.variant}, {self.losses.counter_form})")
        self.save_checkpoint()
        return row

    def report_epoch(self, row: dict[str, float]) -> None:
        if not self.ctx.is_main:
            return
        val = "  ".join(f"{k[4:]} {v:.3f}" for k, v in row.items() if k.startswith("val_"))
        print(f"epoch {int(row['epoch'])}/{self.cfg.epochs}: G {row['g_total']:.3f} "
              f"(counter {row['counter']:.3f}, cycle {row['cycle']:.3f}) D_P {row['d_p']:.3f} "
              f"D_N {row['d_n']:.3f} | val {val}", flush=True)

    def finish(self) -> dict[str, Any]:
        """Measure the counterfactuals on the test split; write summary and lineage (rank 0)."""
        from cfxray.lineage import write_lineage

        summary: dict[str, Any] = {}
        if self.ctx.is_main:
            self.gens_net.eval()
            test = summarise(self.gens_net, self.classifier, self.oracle, self.splits["test"],
                             self.device, self.cfg.eval_batch_size)
            summary = {"test": test, "train_seconds": round(self.progress.train_seconds, 1),
                       "steps": self.progress.step, "epochs": self.progress.epoch,
                       "world_size": self.ctx.world_size, "device": str(self.device),
                       "generator": asdict(self.gen_config), "loss": asdict(self.losses)}
            (self.out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
            inputs: dict[str, str | Path] = {"data": self.data_dir,
                                             "classifier": self.classifier_path}
            if self.oracle_path:
                inputs["oracle"] = self.oracle_path
            write_lineage(self.out_dir, "cyclegan", inputs=inputs,
                          params={**asdict(self.cfg), "generator": asdict(self.gen_config)},
                          metrics={"test": test, "train_seconds": summary["train_seconds"]})
            print(f"trained {self.progress.step} steps in {self.progress.train_seconds:.0f} s; "
                  f"test-split counterfactuals:\n{format_summary(test)}\n"
                  f"-> {self.out_dir / GENERATORS_FILE}", flush=True)
        D.barrier(self.ctx)
        return summary


def train_cyclegan(data_dir: str | Path, classifier_path: str | Path, out_dir: str | Path,
                   cfg: CycleGANTrainConfig, oracle_path: str | Path | None = None,
                   resume: bool = False) -> dict[str, Any]:
    """Train (or continue) a CycleGAN run; returns the test summary on rank 0, else {}."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    classifier_path = Path(classifier_path)
    oracle = Path(oracle_path) if oracle_path else None
    last = out_dir / LAST_CHECKPOINT
    if last.exists() and not resume:
        raise UserError(f"{out_dir} already holds a training run; pass --resume to continue it "
                        "or choose an empty output folder")
    with D.distributed_session(cfg.device) as (ctx, device):
        if ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
        run = CycleGANRun(data_dir, classifier_path, oracle, out_dir, cfg, ctx, device)
        if resume and last.exists():
            run.restore(last)
            if ctx.is_main:
                print(f"resuming from {last} at epoch {run.progress.epoch + 1}, step "
                      f"{run.progress.step}", flush=True)
        while not run.finished:
            if not run.train_epoch():
                if ctx.is_main:
                    print(f"stopped after {run.progress.step} steps (max_steps); continue "
                          f"with --resume", flush=True)
                return {}
            run.report_epoch(run.end_epoch())
        return run.finish()
