"""Lineage records: DVC hash and revision of a `dvc repro` output, KFP metadata, relocation,
a recorded DVC origin."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from audit_chain_builder import cfxray, changed, moved, small_params

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


def test_moved_project_is_audited_through_search_roots(audit_project, tmp_path, capsys):
    """Records carry the absolute paths of the machine that made them; moved elsewhere (a
    container's outputs copied out), the chain is found under the repository's parent."""
    root = audit_project.root
    with moved(root, tmp_path / "elsewhere" / "copy") as copy:
        repo = copy / "model_repository"
        capsys.readouterr()
        assert cfxray("audit", "--model-repo", repo) == 0  # found under the repository's parent
        assert "audit passed" in capsys.readouterr().out

        with moved(copy / "models" / "oracle", tmp_path / "oracle-gone"):
            assert cfxray("audit", "--model-repo", repo, "--search", copy) == 1
        out = capsys.readouterr().out
        assert "input not found" in out and "oracle" in out


def test_raw_dataset_checked_against_its_recorded_dvc_origin(tmp_path, capsys):
    """A pipeline that fetched the dataset from a DVC repository notes the origin in the
    dataset's record before any step reads it; outside any DVC project the audit checks the
    data against that origin."""
    from cfxray.lineage import save_lineage

    params = small_params(tmp_path)
    raw, prepared = tmp_path / "data" / "phantom", tmp_path / "data" / "prepared"
    assert cfxray("data", "phantom", "--params", params, "--out", raw, "--n", 24, "--size", 32,
                  "--seed", 1, "--workers", 1) == 0
    record = read_lineage(raw)
    record["dvc"] = {"repo_url": "https://example.org/data.git", "rev": "a" * 40,
                     "path": "data/phantom", "md5": dvc_md5_tree(raw), "workspace": False}
    save_lineage(raw, record)  # as the pipeline's fetch step does
    assert cfxray("data", "preprocess", raw, "--params", params, "--out", prepared,
                  "--size", 32) == 0
    capsys.readouterr()
    assert cfxray("audit", "--artifact", prepared, "--json") == 0
    out = capsys.readouterr().out
    assert "https://example.org/data.git:data/phantom (recorded origin)" in out
    assert "not tracked by DVC" not in out

    with changed(raw / "manifest.csv", b"changed"):
        assert cfxray("audit", "--artifact", prepared) == 1
    out = capsys.readouterr().out
    assert "content changed since it was recorded" in out and "changed manifest.csv" in out
