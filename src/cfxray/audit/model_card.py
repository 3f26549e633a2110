"""Model cards (Model Card Toolkit fields) for each published Triton model version.

The card is built from the version's lineage chain, never typed by hand: details from the
export record, data identities (sha256, DVC hash and revision) from the data records, metrics
with their confidence intervals from the evaluation. `model_card.json` keeps the Model Card
Toolkit schema (model_details, model_parameters, quantitative_analysis, considerations);
`model_card.md` and `model_card.html` render it. The card's hashes are sealed into the
version's `lineage.json`, so an audit notices an edited card.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfxray.audit.chain import trace_version
from cfxray.audit.findings import ROLES, Node
from cfxray.audit.metrics_table import MetricRow, metric_rows
from cfxray.audit.studies import card_lines, read_studies
from cfxray.lineage import record_documents
from cfxray.settings import load_settings


@dataclass(frozen=True)
class ModelCardSettings:
    """The `model_card` section of params.yaml."""

    owners: tuple[str, ...] = ("cfxray maintainers",)
    license: str = "Apache-2.0"
    references: tuple[str, ...] = ("docs/ARCHITECTURE.md",)


OVERVIEWS = {
    "classifier": "Pneumonia classifier for frontal chest X-rays: returns NORMAL / PNEUMONIA "
                  "probabilities for a grayscale image.",
    "generator_n2p": "CycleGAN generator G (NORMAL -> PNEUMONIA): produces the counterfactual "
                     "image the classifier would call PNEUMONIA.",
    "generator_p2n": "CycleGAN generator F (PNEUMONIA -> NORMAL): produces the counterfactual "
                     "image the classifier would call NORMAL.",
    "explain": "Counterfactual explanation ensemble: classifier probabilities, the counterfactual "
               "towards the other class and its difference from the original image.",
}
INTENDED_USES = (
    "Research on counterfactual explanations of chest X-ray classifiers: showing which image "
    "regions a classifier's decision depends on.",
    "Teaching and method development for explainable medical-image models.",
)
OUT_OF_SCOPE_USES = (
    "Clinical diagnosis, triage, screening or any decision about a patient.",
    "Use as a medical device or as a substitute for a radiologist's reading.",
    "Images from other modalities, views (lateral), paediatric-vs-adult transfer or "
    "populations the training data does not cover, without a new evaluation.",
)
ETHICS = (
    ("Risk of being mistaken for a diagnostic tool",
     "This card limits use to research; keep the model out of clinical workflows and label any "
     "interface built on it accordingly."),
    ("Counterfactual images look like real radiographs and could mislead",
     "Show a counterfactual only beside its original and the difference map, label it "
     "synthetic, and never store it as a patient image."),
    ("Dataset bias (site, device, age, sex) can be learnt as a shortcut",
     "Counterfactual difference maps are meant to expose such shortcuts; evaluate per subgroup "
     "before drawing conclusions."),
)
PRIVACY = {
    True: ("Patient privacy", "The phantom training data is synthetic and holds no patient "
                              "information."),
    False: ("Patient privacy", "Training images must be de-identified before ingest; the model "
                               "and its counterfactuals can echo training images."),
}


def _by_role(root: Node) -> dict[str, Node]:
    """First artifact of each role, breadth first (the classifier before the oracle)."""
    return {role: node for role in ROLES if (node := root.first(role)) is not None}


def _data_entry(role: str, node: Node) -> dict[str, Any]:
    record = node.record or {}
    entry: dict[str, Any] = {
        "name": f"{role} dataset ({record.get('kind')})",
        "link": str(node.path),
        "sha256": record.get("sha256"),
        "created_utc": (record.get("context") or {}).get("created_utc"),
        "params": record.get("params") or {},
    }
    if node.dvc:
        entry["dvc"] = {k: node.dvc.get(k) for k in ("md5", "source", "rev")}
    if record.get("metrics"):
        entry["counts"] = record["metrics"]
    return entry


def _eval_entry(prepared: Node) -> dict[str, Any]:
    entry = _data_entry("evaluation (test split of prepared)", prepared)
    test_file = ((prepared.record or {}).get("files") or {}).get("test.pt")
    if test_file:
        entry["name"] = f"test split of the prepared dataset (test.pt sha256 {test_file})"
    return entry


# The parameters that say what a training run was; the full set is in model_card.json.
KEY_PARAMS = {"classifier": ("arch", "epochs", "batch_size", "lr", "seed"),
              "cyclegan": ("epochs", "gamma_counter", "counter_form", "lambda_cycle",
                           "mu_identity", "variant", "seed")}


def _training_entry(role: str, node: Node) -> dict[str, Any]:
    record = node.record or {}
    params = record.get("params") or {}
    return {"name": f"{role} training run", "link": str(node.path),
            "sha256": record.get("sha256"), "git_commit": (record.get("git") or {}).get("commit"),
            "key_params": {k: params[k] for k in KEY_PARAMS.get(role, ()) if k in params},
            "params": params}


def _count_text(counts: Any) -> str:
    """`{"train": {"NORMAL": 10, ...}, ...}` or `{"NORMAL": 10}` as one short phrase."""
    if not isinstance(counts, dict):
        return ""
    flat = {k: v for k, v in counts.items() if isinstance(v, int | float)}
    nested = {k: v for k, v in counts.items() if isinstance(v, dict)}
    parts = [", ".join(f"{k} {v:g}" for k, v in flat.items())] if flat else []
    parts += [f"{k}: " + ", ".join(f"{c} {n:g}" for c, n in v.items()
                                   if isinstance(n, int | float)) for k, v in nested.items()]
    return "; ".join(p for p in parts if p)


def _evaluation_metrics(node: Node | None) -> list[MetricRow]:
    if node is None:
        return []
    path = node.path / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else (node.record or {}).get("metrics")
    return metric_rows(metrics or {})


def _is_phantom(raw: Node | None) -> bool:
    """A raw dataset made from nothing (no source input) is generated, i.e. synthetic."""
    if raw is None:
        return False
    record = raw.record or {}
    summary = raw.path / "summary.json"
    source = json.loads(summary.read_text()).get("source") if summary.is_file() else None
    return source == "phantom" or not record.get("inputs") or "phantom" in raw.path.name


def build_card(version_dir: str | Path, params_file: str | Path | None = None,
               search_roots: list[str | Path] | None = None) -> dict[str, Any]:
    """The card's fields (Model Card Toolkit schema) for one Triton model version folder
    (also a staged one, before it is moved into the repository: the record's `model` and
    `version` then name it)."""
    return _card(trace_version(version_dir, search_roots).roots[0], params_file)


def _card(root: Node, params_file: str | Path | None) -> dict[str, Any]:
    model, version = root.name.split("/", 1)
    roles = _by_role(root)
    export = root.record or {}
    options = load_settings(ModelCardSettings, "model_card", params_file)
    classifier, raw = roles.get("classifier"), roles.get("raw")
    rows = _evaluation_metrics(roles.get("evaluation"))
    arch = _architecture(model, export.get("params") or {}, classifier)
    size = ((roles["prepared"].record or {}).get("params") or {}).get("size") \
        if "prepared" in roles else None
    limitations = [
        f"Trained on {size or 'small'} px images; findings smaller than a few pixels at that "
        "resolution are invisible to it.",
        "Counterfactuals show what changes this classifier's decision, not what causes disease.",
        "Metrics are estimated on one held-out test split; confidence intervals are bootstrap "
        "intervals over its images, not over sites or scanners.",
    ]
    if _is_phantom(raw):
        limitations.insert(0, "Trained and evaluated on SYNTHETIC PHANTOM images generated by "
                              "`cfxray data phantom`, not on real radiographs: its metrics say "
                              "nothing about performance on patients.")
    card = {
        "model_details": {
            "name": model,
            "overview": OVERVIEWS.get(model, f"cfxray model {model}."),
            "version": {"name": version,
                        "date": (export.get("context") or {}).get("created_utc"),
                        "git_commit": (export.get("git") or {}).get("commit"),
                        "git_dirty": (export.get("git") or {}).get("dirty")},
            "owners": [{"name": o} for o in options.owners],
            "licenses": [{"identifier": options.license}],
            "references": [{"reference": r} for r in options.references],
        },
        "model_parameters": {
            "model_architecture": arch,
            "served_files": {rel: digest for rel, digest in (export.get("files") or {}).items()},
            "training_runs": [_training_entry(role, roles[role])
                              for role in ("classifier", "cyclegan") if role in roles],
            "data": {"train": [_data_entry(role, roles[role]) for role in ("raw", "prepared")
                               if role in roles],
                     "eval": [_eval_entry(roles["prepared"])] if "prepared" in roles else []},
            **_tensor_formats(model, (export.get("params") or {}).get("image_size")),
        },
        "quantitative_analysis": {
            "performance_metrics": [_metric_json(r) for r in rows if not r.is_counterfactual],
            "counterfactual_quality": [_metric_json(r) for r in rows if r.is_counterfactual],
            "evaluation_record": str(roles["evaluation"].path) if "evaluation" in roles else None,
            "release_gate": (roles["evaluation"].record or {}).get("gate")
                            if "evaluation" in roles else None,
            "graphics": _graphics(roles.get("evaluation")),
            "reader_studies": read_studies(root.path),
        },
        "considerations": {
            "users": [{"description": "ML researchers and auditors of explainable-AI methods"}],
            "use_cases": [{"description": u} for u in INTENDED_USES],
            "out_of_scope_uses": [{"description": u} for u in OUT_OF_SCOPE_USES],
            "limitations": [{"description": lim} for lim in limitations],
            "ethical_considerations": [{"name": n, "mitigation_strategy": m}
                                       for n, m in (*ETHICS, PRIVACY[_is_phantom(raw)])],
        },
    }
    return card


def _graphics(evaluation: Node | None) -> list[dict[str, Any]]:
    """The evaluation's figures (ROC, confusion, reliability, examples), by path and hash."""
    if evaluation is None or not evaluation.path.is_dir():
        return []
    files = (evaluation.record or {}).get("files") or {}
    return [{"name": png.stem.replace("_", " "), "path": str(png), "sha256": files.get(png.name)}
            for png in sorted(evaluation.path.glob("*.png"))]


def _architecture(model: str, params: dict[str, Any], classifier: Node | None) -> str:
    """What the served network is, from the configs the export recorded."""
    trained = ((classifier.record or {}).get("params") or {}).get("model") if classifier else None
    clf = params.get("classifier_config") or trained or {}
    gen = params.get("generator_config") or {}
    parts = []
    if model in ("classifier", "explain") and clf:
        parts.append(f"classifier {clf.get('arch')} at {clf.get('image_size')} px "
                     f"(normalisation mean {clf.get('mean')}, std {clf.get('std')} inside)")
    if model != "classifier" and gen:
        parts.append("ResNet generator (" + ", ".join(f"{k} {v}" for k, v in gen.items()) + ")")
    return "; ".join(parts) or "see the training records"


def _tensor_formats(model: str, size: int | None) -> dict[str, str]:
    """Input and output tensors from the serving contract (one source with the configs)."""
    from cfxray.contract import MODEL_SPECS, SIZE

    spec = MODEL_SPECS.get(model)
    if spec is None:
        return {"input_format": "see config.pbtxt", "output_format": "see config.pbtxt"}

    def describe(tensors: tuple[Any, ...]) -> str:
        return "; ".join(f"{t.name} {t.dtype} [batch, "
                         f"{', '.join(str(size or d) if d == SIZE else str(d) for d in t.dims)}]"
                         for t in tensors)
    return {"input_format": describe(spec.inputs), "output_format": describe(spec.outputs)}


def _metric_json(row: MetricRow) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": row.name, "value": row.value}
    if row.low is not None:
        entry["confidence_interval"] = {"lower_bound": row.low, "upper_bound": row.high}
    return entry


def _metric_lines(metrics: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    out = []
    for m in metrics:
        ci = m.get("confidence_interval")
        row = MetricRow(m["type"], m["value"], ci and ci["lower_bound"], ci and ci["upper_bound"])
        out.append((m["type"], *row.formatted()))
    return out


def _sections(card: dict[str, Any]) -> list[tuple[str, list[str] | list[tuple[str, ...]]]]:
    """Card content as (heading, bullet lines or table rows): one source for Markdown and HTML."""
    d, p, q, c = (card["model_details"], card["model_parameters"],
                  card["quantitative_analysis"], card["considerations"])
    version = d["version"]
    details = [f"Name: {d['name']}", f"Version: {version['name']}",
               f"Date: {version['date'] or 'unknown'}",
               f"Owners: {', '.join(o['name'] for o in d['owners'])}",
               f"Licence: {', '.join(lic['identifier'] for lic in d['licenses'])}",
               f"Code: git {version['git_commit'] or 'unknown'}"
               f"{' (uncommitted changes)' if version['git_dirty'] else ''}",
               f"Architecture: {p['model_architecture']}",
               f"Inputs: {p['input_format']}", f"Outputs: {p['output_format']}",
               *(f"Served file: {rel} sha256 {digest}"
                 for rel, digest in p.get("served_files", {}).items()),
               d["overview"]]
    data = []
    for split in ("train", "eval"):
        for entry in p["data"][split]:
            line = f"{split}: {entry['name']} at {entry['link']}, sha256 {entry['sha256']}"
            if entry.get("dvc"):
                dvc = entry["dvc"]
                line += f", DVC md5 {dvc['md5']} ({dvc['source']}, git rev {dvc['rev']})"
            if split == "train" and _count_text(entry.get("counts")):
                line += f"; images: {_count_text(entry['counts'])}"
            data.append(line)
    training = [f"{run['name']} at {run['link']} (sha256 {run['sha256']}, git "
                f"{run['git_commit']}): " + ", ".join(f"{k}={v}" for k, v in
                                                      run["key_params"].items())
                for run in p.get("training_runs", [])]
    return [
        ("Model details", details),
        ("Intended use", [u["description"] for u in c["use_cases"]]),
        ("Out-of-scope use", [u["description"] for u in c["out_of_scope_uses"]]),
        ("Training and evaluation data", data or ["no data records reachable"]),
        ("Training runs", training or ["no training records reachable"]),
        ("Evaluation metrics (95% CI)", _metric_lines(q["performance_metrics"])),
        ("Counterfactual quality (95% CI)", _metric_lines(q["counterfactual_quality"])),
        ("Release gate", _gate_lines(q.get("release_gate"))),
        ("Reader studies (blinded; cfxray study)", card_lines(q.get("reader_studies") or [])
         or ["no reader study recorded for this version"]),
        ("Limitations", [lim["description"] for lim in c["limitations"]]),
        ("Ethical considerations", [f"{e['name']}: {e['mitigation_strategy']}"
                                    for e in c["ethical_considerations"]]),
    ]


def _gate_lines(gate: dict[str, Any] | None) -> list[str]:
    if not gate:
        return ["no release gate recorded by the evaluation"]
    lines = [f"passed: {gate.get('passed')} (enforced: {gate.get('enforced', 'unknown')})"]
    return lines + [f"failed check: {f}" for f in gate.get("failures") or []]


def render_markdown(card: dict[str, Any]) -> str:
    d = card["model_details"]
    lines = [f"# Model card: {d['name']} version {d['version']['name']}", ""]
    for heading, items in _sections(card):
        lines += [f"## {heading}", ""]
        if items and isinstance(items[0], tuple):
            lines += ["| metric | value | 95% CI |", "|---|---|---|"]
            lines += [f"| {a} | {b} | {ci} |" for a, b, ci in items]
        else:
            lines += [f"- {item}" for item in items] or ["- none recorded"]
        lines.append("")
    graphics = card["quantitative_analysis"].get("graphics") or []
    if graphics:
        lines += ["## Evaluation figures", ""]
        lines += [f"![{g['name']}]({Path(g['path']).as_uri()})" for g in graphics] + [""]
    return "\n".join(lines)


def _embedded(graphic: dict[str, Any]) -> str:
    """An <img> carrying the PNG itself, so the HTML card stands alone."""
    path = Path(graphic["path"])
    if not path.is_file():
        return f"<p>{html.escape(graphic['name'])}: figure missing ({html.escape(str(path))})</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    name = html.escape(graphic["name"])
    return (f"<figure><img alt='{name}' style='max-width:100%' "
            f"src='data:image/png;base64,{data}'><figcaption>{name}</figcaption></figure>")


def render_html(card: dict[str, Any], lineage_png: bytes | None = None) -> str:
    """The card as one self-contained page; `lineage_png` (the drawn chain) is embedded."""
    d = card["model_details"]
    e = html.escape
    title = e(f"Model card: {d['name']} version {d['version']['name']}")
    body = [f"<h1>{title}</h1>"]
    for heading, items in _sections(card):
        body.append(f"<h2>{e(heading)}</h2>")
        if items and isinstance(items[0], tuple):
            rows = "".join(f"<tr><td>{e(a)}</td><td>{e(b)}</td><td>{e(ci)}</td></tr>"
                           for a, b, ci in items)
            body.append(f"<table><tr><th>metric</th><th>value</th><th>95% CI</th></tr>{rows}"
                        "</table>")
        else:
            body.append("<ul>" + "".join(f"<li>{e(str(i))}</li>" for i in items) + "</ul>"
                        if items else "<p>none recorded</p>")
    graphics = card["quantitative_analysis"].get("graphics") or []
    if graphics:
        body.append("<h2>Evaluation figures</h2>" + "".join(_embedded(g) for g in graphics))
    if lineage_png:
        data = base64.b64encode(lineage_png).decode()
        body.append("<h2>Lineage</h2><figure><img alt='lineage' style='max-width:100%' "
                    f"src='data:image/png;base64,{data}'><figcaption>artifacts this version "
                    "was made from, served version on top</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #999;padding:.2em .6em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def write_model_card(version_dir: str | Path, params_file: str | Path | None = None,
                     search_roots: list[str | Path] | None = None) -> dict[str, Path]:
    """Write model_card.{json,md,html} into a version folder whose lineage.json is written,
    and seal their hashes into that record. Call it after `write_lineage` in export."""
    import tempfile

    from cfxray.audit.graph import draw_chain

    version_dir = Path(version_dir)
    audit = trace_version(version_dir, search_roots)
    card = _card(audit.roots[0], params_file)
    with tempfile.TemporaryDirectory() as tmp:
        lineage_png = draw_chain(audit, Path(tmp) / "lineage.png").read_bytes()
    paths = {"json": version_dir / "model_card.json", "md": version_dir / "model_card.md",
             "html": version_dir / "model_card.html"}
    paths["json"].write_text(json.dumps(card, indent=2, default=str))
    paths["md"].write_text(render_markdown(card))
    paths["html"].write_text(render_html(card, lineage_png))
    record_documents(version_dir)
    return paths
