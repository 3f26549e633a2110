"""`cfxray evaluate`: classifier metrics, counterfactual metrics, report and quality gate.

Everything is written before the gate decides, so a failing model still leaves its report,
metrics and plots behind for whoever has to find out why it failed.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cfxray.conventions import CLASSES, DIRECTIONS, NORMAL, PNEUMONIA
from cfxray.data.tensors import SplitData, load_split, require_both_classes
from cfxray.device import select_device
from cfxray.errors import UserError
from cfxray.evaluation import classifier_metrics as cm
from cfxray.evaluation import figures, shortcut
from cfxray.evaluation.counterfactuals import (
    DirectionResult,
    counterfactual_images,
    measure_direction,
)
from cfxray.evaluation.gate import VERDICT_KEY, GateResult, check_gate
from cfxray.evaluation.realism import RandomFeatureNet, extract_features
from cfxray.evaluation.report import write_report
from cfxray.evaluation.settings import EvaluateSettings
from cfxray.evaluation.summary import (
    BootstrapSettings,
    classifier_summary,
    direction_summary,
    realism_summary,
)
from cfxray.models.classifier import load_classifier
from cfxray.models.networks import Generators, load_generators

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
PER_IMAGE_FILE = "per_image.csv"
PLOTS_DIR = "plots"
CASE_KINDS = ("best", "typical", "worst")


@dataclass
class Evaluation:
    metrics: dict[str, float]
    gate: GateResult
    out_dir: Path

    @property
    def report(self) -> Path:
        return self.out_dir / REPORT_FILE


def load_generators_for(path: str | Path, image_size: int) -> Generators:
    generators = load_generators(path)
    if generators.config.image_size != image_size:
        raise UserError(f"generators in {path} were trained on {generators.config.image_size}px "
                        f"images but the data is {image_size}px")
    return generators


@torch.no_grad()
def pneumonia_probabilities(model: nn.Module, data: SplitData, batch_size: int,
                            device: torch.device) -> np.ndarray:
    parts = [model.probabilities(data.as_float(slice(i, i + batch_size)).to(device))[:, PNEUMONIA]
             for i in range(0, len(data), batch_size)]
    return torch.cat(parts).double().cpu().numpy()


def real_features(net: nn.Module, data: SplitData, label: int, limit: int | None, seed: int,
                  batch_size: int, device: torch.device) -> np.ndarray:
    """Realism features of real images of one class, a seeded subset of at most `limit`."""
    idx = data.class_indices(label)
    if limit is not None and len(idx) > limit:
        keep = np.random.default_rng(seed).choice(len(idx), limit, replace=False)
        idx = idx[np.sort(keep)]
    return extract_features(net, data.as_float(idx), batch_size) if len(idx) else np.zeros((0, 1))


def select_cases(result: DirectionResult, per_kind: int) -> list[tuple[str, int]]:
    """(kind, row) pairs: highest, median and lowest target probability after the change;
    ties broken by the smaller L1 change. On a tiny split an image is shown once, under the
    first kind that picks it."""
    cols = result.per_image
    order = np.lexsort((cols["l1"], -cols["prob_after"]))
    mid = max(0, len(order) // 2 - per_kind // 2)
    picks = {"best": order[:per_kind], "typical": order[mid:mid + per_kind],
             "worst": order[::-1][:per_kind]}
    chosen, seen = [], set()
    for kind in CASE_KINDS:
        for row in picks[kind]:
            if int(row) not in seen:
                seen.add(int(row))
                chosen.append((kind, int(row)))
    return chosen


def build_cases(result: DirectionResult, data: SplitData, generators: Generators,
                per_kind: int, device: torch.device) -> list[figures.Case]:
    picks = select_cases(result, per_kind)
    if not picks:
        return []
    rows = np.array([row for _, row in picks])
    idx = torch.as_tensor(result.indices[rows])
    x = data.as_float(idx).to(device)
    cf, _ = counterfactual_images(generators, result.direction, x)
    masks = data.lesion_masks if result.direction == "p2n" else data.lung_masks
    if masks is not None and data.shortcut_masks is not None:
        masks = masks | data.shortcut_masks
    cols = result.per_image
    return [figures.Case(
        direction=result.direction, kind=kind, file=data.files[int(idx[i])],
        original=x[i, 0].cpu().numpy(), counterfactual=cf[i, 0].cpu().numpy(),
        outline=None if masks is None else masks[int(idx[i])].numpy().astype(bool),
        prob_before=float(cols["prob_before"][row]), prob_after=float(cols["prob_after"][row]),
        oracle_before=float(cols["oracle_prob_before"][row]),
        oracle_after=float(cols["oracle_prob_after"][row]),
    ) for i, (kind, row) in enumerate(picks)]


def json_safe(metrics: dict[str, float]) -> dict[str, float | None]:
    """NaN/inf become null: metrics.json must stay strict JSON for DVC and other readers."""
    return {k: (float(v) if math.isfinite(v) else None) for k, v in sorted(metrics.items())}


def write_plots(out: Path, labels: np.ndarray, probs: np.ndarray, threshold: float,
                n_bins: int) -> None:
    """DVC plot data: ROC points, per-image actual/predicted, reliability bins."""
    plots = out / PLOTS_DIR
    plots.mkdir(parents=True, exist_ok=True)
    fpr, tpr, thresholds = cm.roc_curve(labels, probs)
    _write_csv(plots / "roc.csv", ["fpr", "tpr", "threshold"],
               zip(fpr, tpr, np.minimum(thresholds, 1.0), strict=True))
    preds = (probs >= threshold).astype(int)
    _write_csv(plots / "confusion.csv", ["actual", "predicted"],
               ((CLASSES[a], CLASSES[p]) for a, p in zip(labels, preds, strict=True)))
    _write_csv(plots / "reliability.csv", ["confidence", "frequency", "count", "lower", "upper"],
               ((b.confidence, b.frequency, b.count, b.lower, b.upper)
                for b in cm.reliability_bins(labels, probs, n_bins) if b.count))


def _write_csv(path: Path, header: list[str], rows: Any) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_per_image(path: Path, results: list[DirectionResult], data: SplitData) -> None:
    """Every per-image number, so an auditor can recompute or re-slice any aggregate."""
    columns = sorted({c for r in results for c in r.per_image})
    rows = []
    for r in results:
        for row, index in enumerate(r.indices):
            rows.append([r.direction, int(index), data.files[int(index)],
                         *(f"{r.per_image[c][row]:.6g}" if c in r.per_image else "nan"
                           for c in columns)])
    _write_csv(path, ["direction", "index", "file", *columns], rows)


def write_figures(out: Path, labels: np.ndarray, probs: dict[str, np.ndarray],
                  settings: EvaluateSettings, metrics: dict[str, float],
                  cases: dict[str, list[figures.Case]]) -> dict[str, Path]:
    curves = {}
    for name, p in probs.items():
        fpr, tpr, _ = cm.roc_curve(labels, p)
        curves[name] = (fpr, tpr, metrics[f"{name}/auc"])
    explained = probs["classifier"]
    preds = (explained >= settings.threshold).astype(int)
    paths = {
        "roc": figures.roc_figure(curves, out / "roc.png"),
        "confusion": figures.confusion_figure(cm.confusion_matrix(labels, preds),
                                              out / "confusion.png"),
        "reliability": figures.reliability_figure(
            cm.reliability_bins(labels, explained, settings.calibration_bins),
            metrics["classifier/ece"], out / "reliability.png"),
    }
    for d, rows in cases.items():
        if rows:
            paths[f"examples_{d}"] = figures.examples_figure(
                rows, out / f"examples_{d}.png", figures.DIRECTION_TITLES[d])
    return paths


def evaluate(data_dir: str | Path, classifier_path: str | Path, oracle_path: str | Path,
             generators_path: str | Path, out_dir: str | Path, settings: EvaluateSettings,
             enforce_gate: bool = True) -> Evaluation:
    """Evaluate on the test split; the realism reference comes from the train split."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = select_device(settings.device)
    test = load_split(data_dir, "test")
    require_both_classes(test, f"the test split of {data_dir}")
    train = load_split(data_dir, "train")
    classifier = load_classifier(classifier_path, expect_size=test.size).to(device)
    oracle = load_classifier(oracle_path, expect_size=test.size).to(device)
    generators = load_generators_for(generators_path, test.size)
    generators.n2p.to(device)
    generators.p2n.to(device)
    boot = BootstrapSettings(settings.bootstrap_resamples, settings.confidence, settings.seed)

    labels = test.labels.numpy()
    probs = {name: pneumonia_probabilities(model, test, settings.batch_size, device)
             for name, model in (("classifier", classifier), ("oracle", oracle))}
    metrics: dict[str, float] = {}
    for name, p in probs.items():
        metrics |= classifier_summary(name, labels, p, settings.threshold,
                                      settings.calibration_bins, boot)
    if shortcut.has_marker_pairs(test):
        with_marker, without_marker = shortcut.marker_pairs(test)
        for name, model in (("classifier", classifier), ("oracle", oracle)):
            metrics |= shortcut.shift_summary(
                name, pneumonia_probabilities(model, with_marker, settings.batch_size, device),
                pneumonia_probabilities(model, without_marker, settings.batch_size, device),
                settings.threshold, boot, settings.max_shortcut_shift)

    feature_net = RandomFeatureNet(settings.feature_seed).to(device)
    results, cases = [], {}
    for direction, (_, target) in DIRECTIONS.items():
        result = measure_direction(direction, test, generators, classifier, oracle, feature_net,
                                   settings.batch_size, settings.sparsity_threshold, device)
        results.append(result)
        metrics |= direction_summary(result, boot, settings.max_adversarial_fraction)
        reference = real_features(feature_net, train, target, settings.max_reference_images,
                                  settings.seed, settings.batch_size, device)
        real_target = real_features(feature_net, test, target, None, settings.seed,
                                    settings.batch_size, device)
        metrics |= realism_summary(direction, result.features, real_target, reference,
                                   settings.kid_subset_size, settings.kid_subsets, settings.seed)
        cases[direction] = build_cases(result, test, generators, settings.report_cases, device)
    metrics |= shortcut.change_flags(metrics, settings.shortcut_change_ratio)

    gate = check_gate(metrics, settings.gate)
    metrics[VERDICT_KEY] = float(gate.passed)
    (out / METRICS_FILE).write_text(json.dumps(json_safe(metrics), indent=2))
    write_plots(out, labels, probs["classifier"], settings.threshold, settings.calibration_bins)
    write_per_image(out / PER_IMAGE_FILE, results, test)
    figures.save_cases(cases, out)
    figure_paths = write_figures(out, labels, probs, settings, metrics, cases)
    context = {
        "data": str(Path(data_dir).resolve()),
        "classifier": str(Path(classifier_path).resolve()),
        "oracle": str(Path(oracle_path).resolve()),
        "generators": str(Path(generators_path).resolve()),
        "test images": f"{int((labels == NORMAL).sum())} NORMAL, "
                       f"{int((labels == PNEUMONIA).sum())} PNEUMONIA",
        "intervals": f"{boot.confidence:.0%} percentile bootstrap, {boot.n_resamples} "
                     f"resamples, seed {boot.seed}",
        "realism features": f"fixed random-init conv net (seed {settings.feature_seed}, no "
                            "pretrained weights); not comparable with Inception FID/KID. "
                            f"Reference set: up to {settings.max_reference_images} real "
                            "target-class train images",
        "sparsity threshold": f"|change| > {settings.sparsity_threshold}",
        "adversarial flag": f"classifier-only flips > {settings.max_adversarial_fraction:.0%}",
        "shortcut flags": f"change on the marker region > {settings.shortcut_change_ratio:g} x "
                          f"its area share; |P(PNEUMONIA) shift| from the marker alone > "
                          f"{settings.max_shortcut_shift:g} (phantoms with the marker only)",
        "settings": json.dumps(asdict(settings)),
    }
    write_report(out / REPORT_FILE, metrics, gate, enforce_gate, cases, figure_paths, context)
    return Evaluation(metrics, gate, out)
