"""The one training driver: the epoch loop, checkpoints, resume, torchrun, lineage.

A trainer (`cfxray.train.classifier`, `cfxray.train.cyclegan`) plugs in what differs: its
models and batches, one optimisation step, the end of an epoch (validation, the kept model),
its part of the checkpoint and its final report. The driver does the rest the same way for
both, so a fix to resuming, to a refusal or to torchrun cannot reach one trainer and miss
the other (docs/TRAINING.md describes what it guarantees).
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from cfxray.checkpoint import (
    check_config_matches,
    load_checkpoint,
    remove_stale_temporaries,
    rng_state,
    save_atomic,
    set_rng_state,
)
from cfxray.errors import UserError
from cfxray.train import distributed as D
from cfxray.train.runlog import RunLog

LAST_CHECKPOINT = Path("checkpoints") / "last.pt"
CHECKPOINT_FORMAT = 2  # bumped when the layout changes: older files are refused, not misread


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed); full precision on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move to the device; on CUDA use channels_last, which the tensor cores prefer."""
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    return model


@dataclass
class Progress:
    """Where the run stands; saved in every checkpoint (a trainer may add fields)."""

    step: int = 0
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # optimiser steps done inside the current epoch


@dataclass
class Outcome:
    """What a finished run reports: the return value, its lineage record and a summary line."""

    result: dict[str, Any]
    kind: str
    inputs: dict[str, str | Path]
    params: dict[str, Any]
    metrics: dict[str, Any]
    message: str


class Trainer(ABC):
    """What the driver needs from a trainer. Subclasses set the class attributes, and in
    `__init__` `steps_per_epoch` and `loss_keys` (one per value `step` returns)."""

    checkpoint_kind: ClassVar[str]
    title: ClassVar[str]  # names the run in messages: "classifier", "CycleGAN"
    progress_class: ClassVar[type[Progress]] = Progress
    shown: ClassVar[tuple[str, ...]] = ()  # loss keys on the progress bar; empty: all

    steps_per_epoch: int
    loss_keys: tuple[str, ...]

    def __init__(self, out_dir: Path, cfg: Any, ctx: D.DistContext, device: torch.device) -> None:
        self.out_dir, self.cfg, self.ctx, self.device = out_dir, cfg, ctx, device
        self.progress = self.progress_class()

    # The run ---------------------------------------------------------------------------
    @abstractmethod
    def trained_modules(self) -> list[nn.Module]:
        """The modules in training mode during epochs; their weights must stay finite."""

    @abstractmethod
    def start_epoch(self, epoch: int) -> None:
        """Prepare the epoch's batches."""

    @abstractmethod
    def step(self, index: int) -> torch.Tensor:
        """One optimisation step (`index` inside the epoch): detached losses on the device."""

    @abstractmethod
    def end_epoch(self, means: dict[str, float]) -> dict[str, float]:
        """Called on every rank once an epoch is done and counted in `progress`: validate,
        keep the model, return the log row's further columns."""

    @property
    def stopped_early(self) -> bool:
        return False

    @abstractmethod
    def describe_epoch(self, row: dict[str, float]) -> str:
        """The line printed after each epoch."""

    @abstractmethod
    def plot_title(self) -> str:
        """The title of `loss.png`."""

    @abstractmethod
    def finish(self, train_seconds: float) -> Outcome:
        """Rank 0 only: the final measurements and the lineage record."""

    # The checkpoint --------------------------------------------------------------------
    @abstractmethod
    def configs(self) -> dict[str, tuple[dict[str, Any], str]]:
        """Checkpoint key -> (settings a resumed run must share, what to call them)."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """The trainer's part of the checkpoint: models, optimisers, schedulers."""

    @abstractmethod
    def load_state(self, ckpt: dict[str, Any], path: Path) -> None:
        """Restore what `state` saved (or refuse, in one line, a checkpoint it cannot)."""

    @abstractmethod
    def rank_state(self) -> dict[str, Any]:
        """This rank's own state beyond its RNG streams (augmentation stream, image pools)."""

    @abstractmethod
    def load_rank_state(self, state: dict[str, Any]) -> None:
        """Restore what `rank_state` saved."""


class _Loop:
    """Drives one trainer in one process (of possibly several under torchrun)."""

    def __init__(self, trainer: Trainer) -> None:
        self.t = trainer
        self.ctx, self.cfg, self.device = trainer.ctx, trainer.cfg, trainer.device
        self.last = trainer.out_dir / LAST_CHECKPOINT
        self.loss_sums = torch.zeros(len(trainer.loss_keys), device=self.device)
        self.loss_steps = torch.zeros((), device=self.device)
        self.train_seconds = 0.0
        self.saved_step: int | None = None
        self.log = RunLog(trainer.out_dir / "log.csv")

    @property
    def progress(self) -> Progress:
        return self.t.progress

    # ----- checkpoints -------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Collective (every rank contributes its RNG streams); rank 0 writes the file."""
        self.check_finite()
        rank_states = D.gather_objects({"rng": rng_state(), "loss_sums": self.loss_sums.cpu(),
                                        "loss_steps": self.loss_steps.item(),
                                        **self.t.rank_state()}, self.ctx)
        if self.ctx.is_main:
            save_atomic({
                "kind": self.t.checkpoint_kind, "format": CHECKPOINT_FORMAT,
                **{key: current for key, (current, _) in self.t.configs().items()},
                "world_size": self.ctx.world_size,
                **self.t.state(),
                "rank_states": rank_states,
                "progress": asdict(self.progress),
                "train_seconds": self.train_seconds,
            }, self.last)
        self.saved_step = self.progress.step
        D.barrier(self.ctx)

    def restore(self) -> None:
        path = self.last
        ckpt = load_checkpoint(path)
        if ckpt.get("kind") != self.t.checkpoint_kind:
            raise UserError(f"{path} is not a {self.t.title} training checkpoint")
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"{path} was written by an earlier cfxray version and cannot be "
                            "resumed; start a new output folder")
        for key, (current, what) in self.t.configs().items():
            check_config_matches(ckpt[key], current, f"{what}checkpoint {path}")
        if ckpt["world_size"] != self.ctx.world_size:
            raise UserError(f"checkpoint {path} was written by {ckpt['world_size']} processes; "
                            f"resume it with the same --nproc_per_node, not {self.ctx.world_size}")
        self.t.load_state(ckpt, path)
        mine = ckpt["rank_states"][self.ctx.rank]
        set_rng_state(mine["rng"])
        self.loss_sums.copy_(mine["loss_sums"])
        self.loss_steps.fill_(mine["loss_steps"])
        self.t.load_rank_state(mine)
        self.t.progress = self.t.progress_class(**ckpt["progress"])
        self.train_seconds = ckpt["train_seconds"]
        self.saved_step = self.progress.step
        if self.ctx.is_main:
            self.log.truncate_after(self.progress.epoch)

    def check_finite(self) -> None:
        """Stop (every rank) before a non-finite loss or weight reaches any file."""
        params = [p.detach() for m in self.t.trained_modules() for p in m.parameters()]
        finite = torch.stack([torch.isfinite(self.loss_sums).all(),
                              *(torch.isfinite(p).all() for p in params)]).all()
        bad = D.all_reduce_sum(torch.tensor([0.0 if finite else 1.0], device=self.device),
                               self.ctx)
        if bad.item():
            kept = (f"{self.last} still holds step {self.saved_step}"
                    if self.saved_step is not None else "no checkpoint was written")
            raise UserError(f"{self.t.title} training diverged: the loss or the weights became "
                            f"non-finite by step {self.progress.step}; nothing of it was saved "
                            f"({kept}); lower the learning rate or check the data")

    # ----- the loop ----------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.t.stopped_early or self.progress.epoch >= self.cfg.epochs

    def _postfix(self) -> dict[str, str]:
        means = (self.loss_sums / self.loss_steps.clamp_min(1)).tolist()
        keys = self.t.shown or self.t.loss_keys
        return {k: f"{means[self.t.loss_keys.index(k)]:.4f}" for k in keys}

    def train_epoch(self) -> bool:
        """Train to the end of the current epoch; False when `max_steps` stopped it early."""
        from tqdm import tqdm

        p, cfg = self.progress, self.cfg
        self.t.start_epoch(p.epoch)
        for module in self.t.trained_modules():
            module.train()
        bar = tqdm(total=self.t.steps_per_epoch, initial=p.batch_in_epoch, leave=False,
                   desc=f"epoch {p.epoch + 1}/{cfg.epochs}", disable=not self.ctx.is_main)
        started = time.perf_counter()
        while p.batch_in_epoch < self.t.steps_per_epoch:
            self.loss_sums += self.t.step(p.batch_in_epoch)
            self.loss_steps += 1
            p.step += 1
            p.batch_in_epoch += 1
            bar.update(1)
            if self.ctx.is_main and p.step % cfg.log_every == 0:
                bar.set_postfix(self._postfix())
            stop = bool(cfg.max_steps) and p.step >= cfg.max_steps
            if (cfg.checkpoint_every and p.step % cfg.checkpoint_every == 0) or stop:
                self.train_seconds += time.perf_counter() - started
                self.save_checkpoint()
                started = time.perf_counter()
            if stop:
                bar.close()
                return False
        self.train_seconds += time.perf_counter() - started
        bar.close()
        return True

    def end_epoch(self) -> None:
        """Mean losses over every rank, the trainer's validation, the log row, a checkpoint."""
        self.check_finite()
        p = self.progress
        totals = D.all_reduce_sum(torch.cat([self.loss_sums, self.loss_steps.view(1)]),
                                  self.ctx)
        means = dict(zip(self.t.loss_keys, (totals[:-1] / totals[-1].clamp_min(1)).tolist(),
                         strict=True))
        p.epoch += 1
        p.batch_in_epoch = 0
        self.loss_sums.zero_()
        self.loss_steps.zero_()
        row = {"epoch": float(p.epoch), **means, **self.t.end_epoch(means)}
        if self.ctx.is_main:
            self.log.append(row)
            self.log.plot(self.t.out_dir / "loss.png", self.t.plot_title())
        self.save_checkpoint()
        if self.ctx.is_main:
            print(self.t.describe_epoch(row), flush=True)

    def finish(self) -> dict[str, Any]:
        from cfxray.lineage import write_lineage

        result: dict[str, Any] = {}
        if self.ctx.is_main:
            outcome = self.t.finish(self.train_seconds)
            write_lineage(self.t.out_dir, outcome.kind, inputs=outcome.inputs,
                          params=outcome.params, metrics=outcome.metrics)
            print(outcome.message, flush=True)
            result = outcome.result
        D.barrier(self.ctx)
        return result


def run_training(make_trainer: Callable[[D.DistContext, torch.device], Trainer],
                 out_dir: str | Path, cfg: Any, resume: bool) -> dict[str, Any]:
    """Train (or continue) a run in `out_dir`; the trainer's result on rank 0, else {}.
    `cfg` is the trainer's settings: the driver reads `epochs`, `batch_size`, `max_steps`,
    `checkpoint_every`, `log_every` and `device`."""
    out_dir = Path(out_dir)
    last = out_dir / LAST_CHECKPOINT
    if last.exists() and not resume:
        raise UserError(f"{out_dir} already holds a training run; pass --resume to continue it "
                        "or choose an empty output folder")
    if cfg.batch_size < 1 or cfg.epochs < 1:
        raise UserError("need batch_size >= 1 and epochs >= 1")
    with D.distributed_session(cfg.device) as (ctx, dev):
        if cfg.batch_size % ctx.world_size:
            raise UserError(f"batch_size {cfg.batch_size} does not split evenly over "
                            f"{ctx.world_size} processes")
        if ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            for folder in (out_dir, last.parent):
                for stale in remove_stale_temporaries(folder):
                    print(f"removed {stale}, left by an interrupted write", flush=True)
        loop = _Loop(make_trainer(ctx, dev))
        if resume and last.exists():
            loop.restore()
            if ctx.is_main:
                print(f"resuming from {last} at epoch {loop.progress.epoch + 1}, step "
                      f"{loop.progress.step}", flush=True)
        while not loop.finished:
            if not loop.train_epoch():
                if ctx.is_main:
                    print(f"stopped after {loop.progress.step} steps (max_steps); continue "
                          f"with --resume", flush=True)
                return {}
            loop.end_epoch()
        return loop.finish()
