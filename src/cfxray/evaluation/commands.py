"""`cfxray evaluate`: the evaluation step's command line (settings: params.yaml `evaluate`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cfxray.evaluation.settings import EvaluateSettings
from cfxray.settings import add_settings, resolve

# The params.yaml sections this command reads, and their dataclasses.
SECTIONS: dict[str, type] = {"evaluate": EvaluateSettings}

HEADLINE = (
    ("classifier/accuracy", "classifier accuracy"),
    ("classifier/auc", "classifier AUC"),
    ("oracle/accuracy", "oracle accuracy"),
)
DIRECTION_HEADLINE = (
    ("validity", "validity"), ("flip_rate", "flip rate"), ("oracle_score", "oracle score"),
    ("ssim", "SSIM"),
    ("kid", "KID"), ("kid_real_reference", "KID real-vs-real"),
    ("lesion_removal", "lesion removal"), ("opacity_in_lungs", "opacity in lungs"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="evaluate the classifier and its counterfactuals; apply the quality gate",
        description="Classifier metrics, counterfactual metrics with bootstrap intervals, an "
                    "offline HTML report and the quality gate (exit status 1 when it fails).")
    p.add_argument("--data", required=True, help="preprocessed data folder (test.pt, train.pt)")
    p.add_argument("--classifier", required=True, help="explained classifier.pt")
    p.add_argument("--oracle", required=True, help="independent oracle classifier.pt")
    p.add_argument("--generators", required=True, help="CycleGAN folder holding generators.pt")
    p.add_argument("--out", required=True, help="output folder (e.g. reports/eval)")
    p.add_argument("--no-gate", action="store_true",
                   help="report the quality gate but exit 0 even when it fails")
    add_settings(p, EvaluateSettings, "evaluate",
                 only=("batch_size", "device", "bootstrap_resamples"),
                 help={"device": "auto, cpu, cuda"})
    p.set_defaults(func=run)


def headline(metrics: dict[str, float]) -> list[str]:
    def fmt(key: str) -> str:
        value = metrics.get(key)
        if value is None or value != value:
            return "n/a"
        low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
        ci = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
        return f"{value:.3g}{ci}" if 0 < abs(value) < 1e-3 else f"{value:.3f}{ci}"

    lines = [f"  {label}: {fmt(key)}" for key, label in HEADLINE]
    for d in ("n2p", "p2n"):
        parts = [f"{label} {fmt(f'{d}/{key}')}" for key, label in DIRECTION_HEADLINE
                 if f"{d}/{key}" in metrics]
        lines.append(f"  {d}: " + ", ".join(parts))
    return lines


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from cfxray.evaluation.evaluate import evaluate, json_safe
    from cfxray.lineage import write_lineage

    settings = resolve(EvaluateSettings, args, "evaluate")
    generators = Path(args.generators)
    result = evaluate(args.data, args.classifier, args.oracle, generators, args.out, settings,
                      enforce_gate=not args.no_gate)
    write_lineage(args.out, "evaluation",
                  inputs={"data": args.data, "classifier": args.classifier,
                          "oracle": args.oracle, "generators": generators},
                  params=asdict(settings), metrics=json_safe(result.metrics),
                  extra={"gate": {"passed": result.gate.passed,
                                  "enforced": not args.no_gate,
                                  "failures": [c.describe() for c in result.gate.failures]}})
    print(f"evaluation report: {result.report}")
    print("\n".join(headline(result.metrics)))
    if result.gate.passed or args.no_gate:
        print(result.gate.message() + ("" if result.gate.passed else " (not enforced: --no-gate)"))
        return 0
    print(f"cfxray evaluate: {result.gate.message()}", file=sys.stderr)
    return 1
