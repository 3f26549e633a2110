"""`cfxray study create | app | report`: a blinded reader study of a published version.

Defaults come from the `study` section of params.yaml. The study's libraries (onnxruntime,
captum, sqlalchemy, fastapi, uvicorn, statsmodels) are imported only when a command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cfxray.settings import add_settings, resolve
from cfxray.study.settings import StudySettings

# The params.yaml sections these commands read, and their dataclasses.
SECTIONS: dict[str, type] = {"study": StudySettings}


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
    create.add_argument("--version", type=int, help="published version (default: the latest)")
    create.add_argument("--out", type=Path, required=True, help="new study folder "
                                                                "(e.g. studies/NAME)")
    create.add_argument("--search", action="append", default=[], metavar="DIR",
                        help="folder to look for the recorded classifier checkpoint under")
    add_settings(create, StudySettings, "study",
                 only=("model_repo", "data", "split", "seed", "pairs", "ratings", "predictions",
                       "with_cases", "saliency_steps"),
                 help={"model_repo": "Triton model repository written by `cfxray export`",
                       "data": "prepared data folder (the version's test split)",
                       "pairs": "real-or-counterfactual pairs, half per class",
                       "ratings": "images to rate, half real, half counterfactual",
                       "predictions": "prediction images per arm, half per decision",
                       "with_cases": "also rate the evaluation report's best/typical/worst "
                                     "counterfactuals",
                       "saliency_steps": "integrated-gradients steps"})
    create.set_defaults(func=run_create)

    app = commands.add_parser(
        "app", help="serve the reading page (readers answer in the browser)",
        description="A page where each reader enters an ID, answers the items in their own "
                    "random order with keyboard or mouse, and can pause or leave and resume. "
                    "Answers go to the database, one row each.")
    app.add_argument("--study", type=Path, required=True, help="study folder")
    add_settings(app, StudySettings, "study", only=("database", "host", "port"),
                 help={"database": "SQLAlchemy URL of the answers database",
                       "host": "address to bind"})
    app.set_defaults(func=run_app)

    report = commands.add_parser(
        "report", help="numbers, plots and HTML from the answers, joined to the version",
        description="Per task: accuracy or mean rating with bootstrap intervals over readers "
                    "and items, Fleiss' kappa and the test against chance; writes an HTML "
                    "report and records it in the version folders and their model cards.")
    report.add_argument("--study", type=Path, required=True, help="study folder")
    report.add_argument("--out", type=Path,
                        help="report folder (default: REPORTS/<study name>)")
    report.add_argument("--search", action="append", default=[], metavar="DIR",
                        help="folder to look for the version folders under")
    add_settings(report, StudySettings, "study",
                 only=("database", "reports", "bootstrap_resamples", "confidence"),
                 help={"database": "SQLAlchemy URL of the answers database",
                       "reports": "folder of study reports"})
    report.set_defaults(func=run_report)


def run_create(args: argparse.Namespace) -> int:
    from cfxray.study.definition import create_study

    settings = resolve(StudySettings, args, "study")
    create_study(settings.model_repo, args.version, settings.data, args.out, settings,
                 args.search)
    return 0


def run_app(args: argparse.Namespace) -> int:
    from cfxray.study.server import launch

    settings = resolve(StudySettings, args, "study")
    launch(args.study, settings.database, settings.host, settings.port, block=True)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from cfxray.study.report import write_report

    settings = resolve(StudySettings, args, "study")
    out = args.out or Path(settings.reports) / Path(args.study).name
    write_report(args.study, settings.database, out, settings, args.params, args.search)
    return 0
