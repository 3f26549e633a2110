"""`cfxray export`: publish a verified model-repository version for Triton."""

from __future__ import annotations

import argparse
from pathlib import Path

from cfxray.conventions import CLASSIFIER_FILE
from cfxray.params import DEFAULT_PARAMS, section

SECTION = "export"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export classifier and generators to a Triton model repository (ONNX)",
        description="Export the classifier and both generators to single-file ONNX models with "
                    "the preprocessing folded in, check each (onnx.checker, onnxruntime vs "
                    "PyTorch parity) and publish them as a new version of a Triton model "
                    "repository: classifier, generator_p2n, generator_n2p, explain.")
    p.add_argument("--classifier", type=Path, default=Path("models/classifier") / CLASSIFIER_FILE,
                   help="classifier checkpoint (classifier.pt)")
    p.add_argument("--generators", type=Path, default=Path("models/cyclegan"),
                   help="CycleGAN output folder holding generators.pt")
    p.add_argument("--out", type=Path, default=Path("model_repository"),
                   help="Triton model repository (created when missing)")
    p.add_argument("--version", type=int, default=None,
                   help="version number to publish (default: latest + 1); never overwritten")
    p.add_argument("--evaluation", type=Path, default=None,
                   help="evaluation folder; refuse to publish unless its metrics.json has "
                        "gate_passed: true")
    p.add_argument("--params", type=Path, default=DEFAULT_PARAMS,
                   help="params.yaml whose 'export' section sets batching and instances")
    p.set_defaults(func=run)


def settings_from_params(params: dict) -> tuple[object, float]:
    from cfxray.errors import UserError
    from cfxray.export.model_repository import ServingSettings
    from cfxray.export.onnx_export import PARITY_ATOL

    params = dict(params)
    atol = float(params.pop("parity_atol", PARITY_ATOL))
    if "preferred_batch_sizes" in params:
        params["preferred_batch_sizes"] = tuple(params["preferred_batch_sizes"])
    try:
        return ServingSettings(**params), atol
    except TypeError as exc:
        raise UserError(f"params.yaml section '{SECTION}': {exc}") from exc


def run(args: argparse.Namespace) -> int:
    from cfxray.export.exporter import export_repository
    from cfxray.export.model_repository import repository_summary

    params = section(SECTION, args.params)
    # Clients must resize images the way the training data was: the preprocess step's mode.
    params.setdefault("resize", section("preprocess", args.params).get("resize", "pad"))
    settings, atol = settings_from_params(params)
    version, _ = export_repository(args.classifier, args.generators, args.out,
                                   version=args.version, evaluation_dir=args.evaluation,
                                   settings=settings, atol=atol)
    print(f"published version {version} to {args.out}:")
    for name, info in repository_summary(args.out).items():
        print(f"  {name}: versions {info['versions']}, {info['image_size']}px, "
              f"max batch {info['max_batch_size']}")
    return 0
