"""What a person looks at while and after a CycleGAN trains: sample grids and a split summary.

The summary is `cfxray evaluate`'s own per-image measurement (`measure_direction`) averaged
under the names `metrics.json` uses, so `summary.json`, the `val_*` columns of `log.csv` and
the evaluation agree on what a number means; the full evaluation (confidence intervals,
realism, the gate) stays `cfxray evaluate`'s job. Both directions are measured, because
validity alone says nothing: it is read next to closeness (SSIM) and, on phantom data,
against the lesion ground truth.
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
from cfxray.evaluation.counterfactuals import generator_pair, measure_direction
from cfxray.evaluation.figures import gray_rgb
from cfxray.evaluation.summary import direction_means


def summarise(gens: nn.Module, classifier: nn.Module, oracle: nn.Module | None,
              data: SplitData, device: torch.device, batch_size: int = 64) -> dict[str, Any]:
    """Mean per-image metrics of both directions' counterfactuals on one split: evaluation's
    measurement and names (`direction_means`), without intervals and realism features."""
    return {direction: direction_means(measure_direction(direction, data, gens, classifier,
                                                         oracle, batch_size=batch_size,
                                                         device=device))
            for direction, (source, _) in DIRECTIONS.items() if len(data.class_indices(source))}


SHOWN = ("validity", "oracle_score", "ssim", "l1", "lesion_removal", "change_in_mask")


def format_summary(summary: dict[str, Any]) -> str:
    lines = []
    for direction, row in summary.items():
        shown = [f"{k} {row[k]:.3f}" for k in SHOWN if row.get(k) is not None]
        lines.append(f"  {direction} (n={row['n_images']:.0f}): " + ", ".join(shown))
    return "\n".join(lines)


def sample_images(data: SplitData, count: int) -> dict[str, torch.Tensor]:
    """The first `count` images of each source class: fixed, so epochs are comparable."""
    return {direction: data.as_float(data.class_indices(source)[:count])
            for direction, (source, _) in DIRECTIONS.items()}


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
        forward, inverse = generator_pair(gens, direction)
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
        panels = [(gray_rgb(orig.numpy()), f"{direction} original", f"P(pneu) {p0:.2f}"),
                  (gray_rgb(cf.numpy()), "counterfactual", f"P(pneu) {p1:.2f}"),
                  (gray_rgb(rec.numpy()), "reconstruction", ""),
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
        for key in ("validity", "oracle_score", "ssim", "lesion_removal", "change_in_mask"):
            value = values.get(key)
            if value is not None:
                row[f"val_{key}_{direction}"] = float(value)
    return {k: (v if math.isfinite(v) else float("nan")) for k, v in row.items()}

