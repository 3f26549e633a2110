"""`torchrun --nproc_per_node=2` CycleGAN training with gloo on CPU, against one process."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cfxray.checkpoint import load_checkpoint, save_atomic
from cfxray.models.classifier import ClassifierConfig, build_classifier, classifier_state
from cfxray.models.networks import load_generators
from cfxray.train.cyclegan import train_cyclegan
from cfxray.train.cyclegan_config import CycleGANTrainConfig

torch.set_num_threads(1)

CFG = CycleGANTrainConfig(ngf=4, n_blocks=1, ndf=8, d_layers=2, epochs=2, decay_epochs=1,
                          batch_size=8, pool_size=6, counter_form="margin", sparsity=1.0,
                          mu_identity=1.0, sample_count=1, checkpoint_every=0, seed=3,
                          device="cpu")
COMPARED = ("cycle", "counter", "sparsity", "identity")


def _losses(out: Path) -> list[dict[str, float]]:
    with (out / "log.csv").open() as f:
        return [{k: float(r[k]) for k in COMPARED} for r in csv.DictReader(f)]


@pytest.mark.timeout(300)
def test_torchrun_two_processes_train_like_one(blob_data, tmp_path):
    torch.manual_seed(0)
    clf = tmp_path / "classifier.pt"
    save_atomic(classifier_state(build_classifier(ClassifierConfig(arch="smallcnn",
                                                                   image_size=32))), clf)
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    options = []
    for field in dataclasses.fields(CFG):
        options += ["--" + field.name.replace("_", "-"), str(getattr(CFG, field.name))]
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "cfxray.cli",
           "train-cyclegan", "--data", str(blob_data), "--classifier", str(clf),
           "--out", str(out), "--params", os.devnull, *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("test-split counterfactuals") == 1  # only rank 0 reports

    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2 * (58 // CFG.batch_size)
    ckpt = load_checkpoint(out / "checkpoints/last.pt")
    assert len(ckpt["rank_states"]) == 2  # both ranks' pools and RNG streams are kept
    pools = [state["pool_p"]["images"] for state in ckpt["rank_states"]]
    assert not torch.equal(pools[0], pools[1])  # each rank saw its own half of the batch
    gens = load_generators(out)
    assert gens.config.image_size == 32
    assert not list(out.rglob(".*tmp*"))  # every write completed, none raced

    ddp = _losses(out)
    assert len(ddp) == CFG.epochs  # one log row per epoch: rank 1 wrote nothing
    singles = [_losses(_single_run(blob_data, clf, tmp_path / f"single{seed}", seed))
               for seed in (3, 4)]
    # Same global batch, steps and schedule: the loss terms agree up to seed noise.
    for epoch, row in enumerate(ddp):
        for key in COMPARED:
            expected = sum(s[epoch][key] for s in singles) / len(singles)
            spread = max(abs(s[epoch][key] - expected) for s in singles)
            assert abs(row[key] - expected) <= max(3 * spread, 0.25 * abs(expected)), (
                key, ddp, singles)


def _single_run(data: Path, clf: Path, out: Path, seed: int) -> Path:
    train_cyclegan(data, clf, out, dataclasses.replace(CFG, seed=seed))
    return out
