"""The raw dataset layout and its manifest, shared by `phantom` and `ingest`.

Both commands write the same normalised layout, so everything downstream (preprocess,
evaluation, audits) reads one format whatever the data's origin:

    DIR/{split}/{CLASS}/{stem}.png              8-bit grayscale image
    DIR/masks/lesion/{split}/{CLASS}/{stem}.png 0/255 lesion mask (phantom only)
    DIR/masks/lung/{split}/{CLASS}/{stem}.png   0/255 lung-field mask (phantom only)
    DIR/twins/{split}/PNEUMONIA/{stem}.png      lesion-free twin (phantom PNEUMONIA only)
    DIR/masks/shortcut/{split}/{CLASS}/{stem}.png  0/255 shortcut-marker region (phantom option)
    DIR/shortcut_twins/{split}/{CLASS}/{stem}.png  the image with the marker toggled (same option)
    DIR/manifest.csv                            one row per image, `MANIFEST_FIELDS` (ingest
                                                adds `cfxray.data.ingest.SOURCE_FIELDS`, a
                                                phantom with the shortcut marker
                                                `cfxray.data.phantom_dataset.SHORTCUT_FIELDS`)
    DIR/summary.json                            counts, balance, sizes
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cfxray.conventions import CLASSES, MANIFEST_FIELDS, MANIFEST_NAME, SPLITS
from cfxray.errors import UserError

Row = dict[str, str]
SUMMARY_NAME = "summary.json"


def image_path(split: str, label: str, stem: str) -> str:
    return f"{split}/{label}/{stem}.png"


def lesion_mask_path(split: str, label: str, stem: str) -> str:
    return f"masks/lesion/{split}/{label}/{stem}.png"


def lung_mask_path(split: str, label: str, stem: str) -> str:
    return f"masks/lung/{split}/{label}/{stem}.png"


def twin_path(split: str, label: str, stem: str) -> str:
    return f"twins/{split}/{label}/{stem}.png"


def shortcut_mask_path(split: str, label: str, stem: str) -> str:
    return f"masks/shortcut/{split}/{label}/{stem}.png"


def shortcut_twin_path(split: str, label: str, stem: str) -> str:
    return f"shortcut_twins/{split}/{label}/{stem}.png"


def write_manifest(root: str | Path, rows: Iterable[Row],
                   extra_fields: Sequence[str] = ()) -> Path:
    """Rows sorted by file, so the manifest's bytes depend only on the dataset's content.
    `extra_fields` (ingest's facts about each source, the phantom's shortcut marker) follow
    the shared columns."""
    path = Path(root) / MANIFEST_NAME
    ordered = sorted(rows, key=lambda r: r["file"])
    fields = (*MANIFEST_FIELDS, *extra_fields)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in ordered:
            writer.writerow({k: row.get(k, "") for k in fields})
    return path


def read_manifest(root: str | Path) -> list[Row]:
    path = Path(root) / MANIFEST_NAME
    if not path.exists():
        raise UserError(f"{root} is not a cfxray dataset ({MANIFEST_NAME} missing); "
                        "create one with `cfxray data phantom` or `cfxray data ingest`")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [k for k in MANIFEST_FIELDS if k not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path} lacks columns {missing}")
        rows = [dict(r) for r in reader]
    for row in rows:
        if row["label"] not in CLASSES or row["split"] not in SPLITS:
            raise UserError(f"{path}: row for {row['file']} has label {row['label']!r} and split "
                            f"{row['split']!r}; expected one of {CLASSES} and {SPLITS}")
    return rows


def class_counts(rows: Sequence[Row]) -> dict[str, dict[str, int]]:
    counts = Counter((r["split"], r["label"]) for r in rows)
    return {s: {c: counts[(s, c)] for c in CLASSES} for s in SPLITS}


def summarize(rows: Sequence[Row], sizes: Sequence[tuple[int, int]] = (),
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Counts per split and class, class balance, patients and (original) image sizes."""
    counts = class_counts(rows)
    summary: dict[str, Any] = {
        "images": len(rows),
        "patients": len({r["patient_id"] for r in rows}),
        "counts": counts,
        "pneumonia_fraction": {
            s: round(c["PNEUMONIA"] / max(1, sum(c.values())), 4) for s, c in counts.items()},
    }
    if sizes:
        widths = sorted(w for w, _ in sizes)
        heights = sorted(h for _, h in sizes)
        summary["sizes"] = {
            "width": _quantiles(widths),
            "height": _quantiles(heights),
            "most_common": [{"size": f"{w}x{h}", "count": n}
                            for (w, h), n in Counter(sizes).most_common(5)],
        }
    summary.update(extra or {})
    return summary


def _quantiles(values: Sequence[int]) -> dict[str, int]:
    n = len(values)
    return {"min": values[0], "median": values[n // 2], "max": values[-1]}


def write_summary(root: str | Path, summary: dict[str, Any]) -> Path:
    path = Path(root) / SUMMARY_NAME
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return path


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{summary['images']} images, {summary['patients']} patients"]
    lines.append(f"{'split':<6} {'NORMAL':>7} {'PNEUMONIA':>10} {'pneu.frac':>10}")
    for split, counts in summary["counts"].items():
        lines.append(f"{split:<6} {counts['NORMAL']:>7} {counts['PNEUMONIA']:>10} "
                     f"{summary['pneumonia_fraction'][split]:>10.3f}")
    if "sizes" in summary:
        w, h = summary["sizes"]["width"], summary["sizes"]["height"]
        lines.append(f"width  min/median/max {w['min']}/{w['median']}/{w['max']}")
        lines.append(f"height min/median/max {h['min']}/{h['median']}/{h['max']}")
    return "\n".join(lines)


def prepare_output_dir(out: str | Path) -> Path:
    """A fresh output directory; replaces only an earlier cfxray dataset, never other files."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise UserError(f"--out {out} exists and is not a directory")
        if any(out.iterdir()):
            if not (out / MANIFEST_NAME).exists() and not (out / "meta.json").exists():
                raise UserError(f"--out {out} is not empty and is not an earlier cfxray dataset; "
                                "choose an empty or new directory")
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out
