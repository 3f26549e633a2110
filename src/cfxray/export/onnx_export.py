"""Export a serving wrapper to one self-contained ONNX file and prove it computes the same.

The exporter is torch's dynamo exporter (`torch.onnx.export(dynamo=True)`, which needs
onnxscript): it writes the weights into the one `.onnx` file (no external-data side files a
model repository could lose), names the batch, height and width axes, and keeps them
dynamic. Height and width stay multiples of the generators' stride, so a model exported for
64 px also runs at 128 px; Triton's config still pins the size the models were trained for.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cfxray.contract import IMAGE, ModelSpec
from cfxray.errors import UserError
from cfxray.export.settings import ExportSettings

# A model passes parity when every output of onnxruntime is within this of PyTorch's, on
# every sample image (params.yaml export.parity_atol).
PARITY_ATOL = ExportSettings.parity_atol
MAX_BATCH_DIM = 4096
MIN_SIDE = 8


@dataclass(frozen=True)
class ParityReport:
    model: str
    max_abs_diff: dict[str, float]  # per output, over every sample batch
    atol: float
    labels_agree: bool  # argmax of every probability output identical

    @property
    def passed(self) -> bool:
        return self.labels_agree and all(d <= self.atol for d in self.max_abs_diff.values())

    def describe(self) -> str:
        diffs = ", ".join(f"{k}={v:.2e}" for k, v in self.max_abs_diff.items())
        verdict = "ok" if self.passed else "FAILED"
        return f"{self.model}: max |onnxruntime - torch| {diffs} (bound {self.atol:g}) {verdict}"


def export_onnx(module: nn.Module, spec: ModelSpec, examples: tuple[torch.Tensor, ...],
                path: str | Path, stride: int = 1) -> Path:
    """Write `module` as one ONNX file with a dynamic batch and dynamic H/W (multiples of stride).

    The example image should not be at the classifier's native size: the classifier skips its
    resize at that size, and only an example that takes the resize puts it in the graph (where
    it is an exact identity at the native size).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH_DIM)
    lo, hi = math.ceil(MIN_SIDE / stride), MAX_BATCH_DIM // stride
    height = stride * torch.export.Dim("height", min=lo, max=hi)
    width = stride * torch.export.Dim("width", min=lo, max=hi)
    arg_names = list(_forward_arg_names(module))
    dynamic: dict[str, dict[int, object]] = {}
    for arg, tensor_spec in zip(arg_names, spec.inputs, strict=True):
        dynamic[arg] = {0: batch, 1: height, 2: width} if tensor_spec.name == IMAGE else {0: batch}
    module.eval()
    with warnings.catch_warnings():
        # The exporter warns that inputs sharing the batch axis share its name: intended.
        warnings.filterwarnings("ignore", message=".*axis name.*")
        program = torch.onnx.export(
            module, examples, dynamo=True, external_data=False, optimize=True, verbose=False,
            input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
            dynamic_shapes=dynamic)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(path), external_data=False)
    check_onnx(path)
    return path


def _forward_arg_names(module: nn.Module) -> list[str]:
    import inspect

    return [p for p in inspect.signature(module.forward).parameters if p != "self"]


def check_onnx(path: str | Path) -> None:
    """onnx.checker with shape inference; a malformed file never reaches a repository."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise UserError(f"exported model {path} fails onnx.checker: {exc}") from exc


def onnx_session(path: str | Path, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@torch.no_grad()
def check_parity(path: str | Path, module: nn.Module, spec: ModelSpec,
                 batches: list[tuple[torch.Tensor, ...]], atol: float = PARITY_ATOL) -> ParityReport:
    """Run onnxruntime and PyTorch on the same inputs; report the worst difference per output."""
    session = onnx_session(path)
    worst = {t.name: 0.0 for t in spec.outputs}
    labels_agree = True
    module.eval()
    for inputs in batches:
        feeds = {t.name: x.numpy() for t, x in zip(spec.inputs, inputs, strict=True)}
        got = session.run([t.name for t in spec.outputs], feeds)
        want = module(*inputs)
        want = want if isinstance(want, tuple) else (want,)
        for t, g, w in zip(spec.outputs, got, want, strict=True):
            w = w.numpy()
            if g.shape != w.shape or g.dtype != w.dtype:
                raise UserError(f"{spec.name}: ONNX output {t.name} is {g.dtype}{list(g.shape)}, "
                                f"PyTorch gives {w.dtype}{list(w.shape)}")
            diff = float(np.abs(g.astype(np.float64) - w.astype(np.float64)).max(initial=0.0))
            worst[t.name] = max(worst[t.name], diff)
            if "PROBABILITIES" in t.name:
                labels_agree &= bool((g.argmax(1) == w.argmax(1)).all())
    return ParityReport(spec.name, worst, atol, labels_agree)


def sample_images(size: int, count: int = 6, seed: int = 0) -> torch.Tensor:
    """UINT8 [count, size, size]: full-range gradients, noise and blobs.

    Parity has to hold over the whole input range (0 and 255 both occur), not only on
    X-ray-like images. Constant images are left out on purpose: instance normalisation of a
    flat feature map divides rounding noise by sqrt(eps), so two correct implementations
    legitimately differ there by ~1e-2.
    """
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = [(xx + yy) / 2, 1 - xx * yy]
    while len(images) < count:
        if len(images) % 2:
            images.append(torch.rand(size, size, generator=gen))
        else:
            cy, cx, r = torch.rand(3, generator=gen).tolist()
            blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.02 + 0.1 * r))
            images.append(0.2 * xx + 0.7 * blob * torch.rand(1, generator=gen))
    return (torch.stack(images[:count]).clamp(0, 1) * 255).round().to(torch.uint8)
