"""Radiograph augmentation: per-image blur and noise, and a stream that settings do not shift."""

from __future__ import annotations

import pytest
import torch

from cfxray.train.loop_utils import AugmentConfig, augment, gaussian_blur, mixup

torch.set_num_threads(1)

STILL = AugmentConfig(rotate_deg=0, translate=0, scale=0, brightness=0, contrast=0)


def test_gaussian_blur_gives_each_image_its_own_sigma():
    impulse = torch.zeros(3, 1, 21, 21)
    impulse[:, :, 10, 10] = 1.0
    out = gaussian_blur(impulse, torch.tensor([0.0, 1.0, 2.0]))
    assert torch.allclose(out[0], impulse[0], atol=1e-6)  # sigma 0: unchanged
    assert out.sum(dim=(1, 2, 3)) == pytest.approx([1.0, 1.0, 1.0], abs=1e-4)  # mass kept
    # Peak of a sampled 2-D Gaussian: 1 / (sum_k exp(-k^2 / 2 s^2))^2.
    for i, s in ((1, 1.0), (2, 2.0)):
        k = torch.arange(-6.0, 7.0)
        expected = 1 / torch.exp(-0.5 * (k / s) ** 2).sum() ** 2
        assert float(out[i, 0, 10, 10]) == pytest.approx(float(expected), rel=1e-4)


def test_blur_and_noise_are_off_by_default_and_change_images_when_on():
    images = torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    plain = augment(images, STILL, torch.Generator().manual_seed(0))
    assert torch.allclose(plain, images, atol=1e-5)
    blurred = augment(images, AugmentConfig(**{**STILL.__dict__, "blur": 1.5}),
                      torch.Generator().manual_seed(0))
    noisy = augment(images, AugmentConfig(**{**STILL.__dict__, "noise": 0.1}),
                    torch.Generator().manual_seed(0))
    # Blur lowers the pixel-to-pixel variation; noise raises it.
    def roughness(t: torch.Tensor) -> float:
        return float((t[..., 1:] - t[..., :-1]).abs().mean())
    assert roughness(blurred) < roughness(images) < roughness(noisy)


def test_turning_blur_on_does_not_shift_the_random_stream():
    images = torch.rand(4, 1, 16, 16)
    gens = [torch.Generator().manual_seed(3) for _ in range(2)]
    augment(images, AugmentConfig(), gens[0])
    augment(images, AugmentConfig(blur=1.0, noise=0.05), gens[1])
    assert torch.equal(gens[0].get_state(), gens[1].get_state())


def test_mixup_blends_images_and_labels_by_the_same_weight():
    images = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    mixed, targets = mixup(images, labels, 1.0, torch.Generator().manual_seed(0))
    onehot = torch.nn.functional.one_hot(labels, 2).float()
    assert torch.allclose(targets.sum(dim=1), torch.ones(8))
    blended = 0
    for i in range(8):
        # Some partner j and one weight w in [0, 0.5] explain both the image and its label.
        fits = []
        for j in range(8):
            step = (images[j] - images[i]).flatten()
            if j == i or float(step.norm()) == 0:
                continue
            w = float((mixed[i] - images[i]).flatten() @ step / (step @ step))
            if (torch.allclose(mixed[i], (1 - w) * images[i] + w * images[j], atol=1e-5)
                    and torch.allclose(targets[i], (1 - w) * onehot[i] + w * onehot[j],
                                       atol=1e-5)):
                fits.append(w)
        assert fits and all(-1e-6 <= w <= 0.5 for w in fits)
        blended += not torch.allclose(mixed[i], images[i])
    assert blended >= 6  # probability 1: (nearly) every image is blended


def test_mixup_off_returns_the_batch_and_draws_the_same_numbers():
    images, labels = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 1, 0])
    gens = [torch.Generator().manual_seed(5) for _ in range(2)]
    same, same_labels = mixup(images, labels, 0.0, gens[0])
    assert same is images and same_labels is labels
    mixup(images, labels, 0.7, gens[1])
    assert torch.equal(gens[0].get_state(), gens[1].get_state())
