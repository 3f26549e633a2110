"""What one `explain` request costs against its parts: one generator and two classifier passes.

The explain graph routes each image to the one generator its target needs (gather/scatter,
`cfxray.export.wrappers.ExplainServing`); the graph it replaced ran both generators on every
image and kept one (`torch.where`), here rebuilt as `BothGenerators` for the comparison.
All three are exported by the export code and run in onnxruntime with the same threads, in
interleaved blocks (`measure_interleaved`), on phantom X-rays with mixed targets. The
classifier is the default ResNet-18 with the stem `auto` picks at that size.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.common import Profile, measure_interleaved, rounded, xray_images
from benchmarks.models import generator, open_mask, ort_session

BATCH = 4
TARGETS = (-1, 0, 1, -1)  # auto, NORMAL, PNEUMONIA, auto: both generators in every batch


class BothGenerators(nn.Module):
    """The explain graph before routing: both generators on every image, `where` keeps one."""

    def __init__(self, classifier: nn.Module, n2p: nn.Module, p2n: nn.Module) -> None:
        super().__init__()
        self.classifier, self.n2p, self.p2n = classifier, n2p, p2n

    def forward(self, image: torch.Tensor, target_class: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        from cfxray.export.wrappers import pixels_to_unit

        x = pixels_to_unit(image)
        probabilities = torch.softmax(self.classifier(x), dim=1)
        opposite = 1 - probabilities.argmax(dim=1, keepdim=True)
        requested = target_class.to(torch.int64)
        target = torch.where((requested == 0) | (requested == 1), requested, opposite)
        to_pneumonia = (target == 1).view(-1, 1, 1, 1)
        counterfactual = torch.where(to_pneumonia, self.n2p(x), self.p2n(x)).clamp(0.0, 1.0)
        cf_probabilities = torch.softmax(self.classifier(counterfactual), dim=1)
        return (probabilities, counterfactual.squeeze(1), cf_probabilities,
                (counterfactual - x).squeeze(1), target.to(torch.int32))


def _export(module: nn.Module, name: str, example: tuple[torch.Tensor, ...], path: Path,
            stride: int) -> Path:
    import warnings

    from cfxray.contract import MODEL_SPECS
    from cfxray.export.onnx_export import export_onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_onnx(module.eval(), MODEL_SPECS[name], example, path, stride)


def run(profile: Profile, threads: int, workdir: Path) -> dict[str, Any]:
    from cfxray.export.wrappers import ClassifierServing, ExplainServing, GeneratorServing
    from cfxray.models.classifier import ClassifierConfig, build_classifier, resolve_stem

    model, size = profile.explain_model, profile.explain_size
    ngf, blocks = profile.generators[model]
    torch.manual_seed(0)
    classifier = build_classifier(ClassifierConfig(
        image_size=size, stem=resolve_stem("auto", "resnet18", size))).eval()
    n2p = open_mask(generator(ngf, blocks, size, seed=1))
    p2n = open_mask(generator(ngf, blocks, size, seed=2))
    stride = 2 ** n2p.config.n_downsampling
    side = size + 2 * stride  # off the native size, as export_onnx asks
    image = torch.randint(0, 256, (2, side, side), dtype=torch.uint8)
    target = torch.tensor([[0], [1]], dtype=torch.int32)
    started = time.perf_counter()
    files = {
        "explain": _export(ExplainServing(classifier, n2p, p2n), "explain", (image, target),
                           workdir / "explain_routed.onnx", stride),
        "generator": _export(GeneratorServing(n2p), "generator_n2p", (image,),
                             workdir / "explain_generator.onnx", stride),
        "classifier": _export(ClassifierServing(classifier), "classifier", (image,),
                              workdir / "explain_classifier.onnx", 1),
    }
    if profile.explain_before:
        files["explain_both_generators"] = _export(
            BothGenerators(classifier, n2p, p2n), "explain", (image, target),
            workdir / "explain_both.onnx", stride)
    export_s = time.perf_counter() - started
    sessions = {name: ort_session(path, threads) for name, path in files.items()}
    images = xray_images(BATCH, size)
    targets = np.array(TARGETS[:BATCH], dtype=np.int32).reshape(-1, 1)

    def parts() -> None:
        sessions["generator"].run(None, {"IMAGE": images})
        sessions["classifier"].run(None, {"IMAGE": images})
        sessions["classifier"].run(None, {"IMAGE": images})

    runners = {name: (lambda s=sessions[name]: s.run(None, {"IMAGE": images,
                                                             "TARGET_CLASS": targets}))
               for name in ("explain", "explain_both_generators") if name in sessions}
    runners["one_generator_two_classifier_passes"] = parts
    timings = measure_interleaved(runners, profile.min_repeats, profile.min_seconds)
    base = timings["one_generator_two_classifier_passes"].median_s
    rows = [{"what": name, "model": model, "size": size, "batch": BATCH,
             "ms_per_image": rounded(t.median_s / BATCH * 1e3),
             "spread_ms_per_image": [rounded(t.min_s / BATCH * 1e3),
                                     rounded(t.max_s / BATCH * 1e3)],
             "ratio_to_parts": rounded(t.median_s / base, 3), "repeats": t.repeats}
            for name, t in timings.items()]
    return {"rows": rows, "export_seconds": round(export_s, 1),
            "notes": [f"batch {BATCH} with targets {list(TARGETS[:BATCH])} (auto, NORMAL, "
                      "PNEUMONIA, auto); the parts are the generator and the classifier "
                      "exported alone, the classifier run twice"]}
