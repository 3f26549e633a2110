"""`cfxray export`: publish a verified model-repository version for Triton."""

from __future__ import annotations

import argparse
from pathlib import Path

from cfxray.audit.model_card import ModelCardSettings
from cfxray.data.settings import PreprocessSettings
from cfxray.export.settings import ExportSettings, ServingSettings
from cfxray.settings import add_settings, from_sections, load_params, params_label, resolve

# The params.yaml sections this command reads, and their dataclasses: its own, the training
# data's resize mode (clients must fit images the way training did) and the model cards'.
# The pipeline's export step gets exactly these sections.
SECTIONS: dict[str, type] = {"export": ExportSettings, "preprocess": PreprocessSettings,
                             "model_card": ModelCardSettings}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export classifier and generators to a Triton model repository (ONNX)",
        description="Export the classifier and both generators to single-file ONNX models with "
                    "the preprocessing folded in, check each (onnx.checker, onnxruntime vs "
                    "PyTorch parity) and publish them as a new version of a Triton model "
                    "repository: classifier, generator_p2n, generator_n2p, explain. Defaults "
                    "come from the `export` section of params.yaml.")
    add_settings(p, ExportSettings, "export", only=("classifier", "generators", "out"),
                 help={"classifier": "classifier checkpoint",
                       "generators": "CycleGAN folder holding generators.pt",
                       "out": "Triton model repository, created when missing"})
    p.add_argument("--version", type=int, default=None,
                   help="version number to publish (default: latest + 1); never overwritten")
    p.add_argument("--evaluation", type=Path, default=None,
                   help="evaluation folder; publish only if its metrics.json has "
                        "gate_passed: true")
    p.add_argument("--int8-calibration", type=Path, default=None, metavar="DATA_DIR",
                   help="publish the generators as static int8 models calibrated on this "
                        "prepared data folder's training split (refused unless SSIM >= 0.98 "
                        "against fp32 on its validation images)")
    p.set_defaults(func=run)


def resolve_settings(args: argparse.Namespace) -> tuple[ExportSettings, ServingSettings]:
    """Every section the export reads, checked before minutes of export."""
    export = resolve(ExportSettings, args, "export")
    others = from_sections(load_params(args.params),
                           {k: v for k, v in SECTIONS.items() if k != "export"},
                           params_label(args.params))
    serving = export.serving(others["preprocess"].resize)
    serving.validate()
    return export, serving


def run(args: argparse.Namespace) -> int:
    from cfxray.export.exporter import export_repository
    from cfxray.export.model_repository import repository_summary

    export, serving = resolve_settings(args)
    out = Path(export.out)
    version, _ = export_repository(Path(export.classifier), Path(export.generators), out,
                                   version=args.version, evaluation_dir=args.evaluation,
                                   settings=serving, atol=export.parity_atol,
                                   params_file=args.params,
                                   int8_calibration=args.int8_calibration)
    print(f"published version {version} to {out}:")
    for name, info in repository_summary(out).items():
        print(f"  {name}: versions {info['versions']}, {info['image_size']}px, "
              f"max batch {info['max_batch_size']}")
    return 0
