"""CycleGAN networks: ResNet generators and PatchGAN discriminators.

Every network takes images in the library's convention (float [0, 1], [B, 1, H, W]) and maps
them to its own internal range [-1, 1] itself, so callers never renormalise.

Two generator variants share one encoder/residual/decoder body:
- `plain`: the classic CycleGAN generator; the output is synthesised from scratch (tanh). The
  published method's generator, kept for its baseline.
- `mask`: the output blends the input with generated content through a predicted mask
  (`m * content + (1 - m) * input`); the mask starts nearly closed, so training starts near
  the identity. Changes outside the mask are impossible by construction, which is what keeps
  counterfactuals local.

Upsampling is a transposed convolution (`transpose`) or nearest-neighbour resize followed by a
convolution (`resize`), which avoids the checkerboard artefacts transposed convolutions leave
and that a classifier gradient readily amplifies into an adversarial pattern.

Everything is static-shape tensor arithmetic (no data-dependent control flow) so the
generators export to ONNX for serving.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from cfxray.conventions import GENERATORS_FILE
from cfxray.errors import UserError
from cfxray.models.parallel import unwrap

VARIANTS = ("plain", "mask")
UPSAMPLING = ("transpose", "resize")
MASK_INIT_BIAS = -3.0  # sigmoid(-3) ~ 0.05: the mask starts nearly closed (close to identity)
HEAD_INIT_SCALE = 0.1  # the mask head starts small, so training starts near the identity


@dataclass(frozen=True)
class GeneratorConfig:
    image_size: int = 64
    channels: int = 1
    ngf: int = 16
    n_blocks: int = 6
    n_downsampling: int = 2
    variant: str = "mask"
    upsampling: str = "resize"

    def validate(self) -> None:
        if self.variant not in VARIANTS:
            raise UserError(f"unknown generator variant {self.variant!r}; choose one of {VARIANTS}")
        if self.upsampling not in UPSAMPLING:
            raise UserError(f"unknown upsampling {self.upsampling!r}; choose one of {UPSAMPLING}")
        if self.n_blocks < 1 or self.ngf < 1 or self.n_downsampling < 0:
            raise UserError("n_blocks and ngf must be positive, n_downsampling >= 0")
        if self.image_size % (2 ** self.n_downsampling):
            raise UserError(f"image size {self.image_size} is not divisible by "
                            f"2**n_downsampling = {2 ** self.n_downsampling}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GeneratorConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise UserError(f"unknown generator config keys {sorted(unknown)}")
        config = cls(**values)
        config.validate()
        return config


class ResnetBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _upsample(cin: int, cout: int, mode: str) -> list[nn.Module]:
    if mode == "transpose":
        return [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)]
    return [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
            nn.Conv2d(cin, cout, 3)]


class ResnetGenerator(nn.Module):
    """[0, 1] image -> [0, 1] image of the same size (see the module docstring for variants)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        c, ngf = config.channels, config.ngf
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(c, ngf, 7),
                                   nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        dim = ngf
        for _ in range(config.n_downsampling):
            layers += [nn.Conv2d(dim, dim * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(dim * 2),
                       nn.ReLU(True)]
            dim *= 2
        layers += [ResnetBlock(dim) for _ in range(config.n_blocks)]
        for _ in range(config.n_downsampling):
            layers += [*_upsample(dim, dim // 2, config.upsampling), nn.InstanceNorm2d(dim // 2),
                       nn.ReLU(True)]
            dim //= 2
        self.body = nn.Sequential(*layers)
        head_out = 2 * c if config.variant == "mask" else c
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(dim, head_out, 7))
        self._init_head()

    def _init_head(self) -> None:
        conv: nn.Conv2d = self.head[1]
        if self.config.variant == "mask":
            c = self.config.channels
            with torch.no_grad():
                conv.weight[c:].mul_(HEAD_INIT_SCALE)
                conv.bias[c:].fill_(MASK_INIT_BIAS)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images * 2 - 1
        out = self.head(self.body(x))
        variant = self.config.variant
        if variant == "plain":
            y = torch.tanh(out)
        else:
            c = self.config.channels
            content, mask = torch.tanh(out[:, :c]), torch.sigmoid(out[:, c:])
            y = mask * content + (1 - mask) * x
        return (y + 1) / 2

    @torch.no_grad()
    def change_mask(self, images: torch.Tensor) -> torch.Tensor | None:
        """The predicted blending mask in [0, 1] (mask variant only): where the model edits."""
        if self.config.variant != "mask":
            return None
        out = self.head(self.body(images * 2 - 1))
        return torch.sigmoid(out[:, self.config.channels:])


class PatchDiscriminator(nn.Module):
    """PatchGAN: a grid of real/fake scores, each seeing one receptive field (70x70 at 3 layers).

    Fewer layers give smaller patches, which suits small images: at 64 px a 70 px patch would
    see the whole image.
    """

    def __init__(self, channels: int = 1, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if n_layers < 1:
            raise UserError("the discriminator needs at least one layer")
        layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1),
                       nn.InstanceNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1),
                   nn.InstanceNorm2d(ndf * mult), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * 2 - 1)


def build_generator(config: GeneratorConfig) -> ResnetGenerator:
    return ResnetGenerator(config)


def build_discriminator(channels: int = 1, ndf: int = 64, n_layers: int = 3) -> PatchDiscriminator:
    return PatchDiscriminator(channels, ndf, n_layers)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """CycleGAN's N(0, 0.02) initialisation for convolutions, leaving generator heads as set."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if isinstance(module, ResnetGenerator):
        module._init_head()


class Generators(NamedTuple):
    n2p: ResnetGenerator
    p2n: ResnetGenerator
    config: GeneratorConfig


def generators_state(n2p: nn.Module, p2n: nn.Module, config: GeneratorConfig) -> dict[str, Any]:
    """The `generators.pt` contract: config (with image_size) and both state dicts."""
    return {"config": asdict(config), "n2p": unwrap(n2p).state_dict(),
            "p2n": unwrap(p2n).state_dict()}


def load_generators(path: str | Path) -> Generators:
    """Both generators, frozen and in eval mode, from `generators.pt` or the folder holding it."""
    from cfxray.checkpoint import load_checkpoint, load_state_checked

    path = Path(path)
    if path.is_dir():
        path = path / GENERATORS_FILE
    ckpt = load_checkpoint(path)
    if not {"config", "n2p", "p2n"} <= set(ckpt):
        raise UserError(f"{path} is not a cfxray generators file (needs config, n2p, p2n)")
    config = GeneratorConfig.from_dict(ckpt["config"])
    models = []
    for direction in ("n2p", "p2n"):
        model = ResnetGenerator(config)
        load_state_checked(model, ckpt[direction], path)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        models.append(model)
    return Generators(models[0], models[1], config)
