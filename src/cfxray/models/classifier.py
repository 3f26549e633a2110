"""The pneumonia classifier and the preprocessing that is the only way images enter it.

The model takes images in the library's convention (float [0, 1], [B, 1, H, W]) and returns
logits; its own resize and normalisation live inside `forward`, and its configuration is
saved with the weights. So training, the CycleGAN's counterfactual loss, evaluation and the
exported ONNX model all see identical preprocessing: the published implementation this
project replaces fed its classifier differently normalised images in different places.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import nn
from torchvision import models as tvm

from cfxray.errors import UserError
from cfxray.models.parallel import unwrap

# resnet18: the explained classifier; smallcnn: the independent oracle, deliberately another
# architecture so that a counterfactual fooling only the explained model shows.
ARCHITECTURES = ("resnet18", "smallcnn")
# standard: the architecture's own first layer (for ResNet-18 torchvision's 7x7 stride-2
# convolution, then max-pooling: a quarter of the resolution from the first layer on).
# small (ResNet-18 only): a 3x3 stride-1 convolution, so the residual stages see twice the
# resolution at four times the compute: on small images the standard stem averages faint
# opacity away (docs/CLASSIFIER.md).
STEMS = ("standard", "small")
SMALL_STEM_BELOW = 128  # `auto` picks the small stem for ResNet-18 inputs under this size


@dataclass(frozen=True)
class ClassifierConfig:
    arch: str = "resnet18"
    image_size: int = 64
    in_channels: int = 1
    mean: float = 0.5
    std: float = 0.25
    num_classes: int = 2
    stem: str = "standard"


def resolve_stem(stem: str, arch: str, image_size: int) -> str:
    """The stem a new model gets: `auto` is the small stem for a ResNet-18 on small images."""
    if stem == "auto":
        return "small" if arch == "resnet18" and image_size < SMALL_STEM_BELOW else "standard"
    if stem not in STEMS:
        raise UserError(f"unknown classifier stem {stem!r}; choose auto or one of {STEMS}")
    if stem == "small" and arch != "resnet18":
        raise UserError(f"stem 'small' is for resnet18 only, not {arch}")
    return stem


def _backbone(arch: str, num_classes: int, stem: str = "standard") -> nn.Module:
    """A torchvision network (random init, never downloaded) with a 1-channel stem."""
    if stem not in STEMS or (stem == "small" and arch != "resnet18"):
        raise UserError(f"classifier stem {stem!r} does not fit {arch}")
    if arch == "resnet18":
        net = tvm.resnet18(weights=None, num_classes=num_classes)
        net.conv1 = (nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
                     if stem == "small" else
                     nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False))
        return net
    if arch == "smallcnn":
        # A deliberately different, small architecture: the independent "oracle" classifier.
        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True), nn.MaxPool2d(2))
        return nn.Sequential(block(1, 16), block(16, 32), block(32, 64), block(64, 64),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))
    raise UserError(f"unknown classifier architecture {arch!r}; choose one of {ARCHITECTURES}")


class XrayClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.net = _backbone(config.arch, config.num_classes, config.stem)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise ValueError(f"expected [B, {self.config.in_channels}, H, W] images, "
                             f"got shape {tuple(images.shape)}")
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            images = nnf.interpolate(images, size=(size, size), mode="bilinear",
                                     align_corners=False, antialias=False)
        return (images - self.config.mean) / self.config.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for [0, 1] images; softmax is applied by callers that need probabilities."""
        return self.net(self.preprocess(images))

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(images), dim=1)


def build_classifier(config: ClassifierConfig) -> XrayClassifier:
    return XrayClassifier(config)


def classifier_state(model: XrayClassifier, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    net = unwrap(model)
    return {"config": asdict(net.config), "state_dict": net.state_dict(), **(extra or {})}


def load_classifier(path: str | Path, expect_size: int | None = None) -> XrayClassifier:
    """Load a frozen classifier in eval mode; refuse one made for other images."""
    from cfxray.checkpoint import load_checkpoint, load_state_checked

    ckpt = load_checkpoint(path)
    if "config" not in ckpt or "state_dict" not in ckpt:
        raise UserError(f"{path} is not a cfxray classifier checkpoint")
    try:
        config = ClassifierConfig(**ckpt["config"])
    except TypeError as exc:
        raise UserError(f"{path}: the stored classifier config is not one cfxray writes "
                        f"({exc})") from exc
    if config.in_channels != 1:
        raise UserError(f"classifier {path} expects {config.in_channels}-channel images; "
                        "cfxray works on 1-channel radiographs")
    if expect_size is not None and config.image_size != expect_size:
        raise UserError(f"classifier {path} was trained on {config.image_size}px images but the "
                        f"data is {expect_size}px; retrain it or preprocess the data to "
                        f"{config.image_size}px")
    model = XrayClassifier(config)
    load_state_checked(model, ckpt["state_dict"], path)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_weights_file(model: XrayClassifier, path: str | Path) -> list[str]:
    """Start from a local weights file (never a download): a cfxray classifier checkpoint or a
    torchvision state dict of the same architecture. A 3-channel stem is summed to one
    channel; tensors whose shape does not fit (an ImageNet head) are left at random init and
    returned by name.
    """
    from cfxray.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    source = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(source, dict) or not all(torch.is_tensor(v) for v in source.values()):
        raise UserError(f"{path} holds no state dict of tensors")
    source = {k.removeprefix("net."): v for k, v in source.items()}
    target = model.net.state_dict()
    matched = set(source) & set(target)
    if not matched:
        raise UserError(f"{path} has no weights for a {model.config.arch} network")
    skipped: list[str] = sorted(set(target) - matched)
    for name in sorted(matched):
        weights = source[name]
        if weights.ndim == 4 and weights.shape[1] == 3 and target[name].shape[1] == 1:
            weights = weights.sum(dim=1, keepdim=True)  # RGB stem -> grayscale stem
        if weights.shape == target[name].shape:
            target[name] = weights
        else:
            skipped.append(name)
    model.net.load_state_dict(target)
    return skipped
