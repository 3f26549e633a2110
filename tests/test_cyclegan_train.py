"""The CycleGAN trainer end to end on tiny blob data (32 px, tiny networks, CPU)."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_blob_split

from cfxray.checkpoint import load_checkpoint, save_atomic
from cfxray.cli import main as cli_main
from cfxray.data.tensors import save_split
from cfxray.errors import UserError
from cfxray.models.classifier import ClassifierConfig, build_classifier, classifier_state
from cfxray.models.cyclegan import CycleGANStep
from cfxray.models.networks import load_generators
from cfxray.train import cyclegan as trainer
from cfxray.train.cyclegan_config import CycleGANTrainConfig

torch.set_num_threads(1)

# 58 NORMAL and 38 PNEUMONIA training images: 4 steps per epoch at batch 12.
FAST = CycleGANTrainConfig(ngf=4, n_blocks=1, ndf=8, d_layers=2, epochs=2, decay_epochs=1,
                           batch_size=12, pool_size=6, counter_form="margin", sparsity=1.0,
                           mu_identity=1.0, checkpoint_every=3, log_every=2, sample_count=2,
                           device="cpu")


def _save_classifier(path: Path, **config) -> Path:
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig(arch="smallcnn", image_size=32, **config))
    save_atomic(classifier_state(model), path)
    return path


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    """An untrained but fixed classifier: the trainer's mechanics do not need a good one."""
    return _save_classifier(tmp_path_factory.mktemp("clf") / "classifier.pt")


def _train(data: Path, clf: Path, out: Path, cfg: CycleGANTrainConfig = FAST, **kw) -> dict:
    return trainer.train_cyclegan(data, clf, out, cfg, **kw)


def _log(out: Path) -> list[dict[str, str]]:
    with (out / "log.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def uninterrupted(blob_data, classifier, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    _train(blob_data, classifier, out, oracle_path=classifier)
    return out


def test_training_writes_every_artifact(blob_data, classifier, uninterrupted):
    out = uninterrupted
    gens = load_generators(out)
    assert gens.config.image_size == 32 and gens.config.variant == FAST.variant
    x = make_blob_split(3, 32, seed=5).as_float()
    y = gens.p2n(x)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1

    rows = _log(out)
    assert [int(float(r["epoch"])) for r in rows] == [1, 2]
    for key in ("adv", "cycle", "identity", "counter", "sparsity", "d_p", "d_n", "lr",
                "val_validity_n2p", "val_ssim_p2n"):
        assert key in rows[0], key
    assert float(rows[-1]["lr"]) == 0.0  # decayed linearly to zero over the last epoch
    assert (out / "loss.png").stat().st_size > 0
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_001.png",
                                                                   "epoch_002.png"]
    summary = json.loads((out / "summary.json").read_text())
    for direction in ("n2p", "p2n"):
        test = summary["test"][direction]
        assert 0 <= test["validity"] <= 1 and 0 <= test["oracle_score"] <= 1
        assert 0 < test["ssim"] <= 1
    assert summary["steps"] == 8 and summary["train_seconds"] > 0
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["kind"] == "cyclegan"
    assert set(lineage["inputs"]) == {"data", "classifier", "oracle"}
    assert Path(lineage["inputs"]["classifier"]["path"]) == classifier.resolve()
    assert lineage["params"]["gamma_counter"] == FAST.gamma_counter


def _assert_same_run(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a / "checkpoints/last.pt"), load_checkpoint(b / "checkpoints/last.pt")
    assert ca["progress"]["step"] == cb["progress"]["step"]
    for part in ("generators", "discriminators"):
        for name, tensor in ca[part].items():
            assert torch.equal(tensor, cb[part][name]), f"{part}.{name}"
    for opt in ("opt_g", "opt_d"):
        for sa, sb in zip(ca[opt]["state"].values(), cb[opt]["state"].values(), strict=True):
            assert torch.equal(sa["exp_avg"], sb["exp_avg"])
    for pool in ("pool_p", "pool_n"):
        assert torch.equal(ca["rank_states"][0][pool]["images"],
                           cb["rank_states"][0][pool]["images"])
    assert _log(a) == _log(b)


def test_stop_and_resume_matches_uninterrupted_run(blob_data, classifier, uninterrupted,
                                                   tmp_path):
    out = tmp_path / "run"
    # Stop mid-epoch 2, off the checkpoint_every grid.
    stopped = _train(blob_data, classifier, out, dataclasses.replace(FAST, max_steps=5),
                     oracle_path=classifier)
    assert stopped == {}
    assert load_checkpoint(out / "checkpoints/last.pt")["progress"]["step"] == 5
    _train(blob_data, classifier, out, oracle_path=classifier, resume=True)
    _assert_same_run(uninterrupted, out)


def test_crash_between_checkpoints_resumes_to_the_same_state(blob_data, classifier,
                                                             uninterrupted, tmp_path,
                                                             monkeypatch):
    """Killed during step 8 (last checkpoint at step 6): the resumed run redoes steps 7-8."""
    calls = {"n": 0}
    real_step = CycleGANStep.__call__

    def crashing_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt("killed")
        return real_step(self, *args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(CycleGANStep, "__call__", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        _train(blob_data, classifier, out, oracle_path=classifier)
    assert load_checkpoint(out / "checkpoints/last.pt")["progress"]["step"] == 6
    assert len(_log(out)) == 1
    monkeypatch.setattr(CycleGANStep, "__call__", real_step)
    _train(blob_data, classifier, out, oracle_path=classifier, resume=True)
    _assert_same_run(uninterrupted, out)


def test_resume_of_a_finished_run_only_resummarises(blob_data, classifier, uninterrupted,
                                                    tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(uninterrupted, out)
    summary = _train(blob_data, classifier, out, oracle_path=classifier, resume=True)
    assert summary["steps"] == 8
    _assert_same_run(uninterrupted, out)


def _one_class_data(root: Path) -> Path:
    for k, split in enumerate(("train", "val", "test")):
        data = make_blob_split(12, 32, seed=k)
        keep = data.labels == 0
        data.images, data.labels = data.images[keep], data.labels[keep]
        save_split(data, root, split)
    return root


def test_data_without_both_classes_is_refused(classifier, tmp_path):
    with pytest.raises(UserError, match="no PNEUMONIA images"):
        _train(_one_class_data(tmp_path / "data"), classifier, tmp_path / "out")


def test_classifier_of_another_image_size_or_channel_count_is_refused(blob_data, tmp_path):
    other_size = tmp_path / "size.pt"
    torch.manual_seed(0)
    save_atomic(classifier_state(build_classifier(ClassifierConfig(arch="smallcnn",
                                                                   image_size=64))), other_size)
    with pytest.raises(UserError, match="trained on 64px images but the data is 32px"):
        _train(blob_data, other_size, tmp_path / "out")
    rgb = load_checkpoint(other_size)
    rgb["config"].update(image_size=32, in_channels=3)
    save_atomic(rgb, tmp_path / "rgb.pt")
    with pytest.raises(UserError, match="expects 3-channel images"):
        _train(blob_data, tmp_path / "rgb.pt", tmp_path / "out")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        _train(blob_data, tmp_path / "junk.pt", tmp_path / "out")


def test_resume_with_another_model_config_is_refused(blob_data, classifier, tmp_path):
    out = tmp_path / "run"
    _train(blob_data, classifier, out, dataclasses.replace(FAST, max_steps=2))
    with pytest.raises(UserError, match=r"generators.*another configuration.*ngf"):
        _train(blob_data, classifier, out, dataclasses.replace(FAST, ngf=8), resume=True)
    with pytest.raises(UserError, match=r"another configuration.*gamma_counter"):
        _train(blob_data, classifier, out, dataclasses.replace(FAST, gamma_counter=3.0),
               resume=True)
    other = _save_classifier(tmp_path / "other.pt", mean=0.4)
    with pytest.raises(UserError, match="another classifier"):
        _train(blob_data, other, out, resume=True)
    with pytest.raises(UserError, match="already holds a training run"):
        _train(blob_data, classifier, out)


def test_cli_reads_the_params_section_and_flags_win(blob_data, classifier, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("train_cyclegan:\n  ngf: 4\n  n_blocks: 1\n  ndf: 8\n  d_layers: 2\n"
                      "  epochs: 1\n  decay_epochs: 1\n  batch_size: 16\n  gamma_counter: 2.5\n"
                      "  sample_count: 1\n  device: cpu\n")
    out = tmp_path / "run"
    rc = cli_main(["train-cyclegan", "--data", str(blob_data), "--classifier", str(classifier),
                   "--out", str(out), "--params", str(params), "--counter-form", "mse"])
    assert rc == 0
    run_config = load_checkpoint(out / "checkpoints/last.pt")["run_config"]
    assert (run_config["gamma_counter"], run_config["counter_form"], run_config["ngf"]) == (
        2.5, "mse", 4)
    assert "test-split counterfactuals" in capsys.readouterr().out

    rc = cli_main(["train-cyclegan", "--data", str(blob_data), "--classifier",
                   str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x"),
                   "--params", str(params)])
    assert rc == 2
    assert "checkpoint not found" in capsys.readouterr().err
