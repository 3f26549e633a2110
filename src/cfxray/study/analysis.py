"""The numbers of a reader study, from the stored answers and the study's key.

Per task: the real-or-counterfactual share of answers picking the real image (chance 0.5:
the closer to it, the more realistic the counterfactuals), the mean realism rating of real
images and of counterfactuals and their difference, and the prediction task's share of
correct predictions of the classifier's decision in each arm and their difference. Every
number has a two-way bootstrap interval over readers and items (`statistics.py`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cfxray.evaluation.bootstrap import Interval
from cfxray.study import statistics as st
from cfxray.study.definition import ARMS, PAIRS, PREDICTION, RATING, Study
from cfxray.study.settings import StudySettings


def _interval(interval: Interval) -> dict[str, float | None]:
    def clean(x: float) -> float | None:
        return None if math.isnan(x) else round(x, 6)
    return {"value": clean(interval.estimate), "low": clean(interval.low),
            "high": clean(interval.high)}


class _Answers:
    """The answers of one set of items as readers x items tables."""

    def __init__(self, rows: list[dict[str, Any]], readers: list[str], items: list[str]):
        self.readers, self.items = readers, items
        r, i = {x: k for k, x in enumerate(readers)}, {x: k for k, x in enumerate(items)}
        self.answers = np.full((len(readers), len(items)), None, dtype=object)
        self.seconds = []
        for row in rows:
            if row["item"] in i:
                self.answers[r[row["reader"]], i[row["item"]]] = row["answer"]
                self.seconds.append(row["elapsed_ms"] / 1000)

    def table(self, score: dict[str, Any]) -> np.ndarray:
        """float table: score[item](answer) per answered cell, NaN elsewhere."""
        out = np.full(self.answers.shape, np.nan)
        for (a, b), answer in np.ndenumerate(self.answers):
            if answer is not None:
                out[a, b] = score[self.items[b]](answer)
        return out

    @property
    def count(self) -> int:
        return int(sum(a is not None for a in self.answers.ravel()))


def _accuracy(answers: _Answers, correct: np.ndarray, settings: StudySettings, seed: int,
              groups: dict[str, list[int]] | None = None) -> dict[str, Any]:
    interval = st.two_way_bootstrap(st.mean, [correct], settings.bootstrap_resamples,
                                    settings.confidence, seed)
    n, k = answers.count, int(np.nansum(correct))
    result = {**_interval(interval), "chance": 0.5, "answers": n, "correct": k,
              "readers": int((~np.isnan(correct)).any(axis=1).sum()), "items": len(answers.items),
              "p_value_binomial": st.binomial_p(k, n), "fleiss_kappa": st.fleiss_kappa(
                  answers.answers),
              "median_seconds": _median(answers.seconds),
              "per_reader": {r: _round(st.mean(correct[[a]]))
                             for a, r in enumerate(answers.readers)}}
    if groups:
        result["by_class"] = {g: _round(st.mean(correct[:, cols])) for g, cols in groups.items()}
    return result


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 6)


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 3) if values else None


def analyse(study: Study, rows: list[dict[str, Any]], settings: StudySettings
            ) -> dict[str, Any]:
    key = study.key()
    rows = [r for r in rows if r["item"] in key]
    readers = sorted({r["reader"] for r in rows})
    tasks: dict[str, Any] = {}
    ids = {task: sorted(i for i, t in key.items() if t["task"] == task)
           for task in (PAIRS, RATING, PREDICTION)}
    seed = settings.seed

    if ids[PAIRS]:
        answers = _Answers(rows, readers, ids[PAIRS])
        correct = answers.table({i: (lambda a, i=i: float(a == key[i]["real"]))
                                 for i in ids[PAIRS]})
        groups = {c: [k for k, i in enumerate(ids[PAIRS]) if key[i]["class"] == c]
                  for c in sorted({key[i]["class"] for i in ids[PAIRS]})}
        tasks[PAIRS] = {"measure": "share of answers picking the real image",
                        **_accuracy(answers, correct, settings, seed, groups)}

    if ids[RATING]:
        kinds = {kind: [i for i in ids[RATING] if key[i]["kind"] == kind]
                 for kind in ("real", "counterfactual")}
        all_answers = _Answers(rows, readers, ids[RATING])
        tables = {kind: _Answers(rows, readers, items).table(
            {i: float for i in items}) for kind, items in kinds.items()}
        result: dict[str, Any] = {"measure": "mean realism rating (1-5)"}
        for kind, table in tables.items():
            result[kind] = {**_interval(st.two_way_bootstrap(
                st.mean, [table], settings.bootstrap_resamples, settings.confidence, seed)),
                "answers": int(np.isfinite(table).sum()), "items": table.shape[1],
                "histogram": {str(v): int((table == v).sum()) for v in range(1, 6)}}
        result["difference"] = _interval(st.two_way_bootstrap(
            st.difference, [tables["real"], tables["counterfactual"]],
            settings.bootstrap_resamples, settings.confidence, seed))
        result["difference"]["what"] = "real minus counterfactual"
        result["p_value_mann_whitney"] = st.rank_sum_p(tables["real"].ravel(),
                                                       tables["counterfactual"].ravel())
        result["fleiss_kappa"] = st.fleiss_kappa(all_answers.answers)
        result["median_seconds"] = _median(all_answers.seconds)
        result["per_reader"] = {r: {kind: _round(st.mean(t[[a]])) for kind, t in tables.items()}
                                for a, r in enumerate(readers)}
        cases = sorted({key[i].get("case") for i in kinds["counterfactual"]} - {None})
        if cases:
            cf = kinds["counterfactual"]
            result["by_case"] = {c: _round(st.mean(tables["counterfactual"][
                :, [k for k, i in enumerate(cf) if key[i].get("case") == c]])) for c in cases}
        tasks[RATING] = result

    if ids[PREDICTION]:
        result = {"measure": "share of correct predictions of the classifier's decision"}
        arm_tables = {}
        for arm in ARMS:
            items = [i for i in ids[PREDICTION] if key[i]["arm"] == arm]
            answers = _Answers(rows, readers, items)
            arm_tables[arm] = answers.table({i: (lambda a, i=i: float(a == key[i]["decision"]))
                                             for i in items})
            groups = {c: [k for k, i in enumerate(items) if key[i]["decision"] == c]
                      for c in sorted({key[i]["decision"] for i in items})}
            result[arm] = _accuracy(answers, arm_tables[arm], settings, seed, groups)
        result["difference"] = _interval(st.two_way_bootstrap(
            st.difference, [arm_tables["counterfactual"], arm_tables["saliency"]],
            settings.bootstrap_resamples, settings.confidence, seed))
        result["difference"]["what"] = "counterfactual arm minus saliency arm"
        tasks[PREDICTION] = result

    return {"study": {"name": study.name, "sha256": study.sha256,
                      "model": study.definition["model"], "data": study.definition["data"]},
            "readers": readers, "answers": len(rows), "settings": settings.report(),
            "tasks": tasks, "headline": headline(tasks)}


def headline(tasks: dict[str, Any]) -> list[dict[str, Any]]:
    """The few numbers a model card shows."""
    rows = []

    def add(measure: str, part: dict[str, Any], note: str = "") -> None:
        if part.get("value") is not None:
            rows.append({"measure": measure, "value": part["value"], "low": part.get("low"),
                         "high": part.get("high"), "note": note})

    def p(part: dict[str, Any]) -> str:
        value = part.get("p_value_binomial")
        return "" if value is None else f"chance 0.5, binomial p = {value:.3g}"

    if PAIRS in tasks:
        add("real-or-counterfactual: share picking the real image", tasks[PAIRS],
            p(tasks[PAIRS]))
    if RATING in tasks:
        add("realism rating of real images (1-5)", tasks[RATING]["real"])
        add("realism rating of counterfactuals (1-5)", tasks[RATING]["counterfactual"])
    if PREDICTION in tasks:
        for arm, words in (("counterfactual", "counterfactuals"), ("saliency", "saliency maps")):
            add(f"prediction of the classifier's decision with {words}", tasks[PREDICTION][arm],
                p(tasks[PREDICTION][arm]))
    return rows
