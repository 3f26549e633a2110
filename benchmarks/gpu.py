"""GPU figures, only where CUDA is available: training precisions and onnxruntime's CUDA provider.

Training: each trainer at both configurations in fp32, bf16 autocast, and bf16 with
channels_last (the layout tensor cores prefer), with torch's peak allocated memory.
Inference: the generator in PyTorch (fp32, bf16) and onnxruntime's CUDA provider.
On a machine without CUDA the area returns a note and no numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.common import Profile, measure, rounded, xray_images
from benchmarks.models import (
    flops_per_image,
    generator,
    onnx_generator,
    ort_session,
    serving_module,
)
from benchmarks.training import BUILDERS, measure_training

TRAINING_MODES = (("fp32", False), ("bf16", False), ("bf16", True))


def run(profile: Profile, workdir: Path) -> dict[str, Any]:
    if not torch.cuda.is_available():
        return {"skipped": True, "note": "no CUDA device on this machine: GPU figures skipped"}
    device = torch.device("cuda")
    training = [measure_training(kind, name, profile.training[name], profile, device,
                                 precision, channels_last)
                for name in profile.training for kind in BUILDERS
                for precision, channels_last in TRAINING_MODES]
    return {"skipped": False, "device": torch.cuda.get_device_name(0), "training": training,
            "inference": _inference(profile, device, workdir)}


def _inference(profile: Profile, device: torch.device, workdir: Path) -> dict[str, Any]:
    import onnxruntime as ort

    has_cuda_ep = "CUDAExecutionProvider" in ort.get_available_providers()
    rows = []

    def timed(fn: Any) -> float:
        def synced() -> None:
            fn()
            torch.cuda.synchronize()
        return measure(synced, profile.min_repeats, profile.min_seconds, warmup=2).median_s

    for name, (ngf, blocks) in profile.generators.items():
        for size in profile.sizes:
            model = generator(ngf, blocks, size)
            flops = flops_per_image(ngf, blocks, size)
            module = serving_module(model).to(device)
            session = None
            if has_cuda_ep:
                path = onnx_generator(workdir, ngf, blocks)
                session = ort_session(path, 1, providers=("CUDAExecutionProvider",
                                                          "CPUExecutionProvider"))
            for batch in profile.batches:
                images = xray_images(batch, size)
                x = torch.from_numpy(images).to(device)

                def eager(m: Any = module, x: Any = x) -> Any:
                    with torch.inference_mode():
                        return m(x)

                def bf16(m: Any = module, x: Any = x) -> Any:
                    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16):
                        return m(x)

                runners = {"torch_fp32": eager, "torch_bf16_autocast": bf16}
                if session is not None:
                    runners["onnxruntime_cuda"] = \
                        lambda s=session, im=images: s.run(None, {"IMAGE": im})
                for backend, fn in runners.items():
                    seconds = timed(fn)
                    rows.append({"model": name, "size": size, "batch": batch,
                                 "backend": backend,
                                 "images_per_s": rounded(batch / seconds),
                                 "ms_per_image": rounded(seconds / batch * 1e3),
                                 "gflops": rounded(flops * batch / seconds / 1e9)})
    notes = [] if has_cuda_ep else ["onnxruntime has no CUDAExecutionProvider here "
                                    "(install onnxruntime-gpu)"]
    return {"rows": rows, "notes": notes}
