"""Re-run a published version's training (and evaluation) from its recorded inputs and
parameters.

The lineage chain names the exact data (by hash) and parameters each training run used. This
re-runs the same `cfxray` step on that data with those parameters into a fresh folder and
compares the new run's recorded metrics with the old ones, so an auditor learns whether a
published number can be obtained again, and how closely.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cfxray.audit.chain import trace_version
from cfxray.audit.findings import Node
from cfxray.audit.metrics_table import metric_rows
from cfxray.audit.repository import resolve_versions
from cfxray.errors import UserError


@dataclass(frozen=True)
class Stage:
    role: str
    command: str  # the cfxray subcommand that made the artifact
    section: str  # its params.yaml section
    input_flags: tuple[str, ...]  # recorded input names passed back as --NAME PATH
    product: str | None = None  # a checkpoint the run writes, compared tensor by tensor
    derived: tuple[str, ...] = ()  # recorded params the step derives itself (not section keys)
    extra_args: tuple[str, ...] = ()


STAGES = {
    "classifier": Stage("classifier", "train-classifier", "train_classifier", ("data",),
                        product="classifier.pt", derived=("model",)),
    "cyclegan": Stage("cyclegan", "train-cyclegan", "train_cyclegan",
                      ("data", "classifier", "oracle"), product="generators.pt",
                      derived=("generator",)),
    # The gate's verdict is compared as a metric; the re-run must finish to be compared.
    "evaluation": Stage("evaluation", "evaluate", "evaluate",
                        ("data", "classifier", "oracle", "generators"), extra_args=("--no-gate",)),
}
# Metrics about the run rather than the model: they are not expected to repeat.
_RUN_METRICS = ("seconds", "world_size", "time", "epochs_run")


@dataclass
class Comparison:
    stage: str
    original: str
    reproduced: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    identical_weights: bool | None = None

    @property
    def max_abs_diff(self) -> float:
        diffs = [r["abs_diff"] for r in self.rows if r["abs_diff"] is not None]
        return max(diffs, default=0.0)

    def outside(self, tolerance: float) -> list[str]:
        """Metrics off by more than the tolerance, absolute and relative (so a PSNR in dB
        and an AUC are judged alike), or missing from the new run."""
        return [r["metric"] for r in self.rows
                if (r["abs_diff"] is None and r["recorded"] is not None)
                or (r["abs_diff"] is not None and r["abs_diff"] > tolerance
                and r["rel_diff"] > tolerance)]

    def to_dict(self, tolerance: float) -> dict[str, Any]:
        return {"stage": self.stage, "original": self.original, "reproduced": self.reproduced,
                "identical_weights": self.identical_weights, "max_abs_diff": self.max_abs_diff,
                "outside_tolerance": self.outside(tolerance), "metrics": self.rows}


def _recorded_inputs(node: Node, stage: Stage) -> dict[str, Path]:
    """The inputs of the original run, each required to still match its recorded hash."""
    by_name = {child.name: child for child in node.children}
    inputs = {}
    for name in stage.input_flags:
        if name not in (node.record or {}).get("inputs", {}):
            continue
        child = by_name.get(name)
        if child is None or not child.path.exists():
            raise UserError(f"cannot reproduce {stage.role}: its input {name!r} is missing")
        if not child.ok:
            failure = next(s for s in child.status if s.startswith("FAIL"))
            raise UserError(f"cannot reproduce {stage.role}: input {name} is no longer what it "
                            f"was trained on ({failure[5:]}); restore it (`dvc checkout` or "
                            "`dvc repro`) first")
        inputs[name] = child.path
    return inputs


def _same_weights(a: Path, b: Path) -> bool | None:
    import torch

    if not (a.is_file() and b.is_file()):
        return None
    sa = torch.load(a, map_location="cpu", weights_only=False)
    sb = torch.load(b, map_location="cpu", weights_only=False)
    tensors_a = _tensors(sa)
    tensors_b = _tensors(sb)
    return tensors_a.keys() == tensors_b.keys() and all(
        torch.equal(tensors_a[k], tensors_b[k]) for k in tensors_a)


def _tensors(obj: Any, prefix: str = "") -> dict[str, Any]:
    import torch

    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_tensors(v, f"{prefix}.{k}"))
        return out
    return {}


def compare_metrics(original: dict[str, Any], reproduced: dict[str, Any]) -> list[dict[str, Any]]:
    new = {r.name: r.value for r in metric_rows(reproduced)}
    rows = []
    for row in metric_rows(original):
        if any(word in row.name for word in _RUN_METRICS):
            continue
        value = new.get(row.name)
        diff = rel = None
        if value is not None and row.value is not None:
            if math.isnan(value) and math.isnan(row.value):
                diff = rel = 0.0
            elif not (math.isnan(value) or math.isnan(row.value)):
                diff = abs(value - row.value)
                rel = diff / max(abs(row.value), 1e-12)
        rows.append({"metric": row.name, "recorded": row.value, "reproduced": value,
                     "abs_diff": diff, "rel_diff": rel})
    return rows


def reproduce_stage(node: Node, stage: Stage, out_dir: Path) -> Comparison:
    from cfxray.cli import main as cfxray_main
    from cfxray.lineage import read_lineage

    record = node.record or {}
    if (out_dir / "lineage.json").exists() or (out_dir / "checkpoints").exists():
        raise UserError(f"{out_dir} already holds a run; choose an empty --out folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {k: v for k, v in (record.get("params") or {}).items() if k not in stage.derived}
    params_file = out_dir.parent / f"{out_dir.name}.params.yaml"
    params_file.write_text(yaml.safe_dump({stage.section: params}, sort_keys=True))
    argv = [stage.command, "--params", str(params_file), "--out", str(out_dir),
            *stage.extra_args]
    for name, path in _recorded_inputs(node, stage).items():
        argv += [f"--{name}", str(path)]
    print("reproducing:", "cfxray", " ".join(argv), flush=True)
    code = cfxray_main(argv)
    if code not in (0, None):
        raise UserError(f"the re-run of {stage.command} exited with {code}")
    new = read_lineage(out_dir)
    original_dir = node.path if node.path.is_dir() else node.path.parent
    return Comparison(
        stage=stage.role, original=str(original_dir), reproduced=str(out_dir),
        rows=compare_metrics(record.get("metrics") or {}, new.get("metrics") or {}),
        identical_weights=_same_weights(original_dir / stage.product, out_dir / stage.product)
        if stage.product else None,
    )


def reproduce(repo: str | Path, version: int, model: str = "classifier",
              stages: tuple[str, ...] = ("classifier",), out: str | Path | None = None,
              search_roots: list[str | Path] | None = None) -> list[Comparison]:
    repo = Path(repo)
    ((name, ver),) = resolve_versions(repo, model, version)
    root = trace_version(repo / name / str(ver), search_roots).roots[0]
    out_root = Path(out) if out else Path("outputs") / "reproduce" / f"{name}_{ver}"
    results = []
    for stage_name in stages:
        stage = STAGES[stage_name]
        node = root.first(stage.role)
        if node is None:
            raise UserError(f"{name}/{ver}'s lineage reaches no {stage.role} training record")
        results.append(reproduce_stage(node, stage, out_root / stage.role))
    return results


def render_comparisons(results: list[Comparison], tolerance: float) -> str:
    lines = []
    for c in results:
        lines.append(f"{c.stage}: recorded {c.original}  reproduced {c.reproduced}")
        lines.append(f"  {'metric':<28} {'recorded':>12} {'reproduced':>12} {'|diff|':>10}")
        for r in c.rows:
            cells = [f"{x:.6g}" if isinstance(x, float) else "n/a"
                     for x in (r["recorded"], r["reproduced"], r["abs_diff"])]
            lines.append(f"  {r['metric']:<28} {cells[0]:>12} {cells[1]:>12} {cells[2]:>10}")
        weights = {True: "bit-identical", False: "different", None: "not compared"}
        outside = c.outside(tolerance)
        verdict = ("REPRODUCED" if not outside else
                   f"NOT reproduced ({', '.join(outside)} off by more than the tolerance)")
        lines.append(f"  weights: {weights[c.identical_weights]}; largest metric difference "
                     f"{c.max_abs_diff:.4g} (tolerance {tolerance:g}, absolute or relative): "
                     f"{verdict}")
    return "\n".join(lines)


def reproduced(results: list[Comparison], tolerance: float) -> bool:
    return not any(c.outside(tolerance) for c in results)


def comparisons_json(results: list[Comparison], tolerance: float) -> str:
    return json.dumps({"tolerance": tolerance, "reproduced": reproduced(results, tolerance),
                       "stages": [c.to_dict(tolerance) for c in results]}, indent=2)
