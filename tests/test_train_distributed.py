"""Distributed helpers and `torchrun --nproc_per_node=2` training with gloo on CPU."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from cfxray.conventions import CLASSIFIER_FILE
from cfxray.data.tensors import load_split
from cfxray.models.classifier import load_classifier
from cfxray.models.parallel import unwrap
from cfxray.train import distributed as D
from cfxray.train.batches import DeviceBatches
from cfxray.train.classifier import evaluate, train_classifier
from cfxray.train.configs import ClassifierTrainConfig

torch.set_num_threads(1)


def test_device_batches_split_each_global_batch_between_ranks():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1).expand(10, 2, 2).contiguous()
    labels = torch.arange(10)

    def stream(rank: int, world: int) -> DeviceBatches:
        return DeviceBatches(images, labels, steps=3, batch_size=4,
                             ctx=D.DistContext(rank=rank, world_size=world),
                             device=torch.device("cpu"), seed=lambda epoch: 5 + epoch)

    single, ranks = stream(0, 1), [stream(r, 2) for r in range(2)]
    for s in (single, *ranks):
        s.set_epoch(2)
    for step in range(3):
        whole = single[step][1]
        halves = [r[step][1] for r in ranks]
        assert [len(h) for h in halves] == [2, 2]
        assert torch.equal(torch.cat(halves), whole)  # two processes see one process's batch
        assert torch.equal(single[step][0][:, 0, 0, 0] * 255, whole.float())
    # 12 draws from 10 images: every image once, then the order wraps around.
    drawn = torch.cat([single[step][1] for step in range(3)])
    assert sorted(set(drawn[:10].tolist())) == list(range(10))
    first = [single[step][1] for step in range(3)]
    single.set_epoch(3)
    assert any(not torch.equal(a, single[i][1]) for i, a in enumerate(first))  # a new order
    single.set_epoch(2)
    assert all(torch.equal(a, single[i][1]) for i, a in enumerate(first))  # resumable by step


def test_helpers_are_no_ops_in_one_process():
    ctx = D.DistContext()
    assert ctx.is_main and not ctx.is_distributed
    t = torch.tensor([1.0, 2.0])
    assert D.all_reduce_sum(t, ctx) is t and t.tolist() == [1.0, 2.0]
    assert D.gather_objects({"a": 1}, ctx) == [{"a": 1}]
    assert D.broadcast_object("x", ctx) == "x"
    model = torch.nn.Linear(2, 2)
    assert D.wrap_model(model, ctx, torch.device("cpu")) is model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _helper_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with D.distributed_session("cpu") as (ctx, device):
        total = D.all_reduce_sum(torch.tensor([rank + 1.0]), ctx).item()
        gathered = D.gather_objects(f"rank{rank}", ctx)
        decided = D.broadcast_object(f"from{rank}", ctx)
        torch.manual_seed(0)
        model = D.wrap_model(torch.nn.Linear(3, 1), ctx, device)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        x = torch.full((4, 3), float(rank + 1))  # each rank sees different data
        model(x).square().mean().backward()
        opt.step()
        weights = unwrap(model).weight.detach().flatten().tolist()
    Path(out, f"{rank}.json").write_text(json.dumps(
        {"total": total, "gathered": gathered, "decided": decided, "weights": weights}))


def test_helpers_under_two_gloo_processes(tmp_path):
    mp.spawn(_helper_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    assert r0["total"] == r1["total"] == 3.0
    assert r0["gathered"] == r1["gathered"] == ["rank0", "rank1"]
    assert r0["decided"] == r1["decided"] == "from0"
    assert r0["weights"] == r1["weights"]  # gradients were averaged, not rank-local


def _train_losses(out: Path) -> list[float]:
    with (out / "log.csv").open() as f:
        return [float(r["train_loss"]) for r in csv.DictReader(f)]


CFG = ClassifierTrainConfig(arch="smallcnn", epochs=3, batch_size=16, lr=3e-3, seed=1)


@pytest.mark.timeout(300)
def test_torchrun_two_processes_train_like_one(blob_data, tmp_path):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "cfxray.cli",
           "train-classifier", "--data", str(blob_data), "--out", str(out),
           "--params", os.devnull, "--arch", CFG.arch,
           "--epochs", str(CFG.epochs), "--batch-size", str(CFG.batch_size),
           "--lr", str(CFG.lr), "--seed", str(CFG.seed), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("test AUC") == 1  # only rank 0 reports

    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["metrics"]["world_size"] == 2
    model = load_classifier(out / CLASSIFIER_FILE, expect_size=32)
    val = evaluate(model, load_split(blob_data, "val"), torch.device("cpu"))
    assert val.auc >= 0.95 and val.accuracy >= 0.8
    assert not list(out.rglob(".*tmp*"))  # every write completed, none raced

    ddp = _train_losses(out)
    assert len(ddp) == CFG.epochs  # one log row per epoch: rank 1 wrote nothing
    single = [_train_losses(_single_run(blob_data, tmp_path / f"single{seed}", seed))
              for seed in (1, 2)]
    expected = [sum(epoch) / len(epoch) for epoch in zip(*single, strict=True)]
    # Same global batch, steps and schedule: the curves agree up to seed noise (and BatchNorm
    # statistics over half the batch per rank).
    for got, want in zip(ddp, expected, strict=True):
        assert abs(got - want) < 0.15, (ddp, single)
    assert ddp[-1] < 0.5 * ddp[0]


def _single_run(data: Path, out: Path, seed: int) -> Path:
    train_classifier(data, out, dataclasses.replace(CFG, seed=seed, device="cpu"))
    return out
