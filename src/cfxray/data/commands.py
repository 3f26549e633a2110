"""`cfxray data phantom|ingest|preprocess`: options default from params.yaml sections."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from cfxray.params import DEFAULT_PARAMS, section

# Used when params.yaml lacks a value, so the commands also work outside the repository.
DEFAULTS: dict[str, dict[str, Any]] = {
    "phantom": {"out": "data/phantom", "n": 1500, "size": 128, "seed": 0,
                "pneumonia_fraction": 0.5, "split_fractions": [0.7, 0.15, 0.15],
                "workers": 0, "contact_sheet": 16, "realism": "simple",
                "shortcut_rate": 0.0, "shortcut_confounding": 0.0},
    "ingest": {"out": "data/ingested", "seed": 0, "split_fractions": [0.7, 0.15, 0.15],
               "workers": 0},
    "preprocess": {"out": "data/prepared", "size": 64, "resize": "pad"},
}


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="create, ingest and preprocess datasets",
                                 description="Dataset steps: phantom, ingest, preprocess.")
    steps = data.add_subparsers(dest="data_command", required=True, metavar="STEP")

    phantom = steps.add_parser("phantom", help="generate the synthetic chest X-ray dataset")
    phantom.add_argument("--out", help="output directory (default: params phantom.out)")
    phantom.add_argument("--n", type=int, help="number of images")
    phantom.add_argument("--size", type=int, help="image side in pixels")
    phantom.add_argument("--seed", type=int)
    phantom.add_argument("--pneumonia-fraction", type=float)
    phantom.add_argument("--realism", choices=("simple", "hard"),
                         help="simple: smooth round opacities in flat lungs; hard: vessels, "
                         "patchy, diffuse and bilateral disease, exposure variation")
    phantom.add_argument("--shortcut-rate", type=float,
                         help="share of images carrying the shortcut marker (0: none)")
    phantom.add_argument("--shortcut-confounding", type=float,
                         help="0..1, how strongly train/val tie the marker to PNEUMONIA "
                         "(independent of the label in test)")
    phantom.add_argument("--workers", type=int, help="processes (0: all cores); output is "
                         "identical for any value")
    _params_option(phantom)
    phantom.set_defaults(func=run_phantom)

    ingest = steps.add_parser("ingest", help="normalise a real X-ray folder (Kermany, flat or "
                              "RSNA-style 0/1 layout)")
    ingest.add_argument("src", help="source folder")
    ingest.add_argument("--out", help="output directory (default: params ingest.out)")
    ingest.add_argument("--resplit", action="store_true",
                        help="ignore the source's splits and make new patient-aware ones")
    ingest.add_argument("--seed", type=int)
    ingest.add_argument("--workers", type=int, help="processes (0: all cores)")
    _params_option(ingest)
    ingest.set_defaults(func=run_ingest)

    prep = steps.add_parser("preprocess", help="resize to tensors the training steps read")
    prep.add_argument("input", metavar="IN", help="raw dataset directory (has manifest.csv)")
    prep.add_argument("--out", help="output directory (default: params preprocess.out)")
    prep.add_argument("--size", type=int)
    prep.add_argument("--resize", choices=("pad", "crop"),
                      help="aspect-preserving pad (keep all) or centre crop (fill)")
    _params_option(prep)
    prep.set_defaults(func=run_preprocess)


def _params_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default=str(DEFAULT_PARAMS),
                        help="parameters file (default: %(default)s)")


def resolve(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Command line over params.yaml section over built-in defaults."""
    values = {**DEFAULTS[name], **section(name, args.params)}
    for key in values:
        given = getattr(args, key, None)
        if given is not None and given is not False:
            values[key] = given
    return values


def _workers(requested: int) -> int:
    return requested if requested > 0 else (os.cpu_count() or 1)


def run_phantom(args: argparse.Namespace) -> int:
    from cfxray.data.contact_sheet import save_contact_sheet
    from cfxray.data.manifest import (
        class_counts,
        format_summary,
        prepare_output_dir,
        summarize,
        write_manifest,
        write_summary,
    )
    from cfxray.data.phantom_dataset import generate
    from cfxray.lineage import write_lineage

    p = resolve(args, "phantom")
    out = prepare_output_dir(p["out"])
    rows = generate(out, n=p["n"], size=p["size"], seed=p["seed"],
                    pneumonia_fraction=p["pneumonia_fraction"],
                    split_fractions=p["split_fractions"], workers=_workers(p["workers"]),
                    realism=p["realism"], shortcut_rate=p["shortcut_rate"],
                    shortcut_confounding=p["shortcut_confounding"])
    write_manifest(out, rows)
    extra = {"source": "phantom", "seed": p["seed"]}
    if p["shortcut_rate"]:
        extra["shortcut_markers"] = class_counts([r for r in rows if r["shortcut"] == "1"])
    summary = summarize(rows, sizes=[(p["size"], p["size"])] * len(rows), extra=extra)
    write_summary(out, summary)
    if p["contact_sheet"]:
        save_contact_sheet(out, rows, out / "contact_sheet.png", per_class=p["contact_sheet"] // 2)
    params = {k: v for k, v in p.items() if k not in ("out", "workers")}
    write_lineage(out, "dataset", inputs={}, params=params, metrics=summary["counts"])
    print(format_summary(summary))
    if p["shortcut_rate"]:
        marked = ", ".join(f"{split} {c['NORMAL']}/{c['PNEUMONIA']}"
                           for split, c in extra["shortcut_markers"].items())
        print(f"shortcut marker on NORMAL/PNEUMONIA images: {marked}")
    print(f"wrote {out}")
    return 0


def run_ingest(args: argparse.Namespace) -> int:
    from cfxray.data.ingest import ingest
    from cfxray.data.manifest import format_summary
    from cfxray.lineage import write_lineage

    p = resolve(args, "ingest")
    out = Path(p["out"])
    summary = ingest(Path(args.src), out, resplit=args.resplit, seed=p["seed"],
                     split_fractions=p["split_fractions"], workers=_workers(p["workers"]))
    params = {k: v for k, v in p.items() if k not in ("out", "workers")}
    write_lineage(out, "dataset", inputs={"source": args.src}, params=params,
                  metrics={"counts": summary["counts"], "quarantined": summary["quarantined"],
                           "duplicates": summary["duplicates"]})
    print(format_summary(summary))
    print(f"quarantined {summary['quarantined']} file(s), dropped {summary['duplicates']} "
          f"duplicate(s); wrote {out}")
    return 0


def run_preprocess(args: argparse.Namespace) -> int:
    from cfxray.data.manifest import prepare_output_dir
    from cfxray.data.preprocess import preprocess
    from cfxray.errors import UserError
    from cfxray.lineage import write_lineage

    p = resolve(args, "preprocess")
    source = Path(args.input)
    if not source.is_dir():
        raise UserError(f"{source} is not a directory")
    out = prepare_output_dir(p["out"])
    meta = preprocess(source, out, size=p["size"], mode=p["resize"])
    write_lineage(out, "prepared", inputs={"dataset": source},
                  params={"size": p["size"], "resize": p["resize"]}, metrics=meta["counts"])
    print(f"{meta['images']} images at {meta['size']}px ({meta['resize']}) -> {out}")
    return 0
