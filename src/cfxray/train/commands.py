"""`cfxray train-*` subcommands.

Each trainer's settings are one frozen dataclass; its fields become `--kebab-case` options
whose defaults come from a `params.yaml` section (picked with `--section`, file with
`--params`), and an option given on the command line wins over the file. `config_options`
and `resolve_config` do that for any trainer, so every `_add_*` function below stays short.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any

from cfxray.errors import UserError


def _field_type(cls: type, name: str) -> type:
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def config_options(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One option per dataclass field, default None so unset options fall back to params.yaml."""
    group = parser.add_argument_group(f"parameters (defaults: params.yaml section, then "
                                      f"{cls.__name__})")
    defaults = cls()
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        kind = _field_type(cls, field.name)
        flag = "--" + field.name.replace("_", "-")
        help_text = f"default {getattr(defaults, field.name)!r}"
        if kind is bool:
            group.add_argument(flag, dest=field.name, default=None,
                               action=argparse.BooleanOptionalAction, help=help_text)
        else:
            group.add_argument(flag, dest=field.name, default=None, type=kind, help=help_text)


def resolve_config(cls: type, args: argparse.Namespace) -> Any:
    """Dataclass defaults < params.yaml section < command-line options."""
    from cfxray.params import section

    values = section(args.section, args.params)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"params section '{args.section}' in {args.params} has unknown keys "
                        f"{unknown}; known: {sorted(known)}")
    hints = {name: _field_type(cls, name) for name in known}
    values = {k: hints[k](v) if v is not None and hints[k] is not bool else v
              for k, v in values.items()}
    values.update({k: v for k, v in vars(args).items() if k in known and v is not None})
    return cls(**values)


def _run_arguments(parser: argparse.ArgumentParser, section: str) -> None:
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="parameters file (default: params.yaml)")
    parser.add_argument("--section", default=section,
                        help=f"params.yaml section to read (default: {section})")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from checkpoints/last.pt")


def _train_classifier(args: argparse.Namespace) -> int:
    from cfxray.train.classifier import train_classifier
    from cfxray.train.configs import ClassifierTrainConfig

    train_classifier(args.data, args.out, resolve_config(ClassifierTrainConfig, args),
                     resume=args.resume)
    return 0


def _add_classifier(subparsers: argparse._SubParsersAction) -> None:
    from cfxray.train.configs import ClassifierTrainConfig

    p = subparsers.add_parser(
        "train-classifier", help="train the pneumonia classifier (or the oracle)",
        description="Train a classifier on preprocessed data; the best checkpoint by "
                    "validation AUC goes to OUT/classifier.pt. Runs under torchrun too.")
    p.add_argument("--data", type=Path, required=True, help="preprocessed data folder")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    _run_arguments(p, "train_classifier")
    config_options(p, ClassifierTrainConfig)
    p.set_defaults(func=_train_classifier)


def _train_cyclegan(args: argparse.Namespace) -> int:
    from cfxray.train.cyclegan import train_cyclegan
    from cfxray.train.cyclegan_config import CycleGANTrainConfig

    train_cyclegan(args.data, args.classifier, args.out,
                   resolve_config(CycleGANTrainConfig, args), oracle_path=args.oracle,
                   resume=args.resume)
    return 0


def _add_cyclegan(subparsers: argparse._SubParsersAction) -> None:
    from cfxray.train.cyclegan_config import CycleGANTrainConfig

    p = subparsers.add_parser(
        "train-cyclegan", help="train the counterfactual CycleGAN against a frozen classifier",
        description="Train the two generators (NORMAL->PNEUMONIA, PNEUMONIA->NORMAL) so the "
                    "frozen classifier flips; writes OUT/generators.pt, sample grids and a "
                    "test-split summary. Runs under torchrun too.")
    p.add_argument("--data", type=Path, required=True, help="preprocessed data folder")
    p.add_argument("--classifier", type=Path, required=True,
                   help="the classifier to explain (classifier.pt)")
    p.add_argument("--oracle", type=Path, default=None,
                   help="an independently trained classifier, for the end-of-run summary")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    _run_arguments(p, "train_cyclegan")
    config_options(p, CycleGANTrainConfig)
    p.set_defaults(func=_train_cyclegan)


def register(subparsers: argparse._SubParsersAction) -> None:
    _add_classifier(subparsers)
    _add_cyclegan(subparsers)
