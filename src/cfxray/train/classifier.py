"""Train the pneumonia classifier: balanced loss, radiograph augmentation, best-by-AUC.

The output folder holds `classifier.pt` (the best epoch by validation AUC, ties broken by the
lower validation loss), `checkpoints/last.pt` (the driver's, with the model, optimiser,
scheduler, every rank's augmentation stream and the early-stopping state), `log.csv`,
`loss.png` and, once training ends, `lineage.json`. The loop, checkpoints, resume and
torchrun are `cfxray.train.driver`'s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import nn

from cfxray.checkpoint import save_atomic, seed_everything
from cfxray.conventions import CLASSIFIER_FILE
from cfxray.data.tensors import SplitData, load_training_splits, unit_images
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
from cfxray.train.augment import augment
from cfxray.train.batches import DeviceBatches, device_images
from cfxray.train.configs import ClassifierTrainConfig
from cfxray.train.driver import Outcome, Progress, Trainer, autocast, prepare_model, run_training


@dataclass
class ClassifierProgress(Progress):
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


def improves(val: EvalResult, progress: ClassifierProgress, tolerance: float) -> bool:
    """Whether this epoch replaces the kept checkpoint.

    AUC ranks images but ignores the decision threshold. On a validation split of a few
    hundred images, epochs within `tolerance` of the best AUC seen are equally good rankers,
    and among them the lower validation loss (the better calibrated model) is kept
    (docs/CLASSIFIER.md has the epoch this was measured on).
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
    for start in range(0, len(data), batch_size):
        with autocast(device):
            logits.append(model(device_images(data.images[start:start + batch_size],
                                              device)).float())
    model.train(was_training)
    all_logits = torch.cat(logits).cpu()
    labels = data.labels
    probs = torch.softmax(all_logits, dim=1)[:, 1]
    return EvalResult(auc=roc_auc(labels.numpy(), probs.float().numpy()),
                      loss=float(nnf.cross_entropy(all_logits, labels)),
                      accuracy=float(((probs >= 0.5).long() == labels).float().mean()))


class ClassifierTrainer(Trainer):
    checkpoint_kind = "cfxray-classifier-run"
    title = "classifier"
    progress_class = ClassifierProgress
    progress: ClassifierProgress

    def __init__(self, data_dir: Path, out_dir: Path, cfg: ClassifierTrainConfig,
                 ctx: D.DistContext, device: torch.device) -> None:
        super().__init__(out_dir, cfg, ctx, device)
        self.data_dir = data_dir
        self.splits = load_training_splits(data_dir)
        train = self.splits["train"]
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
        # Each rank augments its own images with its own stream.
        self.aug_gen = torch.Generator().manual_seed(cfg.seed + 7919 * (ctx.rank + 1))

        self.steps_per_epoch = max(1, len(train) // cfg.batch_size)
        self.loss_keys = ("train_loss",)
        self.batches = DeviceBatches(train.images, train.labels, self.steps_per_epoch,
                                     cfg.batch_size, ctx, device, seed=lambda e: cfg.seed + e)

        counts = torch.bincount(train.labels, minlength=2).double()
        weight = (counts.sum() / (2 * counts)).float() if cfg.balanced_loss else None
        self.criterion = nn.CrossEntropyLoss(weight=weight.to(device) if weight is not None
                                             else None)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr,
                                           weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * self.steps_per_epoch,
            pct_start=0.2)

    # ----- the run -----------------------------------------------------------------------
    def trained_modules(self) -> list[nn.Module]:
        return [self.model]

    def start_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def step(self, index: int) -> torch.Tensor:
        images, labels = self.batches[index]
        x = augment(images, self.cfg.augment, self.aug_gen)
        with autocast(self.device):
            logits = self.model(x)
        loss = self.criterion(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach().view(1)

    @property
    def stopped_early(self) -> bool:
        return self.progress.early_stopped

    def end_epoch(self, means: dict[str, float]) -> dict[str, float]:
        """Validate, keep the best model, decide on early stopping."""
        p = self.progress
        # Rank 0 decides: ranks' BatchNorm statistics drift apart slightly between DDP
        # broadcasts, and every rank must take the same early-stopping decision.
        val = (evaluate(self.net, self.splits["val"], self.device, self.cfg.eval_batch_size)
               if self.ctx.is_main else None)
        val = D.broadcast_object(val, self.ctx)
        p.peak_auc = max(p.peak_auc, val.auc)
        if improves(val, p, self.cfg.auc_tolerance):
            p.best_auc, p.best_val_loss, p.best_epoch, p.bad_epochs = val.auc, val.loss, p.epoch, 0
            if self.ctx.is_main:
                save_atomic(classifier_state(self.net, {
                    "epoch": p.epoch, "train_config": self.cfg.run_config(),
                    "metrics": {"val_auc": val.auc, "val_loss": val.loss,
                                "val_accuracy": val.accuracy}}),
                    self.out_dir / CLASSIFIER_FILE)
        else:
            p.bad_epochs += 1
        p.early_stopped = p.bad_epochs >= self.cfg.patience
        return {"val_loss": val.loss, "val_auc": val.auc, "val_accuracy": val.accuracy,
                "lr": float(self.scheduler.get_last_lr()[0])}

    def describe_epoch(self, row: dict[str, float]) -> str:
        note = "  (best)" if self.progress.best_epoch == self.progress.epoch else ""
        return (f"epoch {int(row['epoch'])}/{self.cfg.epochs}: train loss "
                f"{row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
                f"val AUC {row['val_auc']:.4f}  val acc {row['val_accuracy']:.3f}{note}")

    def plot_title(self) -> str:
        return f"classifier ({self.cfg.arch})"

    def finish(self, train_seconds: float) -> Outcome:
        """Test the kept model."""
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
        return Outcome(
            result=metrics, kind="classifier", inputs=inputs, metrics=metrics,
            params={**asdict(self.cfg), "model": asdict(self.model_config)},
            message=(f"best epoch {p.best_epoch}: val AUC {p.best_auc:.4f}; test AUC "
                     f"{test.auc:.4f}, test accuracy {test.accuracy:.3f} "
                     f"({train_seconds:.0f} s) -> {self.out_dir / CLASSIFIER_FILE}"))

    # ----- the checkpoint ----------------------------------------------------------------
    def configs(self) -> dict[str, tuple[dict[str, Any], str]]:
        return {"run_config": (self.cfg.run_config(), ""),
                "model_config": (asdict(self.model_config), "the model in ")}

    def state(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state(self, ckpt: dict[str, Any], path: Path) -> None:
        self.net.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])

    def rank_state(self) -> dict[str, Any]:
        return {"aug": self.aug_gen.get_state()}

    def load_rank_state(self, state: dict[str, Any]) -> None:
        self.aug_gen.set_state(state["aug"])


def train_classifier(data_dir: str | Path, out_dir: str | Path, cfg: ClassifierTrainConfig,
                     resume: bool = False) -> dict[str, Any]:
    """Train (or continue) a classifier run; returns the final metrics on rank 0, else {}."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    return run_training(lambda ctx, device: ClassifierTrainer(data_dir, out_dir, cfg, ctx, device),
                        out_dir, cfg, resume)
