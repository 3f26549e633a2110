"""Hostile cases for training and its files: corrupt, truncated and edited files, a diverging
loss, the leftovers of a kill. Each must end in one line (exit 2) and lose nothing."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cfxray.checkpoint import CONTENT_HASH, load_checkpoint, save_atomic
from cfxray.cli import main as cli_main
from cfxray.conventions import CLASSIFIER_FILE, GENERATORS_FILE
from cfxray.errors import UserError
from cfxray.models.classifier import ClassifierConfig, build_classifier, classifier_state
from cfxray.models.cyclegan import CycleGANStep
from cfxray.models.networks import load_generators
from cfxray.train import classifier as classifier_trainer
from cfxray.train.configs import ClassifierTrainConfig
from cfxray.train.cyclegan_config import CycleGANTrainConfig

torch.set_num_threads(1)

# 58 NORMAL and 38 PNEUMONIA training images: 4 steps per epoch at batch 12.
GAN = CycleGANTrainConfig(ngf=4, n_blocks=1, ndf=8, d_layers=2, epochs=2, decay_epochs=1,
                          batch_size=12, pool_size=6, sparsity=1.0, checkpoint_every=3,
                          sample_count=1, device="cpu")
# 96 training images: 6 steps per epoch at batch 16.
CLF = ClassifierTrainConfig(arch="smallcnn", epochs=2, batch_size=16, lr=3e-3,
                            checkpoint_every=4, device="cpu")


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli_main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(err: str, *fragments: str) -> str:
    """The error is the last stderr line (progress bars may precede it), with no traceback."""
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert ": error: " in line, err
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hostile") / "classifier.pt"
    save_atomic(classifier_state(build_classifier(ClassifierConfig(arch="smallcnn",
                                                                   image_size=32))), path)
    return path


def _train_gan(data: Path, clf: Path, out: Path, cfg: CycleGANTrainConfig = GAN,
               resume: bool = False) -> list[str]:
    flags = []
    for field in dataclasses.fields(cfg):
        flags += ["--" + field.name.replace("_", "-"), str(getattr(cfg, field.name))]
    return ["train-cyclegan", "--data", str(data), "--classifier", str(clf), "--out", str(out),
            "--params", os.devnull, *flags,
            *(["--resume"] if resume else [])]


@pytest.fixture(scope="module")
def gan_run(blob_data, classifier, tmp_path_factory) -> Path:
    """A CycleGAN run stopped at step 5 (epoch 1 done, generators.pt written)."""
    out = tmp_path_factory.mktemp("gan") / "run"
    assert cli_main(_train_gan(blob_data, classifier, out,
                               dataclasses.replace(GAN, max_steps=5))) == 0
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def _all_finite(state: dict) -> bool:
    tensors = [v for v in state.values() if torch.is_tensor(v) and v.is_floating_point()]
    return bool(tensors) and all(bool(torch.isfinite(v).all()) for v in tensors)


# ----- corrupt checkpoints -------------------------------------------------------------------
def test_overwritten_checkpoint_is_refused_in_one_line(blob_data, classifier, gan_run, tmp_path,
                                                       capsys):
    """4 KB of garbage in the middle of last.pt: `--resume` names the file and trains nothing."""
    out = _copy(gan_run, tmp_path)
    last = out / "checkpoints" / "last.pt"
    raw = bytearray(last.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 4096] = torch.randint(0, 256, (4096,), dtype=torch.uint8,
                                              generator=torch.Generator().manual_seed(0)).tolist()
    last.write_bytes(bytes(raw))
    generators = (out / GENERATORS_FILE).read_bytes()

    code, _, err = _cli(_train_gan(blob_data, classifier, out, resume=True), capsys)
    assert code == 2
    _one_line_error(err, str(last))
    assert (out / GENERATORS_FILE).read_bytes() == generators


def test_changed_tensor_under_an_intact_zip_fails_the_content_hash(gan_run, tmp_path):
    """torch reads a file whose tensor bytes changed without complaint; the hash does not."""
    path = tmp_path / "last.pt"
    ckpt = torch.load(gan_run / "checkpoints" / "last.pt", weights_only=False)
    assert CONTENT_HASH in ckpt
    name = next(iter(ckpt["generators"]))
    ckpt["generators"][name] = torch.full_like(ckpt["generators"][name], float("nan"))
    torch.save(ckpt, path)  # the old hash, new content
    with pytest.raises(UserError, match=rf"checkpoint {path} is corrupt"):
        load_checkpoint(path)


def test_corrupt_or_truncated_model_files_are_refused(blob_data, classifier, gan_run, tmp_path,
                                                      capsys):
    corrupt = tmp_path / "classifier.pt"
    raw = bytearray(classifier.read_bytes())
    raw[len(raw) // 2:len(raw) // 2 + 4096] = bytes(4096)
    corrupt.write_bytes(bytes(raw))
    code, _, err = _cli(_train_gan(blob_data, corrupt, tmp_path / "out"), capsys)
    assert code == 2
    _one_line_error(err, str(corrupt))

    truncated = tmp_path / GENERATORS_FILE
    truncated.write_bytes((gan_run / GENERATORS_FILE).read_bytes()[:2000])
    with pytest.raises(UserError, match=rf"cannot read checkpoint {truncated}"):
        load_generators(truncated)


def test_checkpoint_of_an_earlier_layout_is_refused(blob_data, classifier, gan_run, tmp_path,
                                                    capsys):
    out = _copy(gan_run, tmp_path)
    last = out / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    del ckpt["format"]
    save_atomic(ckpt, last)
    code, _, err = _cli(_train_gan(blob_data, classifier, out, resume=True), capsys)
    assert code == 2
    _one_line_error(err, "earlier cfxray version")


# ----- files whose stored config does not match their weights ---------------------------------
def test_model_file_whose_config_does_not_match_its_weights(blob_data, classifier, gan_run,
                                                            tmp_path, capsys):
    edited = tmp_path / GENERATORS_FILE
    ckpt = load_checkpoint(gan_run / GENERATORS_FILE)
    ckpt["config"]["ngf"] = 8
    torch.save(ckpt, edited)  # edited by hand: no content hash any more
    with pytest.raises(UserError, match="stored config does not match the stored weights"):
        load_generators(edited)

    clf = tmp_path / "classifier.pt"
    ckpt = load_checkpoint(classifier)
    ckpt["config"]["arch"] = "resnet18"
    torch.save(ckpt, clf)
    code, _, err = _cli(_train_gan(blob_data, clf, tmp_path / "out"), capsys)
    assert code == 2
    _one_line_error(err, str(clf), "does not match the stored weights")


# ----- truncated prepared data ---------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "test"])
def test_truncated_split_file_is_a_one_line_error(blob_data, tmp_path, capsys, split):
    data = tmp_path / "data"
    shutil.copytree(blob_data, data)
    path = data / f"{split}.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    code, _, err = _cli(["train-classifier", "--data", str(data), "--out", str(tmp_path / "out"),
                      "--params", os.devnull, "--arch", "smallcnn"], capsys)
    assert code == 2
    _one_line_error(err, str(path), "cfxray data preprocess")
    assert not (tmp_path / "out" / "checkpoints").exists()  # found before any training


# ----- a diverging loss ----------------------------------------------------------------------
def test_non_finite_classifier_loss_stops_before_anything_non_finite_is_written(
        blob_data, tmp_path, capsys, monkeypatch):
    """NaN from step 9 on (epoch 1 ended at step 6, checkpoint at step 8): training stops at
    the next checkpoint, step 12, and last.pt and classifier.pt keep their finite weights."""
    calls = {"n": 0}
    real_augment = classifier_trainer.augment

    def poisoned_augment(*args, **kwargs):
        calls["n"] += 1
        images = real_augment(*args, **kwargs)
        return images * float("nan") if calls["n"] >= 9 else images

    monkeypatch.setattr(classifier_trainer, "augment", poisoned_augment)
    out = tmp_path / "run"
    flags = ["--arch", "smallcnn", "--epochs", "2", "--batch-size", "16", "--lr", "0.003",
             "--checkpoint-every", "4", "--device", "cpu"]
    code, _, err = _cli(["train-classifier", "--data", str(blob_data), "--out", str(out),
                      "--params", os.devnull, *flags], capsys)
    assert code == 2
    _one_line_error(err, "non-finite", "by step 12", "still holds step 8")
    last = load_checkpoint(out / "checkpoints" / "last.pt")
    assert last["progress"]["step"] == 8 and _all_finite(last["model"])
    best = load_checkpoint(out / CLASSIFIER_FILE)
    assert best["epoch"] == 1 and _all_finite(best["state_dict"])
    assert not (out / "lineage.json").exists()


def test_non_finite_generator_loss_never_reaches_generators_pt(blob_data, classifier, tmp_path,
                                                               monkeypatch):
    """NaN at step 6 (epoch 1 ended at step 4): no checkpoint at step 6, generators.pt stays
    the finite one of epoch 1."""
    calls = {"n": 0}
    real_loss = CycleGANStep.generator_loss

    def diverging(self, *args, **kwargs):
        calls["n"] += 1
        total, terms, out = real_loss(self, *args, **kwargs)
        return (total * float("nan") if calls["n"] == 6 else total), terms, out

    monkeypatch.setattr(CycleGANStep, "generator_loss", diverging)
    from cfxray.train.cyclegan import train_cyclegan

    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"CycleGAN training diverged.*by step 6.*step 4"):
        train_cyclegan(blob_data, classifier, out, GAN)
    generators = load_checkpoint(out / GENERATORS_FILE)
    assert _all_finite(generators["n2p"]) and _all_finite(generators["p2n"])
    last = load_checkpoint(out / "checkpoints" / "last.pt")
    assert last["progress"]["step"] == 4 and _all_finite(last["generators"])


# ----- leftovers of a kill -------------------------------------------------------------------
def test_stale_temporary_checkpoints_are_removed_on_the_next_run(blob_data, classifier, gan_run,
                                                                 tmp_path, capsys):
    out = _copy(gan_run, tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid now names no process
    stale = out / "checkpoints" / f".last.pt.tmp-{dead.pid}"
    stale.write_bytes(bytes(64 * 1024))  # what a kill mid-write leaves
    stale_model = out / f".{GENERATORS_FILE}.tmp-{dead.pid}"
    stale_model.write_bytes(b"torn")
    alive = out / "checkpoints" / ".last.pt.tmp-1"  # a running process's: not ours to delete
    alive.write_bytes(b"in progress")

    code, printed, err = _cli(_train_gan(blob_data, classifier, out, resume=True), capsys)
    assert code == 0, err
    assert not stale.exists() and not stale_model.exists()
    assert alive.exists()
    assert f"removed {stale}," in printed and f"removed {stale_model}," in printed
