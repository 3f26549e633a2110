"""`cfxray study create`: the sample is seeded, stratified and disjoint, every image comes
from the published version's ONNX files, nothing the page sees tells the truth, and bad
input is refused with one line."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from audit_chain_builder import changed
from PIL import Image
from study_builder import cfxray, create_study, study_params

from cfxray.conventions import CLASSES
from cfxray.errors import UserError
from cfxray.lineage import read_lineage, sha256_tree
from cfxray.study.definition import PAIRS, PREDICTION, RATING, TASKS, load_study


def _onnx(path, images):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"IMAGE": images})[0]


@pytest.fixture(scope="module")
def made(study_project, tmp_path_factory):
    root = tmp_path_factory.mktemp("studies")
    return {"a": create_study(study_project, root / "a"),
            "a_again": create_study(study_project, root / "again" / "a"),
            "seed1": create_study(study_project, root / "seed1", "--seed", 1),
            "cases": create_study(study_project, root / "cases", "--with-cases")}


def test_same_inputs_and_seed_give_the_same_study(made):
    first, again, other = (load_study(made[k]) for k in ("a", "a_again", "seed1"))
    assert first.sha256 == again.sha256 == read_lineage(made["a"])["sha256"]
    for name in ("study.json", "key.json"):
        assert (made["a"] / name).read_text() == (made["a_again"] / name).read_text()
    assert other.sha256 != first.sha256


def test_sample_is_stratified_disjoint_and_rendered_by_the_served_version(made, study_project):
    from cfxray.data.tensors import load_split

    study = load_study(made["a"])
    key = study.key()
    test = load_split(study_project.prepared, "test")
    index = {name: i for i, name in enumerate(test.files)}
    by_task = Counter(entry["task"] for entry in key.values())
    assert by_task == {PAIRS: 4, RATING: 4, PREDICTION: 8}

    sources = [e[k] for e in key.values() for k in ("source", "real_source",
                                                    "counterfactual_source") if k in e]
    assert len(sources) == len(set(sources)) == 4 * 2 + 4 + 8  # no image in two items

    pairs = [e for e in key.values() if e["task"] == PAIRS]
    assert Counter(e["class"] for e in pairs) == {"NORMAL": 2, "PNEUMONIA": 2}
    for e in pairs:  # the real image is of the class the counterfactual was translated into
        assert CLASSES[int(test.labels[index[e["real_source"]]])] == e["class"]
        assert CLASSES[int(test.labels[index[e["counterfactual_source"]]])] != e["class"]
    ratings = [e for e in key.values() if e["task"] == RATING]
    assert Counter((e["kind"], e["class"]) for e in ratings) == {
        ("real", "NORMAL"): 1, ("real", "PNEUMONIA"): 1,
        ("counterfactual", "NORMAL"): 1, ("counterfactual", "PNEUMONIA"): 1}

    # Decisions are the served classifier's, recomputed here from its ONNX file.
    repo = study_project.repo
    predictions = {i: e for i, e in key.items() if e["task"] == PREDICTION}
    rows = [index[e["source"]] for e in predictions.values()]
    probabilities = _onnx(repo / "classifier" / "1" / "model.onnx", test.images[rows].numpy())
    for (_, e), p in zip(predictions.items(), probabilities, strict=True):
        assert e["decision"] == CLASSES[int(p.argmax())]
        assert e["p_pneumonia"] == pytest.approx(float(p[1]), abs=1e-4)
    assert Counter((e["arm"], e["decision"]) for e in predictions.values()) == {
        (arm, decision): 2 for arm in ("counterfactual", "saliency")
        for decision in ("NORMAL", "PNEUMONIA")}

    # A shown counterfactual is the served generator's output, pixel for pixel.
    item_id, e = next((i, e) for i, e in key.items() if e["task"] == PAIRS)
    item = study.items[item_id]
    cf_token = item.images[1 - "ab".index(e["real"])]
    source = test.images[[index[e["counterfactual_source"]]]].numpy()
    expected = _onnx(repo / f"generator_{e['direction']}" / "1" / "model.onnx", source)[0]
    shown = np.asarray(Image.open(study.image_file(cf_token)))
    np.testing.assert_array_equal(shown, np.round(np.clip(expected, 0, 1) * 255).astype(np.uint8))
    real_token = item.images["ab".index(e["real"])]
    np.testing.assert_array_equal(np.asarray(Image.open(study.image_file(real_token))),
                                  test.images[index[e["real_source"]]].numpy())


def test_study_records_the_version_and_hides_the_truth(made, study_project):
    study = load_study(made["a"])
    record = read_lineage(made["a"])
    for name in ("classifier", "generator_n2p", "generator_p2n", "explain"):
        folder = study_project.repo / name / "1"
        assert study.definition["model"]["models"][name]["sha256"] == sha256_tree(folder)
        assert record["inputs"][f"served_{name}"]["sha256"] == sha256_tree(folder)
    assert record["inputs"]["classifier"]["sha256"] == \
        read_lineage(study_project.repo / "classifier" / "1")["inputs"]["classifier"]["sha256"]
    public = (made["a"] / "study.json").read_text()
    for item in json.loads(public)["items"]:
        assert set(item) <= {"id", "task", "images", "choices", "arm"}
    assert ".png" not in public and "img" not in public  # no source file names
    assert sorted(p.stem for p in (made["a"] / "images").iterdir()) == sorted(study.tokens)


def test_reader_orders_are_per_reader_and_stable(made):
    study = load_study(made["a"])
    one, two = study.order("reader-1"), study.order("reader-2")
    assert [i.id for i in one] == [i.id for i in study.order("reader-1")]
    assert [i.id for i in one] != [i.id for i in two]
    assert [i.task for i in one] == sorted((i.task for i in one), key=TASKS.index)
    pairs = [i for i in study.items.values() if i.task == PAIRS]
    sides = {tuple(study.shown_images(r, i) == i.images for i in pairs)
             for r in (f"r{k}" for k in range(12))}
    assert len(sides) > 1  # which side the real image is on varies across readers


def test_with_cases_rates_the_evaluation_cases(made, study_project):
    from cfxray.evaluation.figures import load_cases

    key = load_study(made["cases"]).key()
    cases = {c.file: c.kind for rows in load_cases(study_project.evaluation).values()
             for c in rows}
    rated = {e["source"]: e.get("case") for e in key.values()
             if e["task"] == RATING and e["kind"] == "counterfactual"}
    assert rated == cases


def test_bad_input_is_refused_and_leaves_nothing(made, study_project, tmp_path, capsys):
    params = study_params(tmp_path / "params.yaml")
    base = ("study", "create", "--params", params, "--model-repo", study_project.repo,
            "--data", study_project.prepared)
    assert cfxray(*base, "--out", made["a"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert cfxray(*base, "--out", tmp_path / "odd", "--pairs", 3) == 2
    assert "multiple of 2" in capsys.readouterr().err
    assert cfxray(*base, "--out", tmp_path / "big", "--ratings", 400) == 2
    assert "lower the study sizes" in capsys.readouterr().err
    assert cfxray(*base, "--out", tmp_path / "v9", "--version", 9) == 2
    assert "no published version 9" in capsys.readouterr().err
    with changed(study_project.repo / "generator_n2p" / "1" / "model.onnx"):
        assert cfxray(*base, "--out", tmp_path / "tampered") == 2
    assert "changed since it was published" in capsys.readouterr().err
    with changed(study_project.classifier):
        assert cfxray(*base, "--out", tmp_path / "other-checkpoint") == 2
    assert "differs from the one" in capsys.readouterr().err
    assert not [p.name for p in tmp_path.iterdir() if p.name != "params.yaml"]


def test_a_changed_study_is_refused(made):
    image = next((made["seed1"] / "images").iterdir())
    with changed(image), pytest.raises(UserError, match="changed since it was created"):
        load_study(made["seed1"])
