"""Per-image counterfactual metrics: pure functions of tensors, one value per image.

Images follow the library convention (float [0, 1], [N, 1, H, W]); masks are bool
[N, 1, H, W] or [N, H, W]. Every function returns a tensor of shape [N] (no averaging), so
callers choose how to aggregate (means, bootstrap intervals, per-class splits).

Why these metrics: validity alone is worthless for counterfactuals (a blurred or adversarial
image flips a classifier too), so it is read together with closeness to the original (SSIM,
L1, PSNR) and, where a ground truth exists (phantom data: lesion masks and lesion-free twins),
with how much of the true lesion signal was removed and how much of the change is on lesions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf

_EPS = 1e-8


def _as_images(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(1) if x.ndim == 3 else x


def _per_image_sum(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).sum(dim=1)


def validity(probs: torch.Tensor, target: int | torch.Tensor) -> torch.Tensor:
    """bool [N]: the classifier's most probable class is the target class."""
    target = torch.as_tensor(target, device=probs.device)
    return probs.argmax(dim=1) == target


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per image."""
    return (a - b).abs().flatten(1).mean(dim=1)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB; identical images give +inf."""
    mse = (a - b).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = (g / g.sum()).float()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, window: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image: Gaussian 11x11, sigma 1.5 window.

    Statistics are computed only where the window fits inside the image ('valid'), matching
    scikit-image's `structural_similarity(gaussian_weights=True, use_sample_covariance=False)`.
    """
    a, b = _as_images(a).float(), _as_images(b).float()
    channels = a.shape[1]
    w = _gaussian_window(window, sigma, a.device).expand(channels, 1, window, window)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return nnf.conv2d(x, w, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(dim=1)


def lesion_removal(original: torch.Tensor, counterfactual: torch.Tensor, twin: torch.Tensor,
                   lesion_mask: torch.Tensor) -> torch.Tensor:
    """Fraction of the lesion signal removed: 1 - sum_mask|cf - twin| / sum_mask|orig - twin|.

    1 means the counterfactual equals the lesion-free twin on the lesions; 0 means nothing was
    removed; negative means the lesion area moved further from the twin. NaN where the image
    has no lesion signal (empty mask or original equal to its twin).
    """
    mask = _as_images(lesion_mask).to(original.dtype)
    left = _per_image_sum((counterfactual - twin).abs() * mask)
    signal = _per_image_sum((original - twin).abs() * mask)
    removed = 1 - left / signal.clamp_min(_EPS)
    return torch.where(signal > _EPS, removed, torch.full_like(removed, float("nan")))


def change_in_mask(original: torch.Tensor, counterfactual: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
    """Share of the absolute change that lies inside the mask: sum_mask|cf-orig| / sum|cf-orig|.

    A chance level is the mask's area fraction. NaN where the counterfactual equals the original.
    """
    change = (counterfactual - original).abs()
    inside = _per_image_sum(change * _as_images(mask).to(change.dtype))
    total = _per_image_sum(change)
    share = inside / total.clamp_min(_EPS)
    return torch.where(total > _EPS, share, torch.full_like(share, float("nan")))


def peak_in_mask(original: torch.Tensor, counterfactual: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
    """bool [N]: the pixel of largest absolute change lies inside the mask (pointing game)."""
    change = (counterfactual - original).abs().flatten(1)
    peak = change.argmax(dim=1, keepdim=True)
    return _as_images(mask).flatten(1).gather(1, peak).squeeze(1).bool()


def sparsity(original: torch.Tensor, counterfactual: torch.Tensor,
             threshold: float = 0.05) -> torch.Tensor:
    """Fraction of pixels whose intensity changed by more than `threshold` (0 = untouched)."""
    return ((counterfactual - original).abs() > threshold).flatten(1).float().mean(dim=1)


def twin_error_ratio(original: torch.Tensor, counterfactual: torch.Tensor,
                     twin: torch.Tensor) -> torch.Tensor:
    """|cf - twin|_1 / |orig - twin|_1: below 1 the counterfactual is closer to the lesion-free
    twin than the original was (0 = reproduced the twin). NaN where the original is its twin."""
    before = _per_image_sum((original - twin).abs())
    ratio = _per_image_sum((counterfactual - twin).abs()) / before.clamp_min(_EPS)
    return torch.where(before > _EPS, ratio, torch.full_like(ratio, float("nan")))


def added_opacity_in_mask(original: torch.Tensor, counterfactual: torch.Tensor,
                          mask: torch.Tensor) -> torch.Tensor:
    """Share of the added opacity (brightening, cf > orig) that lies inside the mask.

    For normal -> pneumonia counterfactuals with the lung-field mask: pneumonia is an opacity
    of the lungs, so brightening outside them (bones, background) is not an explanation.
    NaN where nothing was brightened.
    """
    added = (counterfactual - original).clamp_min(0)
    inside = _per_image_sum(added * _as_images(mask).to(added.dtype))
    total = _per_image_sum(added)
    share = inside / total.clamp_min(_EPS)
    return torch.where(total > _EPS, share, torch.full_like(share, float("nan")))
