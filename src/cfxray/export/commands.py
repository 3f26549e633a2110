"""`cfxray export`: publish a verified model-repository version for Triton."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

from cfxray.errors import UserError
from cfxray.params import DEFAULT_PARAMS, section

SECTION = "export"
PATH_DEFAULTS = {"classifier": "models/classifier/classifier.pt",
                 "generators": "models/cyclegan", "out": "model_repository"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export classifier and generators to a Triton model repository (ONNX)",
        description="Export the classifier and both generators to single-file ONNX models with "
                    "the preprocessing folded in, check each (onnx.checker, onnxruntime vs "
                    "PyTorch parity) and publish them as a new version of a Triton model "
                    "repository: classifier, generator_p2n, generator_n2p, explain. Defaults "
                    "come from the `export` section of params.yaml.")
    p.add_argument("--classifier", type=Path, default=None,
                   help=f"classifier checkpoint (default {PATH_DEFAULTS['classifier']})")
    p.add_argument("--generators", type=Path, default=None,
                   help=f"CycleGAN folder holding generators.pt (default "
                        f"{PATH_DEFAULTS['generators']})")
    p.add_argument("--out", type=Path, default=None,
                   help=f"Triton model repository, created when missing (default "
                        f"{PATH_DEFAULTS['out']})")
    p.add_argument("--version", type=int, default=None,
                   help="version number to publish (default: latest + 1); never overwritten")
    p.add_argument("--evaluation", type=Path, default=None,
                   help="evaluation folder; publish only if its metrics.json has "
                        "gate_passed: true")
    p.add_argument("--int8-calibration", type=Path, default=None, metavar="DATA_DIR",
                   help="publish the generators as static int8 models calibrated on this "
                        "prepared data folder's training split (refused unless SSIM >= 0.98 "
                        "against fp32 on its validation images)")
    p.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    p.set_defaults(func=run)


def resolve(args: argparse.Namespace) -> tuple[dict[str, Path], Any, float]:
    """Paths, serving settings and parity bound: defaults < params.yaml < command line."""
    from cfxray.export.model_repository import ServingSettings
    from cfxray.export.onnx_export import PARITY_ATOL

    values = section(SECTION, args.params)
    # Clients must resize images the way the training data was: the preprocess step's mode.
    values.setdefault("resize", section("preprocess", args.params).get("resize", "pad"))
    paths = {k: Path(getattr(args, k) or values.pop(k, None) or default)
             for k, default in PATH_DEFAULTS.items()}
    for k in PATH_DEFAULTS:
        values.pop(k, None)
    atol = float(values.pop("parity_atol", PARITY_ATOL))
    known = {f.name for f in fields(ServingSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"params section '{SECTION}' in {args.params} has unknown keys "
                        f"{unknown}; known: {sorted(known | set(PATH_DEFAULTS) | {'parity_atol'})}")
    for key in ("preferred_batch_sizes", "warmup_batch_sizes"):
        if key in values:
            values[key] = tuple(values[key])
    return paths, ServingSettings(**values), atol


def run(args: argparse.Namespace) -> int:
    from cfxray.export.exporter import export_repository
    from cfxray.export.model_repository import repository_summary

    paths, settings, atol = resolve(args)
    version, _ = export_repository(paths["classifier"], paths["generators"], paths["out"],
                                   version=args.version, evaluation_dir=args.evaluation,
                                   settings=settings, atol=atol, params_file=args.params,
                                   int8_calibration=args.int8_calibration)
    print(f"published version {version} to {paths['out']}:")
    for name, info in repository_summary(paths["out"]).items():
        print(f"  {name}: versions {info['versions']}, {info['image_size']}px, "
              f"max batch {info['max_batch_size']}")
    return 0
