"""Static int8 quantization of the generator: speed against fp32, SSIM against fp32 output.

`cfxray.export.quantize` (the `cfxray export --int8-calibration` path) quantizes the ONNX
generator, calibrated on phantom training images; different phantoms are the check images.
Random-init weights stand in for trained ones, in two variants:
- `mask` (the served default) with its mask opened halfway, so half of every output pixel is
  generated content (a trained model's mask is closed almost everywhere, which would make
  int8 errors look smaller than they are);
- `plain`, whose output is generated content only: a stress case for int8 error, reported
  next to the target but not checked against it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import Profile, measure, rounded, xray_images
from benchmarks.models import onnx_generator, ort_session

VARIANTS = ("mask", "plain")
TARGET_VARIANT = "mask"


def run(profile: Profile, threads: int, workdir: Path) -> dict[str, Any]:
    from cfxray.export.quantize import SETTINGS, output_ssim, quantize_generator

    ngf, blocks = profile.generators[profile.quant_model]
    size, batch = profile.quant_size, profile.quant_batch
    calibration = xray_images(profile.calibration_images, size, seed=3)
    check = xray_images(max(profile.check_images, batch), size, seed=4)
    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for variant in VARIANTS:
            fp32 = onnx_generator(workdir, ngf, blocks, variant, half_open=True)
            int8 = quantize_generator(fp32, Path(tmp) / f"{variant}_int8.onnx", calibration)
            scores = output_ssim(fp32, int8, check)
            images = check[:batch]
            timings = {}
            for name, path in (("fp32", fp32), ("int8", int8)):
                session = ort_session(path, threads)
                timings[name] = measure(lambda s=session, x=images: s.run(None, {"IMAGE": x}),
                                        profile.min_repeats, profile.min_seconds)
            rows.append({
                "variant": variant, "model": profile.quant_model, "size": size, "batch": batch,
                "fp32_ms_per_image": rounded(timings["fp32"].median_s / batch * 1e3),
                "int8_ms_per_image": rounded(timings["int8"].median_s / batch * 1e3),
                "speedup": rounded(timings["fp32"].median_s / timings["int8"].median_s, 3),
                "ssim_min": rounded(float(scores.min())), "ssim_mean": rounded(float(scores.mean())),
                "fp32_mb": rounded(fp32.stat().st_size / 2**20),
                "int8_mb": rounded(int8.stat().st_size / 2**20),
                "target_case": variant == TARGET_VARIANT,
            })
    return {"rows": rows, "calibration_images": len(calibration), "check_images": len(check),
            "settings": {**SETTINGS, "format": "QDQ, Conv only, activations uint8, "
                         "weights int8"},
            "notes": ["served as `cfxray export --int8-calibration DATA_DIR` (generators only; "
                      "the explain graph stays fp32)"]}
