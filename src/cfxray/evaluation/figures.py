"""PNG figures of the evaluation: ROC, confusion matrix, reliability diagram, example cases.

Difference heatmaps show counterfactual minus original on a diverging scale: red where the
counterfactual is brighter (added opacity), blue where it is darker (removed opacity), white
where nothing changed. One symmetric scale is shared by all cases of a figure, so a faint
change looks faint; where the data has ground truth the lesion mask (p2n) or the lung fields
(n2p) are outlined in green.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from cfxray.conventions import CLASSES, DIRECTIONS
from cfxray.errors import UserError
from cfxray.evaluation.classifier_metrics import ReliabilityBin

MIN_HEATMAP_SCALE = 0.05  # smallest +-range of the heatmap, so noise is never blown up to red
DIRECTION_TITLES = {"n2p": "NORMAL -> PNEUMONIA", "p2n": "PNEUMONIA -> NORMAL"}


@dataclass
class Case:
    """One test image and its counterfactual, as the report shows it."""
    direction: str
    kind: str  # best, typical or worst
    file: str
    original: np.ndarray  # float [H, W] in [0, 1]
    counterfactual: np.ndarray
    outline: np.ndarray | None  # bool [H, W]: lesion mask (p2n) or lung fields (n2p)
    prob_before: float  # explained classifier, target class
    prob_after: float
    oracle_before: float  # oracle, target class
    oracle_after: float

    @property
    def target_name(self) -> str:
        return CLASSES[DIRECTIONS[self.direction][1]]

    def probability_text(self) -> str:
        t = self.target_name
        return (f"P({t}) classifier {self.prob_before:.2f} -> {self.prob_after:.2f}\n"
                f"P({t}) oracle {self.oracle_before:.2f} -> {self.oracle_after:.2f}")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap_scale(cases: Sequence[Case]) -> float:
    largest = max((float(np.abs(c.counterfactual - c.original).max()) for c in cases), default=0)
    return max(MIN_HEATMAP_SCALE, largest)


def outline_pixels(mask: np.ndarray) -> np.ndarray:
    """The mask's boundary: mask pixels with a 4-neighbour outside it."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return mask & ~interior


def heatmap_rgb(case: Case, scale: float) -> np.ndarray:
    """uint8 [H, W, 3] difference heatmap with the ground-truth outline."""
    from matplotlib import colormaps

    diff = (case.counterfactual - case.original) / scale
    rgb = colormaps["RdBu_r"]((np.clip(diff, -1, 1) + 1) / 2)[..., :3]
    if case.outline is not None:
        rgb[outline_pixels(case.outline)] = (0.0, 0.7, 0.0)
    return (rgb * 255).round().astype(np.uint8)


def gray_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat((np.clip(image, 0, 1) * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path) -> Path:
    """ROC curves, one per model: label -> (fpr, tpr, auc)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", label="chance")
    ax.set(xlabel="1 - specificity (false-positive rate)", ylabel="sensitivity (true-positive rate)",
           title="ROC, PNEUMONIA vs NORMAL", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def confusion_figure(matrix: np.ndarray, path: str | Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center",
                color="white" if count > matrix.max() / 2 else "black", fontsize=12)
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=CLASSES, yticklabels=CLASSES,
           xlabel="predicted", ylabel="actual", title="Confusion matrix (test split)")
    fig.tight_layout()
    return _save(fig, path)


def reliability_figure(bins: Sequence[ReliabilityBin], ece: float, path: str | Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 5.2))
    filled = [b for b in bins if b.count]
    width = bins[0].upper - bins[0].lower if bins else 0.1
    ax.bar([b.lower for b in filled], [b.frequency for b in filled], width=width, align="edge",
           edgecolor="black", alpha=0.7, label="observed PNEUMONIA fraction")
    ax.plot([b.confidence for b in filled], [b.frequency for b in filled], "o", color="C3",
            label="bin mean probability")
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", label="perfect calibration")
    for b in filled:
        ax.annotate(str(b.count), (b.lower + width / 2, b.frequency), ha="center",
                    va="bottom", fontsize=7)
    ax.set(xlabel="predicted P(PNEUMONIA)", ylabel="observed fraction PNEUMONIA",
           title=f"Reliability (ECE {ece:.3f}); numbers: images per bin", xlim=(0, 1),
           ylim=(0, 1.08))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def examples_figure(cases: Sequence[Case], path: str | Path, title: str) -> Path:
    """Rows of original | counterfactual | difference | probabilities."""
    plt = _pyplot()
    scale = heatmap_scale(cases)
    fig, axes = plt.subplots(len(cases), 4, figsize=(10, 2.6 * len(cases)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1, 1.3]})
    for row, case in zip(axes, cases, strict=True):
        row[0].imshow(case.original, cmap="gray", vmin=0, vmax=1)
        row[0].set_title(f"{case.kind}: original", fontsize=9)
        row[1].imshow(case.counterfactual, cmap="gray", vmin=0, vmax=1)
        row[1].set_title("counterfactual", fontsize=9)
        row[2].imshow(heatmap_rgb(case, scale))
        row[2].set_title(f"difference (+-{scale:.2f})", fontsize=9)
        row[3].text(0.0, 0.5, f"{case.file}\n{case.probability_text()}", fontsize=8,
                    va="center", family="monospace")
        for ax in row:
            ax.axis("off")
    fig.suptitle(title)
    # fixed margins: tight_layout re-measures every text box, seconds for a handful of rows
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.5 / fig.get_figheight(),
                        wspace=0.05, hspace=0.25)
    return _save(fig, path)


def readme_figure(cases: Sequence[Case], path: str | Path) -> Path:
    """The small README picture: original, counterfactual and heatmap, one row per direction."""
    plt = _pyplot()
    scale = heatmap_scale(cases)
    fig, axes = plt.subplots(len(cases), 3, figsize=(6.6, 2.7 * len(cases)), squeeze=False)
    for row, case in zip(axes, cases, strict=True):
        t = case.target_name
        row[0].imshow(case.original, cmap="gray", vmin=0, vmax=1)
        row[0].set_title(f"original\nP({t}) {case.prob_before:.2f}", fontsize=8)
        row[1].imshow(case.counterfactual, cmap="gray", vmin=0, vmax=1)
        row[1].set_title(f"{DIRECTION_TITLES[case.direction]}\nP({t}) {case.prob_after:.2f}",
                         fontsize=8)
        row[2].imshow(heatmap_rgb(case, scale))
        row[2].set_title("difference\nred brighter, blue darker", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.45 / fig.get_figheight(),
                        wspace=0.05, hspace=0.35)
    return _save(fig, path)


CASES_FILE = "cases.pt"


def save_cases(cases: dict[str, list[Case]], out_dir: str | Path) -> Path:
    """Keep the shown cases so figures (the README one) can be redrawn without the models."""
    path = Path(out_dir) / CASES_FILE
    torch.save({d: [asdict(c) for c in rows] for d, rows in cases.items()}, path)
    return path


def load_cases(eval_dir: str | Path) -> dict[str, list[Case]]:
    path = Path(eval_dir) / CASES_FILE
    if not path.exists():
        raise UserError(f"{eval_dir} holds no {CASES_FILE}; run `cfxray evaluate` into it first")
    stored = torch.load(path, weights_only=False)
    return {d: [Case(**c) for c in rows] for d, rows in stored.items()}


def render_readme_figure(eval_dir: str | Path, path: str | Path) -> Path:
    """The README picture from an evaluation folder: the typical case of each direction."""
    typical: list[Case] = []
    for rows in load_cases(eval_dir).values():
        typical += [c for c in rows if c.kind == "typical"][:1]
    if not typical:
        raise UserError(f"{eval_dir} has no example cases to draw")
    return readme_figure(typical, path)
