"""What a person looks at while and after a CycleGAN trains: sample grids and a test summary.

The summary measures the counterfactuals on a whole split with the pure per-image metrics of
`cfxray.evaluation.metrics`; the full evaluation (confidence intervals, realism, the gate) is
`cfxray evaluate`'s job. Both directions are measured, because validity alone says nothing:
it is read next to closeness (SSIM) and, on phantom data, against the lesion ground truth.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cfxray.conventions import DIRECTIONS, PNEUMONIA
from cfxray.data.tensors import SplitData
from cfxray.evaluation import metrics as m


def _nanmean(values: torch.Tensor) -> float | None:
    values = values.float()
    kept = values[~torch.isnan(values)]
    return float(kept.mean()) if kept.numel() else None


@torch.no_grad()
def _batched(model: nn.Module, images: torch.Tensor, batch_size: int,
             device: torch.device) -> torch.Tensor:
    return torch.cat([model(images[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(images), batch_size)])


def _probs(classifier: nn.Module, images: torch.Tensor, batch_size: int,
           device: torch.device) -> torch.Tensor:
    return torch.softmax(_batched(classifier, images, batch_size, device), dim=1)


def direction_generators(gens: nn.Module, direction: str) -> tuple[nn.Module, nn.Module]:
    """(forward, inverse) generators of a GeneratorPair for one direction."""
    return (gens.n2p, gens.p2n) if direction == "n2p" else (gens.p2n, gens.n2p)


@torch.no_grad()
def summarise(gens: nn.Module, classifier: nn.Module, oracle: nn.Module | None,
              data: SplitData, device: torch.device, batch_size: int = 64) -> dict[str, Any]:
    """Mean per-image metrics of both directions' counterfactuals on one split."""
    summary: dict[str, Any] = {}
    for direction, (source, target) in DIRECTIONS.items():
        forward, _ = direction_generators(gens, direction)
        index = data.class_indices(source)
        if not len(index):
            continue
        x = data.as_float(index)
        cf = _batched(forward, x, batch_size, device).clamp(0, 1)
        after = _probs(classifier, cf, batch_size, device)
        row: dict[str, Any] = {
            "n": len(index),
            "validity": _nanmean(m.validity(after, target)),
            "source_class_before": _nanmean(m.validity(_probs(classifier, x, batch_size, device),
                                                       source)),
            "target_prob_after": _nanmean(after[:, target]),
            "ssim": _nanmean(m.ssim(x, cf)),
            "l1": _nanmean(m.l1(x, cf)),
            "psnr": _nanmean(m.psnr(x, cf).clamp(max=100.0)),
        }
        if oracle is not None:
            row["oracle_validity"] = _nanmean(m.validity(_probs(oracle, cf, batch_size, device),
                                                         target))
        if direction == "p2n" and data.lesion_masks is not None:
            masks = data.lesion_masks[index]
            row["change_in_mask"] = _nanmean(m.change_in_mask(x, cf, masks))
            row["peak_in_mask"] = _nanmean(m.peak_in_mask(x, cf, masks))
            row["mask_area"] = _nanmean(masks.flatten(1).float().mean(1))
            if data.twins is not None and data.has_twin is not None:
                has = data.has_twin[index]
                twins = data.twins[index][has].unsqueeze(1).float().div(255.0)
                row["lesion_removal"] = _nanmean(m.lesion_removal(x[has], cf[has], twins,
                                                                  masks[has]))
        summary[direction] = row
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    keys = ("validity", "oracle_validity", "ssim", "l1", "lesion_removal", "change_in_mask")
    lines = []
    for direction, row in summary.items():
        shown = [f"{k} {row[k]:.3f}" for k in keys if row.get(k) is not None]
        lines.append(f"  {direction} (n={row['n']}): " + ", ".join(shown))
    return "\n".join(lines)


def sample_images(data: SplitData, count: int) -> dict[str, torch.Tensor]:
    """The first `count` images of each source class: fixed, so epochs are comparable."""
    return {direction: data.as_float(data.class_indices(source)[:count])
            for direction, (source, _) in DIRECTIONS.items()}


def _gray(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1).numpy() * 255).round().astype(np.uint8).repeat(3).reshape(
        *image.shape, 3)


def _diverging(diff: torch.Tensor, limit: float) -> np.ndarray:
    """Blue (darker) - white (unchanged) - red (brighter) colour map of a signed difference."""
    v = (diff / limit).clamp(-1, 1).numpy()[..., None]
    white = np.ones(3)
    rgb = np.where(v > 0, white + v * (np.array([1.0, 0.0, 0.0]) - white),
                   white - v * (np.array([0.0, 0.0, 1.0]) - white))
    return (rgb * 255).round().astype(np.uint8)


@torch.no_grad()
def save_sample_grid(gens: nn.Module, classifier: nn.Module, samples: dict[str, torch.Tensor],
                     device: torch.device, path: str | Path, title: str, zoom: int = 2) -> None:
    """One row per image: original | counterfactual | reconstruction | difference map, each
    labelled, with the classifier's P(PNEUMONIA) before and after. Drawn with PIL: a
    matplotlib figure of this size costs seconds per epoch."""
    from PIL import Image, ImageDraw

    rows = []
    for direction, x in samples.items():
        forward, inverse = direction_generators(gens, direction)
        cf = forward(x.to(device)).float().clamp(0, 1)
        rec = inverse(cf).float().clamp(0, 1).cpu()
        before = torch.softmax(classifier(x.to(device)).float(), 1)[:, PNEUMONIA].cpu()
        after = torch.softmax(classifier(cf).float(), 1)[:, PNEUMONIA].cpu()
        cf = cf.cpu()
        rows += [(direction, x[i, 0], cf[i, 0], rec[i, 0], float(before[i]), float(after[i]))
                 for i in range(len(x))]
    if not rows:
        return
    limit = max(max(float((r[2] - r[1]).abs().max()) for r in rows), 1e-3)
    size = rows[0][1].shape[-1] * zoom
    label_h, pad = 24, 4
    width = 4 * (size + pad) + pad
    canvas = Image.new("RGB", (width, 18 + len(rows) * (size + label_h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 3), f"{title}  (difference: red brighter, blue darker, full scale "
                        f"+-{limit:.2f})", fill="black")
    for r, (direction, orig, cf, rec, p0, p1) in enumerate(rows):
        top = 18 + r * (size + label_h + pad)
        panels = [(_gray(orig), f"{direction} original", f"P(pneu) {p0:.2f}"),
                  (_gray(cf), "counterfactual", f"P(pneu) {p1:.2f}"),
                  (_gray(rec), "reconstruction", ""),
                  (_diverging(cf - orig, limit), "difference", "")]
        for c, (pixels, line1, line2) in enumerate(panels):
            left = pad + c * (size + pad)
            draw.text((left, top), line1, fill="black")
            draw.text((left, top + 11), line2, fill="black")
            tile = Image.fromarray(pixels).resize((size, size), Image.NEAREST)
            canvas.paste(tile, (left, top + label_h))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def val_row(summary: dict[str, Any]) -> dict[str, float]:
    """The few validation numbers worth a column in the per-epoch log."""
    row: dict[str, float] = {}
    for direction, values in summary.items():
        for key in ("validity", "oracle_validity", "ssim", "lesion_removal", "change_in_mask"):
            value = values.get(key)
            if value is not None:
                row[f"val_{key}_{direction}"] = float(value)
    return {k: (v if math.isfinite(v) else float("nan")) for k, v in row.items()}

