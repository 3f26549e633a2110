"""`cfxray data phantom|ingest|preprocess`: settings from the params.yaml sections of the
same names (`cfxray.data.settings`), options given on the command line over them."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from pathlib import Path

from cfxray.data.settings import IngestSettings, PhantomSettings, PreprocessSettings
from cfxray.settings import add_settings, resolve

# The params.yaml sections these commands read, and their dataclasses.
SECTIONS: dict[str, type] = {"phantom": PhantomSettings, "ingest": IngestSettings,
                             "preprocess": PreprocessSettings}


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="create, ingest and preprocess datasets",
                                 description="Dataset steps: phantom, ingest, preprocess.")
    steps = data.add_subparsers(dest="data_command", required=True, metavar="STEP")

    phantom = steps.add_parser("phantom", help="generate the synthetic chest X-ray dataset")
    add_settings(phantom, PhantomSettings, "phantom",
                 only=("out", "n", "size", "seed", "pneumonia_fraction", "realism",
                       "shortcut_rate", "shortcut_confounding", "workers"),
                 help={"out": "output directory", "n": "number of images",
                       "size": "image side in pixels",
                       "realism": "simple: smooth round opacities in flat lungs; hard: vessels, "
                                  "patchy, diffuse and bilateral disease, exposure variation",
                       "shortcut_rate": "share of images carrying the shortcut marker (0: none)",
                       "shortcut_confounding": "0..1, how strongly train/val tie the marker to "
                                               "PNEUMONIA (independent of the label in test)",
                       "workers": "processes (0: all cores); output is identical for any value"})
    phantom.set_defaults(func=run_phantom)

    ingest = steps.add_parser("ingest", help="normalise a real X-ray folder (Kermany, flat, "
                              "RSNA-style 0/1 or RSNA challenge; DICOM, PNG, JPEG)",
                              description="Normalise a real X-ray folder; DICOM identifiers are "
                              "replaced by keyed pseudonyms (docs/DATA.md).")
    ingest.add_argument("src", help="source folder")
    ingest.add_argument("--resplit", action="store_true",
                        help="ignore the source's splits and make new patient-aware ones")
    add_settings(ingest, IngestSettings, "ingest",
                 only=("out", "seed", "workers", "views", "body_parts", "keep_burned_in",
                       "deid_salt_file"),
                 help={"out": "output directory", "workers": "processes (0: all cores)",
                       "views": "DICOM ViewPosition values kept (UNKNOWN: none in the header); "
                                "others are quarantined",
                       "body_parts": "DICOM BodyPartExamined values kept when present",
                       "keep_burned_in": "keep DICOMs marked BurnedInAnnotation YES (flagged in "
                                         "the manifest) instead of quarantining them",
                       "deid_salt_file": "file holding the pseudonym key, outside the "
                                         "repository (the environment variable "
                                         "CFXRAY_DEID_SALT takes precedence)"})
    ingest.set_defaults(func=run_ingest)

    prep = steps.add_parser("preprocess", help="resize to tensors the training steps read")
    prep.add_argument("input", metavar="IN", help="raw dataset directory (has manifest.csv)")
    add_settings(prep, PreprocessSettings, "preprocess",
                 help={"out": "output directory",
                       "resize": "aspect-preserving pad (keep all) or centre crop (fill)"})
    prep.set_defaults(func=run_preprocess)


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
    from cfxray.data.phantom_dataset import SHORTCUT_FIELDS, generate
    from cfxray.lineage import write_lineage

    p = resolve(PhantomSettings, args, "phantom")
    out = prepare_output_dir(p.out)
    rows = generate(out, n=p.n, size=p.size, seed=p.seed, pneumonia_fraction=p.pneumonia_fraction,
                    split_fractions=p.split_fractions, workers=_workers(p.workers),
                    realism=p.realism, shortcut_rate=p.shortcut_rate,
                    shortcut_confounding=p.shortcut_confounding)
    write_manifest(out, rows, extra_fields=SHORTCUT_FIELDS if p.shortcut_rate else ())
    extra = {"source": "phantom", "seed": p.seed}
    if p.shortcut_rate:
        extra["shortcut_markers"] = class_counts([r for r in rows if r["shortcut"] == "1"])
    summary = summarize(rows, sizes=[(p.size, p.size)] * len(rows), extra=extra)
    write_summary(out, summary)
    if p.contact_sheet:
        save_contact_sheet(out, rows, out / "contact_sheet.png", per_class=p.contact_sheet // 2)
    params = {k: v for k, v in asdict(p).items() if k not in ("out", "workers")}
    write_lineage(out, "dataset", inputs={}, params=params, metrics=summary["counts"])
    print(format_summary(summary))
    if p.shortcut_rate:
        marked = ", ".join(f"{split} {c['NORMAL']}/{c['PNEUMONIA']}"
                           for split, c in extra["shortcut_markers"].items())
        print(f"shortcut marker on NORMAL/PNEUMONIA images: {marked}")
    print(f"wrote {out}")
    return 0


def run_ingest(args: argparse.Namespace) -> int:
    from cfxray.data.ingest import ingest
    from cfxray.data.manifest import format_summary
    from cfxray.lineage import write_lineage

    p = resolve(IngestSettings, args, "ingest")
    out = Path(p.out)
    summary = ingest(Path(args.src), out, resplit=args.resplit, seed=p.seed,
                     split_fractions=p.split_fractions, views=p.views, body_parts=p.body_parts,
                     keep_burned_in=p.keep_burned_in, deid_salt_file=p.deid_salt_file,
                     workers=_workers(p.workers))
    # The salt file's path is this machine's business; the salt's fingerprint is the record.
    params = {k: v for k, v in asdict(p).items()
              if k not in ("out", "workers", "deid_salt_file")}
    deid = {"deidentification": summary["deidentification"]} if "dicom" in summary else {}
    write_lineage(out, "dataset", inputs={"source": args.src}, params=params,
                  metrics={"counts": summary["counts"], "quarantined": summary["quarantined"],
                           "duplicates": summary["duplicates"]}, extra=deid)
    print(format_summary(summary))
    reasons = ", ".join(f"{kind} {n}" for kind, n in sorted(summary["quarantine_reasons"].items()))
    print(f"quarantined {summary['quarantined']} file(s){f' ({reasons})' if reasons else ''}, "
          f"dropped {summary['duplicates']} duplicate(s); wrote {out}")
    if "dicom" in summary:
        dicom, record = summary["dicom"], summary["deidentification"]
        print(f"DICOM: {dicom['images']} image(s) kept, bits stored {dicom['bits_stored']}, "
              f"{dicom['burned_in_annotation_flagged']} flagged for burned-in annotation; "
              f"identifiers replaced by {record['method']} pseudonyms (salt fingerprint "
              f"{record['salt_fingerprint']})")
    return 0


def run_preprocess(args: argparse.Namespace) -> int:
    from cfxray.data.manifest import prepare_output_dir
    from cfxray.data.preprocess import preprocess
    from cfxray.errors import UserError
    from cfxray.lineage import write_lineage

    p = resolve(PreprocessSettings, args, "preprocess")
    source = Path(args.input)
    if not source.is_dir():
        raise UserError(f"{source} is not a directory")
    out = prepare_output_dir(p.out)
    meta = preprocess(source, out, size=p.size, mode=p.resize)
    write_lineage(out, "prepared", inputs={"dataset": source},
                  params={"size": p.size, "resize": p.resize}, metrics=meta["counts"])
    print(f"{meta['images']} images at {meta['size']}px ({meta['resize']}) -> {out}")
    return 0
