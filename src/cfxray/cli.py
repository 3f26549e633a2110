"""The `cfxray` command: one subcommand per pipeline step.

Each step lives in its own module exposing `register(subparsers)`; the module is imported
only to build the parser, and heavy imports (torch, onnx) stay inside the step functions so
`cfxray --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cfxray.errors import UserError
from cfxray.settings import ArgumentParser

# Modules that provide subcommands, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "cfxray.data.commands",
    "cfxray.train.commands",
    "cfxray.evaluation.commands",
    "cfxray.export.commands",
    "cfxray.serving.commands",
    "cfxray.audit.commands",
    "cfxray.pipeline.commands",
    "cfxray.study.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="cfxray",
        description="Counterfactual explanations of chest X-ray classifiers (CycleGAN).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except UserError as exc:
        print(f"cfxray {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
