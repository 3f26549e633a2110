"""What a pipeline step does inside its container, kept in the library so each KFP component
body stays a few lines of "call cfxray, describe the result".

KFP serialises a lightweight component's body alone, so the bodies import this module and
nothing else; this module never imports kfp. Every step runs the `cfxray` CLI in a child
process (the same command a DVC stage runs) with the run's parameters written to a
`params.yaml` of its own, so what ran is exactly what the CLI contract says.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cfxray.contract import model_versions
from cfxray.conventions import CLASSES, LINEAGE_FILE
from cfxray.errors import UserError
from cfxray.lineage import dvc_md5_tree, lineage_metadata, read_lineage, save_lineage
from cfxray.settings import load_params, parse_params

# Exit status of `cfxray evaluate` when the model fails the quality gate (not an error).
GATE_FAILED_EXIT = 1
PUBLICATION_FILE = "publication.json"
# The project's dvc.yaml, which the package carries (a link to the checkout's, its content in
# an installed package; not named dvc.yaml, which DVC would take for a second pipeline), so a
# step reads the same stages in the image as in a checkout.
DVC_STAGES = resources.files("cfxray.pipeline") / "dvc_stages.yaml"
# The pipeline's steps run by DVC stages of the same names, in dvc.yaml.
DVC_STEPS = ("preprocess", "train_classifier", "train_oracle", "train_cyclegan", "evaluate")


def step_sections(dvc_yaml: str | None = None) -> dict[str, tuple[str, ...]]:
    """The params.yaml sections each pipeline step reads: its DVC stage's `params` list (the
    sections of `section` and `section.key` entries), and for the export, which DVC does not
    run, those its command lists. A step receives only these, so KFP's cache reruns a step
    when its own parameters change, not when another step's do (a new gate threshold
    re-evaluates; it does not retrain)."""
    from cfxray.export.commands import SECTIONS as EXPORT_SECTIONS

    stages = (yaml.safe_load(dvc_yaml if dvc_yaml is not None else DVC_STAGES.read_text())
              or {}).get("stages") or {}
    sections: dict[str, tuple[str, ...]] = {}
    for step in DVC_STEPS:
        if step not in stages:
            raise UserError(f"dvc.yaml has no stage {step!r}, which the pipeline runs")
        names: list[str] = []
        for entry in stages[step].get("params") or []:
            if not isinstance(entry, str):
                raise UserError(f"dvc.yaml stage {step}: params entries name params.yaml "
                                f"keys; got {entry!r}")
            if entry.split(".")[0] not in names:
                names.append(entry.split(".")[0])
        sections[step] = tuple(names)
    sections["export"] = tuple(EXPORT_SECTIONS)
    return sections


def step_params(params: str, fallback: str | Path | None = None) -> dict[str, str]:
    """Each step's own params.yaml (YAML text) out of the run's whole one; an empty run
    params means the params.yaml at `fallback` (None: ./params.yaml, the image's)."""
    values = parse_params(params, "the pipeline's params") if params.strip() \
        else load_params(fallback)
    return {step: yaml.safe_dump({name: values[name] for name in sections if name in values},
                                 sort_keys=False)
            for step, sections in step_sections().items()}


def cli_command(args: list[str], nproc: int = 1) -> list[str]:
    """The command line for one `cfxray` call; with nproc > 1 it runs under torchrun, one
    process per GPU, which the trainers turn into DistributedDataParallel."""
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}", "-m", "cfxray.cli", *args]
    return [sys.executable, "-m", "cfxray.cli", *args]


def run_cli(args: list[str], params: str = "", nproc: int = 1,
            ok_exit_codes: tuple[int, ...] = (0,)) -> int:
    """Run one `cfxray` subcommand; `params` (params.yaml text: KFP parameters cannot carry
    the nulls params.yaml uses) replaces the image's own params.yaml when given. Output
    streams straight to the step's log."""
    with tempfile.TemporaryDirectory(prefix="cfxray-params-") as tmp:
        if params.strip():
            parse_params(params, "the pipeline's params")
            params_file = Path(tmp) / "params.yaml"
            params_file.write_text(params)
            args = [*args, "--params", str(params_file)]
        command = cli_command(args, nproc)
        print("+", " ".join(command), flush=True)
        code = subprocess.run(command, check=False).returncode
    if code not in ok_exit_codes:
        raise RuntimeError(f"cfxray {args[0]} failed with exit status {code}")
    return code


def resume_args(out_dir: str | Path) -> list[str]:
    """`--resume` when a killed attempt of this step left a checkpoint (KFP retries)."""
    return ["--resume"] if (Path(out_dir) / "checkpoints" / "last.pt").exists() else []


def artifact_metadata(artifact_dir: str | Path) -> dict[str, Any]:
    """The artifact's lineage record as KFP metadata (empty when the step wrote none)."""
    if not (Path(artifact_dir) / LINEAGE_FILE).exists():
        return {}
    return lineage_metadata(read_lineage(artifact_dir))


# --- fetch: the raw dataset from a DVC repository --------------------------------------------


@contextmanager
def _dvc_fs(repo_url: str, rev: str) -> Iterator[Any]:
    from dvc.api import DVCFileSystem

    try:
        fs = DVCFileSystem(repo_url, rev=rev or None)
        fs.repo  # noqa: B018 (opens the repository and resolves the revision now)
    except Exception as exc:  # dvc raises many types for a bad URL or revision
        raise UserError(f"cannot open DVC repository {repo_url!r} at {rev or 'HEAD'!r}: {exc}") from exc
    try:
        yield fs
    finally:
        fs.close()


def _tracked_md5(fs: Any, repo_url: str, path: str) -> str:
    try:
        info = fs.info(path)
    except FileNotFoundError as exc:
        raise UserError(f"{path!r} not found in DVC repository {repo_url}") from exc
    dvc = info.get("dvc_info") or {}
    if dvc.get("isout") and not dvc.get("md5"):
        raise UserError(f"{path!r} in {repo_url} is a DVC stage output with no recorded hash: "
                        "run `dvc repro` there (and commit dvc.lock)")
    if not dvc.get("md5"):
        raise UserError(f"{path!r} in {repo_url} is not tracked by DVC")
    return dvc["md5"]


def reads_workspace(repo_url: str, rev: str) -> bool:
    """No revision on a local repository means its working tree (what `dvc repro` made)."""
    return not rev and Path(repo_url).is_dir()


def locate_dvc_dataset(repo_url: str, rev: str, path: str) -> tuple[str, str]:
    """The commit a revision resolves to (kept empty for a local working tree) and the
    dataset's DVC hash there: together they key the cached download, so a new commit or new
    data downloads again and an unchanged dataset is reused."""
    with _dvc_fs(repo_url, rev) as fs:
        md5 = _tracked_md5(fs, repo_url, path)
        commit = "" if reads_workspace(repo_url, rev) else fs.repo.get_rev()
    return commit, md5


def fetch_dvc_dataset(repo_url: str, rev: str, path: str, md5: str,
                      out: str | Path) -> dict[str, Any]:
    """Download a DVC-tracked directory from a DVC repository (local path or git URL) at a
    revision (empty: a local repository's working tree), check it against the expected DVC
    hash, and record where it came from in the dataset's lineage record."""
    out = Path(out)
    with _dvc_fs(repo_url, rev) as fs:
        tracked = _tracked_md5(fs, repo_url, path)
        head = fs.repo.get_rev()
        try:
            fs.get(path, str(out), recursive=True)
        except FileNotFoundError as exc:
            raise UserError(f"the content of {path!r} ({tracked}) is in neither the workspace, "
                            f"the DVC cache nor the remote of {repo_url}: run its DVC stage "
                            "or `dvc push`") from exc
    actual = dvc_md5_tree(out)
    if not md5 == tracked == actual:
        raise UserError(f"{path} from {repo_url}@{rev or 'workspace'}: expected DVC hash {md5}, "
                        f"DVC records {tracked}, the downloaded content hashes to {actual} "
                        "(changed since located, or uncommitted: run `dvc commit`)")
    source = {"repo_url": repo_url, "requested_rev": rev, "rev": head,
              "workspace": reads_workspace(repo_url, rev), "path": path, "md5": md5,
              "nfiles": sum(1 for p in out.rglob("*") if p.is_file())}
    _record_dvc_source(out, source)
    return source


def _record_dvc_source(dataset_dir: Path, source: dict[str, Any]) -> None:
    """Add the DVC origin to the dataset's own lineage record (which its hash leaves out)."""
    record = read_lineage(dataset_dir) if (dataset_dir / LINEAGE_FILE).exists() else {
        "kind": "dataset"}
    record["dvc"] = source
    save_lineage(dataset_dir, record)


# --- evaluate: metrics, ROC and confusion matrix for the Kubeflow UI ---------------------------


def read_metrics(eval_dir: str | Path) -> dict[str, Any]:
    path = Path(eval_dir) / "metrics.json"
    if not path.exists():
        raise RuntimeError(f"evaluation wrote no {path}")
    return json.loads(path.read_text())


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of a flat metrics.json that KFP's Metrics artifact can show."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and v == v}


def gate_passed(metrics: dict[str, Any], exit_code: int) -> bool:
    """The gate verdict, requiring the exit status and metrics.json to agree."""
    from cfxray.evaluation.gate import VERDICT_KEY, read_verdict

    passed = read_verdict(metrics)
    if passed is None:
        raise RuntimeError(f"metrics.json records no gate verdict ('{VERDICT_KEY}')")
    if passed != (exit_code == 0):
        raise RuntimeError(f"evaluate exited {exit_code} but metrics.json says gate passed={passed}")
    return passed


def read_roc(eval_dir: str | Path) -> tuple[list[float], list[float], list[float]]:
    """The classifier's ROC points (false positive rate, recall, threshold) from plots/roc.csv."""
    with (Path(eval_dir) / "plots" / "roc.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return ([float(r["fpr"]) for r in rows], [float(r["tpr"]) for r in rows],
            [float(r["threshold"]) for r in rows])


def read_confusion_matrix(eval_dir: str | Path) -> list[list[int]]:
    """Counts [actual][predicted] in CLASSES order from the per-image plots/confusion.csv."""
    matrix = [[0] * len(CLASSES) for _ in CLASSES]
    with (Path(eval_dir) / "plots" / "confusion.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            matrix[CLASSES.index(row["actual"])][CLASSES.index(row["predicted"])] += 1
    return matrix


def report_file(eval_dir: str | Path) -> Path:
    path = Path(eval_dir) / "report.html"
    if not path.exists():
        raise RuntimeError(f"evaluation wrote no {path}")
    return path


# --- export: publish a new model-repository version --------------------------------------------


def repository_versions(model_repo: str | Path) -> dict[str, set[int]]:
    """Integer version folders of every model in a Triton model repository."""
    root = Path(model_repo)
    if not root.is_dir():
        return {}
    return {model.name: set(model_versions(model))
            for model in sorted(root.iterdir()) if model.is_dir()}


def added_versions(before: dict[str, set[int]], after: dict[str, set[int]]) -> set[int]:
    return {v for name, versions in after.items() for v in versions - before.get(name, set())}


def published_version(before: dict[str, set[int]], after: dict[str, set[int]]) -> int:
    """The one version number an export added across the repository's models."""
    added = added_versions(before, after)
    if len(added) != 1:
        raise RuntimeError(f"export should add exactly one version, added {sorted(added)}")
    return added.pop()


def write_publication(out_dir: str | Path, model_repo: str | Path, version: int) -> dict[str, Any]:
    """A small record of what was published where (with each version folder's recorded
    hash, the start of an audit), kept as the export step's artifact."""
    root = Path(model_repo).resolve()
    models = {name: str(root / name / str(version))
              for name, versions in repository_versions(root).items() if version in versions}
    hashes = {name: read_lineage(path).get("sha256") for name, path in models.items()
              if (Path(path) / LINEAGE_FILE).exists()}
    record = {"model_repository": str(root), "version": version, "models": models,
              "sha256": hashes}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / PUBLICATION_FILE).write_text(json.dumps(record, indent=2))
    return record
