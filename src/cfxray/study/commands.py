"""`cfxray study create | app | report`: a blinded reader study of a published version.

Defaults come from the `study` section of params.yaml. The study's libraries (onnxruntime,
captum, sqlalchemy, fastapi, uvicorn, statsmodels) are imported only when a command runs.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from cfxray.errors import UserError
from cfxray.params import DEFAULT_PARAMS, section

SECTION = "study"
DEFAULTS = {"model_repo": "model_repository", "data": "data/prepared", "split": "test",
            "seed": 0, "pairs": 20, "ratings": 40, "predictions": 20, "with_cases": False,
            "saliency_steps": 32, "database": "sqlite:///studies/answers.sqlite",
            "host": "127.0.0.1", "port": 7870, "bootstrap_resamples": 2000,
            "confidence": 0.95, "reports": "reports/studies"}


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Built-in defaults < params.yaml `study` section < options given on the command line."""
    values = DEFAULTS | section(SECTION, args.params)
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise UserError(f"params section '{SECTION}' in {args.params} has unknown keys "
                        f"{unknown}; known: {sorted(DEFAULTS)}")
    values |= {k: v for k, v in vars(args).items() if v is not None or k not in values}
    return argparse.Namespace(**values)


def _option(parser: argparse.ArgumentParser, flag: str, kind: type = str, **kw) -> None:
    key = flag.lstrip("-").replace("-", "_")
    parser.add_argument(flag, type=kind, default=None,
                        help=f"{kw.pop('help', '')} (default {DEFAULTS[key]!r})".strip(), **kw)


def register(subparsers: argparse._SubParsersAction) -> None:
    study = subparsers.add_parser(
        "study", help="blinded reader study of a published version: create, read, report",
        description="Define a blinded reader study of a published model version, read it in "
                    "the browser, and report it into the version's lineage (docs/STUDY.md).")
    commands = study.add_subparsers(dest="study_command", required=True, metavar="COMMAND")

    create = commands.add_parser(
        "create", help="draw the sample and render every item from the version's ONNX models",
        description="Draw a seeded, stratified sample of the data's test images and render "
                    "the three tasks (real or counterfactual, realism rating, prediction with "
                    "counterfactual and saliency arms) from the published version's own ONNX "
                    "files. The same inputs and seed give the same study and content hash.")
    _option(create, "--model-repo", help="Triton model repository written by `cfxray export`")
    create.add_argument("--version", type=int, help="published version (default: the latest)")
    _option(create, "--data", help="prepared data folder (the version's test split)")
    create.add_argument("--out", type=Path, required=True, help="new study folder "
                                                                "(e.g. studies/NAME)")
    _option(create, "--split")
    _option(create, "--seed", int)
    _option(create, "--pairs", int, help="real-or-counterfactual pairs, half per class")
    _option(create, "--ratings", int, help="images to rate, half real, half counterfactual")
    _option(create, "--predictions", int, help="prediction images per arm, half per decision")
    create.add_argument("--with-cases", action="store_const", const=True, default=None,
                        help="also rate the evaluation report's best/typical/worst "
                             "counterfactuals (default: params)")
    _option(create, "--saliency-steps", int, help="integrated-gradients steps")
    create.add_argument("--search", action="append", default=[], metavar="DIR",
                        help="folder to look for the recorded classifier checkpoint under")
    create.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    create.set_defaults(func=run_create)

    app = commands.add_parser(
        "app", help="serve the reading page (readers answer in the browser)",
        description="A page where each reader enters an ID, answers the items in their own "
                    "random order with keyboard or mouse, and can pause or leave and resume. "
                    "Answers go to the database, one row each.")
    app.add_argument("--study", type=Path, required=True, help="study folder")
    _option(app, "--database", help="SQLAlchemy URL of the answers database")
    _option(app, "--host", help="address to bind")
    _option(app, "--port", int)
    app.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    app.set_defaults(func=run_app)

    report = commands.add_parser(
        "report", help="numbers, plots and HTML from the answers, joined to the version",
        description="Per task: accuracy or mean rating with bootstrap intervals over readers "
                    "and items, Fleiss' kappa and the test against chance; writes an HTML "
                    "report and records it in the version folders and their model cards.")
    report.add_argument("--study", type=Path, required=True, help="study folder")
    _option(report, "--database", help="SQLAlchemy URL of the answers database")
    report.add_argument("--out", type=Path,
                        help="report folder (default: REPORTS/<study name>)")
    _option(report, "--bootstrap-resamples", int)
    _option(report, "--confidence", float)
    report.add_argument("--search", action="append", default=[], metavar="DIR",
                        help="folder to look for the version folders under")
    report.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    report.set_defaults(func=run_report)


def run_create(args: argparse.Namespace) -> int:
    from cfxray.study.definition import StudySettings, create_study

    args = resolve(args)
    settings = StudySettings(**{f.name: getattr(args, f.name) for f in fields(StudySettings)})
    create_study(args.model_repo, args.version, args.data, args.out, settings, args.search)
    return 0


def run_app(args: argparse.Namespace) -> int:
    from cfxray.study.server import launch

    args = resolve(args)
    launch(args.study, args.database, args.host, args.port, block=True)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from cfxray.study.analysis import ReportSettings
    from cfxray.study.report import write_report

    args = resolve(args)
    if not 0 < args.confidence < 1 or args.bootstrap_resamples < 1:
        raise UserError("confidence must lie in (0, 1) and bootstrap_resamples be positive")
    out = args.out or Path(args.reports) / Path(args.study).name
    write_report(args.study, args.database, out,
                 ReportSettings(args.bootstrap_resamples, args.confidence, args.seed),
                 args.params, args.search)
    return 0
