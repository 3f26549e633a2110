"""A tiny published version for the reader-study tests, with a complete lineage chain.

The classifier is really trained (a few seconds on 32 px blob images, so it decides both
ways) and the version is really exported (`cfxray export`: ONNX, parity, lineage, model
cards); the CycleGAN and evaluation folders are their steps' output contracts without the
training (random generators with an opened mask, a passed gate, one case per direction), so
the audit finds every role of the chain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
SIZE = 32


@dataclass
class StudyProject:
    root: Path
    repo: Path
    prepared: Path
    classifier: Path  # classifier.pt
    evaluation: Path
    params: Path  # params.yaml for export and model cards


def cfxray(*argv: object) -> int:
    from cfxray.cli import main

    return main([str(a) for a in argv])


def build_study_project(root: Path) -> StudyProject:
    import torch
    from conftest import make_blob_split
    from serving_support import make_checkpoints, write_params

    from cfxray.data.tensors import load_split, save_split
    from cfxray.evaluation.figures import Case, save_cases
    from cfxray.lineage import write_lineage

    torch.set_num_threads(1)
    raw, prepared = root / "data" / "raw", root / "data" / "prepared"
    raw.mkdir(parents=True)
    (raw / "README").write_text("stand-in for the raw images the blob tensors came from\n")
    write_lineage(raw, "dataset", inputs={}, params={"generator": "tests/conftest.py blobs"})
    for k, (split, n) in enumerate([("train", 160), ("val", 40), ("test", 64)]):
        save_split(make_blob_split(n, SIZE, seed=10 + k, pneumonia_fraction=0.5), prepared,
                   split)
    write_lineage(prepared, "prepared", inputs={"dataset": raw}, params={"size": SIZE})

    models = root / "models"
    assert cfxray("train-classifier", "--params", PARAMS, "--data", prepared, "--out",
                  models / "classifier", "--arch", "smallcnn", "--epochs", 4, "--batch-size",
                  32, "--lr", 0.01, "--patience", 4) == 0
    classifier = models / "classifier" / "classifier.pt"
    _, generators = make_checkpoints(root / "random", size=SIZE)
    cyclegan = models / "cyclegan"
    cyclegan.mkdir()
    (cyclegan / "generators.pt").write_bytes((generators / "generators.pt").read_bytes())
    write_lineage(cyclegan, "cyclegan", inputs={"data": prepared, "classifier": classifier},
                  params={"epochs": 0, "note": "random generators (serving_support)"})

    evaluation = root / "reports" / "eval"
    evaluation.mkdir(parents=True)
    (evaluation / "metrics.json").write_text(json.dumps({"gate_passed": True}))
    test = load_split(prepared, "test")
    blank = torch.zeros(SIZE, SIZE).numpy()
    cases = {direction: [Case(direction=direction, kind="best", file=test.files[row],
                              original=blank, counterfactual=blank, outline=None,
                              prob_before=0.2, prob_after=0.8, oracle_before=0.2,
                              oracle_after=0.8)]
             for direction, row in (("n2p", _first(test, 0)), ("p2n", _first(test, 1)))}
    save_cases(cases, evaluation)
    write_lineage(evaluation, "evaluation", inputs={"data": prepared, "classifier": classifier,
                                                    "generators": cyclegan},
                  params={}, metrics={"gate_passed": True})

    params = write_params(root / "params.yaml")
    repo = root / "model_repository"
    assert cfxray("export", "--classifier", classifier, "--generators", cyclegan,
                  "--evaluation", evaluation, "--out", repo, "--params", params) == 0
    return StudyProject(root=root, repo=repo, prepared=prepared, classifier=classifier,
                        evaluation=evaluation, params=params)


def _first(split, label: int) -> int:
    return int(split.class_indices(label)[0])


def study_params(path: Path, **sizes: int) -> Path:
    """params.yaml with a small `study` section (and the export's, for model cards)."""
    import yaml

    params = yaml.safe_load(PARAMS.read_text())
    params["study"].update({"pairs": 4, "ratings": 4, "predictions": 4, "saliency_steps": 8,
                            "bootstrap_resamples": 200, **sizes})
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def create_study(project: StudyProject, out: Path, *extra: object, **sizes: int) -> Path:
    """`cfxray study create` on the project's version with the small test sizes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    params = study_params(out.parent / f"{out.name}-params.yaml", **sizes)
    assert cfxray("study", "create", "--params", params, "--model-repo", project.repo,
                  "--data", project.prepared, "--out", out, *extra) == 0
    return out
