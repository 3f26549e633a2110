"""`cfxray evaluate` end to end on tiny phantom-like data, tiny classifiers and bad generators."""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from eval_phantom_builder import phantom_split, save_generators, trained_classifier
from PIL import Image

from cfxray import cli
from cfxray.checkpoint import save_atomic
from cfxray.data.tensors import save_split
from cfxray.models.networks import GeneratorConfig, build_generator, generators_state

PARAMS = """
evaluate:
  batch_size: 8
  device: cpu
  bootstrap_resamples: 50
  kid_subset_size: 8
  kid_subsets: 5
  max_reference_images: 20
  gate:
    min_validity: 0.6
    min_oracle_score: 0.5
    min_ssim: 0.5
    min_lesion_removal: 0.3
    max_kid: 0.05
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("eval")
    data = root / "prepared"
    train = phantom_split(12, seed=1)
    save_split(train, data, "train")
    save_split(phantom_split(10, seed=2), data, "test")
    (root / "params.yaml").write_text(PARAMS)
    return {
        "root": root, "data": data, "params": root / "params.yaml",
        "classifier": trained_classifier(train, 1, root / "classifier" / "classifier.pt"),
        "oracle": trained_classifier(train, 2, root / "oracle" / "classifier.pt"),
        "identity": save_generators("identity", root / "gen_identity"),
        "noise": save_generators("noise", root / "gen_noise"),
    }


def run_evaluate(setup, generators: str, out: Path, *extra: str) -> int:
    return cli.main(["evaluate", "--data", str(setup["data"]),
                     "--classifier", str(setup["classifier"]), "--oracle", str(setup["oracle"]),
                     "--generators", str(setup[generators]), "--out", str(out),
                     "--params", str(setup["params"]), *extra])


@pytest.fixture(scope="module")
def identity_run(setup):
    """One gated evaluation of the identity generator: (exit code, stderr, output folder)."""
    out, err = setup["root"] / "eval_identity", io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run_evaluate(setup, "identity", out)
    return code, err.getvalue(), out


def test_identity_generator_fails_the_gate_on_validity(identity_run):
    code, err, out = identity_run
    assert code == 1
    assert "quality gate failed" in err
    for failed in ("n2p/validity", "p2n/validity", "min_validity", "p2n/lesion_removal"):
        assert failed in err
    assert "ssim" not in err  # the identity is as close to the original as it gets

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["gate/passed"] == 0
    assert metrics["classifier/accuracy"] >= 0.9  # the explained classifier does its job
    for d in ("n2p", "p2n"):
        assert metrics[f"{d}/ssim"] == pytest.approx(1.0, abs=1e-5)
        assert metrics[f"{d}/l1"] == pytest.approx(0.0, abs=1e-6)
        assert metrics[f"{d}/flip_rate"] == 0  # no correctly classified original flips
    # the identity is "valid" exactly on the originals the classifier already got wrong
    assert metrics["n2p/validity"] == pytest.approx(1 - metrics["classifier/specificity"])
    assert metrics["p2n/validity"] == pytest.approx(1 - metrics["classifier/sensitivity"])
    assert metrics["p2n/lesion_removal"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["p2n/twin_error_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["p2n/change_in_mask"] is None  # nothing changed: undefined, not zero

    lineage = json.loads((out / "lineage.json").read_text())
    assert set(lineage["inputs"]) == {"data", "classifier", "oracle", "generators"}
    assert lineage["metrics"]["n2p/validity"] == metrics["n2p/validity"]
    assert lineage["gate"]["passed"] is False and lineage["gate"]["enforced"] is True


def test_failing_model_still_gets_report_plots_and_figures(identity_run, tmp_path):
    _, _, out = identity_run
    html = (out / "report.html").read_text()
    images = html.split('src="data:image/png;base64,')[1:]
    # 3 classifier figures + 2 directions x up to 3 cases x 3 images
    assert len(images) >= 3 + 2 * 3
    Image.open(io.BytesIO(base64.b64decode(images[0].split('"')[0]))).verify()
    assert "quality gate failed" in html and "PNEUMONIA -&gt; NORMAL" in html
    assert "http" not in html  # nothing fetched from outside: readable offline

    for name in ("roc.png", "confusion.png", "reliability.png", "examples_n2p.png",
                 "examples_p2n.png", "per_image.csv", "cases.pt"):
        assert (out / name).stat().st_size > 0
    with (out / "plots" / "confusion.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and {r["actual"] for r in rows} == {"NORMAL", "PNEUMONIA"}
    with (out / "plots" / "roc.csv").open() as f:
        roc = list(csv.DictReader(f))
    assert (roc[0]["fpr"], roc[0]["tpr"]) == ("0.0", "0.0") and float(roc[-1]["tpr"]) == 1.0

    from cfxray.evaluation.figures import render_readme_figure

    figure = render_readme_figure(out, tmp_path / "readme.png")
    assert Image.open(figure).size[0] > 0


def test_noise_generator_fails_on_ssim_and_realism_no_gate_exits_zero(setup, tmp_path, capsys):
    out = tmp_path / "eval"
    assert run_evaluate(setup, "noise", out, "--no-gate") == 0
    printed = capsys.readouterr().out
    assert "report.html" in printed and "not enforced" in printed
    for failed in ("n2p/ssim", "p2n/ssim", "min_ssim", "n2p/kid", "p2n/kid", "max_kid"):
        assert failed in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["gate/passed"] == 0
    for d in ("n2p", "p2n"):
        assert metrics[f"{d}/kid"] > 10 * max(metrics[f"{d}/kid_real_reference"], 1e-3)
    assert json.loads((out / "lineage.json").read_text())["gate"]["enforced"] is False


def test_mismatched_generator_size_is_a_user_error(setup, tmp_path, capsys):
    config = GeneratorConfig(image_size=16, ngf=4, n_blocks=1, n_downsampling=1)
    gen = build_generator(config)
    save_atomic(generators_state(gen, gen, config), tmp_path / "g" / "generators.pt")
    code = cli.main(["evaluate", "--data", str(setup["data"]), "--classifier",
                     str(setup["classifier"]), "--oracle", str(setup["oracle"]),
                     "--generators", str(tmp_path / "g"), "--out", str(tmp_path / "o"),
                     "--params", str(setup["params"])])
    assert code == 2 and "16px" in capsys.readouterr().err


def test_shortcut_marker_numbers_reach_metrics_and_report(setup, tmp_path):
    from test_eval_shortcut import with_marker

    data = tmp_path / "prepared"
    data.mkdir()
    shutil.copy(setup["data"] / "train.pt", data / "train.pt")
    save_split(with_marker(phantom_split(10, seed=2), [True, False] * 10), data, "test")
    out = tmp_path / "eval"
    assert cli.main(["evaluate", "--data", str(data), "--classifier", str(setup["classifier"]),
                     "--oracle", str(setup["oracle"]), "--generators", str(setup["noise"]),
                     "--out", str(out), "--params", str(setup["params"]), "--no-gate"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("classifier", "oracle"):
        for key in ("shortcut_shift", "shortcut_shift_ci_low", "shortcut_decision_flips",
                    "shortcut_shift_flag"):
            assert metrics[f"{name}/{key}"] is not None, key
    for d in ("n2p", "p2n"):
        # random weights change the whole image: the region gets about its area's share
        assert metrics[f"{d}/shortcut_area"] == pytest.approx(50 / 32**2)
        assert metrics[f"{d}/change_on_shortcut"] < 3 * metrics[f"{d}/shortcut_area"]
        assert metrics[f"{d}/shortcut_flag"] == 0
    html = (out / "report.html").read_text()
    assert "shortcut_shift" in html and "change_on_shortcut" in html
    flagged = metrics["classifier/shortcut_shift_flag"] or metrics["oracle/shortcut_shift_flag"]
    assert ("reads the marker" in html) == bool(flagged)
