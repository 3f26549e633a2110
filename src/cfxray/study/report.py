"""`cfxray study report`: numbers, a picture and an HTML page, joined to the version's lineage.

The report folder holds `answers.csv` (the exact answers used, with the truth beside them),
`summary.json`, `summary.png`, `report.html` and `lineage.json` (kind reader_study_report,
input: the study, whose own record names the version folders, the data and the classifier).
Each version folder the study was made from then gets the report's entry in its
`reader_studies.json` and a refreshed model card (`cfxray.audit.studies`), so `cfxray audit`
checks the report and the card shows its numbers.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cfxray.errors import UserError
from cfxray.lineage import read_lineage, sha256_tree, write_lineage
from cfxray.study.analysis import analyse
from cfxray.study.definition import ARMS, PAIRS, PREDICTION, RATING, TASK_TEXT, Study, load_study
from cfxray.study.settings import StudySettings

REPORT_KIND = "reader_study_report"
FIGURE = "summary.png"


def write_report(study_dir: str | Path, database: str, out: str | Path,
                 settings: StudySettings, params_file: str | Path | None = None,
                 search_roots: list[str | Path] | None = None,
                 progress: Callable[[str], None] = print) -> dict[str, Any]:
    from cfxray.study.store import AnswerStore

    settings.validate_report()
    study = load_study(study_dir)
    store = AnswerStore(database)
    try:
        rows = store.rows(study.sha256)
        others = store.other_versions(study.name, study.sha256)
    finally:
        store.close()
    if not rows:
        raise UserError(f"no answers to study {study.name} (content sha256 "
                        f"{study.sha256[:12]}) in {store.url}; read it with `cfxray study app`")
    for sha, n in others.items():
        progress(f"note: {n} answers in {store.url} belong to another study named "
                 f"{study.name} (sha256 {sha[:12]}); left out")
    summary = analyse(study, rows, settings)
    summary["database"] = store.url
    out = Path(out)
    _write_folder(out, study, rows, summary)
    record = write_lineage(out, REPORT_KIND, inputs={"study": study.folder},
                           params={**summary["settings"], "database": store.url},
                           metrics={"readers": len(summary["readers"]),
                                    "answers": summary["answers"],
                                    "headline": summary["headline"]})
    for line in summary_lines(summary):
        progress(line)
    progress(f"report: {out / 'report.html'}")
    _register(study, out, record, summary, params_file, search_roots, progress)
    return summary


def _write_folder(out: Path, study: Study, rows: list[dict[str, Any]],
                  summary: dict[str, Any]) -> None:
    """Written aside and swapped in: a report folder is whole or the previous one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        _answers_csv(staging / "answers.csv", study, rows)
        (staging / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        figure(summary, staging / FIGURE)
        (staging / "report.html").write_text(render_html(summary, staging / FIGURE))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _answers_csv(path: Path, study: Study, rows: list[dict[str, Any]]) -> None:
    key = study.key()
    fields = ("reader", "item", "task", "answer", "truth", "correct", "elapsed_ms",
              "answered_utc")
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        for row in rows:
            truth = _truth(key.get(row["item"], {}))
            correct = "" if row["task"] == RATING else int(row["answer"] == truth)
            writer.writerow({**{k: row[k] for k in ("reader", "item", "task", "answer",
                                                    "elapsed_ms")},
                             "truth": truth, "correct": correct,
                             "answered_utc": str(row["answered_utc"])})


def _truth(entry: dict[str, Any]) -> str:
    task = entry.get("task")
    if task == PAIRS:
        return entry["real"]
    if task == PREDICTION:
        return entry["decision"]
    return entry.get("kind", "")


def _register(study: Study, out: Path, record: dict[str, Any], summary: dict[str, Any],
              params_file: str | Path, search_roots: list[str | Path] | None,
              progress: Callable[[str], None]) -> None:
    """Leave the report's entry in every version folder the study was made from, when that
    folder is here and still the one the study recorded, and refresh its model card."""
    from cfxray.audit import chain
    from cfxray.audit.model_card import write_model_card
    from cfxray.audit.studies import record_study

    inputs = read_lineage(study.folder).get("inputs") or {}
    walker = chain.Walker(chain.search_roots(study.folder, search_roots))
    entry = {"name": study.name, "study": str(study.folder.resolve()),
             "study_sha256": study.sha256, "report": str(out.resolve()),
             "report_sha256": record["sha256"],
             "reported_utc": datetime.now(UTC).isoformat(timespec="seconds"),
             "readers": len(summary["readers"]), "answers": summary["answers"],
             "confidence": summary["settings"]["confidence"], "summary": summary["headline"]}
    for name, recorded in sorted(inputs.items()):
        if not name.startswith("served_"):
            continue
        folder = walker.locate(str(recorded.get("path") or ""))
        if folder is None or sha256_tree(folder) != recorded.get("sha256"):
            progress(f"warning: {name.removeprefix('served_')} version folder "
                     f"{recorded.get('path')} is not here as the study recorded it; its model "
                     "card does not list this study")
            continue
        try:
            record_study(folder, entry)
            write_model_card(folder, params_file, search_roots)
        except OSError as exc:
            progress(f"warning: cannot record the study in {folder}: {exc}")
            continue
        progress(f"recorded in {folder} (reader_studies.json, model card)")


# --- summary lines, figure, HTML ----------------------------------------------------------


def _ci(part: dict[str, Any], confidence: float) -> str:
    if part.get("value") is None:
        return "no answers"
    if part.get("low") is None:
        return f"{part['value']:.3f}"
    return f"{part['value']:.3f} ({confidence:.0%} CI {part['low']:.3f}-{part['high']:.3f})"


def _readers(summary: dict[str, Any]) -> str:
    n = len(summary["readers"])
    return f"{n} reader{'' if n == 1 else 's'}"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _kappa(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    conf = summary["settings"]["confidence"]
    tasks = summary["tasks"]
    lines = [f"study {summary['study']['name']} (sha256 {summary['study']['sha256'][:12]}), "
             f"model version {summary['study']['model']['version']}: "
             f"{_readers(summary)}, {summary['answers']} answers"]
    if PAIRS in tasks:
        t = tasks[PAIRS]
        lines.append(f"  real or counterfactual: picked the real image {_ci(t, conf)}; "
                     f"chance 0.5, binomial p {_p(t['p_value_binomial'])}; "
                     f"Fleiss kappa {_kappa(t['fleiss_kappa'])}")
    if RATING in tasks:
        t = tasks[RATING]
        lines.append(f"  realism rating: real {_ci(t['real'], conf)}, counterfactual "
                     f"{_ci(t['counterfactual'], conf)}; difference {_ci(t['difference'], conf)}, "
                     f"Mann-Whitney p {_p(t['p_value_mann_whitney'])}; "
                     f"Fleiss kappa {_kappa(t['fleiss_kappa'])}")
    if PREDICTION in tasks:
        t = tasks[PREDICTION]
        for arm in ARMS:
            lines.append(f"  prediction with {arm}: correct {_ci(t[arm], conf)}; chance 0.5, "
                         f"binomial p {_p(t[arm]['p_value_binomial'])}; "
                         f"Fleiss kappa {_kappa(t[arm]['fleiss_kappa'])}")
        lines.append(f"  prediction, counterfactual minus saliency: "
                     f"{_ci(t['difference'], conf)}")
    return lines


def figure(summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = summary["tasks"]
    conf = summary["settings"]["confidence"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8),
                                      gridspec_kw={"width_ratios": [1.3, 1]})
    rows = []
    if PAIRS in tasks:
        rows.append(("real or counterfactual:\npicked the real image", tasks[PAIRS]))
    if PREDICTION in tasks:
        rows += [(f"prediction with\n{arm} explanations", tasks[PREDICTION][arm])
                 for arm in ARMS]
    for y, (_label, part) in enumerate(rows):
        if part.get("value") is None:
            continue
        readers = [v for v in part["per_reader"].values() if v is not None]
        left.scatter(readers, [y + 0.18] * len(readers), s=14, color="0.6", zorder=2,
                     label="one reader" if y == 0 else None)
        low, high = part["low"], part["high"]
        err = [[part["value"] - low], [high - part["value"]]] if low is not None else None
        left.errorbar([part["value"]], [y], xerr=err, fmt="o", color="C0", capsize=4,
                      zorder=3, label=f"all readers, {conf:.0%} CI" if y == 0 else None)
    left.axvline(0.5, color="C3", ls="--", lw=1, label="chance")
    left.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    left.set_xlim(0, 1.03)
    left.set_ylim(-0.6, len(rows) - 0.4)
    left.invert_yaxis()
    left.set_xlabel("share of answers")
    left.set_title("Two-choice tasks against chance", fontsize=10)
    left.legend(fontsize=7, loc="lower right")
    if RATING in tasks:
        t = tasks[RATING]
        for k, kind in enumerate(("real", "counterfactual")):
            hist = t[kind]["histogram"]
            total = max(sum(hist.values()), 1)
            part = t[kind]
            label = kind if part["value"] is None else \
                f"{kind}: mean {part['value']:.2f} [{part['low']:.2f}, {part['high']:.2f}]"
            right.bar([int(r) + (k - 0.5) * 0.38 for r in hist],
                      [v / total for v in hist.values()], width=0.38, label=label,
                      color=("0.45", "C1")[k])
        right.set_xticks(range(1, 6), ["1\nartificial", "2", "3", "4", "5\nreal"], fontsize=8)
        right.set_ylabel("share of ratings")
        right.legend(fontsize=7, loc="upper left")
    right.set_title("Realism ratings", fontsize=10)
    s = summary["study"]
    fig.suptitle(f"Reader study {s['name']}: model version {s['model']['version']}, "
                 f"{_readers(summary)}, {summary['answers']} answers", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render_html(summary: dict[str, Any], figure_path: Path) -> str:
    e = html.escape
    s, tasks = summary["study"], summary["tasks"]
    conf = summary["settings"]["confidence"]
    rows = []

    def row(task: str, measure: str, part: dict[str, Any], p: str, kappa: str,
            seconds: Any) -> None:
        n = f"{part.get('answers', '')}" + (
            f" ({part['readers']} reader{'' if part['readers'] == 1 else 's'} x "
            f"{part['items']} items)" if "readers" in part else "")
        rows.append(f"<tr><td>{e(task)}</td><td>{e(measure)}</td><td>{e(_ci(part, conf))}"
                    f"</td><td>{e(n)}</td><td>{e(p)}</td><td>{e(kappa)}</td>"
                    f"<td>{e('' if seconds is None else f'{seconds:.1f}')}</td></tr>")

    if PAIRS in tasks:
        t = tasks[PAIRS]
        row(TASK_TEXT[PAIRS][0], t["measure"], t, f"binomial {_p(t['p_value_binomial'])}",
            _kappa(t["fleiss_kappa"]), t["median_seconds"])
    if RATING in tasks:
        t = tasks[RATING]
        for kind in ("real", "counterfactual"):
            row(TASK_TEXT[RATING][0], f"mean rating, {kind} images", t[kind], "", "", None)
        row(TASK_TEXT[RATING][0], "difference, real minus counterfactual", t["difference"],
            f"Mann-Whitney {_p(t['p_value_mann_whitney'])}", _kappa(t["fleiss_kappa"]),
            t["median_seconds"])
        for case, value in (t.get("by_case") or {}).items():
            row(TASK_TEXT[RATING][0], f"mean rating, the evaluation's {case} counterfactuals",
                {"value": value}, "", "", None)
    if PREDICTION in tasks:
        t = tasks[PREDICTION]
        for arm in ARMS:
            row(TASK_TEXT[PREDICTION][0], f"correct, {arm} arm", t[arm],
                f"binomial {_p(t[arm]['p_value_binomial'])}", _kappa(t[arm]["fleiss_kappa"]),
                t[arm]["median_seconds"])
        row(TASK_TEXT[PREDICTION][0], "difference, counterfactual minus saliency",
            t["difference"], "", "", None)
    readers = "".join(f"<tr><td>{e(r)}</td>" + "".join(
        f"<td>{e(_reader_value(tasks, task, r))}</td>" for task in _reader_columns(tasks))
        + "</tr>" for r in summary["readers"])
    reader_head = "".join(f"<th>{e(c)}</th>" for c in _reader_columns(tasks).values())
    models = "".join(f"<li>{e(name)}: folder sha256 {e(m['sha256'][:16])}, model.onnx sha256 "
                     f"{e(m['onnx_sha256'][:16])}</li>" for name, m in s["model"]["models"].items())
    image = base64.b64encode(figure_path.read_bytes()).decode()
    style = ("body{font-family:sans-serif;max-width:64em;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #999;"
             "padding:.25em .6em;text-align:left}")
    return f"""<!doctype html><html><head><meta charset='utf-8'>
<title>Reader study {e(s['name'])}</title><style>{style}</style></head><body>
<h1>Reader study {e(s['name'])}</h1>
<p>Study content sha256 <code>{e(s['sha256'])}</code>; model version {s['model']['version']}
({s['model']['image_size']} px); {e(s['data']['split'])} split sha256
<code>{e(s['data']['sha256'][:16])}</code>. {_readers(summary)},
{summary['answers']} answers, from {e(summary['database'])}.</p>
<ul>{models}</ul>
<figure><img alt='summary' style='max-width:100%' src='data:image/png;base64,{image}'>
<figcaption>Left: two-choice tasks, with each reader's share and the pooled share with its
interval; the dashed line is chance. Right: distribution of realism ratings.</figcaption>
</figure>
<h2>Results</h2>
<table><tr><th>task</th><th>measure</th><th>value ({conf:.0%} CI)</th><th>answers</th>
<th>test</th><th>Fleiss' kappa</th><th>median s per answer</th></tr>{''.join(rows)}</table>
<h2>Per reader</h2>
<table><tr><th>reader</th>{reader_head}</tr>{readers}</table>
<h2>How to read this</h2>
<ul>
<li>Intervals are percentile intervals of a two-way bootstrap
({summary['settings']['bootstrap_resamples']} draws) that resamples readers and items
independently, so they include both reader and image variability.</li>
<li>Real or counterfactual: a share near 0.5 means readers could not tell the counterfactuals
from real X-rays; near 1, that the counterfactuals are recognisable.</li>
<li>The binomial test treats every answer as independent; readers and items make answers
correlated, so trust the interval where they disagree. Fleiss' kappa is computed on the items
every reader answered and treats ratings as categories.</li>
<li>Prediction: readers predicted the classifier's decision, not the diagnosis; the two arms
show disjoint, stratified random images.</li>
</ul></body></html>
"""


def _reader_columns(tasks: dict[str, Any]) -> dict[str, str]:
    columns = {}
    if PAIRS in tasks:
        columns[PAIRS] = "picked the real image"
    if RATING in tasks:
        columns["rating_real"] = "mean rating, real"
        columns["rating_counterfactual"] = "mean rating, counterfactual"
    if PREDICTION in tasks:
        columns.update({f"prediction_{arm}": f"correct predictions, {arm}" for arm in ARMS})
    return columns


def _reader_value(tasks: dict[str, Any], column: str, reader: str) -> str:
    if column == PAIRS:
        value = tasks[PAIRS]["per_reader"].get(reader)
    elif column.startswith("rating_"):
        value = tasks[RATING]["per_reader"][reader][column.removeprefix("rating_")]
    else:
        value = tasks[PREDICTION][column.removeprefix("prediction_")]["per_reader"].get(reader)
    return "" if value is None else f"{value:.3f}"
