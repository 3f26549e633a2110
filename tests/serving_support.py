"""Builders for the serving tests: tiny random-weight models, an exported repository, images.

No training: serving must work for whatever weights it is given, and random weights make
every output different from its input, which is what parity checks need.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 32
MAX_BATCH = 4


def make_checkpoints(root: Path, size: int = SIZE, seed: int = 0) -> tuple[Path, Path]:
    """classifier.pt and a generators folder, as the trainers write them."""
    import torch

    from cfxray.checkpoint import save_atomic
    from cfxray.models.classifier import ClassifierConfig, build_classifier, classifier_state
    from cfxray.models.networks import GeneratorConfig, build_generator, generators_state

    torch.manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    classifier = build_classifier(ClassifierConfig(arch="smallcnn", image_size=size))
    save_atomic(classifier_state(classifier), root / "classifier" / "classifier.pt")
    config = GeneratorConfig(image_size=size, ngf=8, n_blocks=1)
    # Open the mask a little so counterfactuals differ visibly from their inputs.
    n2p, p2n = build_generator(config), build_generator(config)
    for g in (n2p, p2n):
        g.head[1].bias.data[1:] = 0.0
    save_atomic(generators_state(n2p, p2n, config), root / "cyclegan" / "generators.pt")
    return root / "classifier" / "classifier.pt", root / "cyclegan"


def write_params(path: Path) -> Path:
    path.write_text(
        "export:\n"
        f"  max_batch_size: {MAX_BATCH}\n"
        "  preferred_batch_sizes: [2, 4]\n"
        "  max_queue_delay_microseconds: 1000\n"
        "  instance_count: 1\n"
        "  intra_op_threads: 1\n"
        "preprocess:\n"
        "  resize: pad\n")
    return path


def xray_like(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """uint8 [n, size, size]: smooth bright blobs on a dark, noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / rng.uniform(0.01, 0.05))
        images.append(0.2 + 0.6 * blob + 0.1 * rng.random((size, size)))
    return (np.clip(np.stack(images), 0, 1) * 255).round().astype(np.uint8)
