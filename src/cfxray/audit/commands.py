"""`cfxray audit` and `cfxray reproduce`: the auditor's two questions, as commands.

Is what is served exactly what was evaluated and made from the recorded data? (audit, exit 1
naming the broken link when not.) Can its training be repeated with the same outcome?
(reproduce, exit 1 when a metric differs by more than the tolerance.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_REPO = "model_repository"


def register(subparsers: argparse._SubParsersAction) -> None:
    audit = subparsers.add_parser(
        "audit", help="trace a served model version down to its raw data and verify every hash",
        description="Walk served version -> export -> evaluation -> training runs -> "
                    "preprocessed data -> raw dataset (DVC hash and revision), recomputing every "
                    "hash. Exit 1 naming the broken link when a file changed, a record is "
                    "missing or the served model is not the recorded one.")
    audit.add_argument("--model-repo", default=DEFAULT_REPO,
                       help="Triton model repository (with --url: the one the server loads)")
    audit.add_argument("--url", help="running Triton server (HTTP, e.g. localhost:8000): audit "
                                     "the versions it reports ready")
    audit.add_argument("--no-probe", dest="probe", action="store_false",
                       help="with --url: do not send the fixed probe that compares the served "
                            "models' answers with the recorded ONNX files")
    audit.add_argument("--model", help="one model (default: every model in the repository)")
    audit.add_argument("--version", type=int, help="version number (default: the latest)")
    audit.add_argument("--json", action="store_true", help="print the audit as JSON")
    audit.add_argument("--search", action="append", default=[], metavar="DIR",
                       help="folder to look for recorded inputs under when their recorded "
                            "absolute path does not exist (records made in a container)")
    audit.add_argument("--artifact", metavar="DIR",
                       help="audit the chain below any artifact folder instead (an evaluation "
                            "before export, a training run)")
    audit.add_argument("--diff", nargs=2, metavar=("A", "B"),
                       help="show what changed (data, code, params, metrics) between two "
                            "versions: numbers in --model-repo or version folders")
    audit.add_argument("--graph", metavar="PNG",
                       help="also draw the chain as a picture (broken artifacts in red)")
    audit.add_argument("--write-card", action="store_true",
                       help="after a passing audit, (re)write each version's model card")
    audit.add_argument("--params", default=None,
                       help="params file with the model_card section (owners, license; "
                            "default: params.yaml when there is one)")
    audit.set_defaults(func=run_audit)

    rep = subparsers.add_parser(
        "reproduce", help="re-run a published version's training and compare its metrics",
        description="Re-run the training (and evaluation) recorded in a version's lineage on "
                    "the same inputs (hashes checked) with the same parameters, and report how "
                    "close the new metrics are to the recorded ones.")
    rep.add_argument("--model-repo", default=DEFAULT_REPO, help="Triton model repository")
    rep.add_argument("--version", type=int, required=True, help="published version number")
    rep.add_argument("--model", default="classifier",
                     help="the served model whose chain names the training runs")
    rep.add_argument("--stage", nargs="+", default=["classifier"],
                     choices=["classifier", "cyclegan", "evaluation"],
                     help="runs to repeat, each on its recorded inputs (default: classifier)")
    rep.add_argument("--out", help="folder for the new runs (default outputs/reproduce/M_N)")
    rep.add_argument("--tolerance", type=float, default=0.02,
                     help="largest acceptable metric difference, absolute or relative to the "
                          "recorded value (exit 1 beyond it)")
    rep.add_argument("--search", action="append", default=[], metavar="DIR",
                     help="folder to look for recorded inputs under (see `cfxray audit`)")
    rep.add_argument("--json", action="store_true", help="print the comparison as JSON")
    rep.set_defaults(func=run_reproduce)


def run_audit(args: argparse.Namespace) -> int:
    from cfxray.audit.chain import audit_artifact
    from cfxray.audit.render import render_tree
    from cfxray.audit.repository import audit_repository, audit_served

    if args.diff:
        return _run_diff(args)
    if args.write_card:
        from cfxray.audit.model_card import ModelCardSettings
        from cfxray.settings import load_settings

        load_settings(ModelCardSettings, "model_card", args.params)  # checked before the walk
    if args.artifact:
        audit = audit_artifact(args.artifact, args.search)
    elif args.url:
        audit = audit_served(args.url, args.model_repo, args.model, args.version, args.search,
                             probe=args.probe)
    else:
        audit = audit_repository(args.model_repo, args.model, args.version, args.search)
    print(json.dumps(audit.to_dict(), indent=2) if args.json else render_tree(audit))
    if args.graph:
        from cfxray.audit.graph import draw_chain

        path = draw_chain(audit, args.graph)
        if not args.json:
            print(f"lineage graph: {path}")
    if not audit.ok:
        return 1
    if args.write_card and not args.artifact:
        from cfxray.audit.model_card import write_model_card

        for root in audit.roots:
            paths = write_model_card(root.path, args.params, args.search)
            if not args.json:
                print(f"model card: {paths['md']} and {paths['html'].name}")
    return 0


def _run_diff(args: argparse.Namespace) -> int:
    from cfxray.audit.diff import diff_versions, render_diff

    diff, broken = diff_versions(args.diff[0], args.diff[1], args.model_repo, args.model,
                                 args.search)
    if args.json:
        print(json.dumps({**diff.to_dict(), "broken": broken}, indent=2, default=str))
    else:
        print(render_diff(diff))
        for line in broken:
            print(f"warning: broken link in {line}")
    return 0


def run_reproduce(args: argparse.Namespace) -> int:
    from cfxray.audit.reproduce import (
        comparisons_json,
        render_comparisons,
        reproduce,
        reproduced,
    )

    results = reproduce(args.model_repo, args.version, args.model, tuple(args.stage),
                        Path(args.out) if args.out else None, args.search)
    print(comparisons_json(results, args.tolerance) if args.json
          else render_comparisons(results, args.tolerance))
    return 0 if reproduced(results, args.tolerance) else 1
