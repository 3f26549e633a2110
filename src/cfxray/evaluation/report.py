"""The self-contained HTML report: one file, images inline, readable offline by an auditor.

It deliberately puts validity next to the oracle score, proximity, realism and the ground
truth, and shows best, typical and worst cases, because each number alone can be satisfied
by a useless model (a blurred or adversarial image flips a classifier too).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cfxray.evaluation.figures import (
    DIRECTION_TITLES,
    Case,
    gray_rgb,
    heatmap_rgb,
    heatmap_scale,
    png_bytes,
)
from cfxray.evaluation.gate import GateResult
from cfxray.evaluation.shortcut import SHIFT_ROWS
from cfxray.evaluation.summary import DIRECTION_MEANS

CLASSIFIER_ROWS = {
    "accuracy": "fraction of test images classified correctly",
    "auc": "area under the ROC curve",
    "sensitivity": "PNEUMONIA images called PNEUMONIA",
    "specificity": "NORMAL images called NORMAL",
    "f1": "harmonic mean of precision and sensitivity",
    "ece": "expected calibration error of P(PNEUMONIA), 10 bins (0 = calibrated)",
}
EXTRA_DIRECTION_ROWS = {
    "flip_rate": "validity among originals the classifier put in the source class",
    "target_prob_change": "mean change of the classifier's target-class probability",
    "oracle_prob_change": "mean change of the oracle's target-class probability",
}
REALISM_ROWS = {
    "kid": "KID vs. real target-class images (lower = more realistic)",
    "kid_real_reference": "KID of real target-class test images vs. the same set (reference)",
    "fid": "FID vs. real target-class images (biased at small n)",
    "fid_real_reference": "FID of real target-class test images (reference)",
}

STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: middle; }
th { background: #f0f0f0; }
td.num { font-family: monospace; white-space: nowrap; }
.pass { background: #e3f5e1; border: 1px solid #5a5; padding: 0.6em; }
.fail { background: #fbe3e3; border: 1px solid #c55; padding: 0.6em; }
.warn { background: #fff5d6; border: 1px solid #cc9a06; padding: 0.6em; margin: 0.5em 0; }
img.cell { width: 160px; image-rendering: pixelated; }
img.figure { max-width: 48%; margin: 0.5%; }
.note { color: #555; font-size: 90%; }
"""


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if float(value).is_integer() and abs(value) >= 1:  # counts and capped PSNR
        return str(int(value))
    return f"{value:.3f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def metric_text(metrics: dict[str, Any], key: str) -> str:
    """'estimate [low, high]' or the estimate alone when the number has no interval."""
    if key not in metrics:
        return "n/a"
    text = _fmt(metrics[key])
    if f"{key}_ci_low" in metrics:
        text += f" [{_fmt(metrics[f'{key}_ci_low'])}, {_fmt(metrics[f'{key}_ci_high'])}]"
    return text


def _img(data: bytes, css: str, alt: str) -> str:
    encoded = base64.b64encode(data).decode()
    return f'<img class="{css}" alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _num(text: str) -> str:
    return f'<td class="num">{html.escape(text)}</td>'


def _td(text: str) -> str:
    return f"<td>{html.escape(text)}</td>"


def _gate_section(gate: GateResult, enforced: bool) -> str:
    css = "pass" if gate.passed else "fail"
    note = "" if enforced else " (not enforced: --no-gate)"
    items = "".join(f"<li>{html.escape(c.describe())}</li>" for c in gate.checks)
    return (f'<div class="{css}"><b>{html.escape(gate.message() + note)}</b>'
            f"<ul>{items}</ul></div>")


def warnings_section(metrics: dict[str, Any]) -> str:
    """Every flag metrics.json raised, in words, as the report's HTML (empty when none)."""
    notes = []
    for d, title in DIRECTION_TITLES.items():
        if metrics.get(f"{d}/adversarial_flag"):
            notes.append(
                f"{title}: {_fmt(metrics[f'{d}/adversarial_fraction'])} of the counterfactuals "
                "flip the explained classifier but not the independent oracle: the generator may "
                "exploit the classifier (adversarial pattern) instead of changing the anatomy.")
        if metrics.get(f"{d}/shortcut_flag"):
            notes.append(
                f"{title}: {_fmt(metrics[f'{d}/change_on_shortcut'])} of the change lies on the "
                f"shortcut marker's region, which covers {_fmt(metrics[f'{d}/shortcut_area'])} "
                "of the image: the counterfactuals edit the marker, so the explained classifier "
                "depends on it rather than (only) on the lungs.")
    for name, who in (("classifier", "explained classifier"), ("oracle", "oracle")):
        if metrics.get(f"{name}/shortcut_shift_flag"):
            notes.append(
                f"The shortcut marker alone moves the {who}'s P(PNEUMONIA) by "
                f"{_fmt(metrics[f'{name}/shortcut_shift'])} on average and changes "
                f"{_fmt(metrics[f'{name}/shortcut_decision_flips'])} of its test decisions: it "
                "reads the marker, a non-pathological feature tied to the label in training.")
    if metrics.get("oracle/accuracy", 1) < 0.7:
        notes.append("The oracle classifies only "
                     f"{_fmt(metrics['oracle/accuracy'])} of real test images correctly, so its "
                     "agreement with counterfactuals is weak evidence either way.")
    return "".join(f'<div class="warn">{html.escape(n)}</div>' for n in notes)


def _classifier_section(metrics: dict[str, Any], figures: dict[str, Path]) -> str:
    names = CLASSIFIER_ROWS | {k: v for k, v in SHIFT_ROWS.items()
                               if f"classifier/{k}" in metrics}
    rows = [[_td(name), _num(metric_text(metrics, f"classifier/{name}")),
             _num(metric_text(metrics, f"oracle/{name}")), _td(meaning)]
            for name, meaning in names.items()]
    images = "".join(_img(figures[name].read_bytes(), "figure", name)
                     for name in ("roc", "confusion", "reliability") if name in figures)
    n = int(metrics.get("classifier/n_images", 0))
    return (f"<h2>Classifiers on the test split ({n} images)</h2>"
            + _table(["metric", "explained classifier", "oracle", "meaning"], rows) + images)


def _direction_rows(metrics: dict[str, Any], names: dict[str, str]) -> list[list[str]]:
    rows = []
    for name, meaning in names.items():
        if any(f"{d}/{name}" in metrics for d in DIRECTION_TITLES):
            rows.append([_td(name)] + [_num(metric_text(metrics, f"{d}/{name}"))
                                       for d in DIRECTION_TITLES] + [_td(meaning)])
    return rows


def _counterfactual_section(metrics: dict[str, Any]) -> str:
    header = ["metric", *DIRECTION_TITLES.values(), "meaning"]
    means = {name: meaning for name, (_, meaning) in DIRECTION_MEANS.items()}
    counts = [[_td("images")] + [_num(_fmt(metrics.get(f"{d}/n_images")))
                                 for d in DIRECTION_TITLES] + [_td("source-class test images")]]
    return ("<h2>Counterfactuals</h2><p class='note'>Means over test images with percentile "
            "bootstrap intervals (see Inputs and method). Read validity together with the oracle score, proximity, "
            "realism and, on phantom data, the ground truth.</p>"
            + _table(header, counts + _direction_rows(metrics, means | EXTRA_DIRECTION_ROWS))
            + "<h3>Realism</h3>" + _table(header, _direction_rows(metrics, REALISM_ROWS)))


def _cases_section(cases: dict[str, list[Case]]) -> str:
    parts = ["<h2>Example cases</h2><p class='note'>Ranked by the explained classifier's "
             "target-class probability of the counterfactual: best, typical (median) and worst. "
             "Difference = counterfactual - original; red brighter, blue darker, shared scale "
             "per direction; green outline = lesion mask (PNEUMONIA -> NORMAL) or lung fields "
             "(NORMAL -> PNEUMONIA) where known, and the shortcut marker's region on phantoms "
             "made with one.</p>"]
    for d, rows in cases.items():
        if not rows:
            continue
        scale = heatmap_scale(rows)
        table_rows = [[_td(c.kind),
                       "<td>" + _img(png_bytes(gray_rgb(c.original)), "cell", "original") + "</td>",
                       "<td>" + _img(png_bytes(gray_rgb(c.counterfactual)), "cell",
                                     "counterfactual") + "</td>",
                       "<td>" + _img(png_bytes(heatmap_rgb(c, scale)), "cell", "difference")
                       + "</td>",
                       "<td><pre>" + html.escape(f"{c.file}\n{c.probability_text()}")
                       + "</pre></td>"] for c in rows]
        parts.append(f"<h3>{html.escape(DIRECTION_TITLES[d])} (difference scale +-{scale:.2f})</h3>"
                     + _table(["case", "original", "counterfactual", "difference",
                               "probabilities before -> after"], table_rows))
    return "".join(parts)


def write_report(path: str | Path, metrics: dict[str, Any], gate: GateResult, enforced: bool,
                 cases: dict[str, list[Case]], figures: dict[str, Path],
                 context: dict[str, str]) -> Path:
    """Write `report.html`; `context` lists inputs and method notes shown at the end."""
    path = Path(path)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    about = _table(["item", "value"], [[_td(k), _td(v)] for k, v in context.items()])
    document = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>cfxray evaluation</title><style>{STYLE}</style></head><body>"
        f"<h1>Counterfactual explanation evaluation</h1><p class='note'>Created {created}</p>"
        + _gate_section(gate, enforced) + warnings_section(metrics)
        + _classifier_section(metrics, figures) + _counterfactual_section(metrics) + _cases_section(cases)
        + "<h2>Inputs and method</h2>" + about + "</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document)
    return path
