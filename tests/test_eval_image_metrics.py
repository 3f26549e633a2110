"""Per-image counterfactual metrics against values worked out by hand on tiny tensors."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from cfxray.evaluation import metrics as m


def image(values):
    return torch.tensor(values, dtype=torch.float32).view(1, 1, *np.shape(values))


ZEROS = image([[0.0, 0.0], [0.0, 0.0]])
MASK = torch.tensor([[True, False], [False, False]]).view(1, 2, 2)


def test_identity_counterfactual_gives_validity_0_ssim_1_l1_0():
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    probs_of_original = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.6, 0.4]])  # all NORMAL
    # an identity "generator" leaves the image, so the classifier's probabilities, unchanged
    assert m.validity(probs_of_original, target=1).float().mean() == 0
    assert torch.allclose(m.ssim(x, x), torch.ones(3))
    assert torch.equal(m.l1(x, x), torch.zeros(3))
    assert torch.equal(m.sparsity(x, x), torch.zeros(3))
    assert torch.isinf(m.psnr(x, x)).all()


def test_validity_is_argmax_equals_target():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    assert m.validity(probs, 1).tolist() == [False, True]
    assert m.validity(probs, torch.tensor([0, 0])).tolist() == [True, False]


def test_l1_psnr_sparsity_by_hand():
    cf = image([[1.0, 0.0], [0.0, 0.0]])
    assert m.l1(ZEROS, cf).item() == pytest.approx(0.25)
    assert m.psnr(ZEROS, cf).item() == pytest.approx(10 * math.log10(1 / 0.25))
    x = torch.zeros(1, 1, 4, 4)
    cf = x.clone()
    cf[0, 0, 0, :3] = 0.2  # three pixels changed beyond 0.05
    cf[0, 0, 3, 3] = 0.01  # one below it
    assert m.sparsity(x, cf, threshold=0.05).item() == pytest.approx(3 / 16)


def test_ssim_of_constant_images_by_hand_and_matches_scikit_image():
    a, b = torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), 0.6)
    c1 = (0.01 * 1.0) ** 2  # variances and covariance are zero: only the luminance term is left
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    assert m.ssim(a, b).item() == pytest.approx(expected, rel=1e-4)  # float32 variances
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 24, 24, generator=g)
    y = (x + 0.1 * torch.randn(1, 1, 24, 24, generator=g)).clamp(0, 1)
    reference = structural_similarity(x[0, 0].numpy(), y[0, 0].numpy(), data_range=1.0,
                                      gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
    assert m.ssim(x, y).item() == pytest.approx(reference, abs=1e-3)


def test_lesion_removal_and_twin_error_ratio_by_hand():
    original = image([[1.0, 0.5], [0.0, 0.0]])  # lesion of height 1 at the masked pixel
    twin = image([[0.0, 0.5], [0.0, 0.0]])
    cf = image([[0.25, 0.5], [0.0, 0.0]])
    assert m.lesion_removal(original, cf, twin, MASK).item() == pytest.approx(0.75)
    assert m.lesion_removal(original, twin, twin, MASK).item() == pytest.approx(1.0)
    assert m.lesion_removal(original, original, twin, MASK).item() == pytest.approx(0.0)
    assert math.isnan(m.lesion_removal(original, cf, twin, torch.zeros_like(MASK)).item())
    assert m.twin_error_ratio(original, cf, twin).item() == pytest.approx(0.25)
    assert math.isnan(m.twin_error_ratio(twin, cf, twin).item())


def test_change_and_peak_in_known_mask():
    cf = image([[0.3, 0.1], [0.0, 0.0]])  # 0.3 of change inside the mask, 0.1 outside
    assert m.change_in_mask(ZEROS, cf, MASK).item() == pytest.approx(0.75)
    assert m.peak_in_mask(ZEROS, cf, MASK).tolist() == [True]
    cf = image([[0.1, 0.3], [0.0, 0.0]])
    assert m.change_in_mask(ZEROS, cf, MASK).item() == pytest.approx(0.25)
    assert m.peak_in_mask(ZEROS, cf, MASK).tolist() == [False]
    assert math.isnan(m.change_in_mask(ZEROS, ZEROS, MASK).item())


def test_added_opacity_counts_only_brightening():
    original = image([[0.5, 0.5], [0.5, 0.5]])
    cf = image([[0.8, 0.6], [0.0, 0.5]])  # +0.3 inside, +0.1 outside, a darkening ignored
    assert m.added_opacity_in_mask(original, cf, MASK).item() == pytest.approx(0.75)
    assert math.isnan(m.added_opacity_in_mask(original, original - 0.1, MASK).item())
