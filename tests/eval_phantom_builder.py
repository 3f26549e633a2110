"""Tiny phantom-like data, classifiers and generators for the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import torch

from cfxray.checkpoint import save_atomic
from cfxray.data.tensors import SplitData
from cfxray.models.classifier import ClassifierConfig, build_classifier, classifier_state
from cfxray.models.networks import GeneratorConfig, build_generator, generators_state, init_weights

SIZE = 32


def lung_fields(size: int = SIZE) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size),
                            indexing="ij")
    return (((xx.abs() - 0.45) / 0.3) ** 2 + (yy / 0.65) ** 2) < 1


def phantom_split(n_per_class: int, seed: int) -> SplitData:
    """Two dark lung fields; PNEUMONIA adds a bright blob inside one (with mask and twin)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE),
                            indexing="ij")
    lungs = lung_fields()
    n = 2 * n_per_class
    labels = torch.tensor([0] * n_per_class + [1] * n_per_class)
    base = 0.55 + 0.1 * yy - 0.25 * lungs + 0.03 * torch.randn(n, SIZE, SIZE, generator=g)
    lesion = torch.zeros(n, SIZE, SIZE)
    for i in range(n_per_class, n):
        cx = 0.45 * (1 if torch.rand(1, generator=g) < 0.5 else -1)
        cy = (torch.rand(1, generator=g).item() - 0.5) * 0.6
        lesion[i] = 0.45 * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.03) * lungs
    to_u8 = lambda t: (t.clamp(0, 1) * 255).round().to(torch.uint8)  # noqa: E731
    return SplitData(
        images=to_u8(base + lesion), labels=labels,
        files=[f"test/{'PNEUMONIA' if y else 'NORMAL'}/{i}.png" for i, y in enumerate(labels)],
        patient_ids=[f"p{seed}_{i}" for i in range(n)],
        lesion_masks=lesion > 0.05, lung_masks=lungs.expand(n, -1, -1).clone(),
        twins=torch.where(labels[:, None, None].bool(), to_u8(base), torch.zeros_like(to_u8(base))),
        has_twin=labels.bool())


def trained_classifier(data: SplitData, seed: int, path: Path) -> Path:
    """A small CNN trained for a few steps: enough to separate blobs from empty lungs."""
    torch.manual_seed(seed)
    model = build_classifier(ClassifierConfig(arch="smallcnn", image_size=SIZE))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = data.as_float(), data.labels
    for _ in range(40):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    model.eval()
    save_atomic(classifier_state(model), path)
    return path


def save_generators(kind: str, out: Path) -> Path:
    """Deliberately bad generators: `identity` (a mask generator whose mask is shut, so it
    returns its input) or `noise` (an untrained plain generator with large random weights)."""
    torch.manual_seed(0)
    variant = {"identity": "mask", "noise": "plain"}[kind]
    config = GeneratorConfig(image_size=SIZE, ngf=4, n_blocks=1, n_downsampling=1,
                             variant=variant)
    n2p, p2n = build_generator(config), build_generator(config)
    for g in (n2p, p2n):
        init_weights(g, std=0.5)
        if kind == "identity":
            with torch.no_grad():
                g.head[1].weight.zero_()
                g.head[1].bias.copy_(torch.tensor([0.0, -30.0]))  # content 0, mask closed
    out.mkdir(parents=True, exist_ok=True)
    save_atomic(generators_state(n2p, p2n, config), out / "generators.pt")
    return out
