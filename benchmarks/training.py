"""Training speed and memory: CycleGAN and classifier steps, and their input pipelines alone.

Each step is the trainers' own code (`CycleGANStep`, the classifier's augment + forward +
AdamW step) on seeded random-init networks, so the numbers hold for any weights. The input
pipeline is timed alone as the trainers run it (`cfxray.train.batches.DeviceBatches`): the
on-device index gather and float conversion, for both domains of the CycleGAN, and for the
classifier followed by `augment`. Loader/step above 1 means the step waits for the loader
that much less than it computes; at least 3 leaves the step compute-bound.

Peak memory is the process's peak RSS (VmHWM, reset before each configuration) and, on a
GPU, torch's peak allocated memory.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch

from benchmarks.common import (
    Profile,
    measure,
    peak_rss_mb,
    reset_peak_rss,
    rounded,
    rss_mb,
    xray_images,
)

DISTINCT_IMAGES = 8  # rendered phantoms, tiled to fill the in-memory training set


def training_images(count: int, size: int) -> torch.Tensor:
    """uint8 [count, size, size]: a few phantom X-rays repeated (loader speed ignores content)."""
    distinct = xray_images(min(count, DISTINCT_IMAGES), size, seed=2)
    reps = -(-count // len(distinct))
    return torch.from_numpy(np.concatenate([distinct] * reps)[:count].copy())


# ----- CycleGAN --------------------------------------------------------------------------------
def cyclegan_step(cfg: dict[str, Any], device: torch.device,
                  autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
                  channels_last: bool = False) -> tuple[Callable[[], object], Callable[[], object]]:
    """(one training step, one input-pipeline step) for a CycleGAN at `cfg`."""
    from cfxray.models.classifier import ClassifierConfig, build_classifier
    from cfxray.models.cyclegan import (
        CycleGANStep,
        DiscriminatorPair,
        GeneratorPair,
        ImagePool,
        LossConfig,
    )
    from cfxray.models.networks import (
        GeneratorConfig,
        build_discriminator,
        build_generator,
        init_weights,
    )
    from cfxray.train.batches import DeviceBatches
    from cfxray.train.distributed import DistContext

    torch.manual_seed(0)
    size, batch = cfg["size"], cfg["cyclegan_batch"]
    gcfg = GeneratorConfig(image_size=size, ngf=cfg["ngf"], n_blocks=cfg["n_blocks"])
    gens = GeneratorPair(build_generator(gcfg), build_generator(gcfg))
    discs = DiscriminatorPair(build_discriminator(), build_discriminator())
    for net in (gens, discs):
        init_weights(net)
    classifier = build_classifier(ClassifierConfig(image_size=size,
                                                   stem=cfg["classifier_stem"])).eval()
    for p in classifier.parameters():
        p.requires_grad_(False)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    gens, discs, classifier = (m.to(device, memory_format=memory_format)
                               for m in (gens, discs, classifier))
    opt_g = torch.optim.Adam(gens.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discs.parameters(), lr=2e-4, betas=(0.5, 0.999))
    step = CycleGANStep(gens, discs, classifier, LossConfig(), opt_g, opt_d, ImagePool(50),
                        ImagePool(50), autocast=autocast)
    images = training_images(max(4 * batch, DISTINCT_IMAGES), size)
    steps = len(images) // batch
    domains = [DeviceBatches(images, torch.zeros(len(images), dtype=torch.long), steps, batch,
                             DistContext(), device, seed=lambda epoch, d=d: 2 * epoch + d)
               for d in range(2)]
    counter = iter(range(10**9))

    def load() -> list[torch.Tensor]:
        """The trainer's batches of both domains: index gather, unit floats."""
        i = next(counter)
        out = []
        for batches in domains:
            if i % steps == 0:
                batches.set_epoch(i // steps)
            out.append(batches[i % steps][0].contiguous(memory_format=memory_format))
        return out

    fixed = load()

    def train() -> object:
        return step(*fixed)

    return _synced(train, device), _synced(load, device)


# ----- classifier ------------------------------------------------------------------------------
def classifier_step(cfg: dict[str, Any], device: torch.device,
                    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
                    channels_last: bool = False) -> tuple[Callable[[], object], Callable[[], object]]:
    from cfxray.models.classifier import ClassifierConfig, build_classifier
    from cfxray.train.augment import AugmentConfig, augment
    from cfxray.train.batches import DeviceBatches
    from cfxray.train.distributed import DistContext

    torch.manual_seed(0)
    size, batch = cfg["size"], cfg["classifier_batch"]
    images = training_images(4 * batch, size)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_classifier(ClassifierConfig(image_size=size, stem=cfg["classifier_stem"])).to(
        device, memory_format=memory_format)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    criterion = torch.nn.CrossEntropyLoss()
    aug_gen = torch.Generator().manual_seed(0)
    steps = len(images) // batch
    batches = DeviceBatches(images, torch.arange(len(images)) % 2, steps, batch, DistContext(),
                            device, seed=lambda epoch: epoch)
    counter = iter(range(10**9))

    def load() -> tuple[torch.Tensor, torch.Tensor]:
        """The trainer's batch and augmentation: everything before the model."""
        i = next(counter)
        if i % steps == 0:
            batches.set_epoch(i // steps)
        x, labels = batches[i % steps]
        x = augment(x, AugmentConfig(), aug_gen)
        return x.contiguous(memory_format=memory_format), labels

    fixed = load()

    def train() -> object:
        x, labels = fixed
        with autocast():
            logits = model(x)
        loss = criterion(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return _synced(train, device), _synced(load, device)


def _synced(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    if device.type != "cuda":
        return fn

    def run() -> object:
        out = fn()
        torch.cuda.synchronize(device)
        return out
    return run


BUILDERS = {"cyclegan": cyclegan_step, "classifier": classifier_step}
BATCH_KEYS = {"cyclegan": "cyclegan_batch", "classifier": "classifier_batch"}


def measure_training(kind: str, config_name: str, cfg: dict[str, Any], profile: Profile,
                     device: torch.device, precision: str = "fp32",
                     channels_last: bool = False) -> dict[str, Any]:
    """Samples/s of one trainer's step and of its input pipeline, with peak memory."""
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext
    if precision == "bf16":
        def autocast() -> AbstractContextManager[Any]:
            return torch.autocast(device.type, dtype=torch.bfloat16)
    reset_ok = reset_peak_rss()
    base_rss = rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train, load = BUILDERS[kind](cfg, device, autocast, channels_last)
    step = measure(train, profile.train_steps, 0.0)
    loader = measure(load, max(profile.min_repeats, 10), min(profile.min_seconds, 1.0))
    batch = cfg[BATCH_KEYS[kind]]
    row: dict[str, Any] = {
        "trainer": kind, "config": config_name, "size": cfg["size"], "batch": batch,
        "precision": precision, "channels_last": channels_last, "device": device.type,
        "step_s": rounded(step.median_s), "samples_per_s": rounded(batch / step.median_s),
        "loader_images_per_s": rounded(batch / loader.median_s),
        "loader_to_step": rounded(step.median_s / loader.median_s, 3),
        "peak_rss_mb": rounded(peak_rss_mb()) if reset_ok else None,
        "rss_before_mb": rounded(base_rss), "steps_timed": step.repeats,
    }
    if kind == "cyclegan":
        row.update(ngf=cfg["ngf"], n_blocks=cfg["n_blocks"])
    if device.type == "cuda":
        row["gpu_peak_allocated_mb"] = rounded(torch.cuda.max_memory_allocated(device) / 2**20)
    return row


def run(profile: Profile) -> dict[str, Any]:
    from tqdm import tqdm

    rows = []
    cpu = torch.device("cpu")
    points = [(kind, name) for name in profile.training for kind in BUILDERS]
    for kind, name in tqdm(points, desc="training", leave=False):
        rows.append(measure_training(kind, name, profile.training[name], profile, cpu))
    return {"rows": rows,
            "notes": ["samples/s counts images per domain for the CycleGAN (each step "
                      "translates a batch of each class) and images for the classifier; "
                      "loader_to_step = step time / input-pipeline time for the same batch."]}
