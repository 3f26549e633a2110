"""`cfxray train-*` subcommands.

Each trainer's settings are one frozen dataclass whose fields are the keys of its params.yaml
section (`--section` picks it: the oracle is `train_oracle`) and `--kebab-case` options, an
option given on the command line winning over the file (`cfxray.settings`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cfxray.settings import add_settings, resolve
from cfxray.train.configs import ClassifierTrainConfig
from cfxray.train.cyclegan_config import CycleGANTrainConfig

# The params.yaml sections these commands read, and their dataclasses.
SECTIONS: dict[str, type] = {"train_classifier": ClassifierTrainConfig,
                             "train_oracle": ClassifierTrainConfig,
                             "train_cyclegan": CycleGANTrainConfig}


def _resume_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from checkpoints/last.pt")


def _train_classifier(args: argparse.Namespace) -> int:
    from cfxray.train.classifier import train_classifier

    config = resolve(ClassifierTrainConfig, args)
    train_classifier(args.data, args.out, config, resume=args.resume)
    return 0


def _add_classifier(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-classifier", help="train the pneumonia classifier (or the oracle)",
        description="Train a classifier on preprocessed data; the best checkpoint by "
                    "validation AUC goes to OUT/classifier.pt. Runs under torchrun too.")
    p.add_argument("--data", type=Path, required=True, help="preprocessed data folder")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    _resume_option(p)
    add_settings(p, ClassifierTrainConfig, "train_classifier", choose_section=True)
    p.set_defaults(func=_train_classifier)


def _train_cyclegan(args: argparse.Namespace) -> int:
    from cfxray.train.cyclegan import train_cyclegan

    config = resolve(CycleGANTrainConfig, args)
    train_cyclegan(args.data, args.classifier, args.out, config, oracle_path=args.oracle,
                   resume=args.resume)
    return 0


def _add_cyclegan(subparsers: argparse._SubParsersAction) -> None:
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
    _resume_option(p)
    add_settings(p, CycleGANTrainConfig, "train_cyclegan", choose_section=True)
    p.set_defaults(func=_train_cyclegan)


def register(subparsers: argparse._SubParsersAction) -> None:
    _add_classifier(subparsers)
    _add_cyclegan(subparsers)
