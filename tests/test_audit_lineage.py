"""Lineage records: DVC hash and revision of a `dvc repro` output, KFP metadata, relocation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from audit_chain_builder import _fake_cyclegan, _fake_evaluation, _fake_export, cfxray

from cfxray.lineage import (
    dvc_info,
    dvc_md5_tree,
    lineage_metadata,
    read_lineage,
    write_lineage,
)

MAKE_RAW = ("import pathlib; d = pathlib.Path('data/raw'); "
            "[(d / s).mkdir(parents=True, exist_ok=True) for s in ('a', 'b')]; "
            "[(d / s / f'{i}.bin').write_bytes(bytes([i]) * 99) for s in ('a', 'b') "
            "for i in range(3)]")


def run(root: Path, *cmd: str) -> str:
    return subprocess.run(cmd, cwd=root, check=True, capture_output=True, text=True).stdout


def test_dvc_repro_output_hash_and_revision_are_recorded(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    run(root, "git", "init", "-q")
    run(root, "git", "config", "user.email", "a@b")
    run(root, "git", "config", "user.name", "a")
    run(root, sys.executable, "-m", "dvc", "init", "-q")
    (root / "dvc.yaml").write_text(
        f'stages:\n  raw:\n    cmd: {sys.executable} -c "{MAKE_RAW}"\n    outs:\n'
        "      - data/raw\n")
    run(root, sys.executable, "-m", "dvc", "repro", "-q")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-q", "-m", "raw data")
    head = run(root, "git", "rev-parse", "HEAD").strip()

    info = dvc_info(root / "data" / "raw")
    assert info is not None and info["source"] == "dvc.lock:raw"
    assert info["md5"] == dvc_md5_tree(root / "data" / "raw")  # same algorithm as DVC's
    assert info["rev"] == head and info["rev_dirty"] is False
    assert info["nfiles"] == 6

    prepared = root / "data" / "prepared"
    prepared.mkdir()
    (prepared / "x.pt").write_bytes(b"tensor")
    record = write_lineage(prepared, "prepared", inputs={"dataset": root / "data" / "raw"},
                           params={"size": 32})
    assert record["inputs"]["dataset"]["dvc"]["md5"] == info["md5"]
    assert record["files"] == {"x.pt": record["files"]["x.pt"]}
    assert dvc_info(prepared) is None  # not a DVC output

    meta = lineage_metadata(read_lineage(prepared))
    assert json.loads(json.dumps(meta)) == meta
    assert "files" not in meta and "path" not in meta["inputs"]["dataset"]
    assert meta["inputs"]["dataset"]["dvc"]["rev"] == head


def _artifact(path: Path, kind: str, inputs: dict, name: str) -> Path:
    path.mkdir(parents=True)
    (path / name).write_bytes(kind.encode() * 10)
    write_lineage(path, kind, inputs=inputs, params={"k": 1})
    return path


def _tiny_chain(root: Path, raw: Path | None = None) -> Path:
    """Every role of a chain, written the way the steps write it, without training."""
    raw = raw or _artifact(root / "data" / "phantom", "dataset", {}, "manifest.csv")
    prepared = _artifact(root / "data" / "prepared", "prepared", {"dataset": raw}, "train.pt")
    classifier = _artifact(root / "models" / "classifier", "classifier", {"data": prepared},
                           "classifier.pt") / "classifier.pt"
    oracle = _artifact(root / "models" / "oracle", "classifier", {"data": prepared},
                       "classifier.pt") / "classifier.pt"
    _fake_cyclegan(root / "models" / "cyclegan", prepared, classifier, oracle)
    _fake_evaluation(root / "reports" / "eval", prepared, classifier, oracle,
                     root / "models" / "cyclegan", auc=0.8)
    _fake_export(root / "model_repository", 1, classifier, root / "models" / "cyclegan",
                 root / "reports" / "eval", 4)
    return root / "model_repository"


def test_moved_project_is_audited_through_search_roots(tmp_path, capsys):
    _tiny_chain(tmp_path / "built")
    moved = tmp_path / "elsewhere" / "copy"
    shutil.move(tmp_path / "built", moved)
    repo = moved / "model_repository"
    capsys.readouterr()
    assert cfxray("audit", "--model-repo", repo) == 0  # found under the repository's parent
    assert "audit passed" in capsys.readouterr().out

    shutil.rmtree(moved / "models" / "oracle")
    assert cfxray("audit", "--model-repo", repo, "--search", moved) == 1
    out = capsys.readouterr().out
    assert "input not found" in out and "oracle" in out


def test_raw_dataset_checked_against_its_recorded_dvc_origin(tmp_path, capsys):
    """A pipeline that fetched the dataset from a DVC repository notes the origin in the
    dataset's record; outside any DVC project the audit checks the data against it."""
    from cfxray.lineage import save_lineage

    raw = _artifact(tmp_path / "run" / "data" / "phantom", "dataset", {}, "manifest.csv")
    record = read_lineage(raw)
    record["dvc"] = {"repo_url": "https://example.org/data.git", "rev": "a" * 40,
                     "path": "data/phantom", "md5": dvc_md5_tree(raw), "workspace": False}
    save_lineage(raw, record)  # before any consumer is made, as the pipeline does
    repo = _tiny_chain(tmp_path / "run", raw)
    capsys.readouterr()
    assert cfxray("audit", "--model-repo", repo, "--json") == 0
    out = capsys.readouterr().out
    assert "https://example.org/data.git:data/phantom (recorded origin)" in out
    assert "not tracked by DVC" not in out

    (raw / "manifest.csv").write_bytes(b"changed")
    assert cfxray("audit", "--model-repo", repo) == 1
    out = capsys.readouterr().out
    assert "content changed since it was recorded" in out and "changed manifest.csv" in out
