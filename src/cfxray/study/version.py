"""The published model version a study is about, run from its own ONNX files.

A study must show what the served version produces, not what some checkpoint on disk
produces: the counterfactuals and the decisions come from the version folders' `model.onnx`
through onnxruntime (the file Triton serves), and each folder's content is checked against
its lineage record first. The saliency control arm needs gradients, so it uses the PyTorch
classifier checkpoint the version's record names, after checking its hash and that it gives
the served model's probabilities (`saliency.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cfxray.contract import (
    CLASSIFIER,
    COUNTERFACTUAL,
    GENERATOR_MODELS,
    IMAGE,
    MODEL_NAMES,
    PROBABILITIES,
)
from cfxray.conventions import LINEAGE_FILE
from cfxray.errors import UserError
from cfxray.export.model_repository import (
    ONNX_FILE,
    config_parameters,
    latest_version,
    read_config,
)
from cfxray.lineage import read_lineage, sha256_file, sha256_tree

USED_MODELS = (CLASSIFIER, *GENERATOR_MODELS.values())
BATCH = 64


@dataclass
class PublishedVersion:
    repo: Path
    version: int
    folders: dict[str, Path]  # every model's version folder (explain too, when published)
    size: int
    resize: str
    folder_sha256: dict[str, str]  # recorded and rechecked content hash per model folder
    onnx_sha256: dict[str, str]
    classifier_checkpoint: Path | None  # the PyTorch classifier the export was made from
    classifier_checkpoint_sha256: str | None
    parity_atol: float
    _sessions: dict[str, Any] = field(default_factory=dict, repr=False)

    def identity(self) -> dict[str, Any]:
        """What the study's content hash covers about the version (no paths: the same study
        made on another machine hashes the same)."""
        return {"version": self.version, "image_size": self.size, "resize": self.resize,
                "models": {name: {"sha256": self.folder_sha256[name],
                                  "onnx_sha256": self.onnx_sha256[name]}
                           for name in sorted(self.folder_sha256)},
                "classifier_checkpoint_sha256": self.classifier_checkpoint_sha256}

    def _session(self, name: str) -> Any:
        import onnxruntime as ort

        if name not in self._sessions:
            options = ort.SessionOptions()
            options.inter_op_num_threads = 1
            self._sessions[name] = ort.InferenceSession(
                str(self.folders[name] / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        return self._sessions[name]

    def _run(self, name: str, output: str, images: np.ndarray) -> np.ndarray:
        session = self._session(name)
        parts = [session.run([output], {IMAGE: images[i:i + BATCH]})[0]
                 for i in range(0, len(images), BATCH)]
        return np.concatenate(parts) if parts else np.zeros((0,), np.float32)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W] -> float32 [N, 2], the served classifier's softmax."""
        return self._run(CLASSIFIER, PROBABILITIES, images)

    def counterfactuals(self, images: np.ndarray, direction: str) -> np.ndarray:
        """uint8 [N, H, W] -> float32 [N, H, W] in [0, 1], the served generator's output."""
        return self._run(GENERATOR_MODELS[direction], COUNTERFACTUAL, images)


def open_version(repo: str | Path, version: int | None,
                 search_roots: list[str | Path] | None = None) -> PublishedVersion:
    """Find a version, check every model folder the study uses against its record, and find
    the classifier checkpoint its export recorded (None when it is not on this machine)."""
    from cfxray.audit import chain

    repo = Path(repo)
    if not repo.is_dir():
        raise UserError(f"model repository not found: {repo}")
    version = latest_version(repo) if version is None else version
    folders = {name: repo / name / str(version) for name in MODEL_NAMES
               if (repo / name / str(version)).is_dir()}
    missing = [name for name in USED_MODELS if name not in folders]
    if version < 1 or missing:
        raise UserError(f"{repo} has no published version {version} of "
                        f"{', '.join(missing or USED_MODELS)}; publish one with `cfxray export`")
    hashes, onnx = {}, {}
    records: dict[str, dict[str, Any]] = {}
    for name, folder in folders.items():
        if not (folder / LINEAGE_FILE).is_file() or not (folder / ONNX_FILE).is_file():
            raise UserError(f"{folder} lacks {ONNX_FILE} or {LINEAGE_FILE}; it was not written "
                            "by `cfxray export`")
        records[name] = read_lineage(folder)
        now = sha256_tree(folder)
        if now != records[name].get("sha256"):
            raise UserError(f"{folder} changed since it was published (sha256 "
                            f"{str(records[name].get('sha256'))[:12]} recorded, {now[:12]} now); "
                            f"`cfxray audit --model-repo {repo}` names the file")
        hashes[name], onnx[name] = now, sha256_file(folder / ONNX_FILE)
    params = config_parameters(read_config(repo / CLASSIFIER))
    record = records[CLASSIFIER]
    size = int((record.get("params") or {}).get("image_size") or params.get("image_size", 0))
    entry = (record.get("inputs") or {}).get("classifier") or {}
    walker = chain.Walker(chain.search_roots(repo, search_roots))
    checkpoint = walker.locate(str(entry["path"])) if entry.get("path") else None
    if checkpoint is not None and sha256_file(checkpoint) != entry.get("sha256"):
        raise UserError(f"the classifier checkpoint {checkpoint} differs from the one "
                        f"{folders[CLASSIFIER]} was exported from (sha256 "
                        f"{str(entry.get('sha256'))[:12]} recorded)")
    return PublishedVersion(
        repo=repo, version=version, folders=folders, size=size,
        resize=params.get("resize", "pad"), folder_sha256=hashes, onnx_sha256=onnx,
        classifier_checkpoint=checkpoint, classifier_checkpoint_sha256=entry.get("sha256"),
        parity_atol=float((record.get("params") or {}).get("parity_atol", 1e-4)))


def recorded_input(version: PublishedVersion, name: str,
                   search_roots: list[str | Path] | None = None) -> Path | None:
    """Another input the classifier folder's export recorded (the evaluation), if present."""
    from cfxray.audit import chain

    entry = (read_lineage(version.folders[CLASSIFIER]).get("inputs") or {}).get(name) or {}
    walker = chain.Walker(chain.search_roots(version.repo, search_roots))
    return walker.locate(str(entry["path"])) if entry.get("path") else None
