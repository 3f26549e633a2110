"""`cfxray export`: trained checkpoints -> verified ONNX models -> a new repository version.

Everything is built and verified in a staging folder beside the repository first (ONNX
export, onnx.checker, onnxruntime-vs-PyTorch parity, lineage); only when every model passes
are the version folders renamed into place. A failed export leaves the repository as it was.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cfxray.contract import (
    AUTO_TARGET,
    CLASSIFIER,
    EXPLAIN,
    GENERATOR_N2P,
    GENERATOR_P2N,
    MODEL_SPECS,
)
from cfxray.errors import UserError
from cfxray.evaluation.gate import VERDICT_BOOL_KEY, VERDICT_KEY, read_verdict
from cfxray.export.model_repository import (
    ONNX_FILE,
    check_version_free,
    production_config_text,
    publish,
    settings_dict,
)
from cfxray.export.onnx_export import (
    PARITY_ATOL,
    ParityReport,
    check_parity,
    export_onnx,
    sample_images,
)
from cfxray.export.settings import ServingSettings
from cfxray.export.wrappers import ClassifierServing, ExplainServing, GeneratorServing
from cfxray.lineage import write_lineage

GATE_FILE = "metrics.json"
def require_gate(evaluation_dir: str | Path) -> dict[str, Any]:
    """The evaluation's metrics, or a refusal when its quality gate did not pass."""
    path = Path(evaluation_dir) / GATE_FILE
    if not path.exists():
        raise UserError(f"{evaluation_dir} has no {GATE_FILE}; run `cfxray evaluate` first")
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    passed = read_verdict(metrics) if isinstance(metrics, dict) else None
    if passed is None:
        raise UserError(f"{path} records no gate verdict ('{VERDICT_BOOL_KEY}' or '{VERDICT_KEY}'); "
                        "cannot tell whether the evaluation's quality gate passed")
    if not passed:
        raise UserError(f"the evaluation in {evaluation_dir} failed its quality gate; "
                        "refusing to publish these models")
    return metrics


def _served_size(classifier: nn.Module, generators: Any) -> int:
    c_size, g_size = classifier.config.image_size, generators.config.image_size
    if c_size != g_size:
        raise UserError(f"the classifier works on {c_size}px images but the generators on "
                        f"{g_size}px; export a classifier and generators trained on the same data")
    return int(g_size)


def _stride(generators: Any) -> int:
    return 2 ** int(generators.config.n_downsampling)


def _parity_batches(size: int, stride: int, with_target: bool) -> list[tuple[torch.Tensor, ...]]:
    """Sample batches at the served size (batch 1 and a full batch) and at another size."""
    images = sample_images(size, count=6)
    other = sample_images(size + 2 * stride, count=2, seed=1)
    batches = [images[:1], images, other]
    if not with_target:
        return [(b,) for b in batches]
    targets = torch.tensor([[AUTO_TARGET], [0], [1], [AUTO_TARGET], [1], [0]], dtype=torch.int32)
    return [(b, targets[: len(b)]) for b in batches]


def export_repository(
    classifier_path: str | Path,
    generators_dir: str | Path,
    out: str | Path,
    version: int | None = None,
    evaluation_dir: str | Path | None = None,
    settings: ServingSettings | None = None,
    atol: float = PARITY_ATOL,
    progress: Callable[[str], None] = print,
    params_file: str | Path | None = None,
    int8_calibration: str | Path | None = None,
) -> tuple[int, list[ParityReport]]:
    """Export, verify and publish; `params_file` feeds the model cards (owners, licence;
    None: params.yaml when there is one).

    With `int8_calibration` (a prepared data folder) both generators are published as static
    int8 models, calibrated on its training split (`cfxray.export.quantize`)."""
    from cfxray.audit.model_card import write_model_card
    from cfxray.data.preprocess import RESIZE_MODES
    from cfxray.models.classifier import load_classifier
    from cfxray.models.networks import load_generators

    settings = settings or ServingSettings()
    settings.validate()
    if settings.resize not in RESIZE_MODES:
        raise UserError(f"resize must be one of {RESIZE_MODES}, got {settings.resize!r}")
    gate_metrics = require_gate(evaluation_dir) if evaluation_dir is not None else None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    if version is not None:
        check_version_free(out, version)  # fail before minutes of export; rechecked at publish
    classifier = load_classifier(classifier_path)
    generators = load_generators(generators_dir)
    size, stride = _served_size(classifier, generators), _stride(generators)
    wrappers: dict[str, nn.Module] = {
        CLASSIFIER: ClassifierServing(classifier),
        GENERATOR_P2N: GeneratorServing(generators.p2n),
        GENERATOR_N2P: GeneratorServing(generators.n2p),
        EXPLAIN: ExplainServing(classifier, generators.n2p, generators.p2n),
    }
    inputs: dict[str, str | Path] = {"classifier": classifier_path, "generators": generators_dir}
    if evaluation_dir is not None:
        inputs["evaluation"] = evaluation_dir
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".cfxray-export-", dir=out.parent))
    try:
        reports, staged, int8 = [], {}, {}
        for name, module in wrappers.items():
            spec = MODEL_SPECS[name]
            # The classifier resizes inside its graph: any height and width, not only
            # multiples of the generators' stride.
            model_stride = 1 if name == CLASSIFIER else stride
            batches = _parity_batches(size, model_stride, with_target=len(spec.inputs) > 1)
            progress(f"exporting {name} ...")
            path = export_onnx(module, spec, batches[-1], staging / name / ONNX_FILE,
                               model_stride)
            report = check_parity(path, module, spec, batches, atol)
            progress(f"  {report.describe()}")
            if not report.passed:
                raise UserError("onnxruntime and PyTorch disagree, refusing to publish: "
                                + report.describe())
            if int8_calibration is not None and name in (GENERATOR_P2N, GENERATOR_N2P):
                from cfxray.export.quantize import quantize_in_place

                int8[name] = quantize_in_place(path, int8_calibration, size)
                progress(f"  int8: worst SSIM vs fp32 {int8[name]['ssim_min']:.4f}")
            reports.append(report)
            staged[name] = path.parent

        def finalize(name: str, folder: Path, version: int) -> None:
            report = next(r for r in reports if r.model == name)
            config = production_config_text(MODEL_SPECS[name], size, settings)
            write_lineage(folder, kind=f"serving/{name}", inputs=inputs,
                          params={"image_size": size, "stride": stride, "parity_atol": atol,
                                  "serving": settings_dict(settings),
                                  "generator_config": asdict(generators.config),
                                  "classifier_config": asdict(classifier.config)},
                          metrics={"parity_max_abs_diff": report.max_abs_diff,
                                   "gate": _gate_summary(gate_metrics),
                                   **({"int8": int8[name]} if name in int8 else {})},
                          extra={"model": name, "version": version,
                                 "config": {"sha256": hashlib.sha256(config.encode()).hexdigest(),
                                            "text": config}})
            write_model_card(folder, params_file)  # seals its hashes into lineage.json

        published = publish(staged, out, version, size, settings, finalize)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return published, reports


def _gate_summary(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if metrics is None else {VERDICT_BOOL_KEY: read_verdict(metrics)}
