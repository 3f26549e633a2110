"""`cfxray export`: trained checkpoints -> verified ONNX models -> a new repository version.

Everything is built and verified in a staging folder beside the repository first (ONNX
export, onnx.checker, onnxruntime-vs-PyTorch parity, lineage); only when every model passes
are the version folders renamed into place. A failed export leaves the repository as it was.
"""

from __future__ import annotations

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
from cfxray.export.compat import ServerRuntime, check_versions, run_models, runtime_python
from cfxray.export.compat import server_runtime as triton_runtime
from cfxray.export.model_repository import check_version_free, publish, settings_dict
from cfxray.export.onnx_export import (
    PARITY_ATOL,
    ParityReport,
    check_parity,
    export_onnx,
    sample_images,
)
from cfxray.export.rollout import prune
from cfxray.export.settings import ExportSettings, ServingSettings
from cfxray.export.triton_config import ONNX_FILE, model_files
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
    """Sample batches at the served size (batch 1 and a full batch) and at another size, last
    (the export's example: only an example off the native size traces the classifier's
    resize)."""
    images = sample_images(size, count=6)
    other = sample_images(size + 2 * stride, count=2, seed=1)
    batches = [images[:1], images, other]
    if not with_target:
        return [(b,) for b in batches]
    targets = torch.tensor([[AUTO_TARGET], [0], [1], [AUTO_TARGET], [1], [0]], dtype=torch.int32)
    # The explain graph routes each image to one generator: one-direction batches too. The
    # last batch stays the other-size one, the export's example.
    one_way = [(images[:3], torch.full((3, 1), target, dtype=torch.int32)) for target in (0, 1)]
    return [*one_way, *((b, targets[: len(b)]) for b in batches)]


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
    triton_image: str = ExportSettings.triton_image,
    keep_versions: int = ExportSettings.keep_versions,
) -> tuple[int, list[ParityReport]]:
    """Export, verify and publish; `params_file` feeds the model cards (owners, licence;
    None: params.yaml when there is one). Every model must also run in `triton_image`'s ONNX
    Runtime (`cfxray.export.compat`); after the publish, `keep_versions` versions stay
    (`cfxray.export.rollout.prune`).

    With `int8_calibration` (a prepared data folder) both generators are published as static
    int8 models, calibrated on its training split (`cfxray.export.quantize`)."""
    from cfxray.audit.model_card import write_model_card
    from cfxray.audit.repository import MODEL_FILES, file_record
    from cfxray.data.preprocess import RESIZE_MODES
    from cfxray.models.classifier import load_classifier
    from cfxray.models.networks import load_generators

    settings = settings or ServingSettings()
    settings.validate()
    if keep_versions < 1:
        raise UserError(f"keep_versions must be at least 1, got {keep_versions}")
    if settings.resize not in RESIZE_MODES:
        raise UserError(f"resize must be one of {RESIZE_MODES}, got {settings.resize!r}")
    gate_metrics = require_gate(evaluation_dir) if evaluation_dir is not None else None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    if version is not None:
        check_version_free(out, version)  # fail before minutes of export; rechecked at publish
    server = triton_runtime(triton_image)
    production = (server.describe(), runtime_python(server, progress))
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
        reports, staged, int8, production_reports = [], {}, {}, {}
        for name, module in wrappers.items():
            spec = MODEL_SPECS[name]
            # The classifier resizes inside its graph: any height and width, not only
            # multiples of the generators' stride.
            model_stride = 1 if name == CLASSIFIER else stride
            batches = _parity_batches(size, model_stride, with_target=len(spec.inputs) > 1)
            progress(f"exporting {name} ...")
            path = export_onnx(module, spec, batches[-1], staging / name / ONNX_FILE,
                               model_stride)
            _require_loadable(path, name, server)
            report = check_parity(path, module, spec, batches, atol)
            progress(f"  {report.describe()}")
            served = check_parity(path, module, spec, batches, atol, runtime=production)
            progress(f"  {served.describe()}")
            for checked in (report, served):
                if not checked.passed:
                    raise UserError("onnxruntime and PyTorch disagree, refusing to publish: "
                                    + checked.describe())
            if int8_calibration is not None and name in (GENERATOR_P2N, GENERATOR_N2P):
                from cfxray.export.quantize import quantize_in_place

                int8[name] = quantize_in_place(path, int8_calibration, size)
                progress(f"  int8: worst SSIM vs fp32 {int8[name]['ssim_min']:.4f}")
                _require_loadable(path, name, server)
                _, error = run_models(production[1], path, [{spec.inputs[0].name:
                                                             batches[0][0].numpy()}],
                                      [t.name for t in spec.outputs])
                if error is not None:
                    raise UserError(f"refusing to publish: the int8 {name} does not run in "
                                    f"{server.describe()}: {error}")
            reports.append(report)
            production_reports[name] = served
            staged[name] = path.parent

        def finalize(name: str, folder: Path, version: int) -> None:
            report = next(r for r in reports if r.model == name)
            # What publish writes beside the version folders, as the audit compares it
            # (configs without the version policy, which the rollout state owns).
            written = model_files(MODEL_SPECS[name], size, settings, served_version=None)
            write_lineage(folder, kind=f"serving/{name}", inputs=inputs,
                          params={"image_size": size, "stride": stride, "parity_atol": atol,
                                  "serving": settings_dict(settings),
                                  "generator_config": asdict(generators.config),
                                  "classifier_config": asdict(classifier.config)},
                          metrics={"parity_max_abs_diff": report.max_abs_diff,
                                   "parity_production_runtime": {
                                       "runtime": production[0],
                                       "max_abs_diff": production_reports[name].max_abs_diff},
                                   "gate": _gate_summary(gate_metrics),
                                   **({"int8": int8[name]} if name in int8 else {})},
                          extra={"model": name, "version": version,
                                 MODEL_FILES: {relative: file_record(relative, data)
                                               for relative, data in written.items()}})
            write_model_card(folder, params_file)  # seals its hashes into lineage.json

        published = publish(staged, out, version, size, settings, finalize)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    removed = prune(out, keep_versions)
    if removed:
        progress(f"retention (keep_versions {keep_versions}): removed versions "
                 f"{removed}")
    return published, reports


def _require_loadable(path: Path, name: str, server: ServerRuntime) -> None:
    """The production runtime's opset and IR limits, checked before running anything."""
    problems = check_versions(path, server)
    if problems:
        raise UserError(f"refusing to publish: {name} needs {', '.join(problems)}, beyond "
                        f"what {server.describe()} runs")


def _gate_summary(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if metrics is None else {VERDICT_BOOL_KEY: read_verdict(metrics)}
