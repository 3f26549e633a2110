"""Train the pneumonia classifier: balanced loss, radiograph augmentation, best-by-AUC, resumable.

The output folder holds `classifier.pt` (the best epoch by validation AUC, ties broken by the
lower validation loss), `checkpoints/last.pt` (everything needed to continue: model,
optimiser, scheduler, every rank's RNG streams, the position inside the epoch and the
early-stopping state), `log.csv`, `loss.png` and, once training ends, `lineage.json`.
A run killed at any point and started again with `--resume` ends with the same weights as a
run that was never interrupted (same seed, CPU).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import nn

from cfxray.checkpoint import (
    check_config_matches,
    load_checkpoint,
    rng_state,
    save_atomic,
    seed_everything,
    set_rng_state,
)
from cfxray.conventions import CLASSIFIER_FILE
from cfxray.data.tensors import SplitData, load_training_splits, unit_images
from cfxray.errors import UserError
from cfxray.evaluation.classifier_metrics import roc_auc
from cfxray.models.classifier import (
    ClassifierConfig,
    build_classifier,
    classifier_state,
    load_classifier,
    load_weights_file,
    resolve_stem,
)
from cfxray.train import distributed as D
from cfxray.train.configs import ClassifierTrainConfig
from cfxray.train.loop_utils import (
    WeightEMA,
    augment,
    autocast,
    batch_loader,
    eval_loader,
    prepare_model,
    to_device_images,
)
from cfxray.train.runlog import RunLog

CHECKPOINT_KIND = "cfxray-classifier-run"
LAST_CHECKPOINT = Path("checkpoints") / "last.pt"


@dataclass
class Progress:
    """Where the run stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # optimiser steps done inside the current epoch
    best_auc: float = -1.0
    best_val_loss: float = float("inf")
    peak_auc: float = -1.0  # the highest validation AUC so far (the kept epoch may be below it)
    best_epoch: int = 0
    bad_epochs: int = 0
    early_stopped: bool = False


@dataclass(frozen=True)
class EvalResult:
    auc: float
    loss: float
    accuracy: float


def improves(val: EvalResult, progress: Progress, tolerance: float) -> bool:
    """Whether this epoch replaces the kept checkpoint.

    AUC ranks images but ignores the decision threshold. On a validation split of a few
    hundred images, epochs within `tolerance` of the best AUC seen are equally good rankers,
    and among them the lower validation loss (the better calibrated model) is kept: measured,
    a ResNet-18 epoch with AUC 0.9988 but accuracy 0.84 beat one with 0.9982 and 0.996 on AUC
    alone.
    """
    floor = max(progress.peak_auc, val.auc) - tolerance
    if val.auc < floor:
        return False
    return progress.best_auc < floor or val.loss < progress.best_val_loss


def _intensity_stats(data: SplitData, chunk: int = 512) -> tuple[float, float]:
    """Training-set mean and std of [0, 1] intensities, the classifier's normalisation."""
    total = total_sq = 0.0
    for start in range(0, len(data), chunk):
        x = unit_images(data.images[start:start + chunk], torch.float64)
        total += float(x.sum())
        total_sq += float(x.square().sum())
    n = data.images.numel()
    mean = total / n
    std = max((total_sq / n - mean**2) ** 0.5, 1e-3)
    return round(mean, 4), round(std, 4)


@torch.no_grad()
def evaluate(model: nn.Module, data: SplitData, device: torch.device,
             batch_size: int = 256) -> EvalResult:
    """AUC of P(PNEUMONIA), unweighted mean cross-entropy and accuracy over a whole split."""
    was_training = model.training
    model.eval()
    logits = []
    for images, _ in eval_loader(data, batch_size, device):
        with autocast(device):
            logits.append(model(to_device_images(images, device)).float())
    model.train(was_training)
    all_logits = torch.cat(logits).cpu()
    labels = data.labels
    probs = torch.softmax(all_logits, dim=1)[:, 1]
    return EvalResult(auc=roc_auc(labels.numpy(), probs.float().numpy()),
                      loss=float(nnf.cross_entropy(all_logits, labels)),
                      accuracy=float(((probs >= 0.5).long() == labels).float().mean()))


class ClassifierRun:
    """One training run in one process (of possibly several under torchrun)."""

    def __init__(self, data_dir: Path, out_dir: Path, cfg: ClassifierTrainConfig,
                 ctx: D.DistContext, device: torch.device) -> None:
        self.data_dir, self.out_dir, self.cfg = data_dir, out_dir, cfg
        self.ctx, self.device = ctx, device
        self.splits = load_training_splits(data_dir)
        train = self.splits["train"]
        if cfg.batch_size % ctx.world_size:
            raise UserError(f"batch_size {cfg.batch_size} does not split evenly over "
                            f"{ctx.world_size} processes")
        mean, std = _intensity_stats(train)
        size = cfg.image_size or train.size
        self.model_config = ClassifierConfig(arch=cfg.arch, image_size=size, mean=mean, std=std,
                                             stem=resolve_stem(cfg.stem, cfg.arch, size))

        seed_everything(cfg.seed)  # same initial weights on every rank
        model = build_classifier(self.model_config)
        if cfg.init_weights:
            skipped = load_weights_file(model, cfg.init_weights)
            if skipped and ctx.is_main:
                print(f"{cfg.init_weights}: {len(skipped)} tensors did not fit and start at "
                      f"random init ({', '.join(skipped[:4])}...)", flush=True)
        self.net = prepare_model(model, device)
        self.model = D.wrap_model(self.net, ctx, device)
        self.ema = WeightEMA(self.net, cfg.ema_decay) if cfg.ema_decay else None
        # Each rank augments its own images with its own stream.
        self.aug_gen = torch.Generator().manual_seed(cfg.seed + 7919 * (ctx.rank + 1))

        self.sampler = D.ShardSampler(len(train), ctx, seed=cfg.seed)
        self.rank_batch = min(cfg.batch_size // ctx.world_size, self.sampler.per_rank)
        self.steps_per_epoch = self.sampler.per_rank // self.rank_batch
        self.loader = batch_loader(train, self.sampler, self.rank_batch, device, cfg.num_workers)

        counts = torch.bincount(train.labels, minlength=2).double()
        weight = (counts.sum() / (2 * counts)).float() if cfg.balanced_loss else None
        self.criterion = nn.CrossEntropyLoss(weight=weight.to(device) if weight is not None
                                             else None)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr,
                                           weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * self.steps_per_epoch,
            pct_start=0.2)
        self.progress = Progress()
        self.loss_sum = torch.zeros((), device=device)
        self.loss_count = torch.zeros((), device=device)
        self.log = RunLog(out_dir / "log.csv")

    # ----- checkpoints -------------------------------------------------------------------
    def _rank_state(self) -> dict[str, Any]:
        return {"rng": rng_state(), "aug": self.aug_gen.get_state(),
                "loss_sum": self.loss_sum.item(), "loss_count": self.loss_count.item()}

    def save_checkpoint(self) -> None:
        """Collective (every rank contributes its RNG streams); rank 0 writes the file."""
        rank_states = D.gather_objects(self._rank_state(), self.ctx)
        if self.ctx.is_main:
            save_atomic({
                "kind": CHECKPOINT_KIND,
                "run_config": self.cfg.run_config(),
                "model_config": asdict(self.model_config),
                "world_size": self.ctx.world_size,
                "model": self.net.state_dict(),
                "ema": self.ema.model.state_dict() if self.ema else None,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rank_states": rank_states,
                "progress": asdict(self.progress),
            }, self.out_dir / LAST_CHECKPOINT)
        D.barrier(self.ctx)

    def restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        if ckpt.get("kind") != CHECKPOINT_KIND:
            raise UserError(f"{path} is not a classifier training checkpoint")
        check_config_matches(ckpt["run_config"], self.cfg.run_config(), f"checkpoint {path}")
        check_config_matches(ckpt["model_config"], asdict(self.model_config),
                             f"the model in checkpoint {path}")
        if ckpt["world_size"] != self.ctx.world_size:
            raise UserError(f"checkpoint {path} was written by {ckpt['world_size']} processes; "
                            f"resume it with the same --nproc_per_node, not {self.ctx.world_size}")
        self.net.load_state_dict(ckpt["model"])
        if self.ema:
            self.ema.model.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        mine = ckpt["rank_states"][self.ctx.rank]
        set_rng_state(mine["rng"])
        self.aug_gen.set_state(mine["aug"])
        self.loss_sum.fill_(mine["loss_sum"])
        self.loss_count.fill_(mine["loss_count"])
        self.progress = Progress(**ckpt["progress"])
        if self.ctx.is_main:
            self.log.truncate_after(self.progress.epoch)

    @property
    def kept_model(self) -> nn.Module:
        """The model validated and saved: the weight average when there is one."""
        return self.ema.model if self.ema else self.net

    # ----- training ----------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.progress.early_stopped or self.progress.epoch >= self.cfg.epochs

    def _step_limit_reached(self) -> bool:
        return bool(self.cfg.max_steps) and self.progress.step >= self.cfg.max_steps

    def train_epoch(self) -> bool:
        """Train to the end of the current epoch; False when `max_steps` stopped it early."""
        from tqdm import tqdm

        p, cfg = self.progress, self.cfg
        self.sampler.set_epoch(p.epoch, start=p.batch_in_epoch * self.rank_batch)
        self.model.train()
        bar = tqdm(total=self.steps_per_epoch, initial=p.batch_in_epoch, leave=False,
                   desc=f"epoch {p.epoch + 1}/{cfg.epochs}", disable=not self.ctx.is_main)
        for images, labels in self.loader:
            x = augment(to_device_images(images, self.device), cfg.augment, self.aug_gen)
            labels = labels.to(self.device, non_blocking=True)
            with autocast(self.device):
                logits = self.model(x)
            loss = self.criterion(logits.float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            if self.ema:
                self.ema.update(self.net)
            # Accumulate on the device: no host sync in the hot loop.
            self.loss_sum += loss.detach() * labels.numel()
            self.loss_count += labels.numel()
            p.step += 1
            p.batch_in_epoch += 1
            bar.update(1)
            if self.ctx.is_main and p.step % cfg.log_every == 0:
                bar.set_postfix(loss=f"{(self.loss_sum / self.loss_count).item():.4f}")
            if cfg.checkpoint_every and p.step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
            if self._step_limit_reached():
                bar.close()
                if not cfg.checkpoint_every or p.step % cfg.checkpoint_every:
                    self.save_checkpoint()
                return False
        bar.close()
        return True

    def end_epoch(self) -> dict[str, float]:
        """Validate, keep the best model, log, decide on early stopping, checkpoint."""
        p = self.progress
        totals = D.all_reduce_sum(torch.stack([self.loss_sum, self.loss_count]), self.ctx)
        train_loss = float(totals[0] / totals[1])
        # Rank 0 decides: ranks' BatchNorm statistics drift apart slightly between DDP
        # broadcasts, and every rank must take the same early-stopping decision.
        val = (evaluate(self.kept_model, self.splits["val"], self.device,
                        self.cfg.eval_batch_size) if self.ctx.is_main else None)
        val = D.broadcast_object(val, self.ctx)
        p.epoch += 1
        p.batch_in_epoch = 0
        self.loss_sum.zero_()
        self.loss_count.zero_()
        p.peak_auc = max(p.peak_auc, val.auc)
        if improves(val, p, self.cfg.auc_tolerance):
            p.best_auc, p.best_val_loss, p.best_epoch, p.bad_epochs = val.auc, val.loss, p.epoch, 0
            if self.ctx.is_main:
                save_atomic(classifier_state(self.kept_model, {
                    "epoch": p.epoch, "train_config": self.cfg.run_config(),
                    "metrics": {"val_auc": val.auc, "val_loss": val.loss,
                                "val_accuracy": val.accuracy}}),
                    self.out_dir / CLASSIFIER_FILE)
        else:
            p.bad_epochs += 1
        p.early_stopped = p.bad_epochs >= self.cfg.patience
        row = {"epoch": float(p.epoch), "train_loss": train_loss, "val_loss": val.loss,
               "val_auc": val.auc, "val_accuracy": val.accuracy,
               "lr": float(self.scheduler.get_last_lr()[0])}
        if self.ctx.is_main:
            self.log.append(row)
            self.log.plot(self.out_dir / "loss.png", f"classifier ({self.cfg.arch})")
        self.save_checkpoint()
        return row

    def report_epoch(self, row: dict[str, float]) -> None:
        if self.ctx.is_main:
            note = "  (best)" if self.progress.best_epoch == self.progress.epoch else ""
            print(f"epoch {int(row['epoch'])}/{self.cfg.epochs}: train loss "
                  f"{row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
                  f"val AUC {row['val_auc']:.4f}  val acc {row['val_accuracy']:.3f}{note}",
                  flush=True)

    def finish(self, train_seconds: float) -> dict[str, Any]:
        """Test the best checkpoint and record lineage (rank 0)."""
        from cfxray.lineage import write_lineage

        metrics: dict[str, Any] = {}
        if self.ctx.is_main:
            best = load_classifier(self.out_dir / CLASSIFIER_FILE).to(self.device)
            test = evaluate(best, self.splits["test"], self.device, self.cfg.eval_batch_size)
            p = self.progress
            metrics = {"best_val_auc": p.best_auc, "best_val_loss": p.best_val_loss,
                       "best_epoch": p.best_epoch, "epochs_run": p.epoch,
                       "early_stopped": p.early_stopped, "test_auc": test.auc,
                       "test_loss": test.loss, "test_accuracy": test.accuracy,
                       "train_seconds": round(train_seconds, 1),
                       "world_size": self.ctx.world_size}
            inputs: dict[str, str | Path] = {"data": self.data_dir}
            if self.cfg.init_weights:
                inputs["init_weights"] = self.cfg.init_weights
            write_lineage(self.out_dir, "classifier", inputs=inputs,
                          params={**asdict(self.cfg), "model": asdict(self.model_config)},
                          metrics=metrics)
            print(f"best epoch {p.best_epoch}: val AUC {p.best_auc:.4f}; test AUC "
                  f"{test.auc:.4f}, test accuracy {test.accuracy:.3f} "
                  f"({train_seconds:.0f} s) -> {self.out_dir / CLASSIFIER_FILE}", flush=True)
        D.barrier(self.ctx)
        return metrics


def train_classifier(data_dir: str | Path, out_dir: str | Path, cfg: ClassifierTrainConfig,
                     resume: bool = False) -> dict[str, Any]:
    """Train (or continue) a classifier run; returns the final metrics on rank 0, else {}."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    last = out_dir / LAST_CHECKPOINT
    if last.exists() and not resume:
        raise UserError(f"{out_dir} already holds a training run; pass --resume to continue it "
                        "or choose an empty output folder")
    with D.distributed_session(cfg.device) as (ctx, device):
        if ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
        run = ClassifierRun(data_dir, out_dir, cfg, ctx, device)
        if resume and last.exists():
            run.restore(last)
            if ctx.is_main:
                print(f"resuming from {last} at epoch {run.progress.epoch + 1}, step "
                      f"{run.progress.step}", flush=True)
        start = time.perf_counter()
        while not run.finished:
            if not run.train_epoch():
                if ctx.is_main:
                    print(f"stopped after {run.progress.step} steps (max_steps); continue "
                          f"with --resume", flush=True)
                return {}
            run.report_epoch(run.end_epoch())
        return run.finish(time.perf_counter() - start)
