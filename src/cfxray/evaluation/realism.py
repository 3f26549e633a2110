"""Realism of counterfactuals: KID and FID against real images of the target class.

Feature network. FID/KID normally use an ImageNet Inception network; cfxray downloads no
weights, so it uses a fixed random-init convolutional network instead: five conv/ReLU stages
whose weights are drawn from a private generator seeded with `seed` (default 0), each stage
summarised by the per-channel mean and standard deviation over space (496 features).
Random convolutional features are a known, weaker stand-in for trained ones: they capture
intensity, texture and edge statistics at five scales, which is what blur, noise, checkerboard
artefacts and washed-out images change. The network does not depend on any trained model, so
numbers stay comparable across classifier and CycleGAN versions; they are not comparable with
published Inception FID/KID values. Read them next to the real-vs-real reference the report
gives (real target-class test images against the same reference set).

KID is the unbiased squared MMD with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3,
averaged over random subsets (Binkowski et al., 2018); it is unbiased at small sample sizes,
which is why the quality gate uses it rather than FID.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as nnf
from scipy import linalg
from torch import nn

FEATURE_SIZE = 64  # images are resized to this before the feature network
STAGE_CHANNELS = (16, 32, 48, 64, 88)


class RandomFeatureNet(nn.Module):
    """Fixed random-init conv network; the same `seed` gives the same weights on any machine."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.stages = nn.ModuleList()
        cin = 1
        for cout in STAGE_CHANNELS:
            conv = nn.Conv2d(cin, cout, 3, padding=1)
            with torch.no_grad():  # He initialisation keeps activations alive through depth
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen)
                                  * math.sqrt(2.0 / (cin * 9)))
                conv.bias.zero_()
            self.stages.append(conv)
            cin = cout
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    @property
    def dim(self) -> int:
        return 2 * sum(STAGE_CHANNELS)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images [B, 1, H, W] -> features [B, dim]."""
        x = nnf.interpolate(images, size=(FEATURE_SIZE, FEATURE_SIZE), mode="bilinear",
                            align_corners=False, antialias=True)
        x = (x - 0.5) / 0.25
        summaries = []
        for i, conv in enumerate(self.stages):
            x = torch.relu(conv(x))
            summaries += [x.mean(dim=(2, 3)), x.std(dim=(2, 3))]
            if i < len(self.stages) - 1:
                x = nnf.avg_pool2d(x, 2)
        return torch.cat(summaries, dim=1)


@torch.no_grad()
def extract_features(net: nn.Module, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    device = next(net.parameters()).device
    chunks = [net(images[i:i + batch_size].to(device)).double().cpu()
              for i in range(0, len(images), batch_size)]
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0))


def _polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    m, n = len(x), len(y)
    kxx, kyy, kxy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    sum_xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    sum_yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sum_xx + sum_yy - 2 * kxy.mean())


def kid(x: np.ndarray, y: np.ndarray, subset_size: int = 100, n_subsets: int = 50,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (mean, std over subsets) between feature sets x and y.

    Near zero (and possibly slightly negative: it is unbiased) for sets from one distribution.
    NaN when either set has fewer than two images.
    """
    size = min(subset_size, len(x), len(y))
    if size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = [_mmd2_unbiased(x[rng.choice(len(x), size, replace=False)],
                             y[rng.choice(len(y), size, replace=False)])
              for _ in range(n_subsets)]
    return float(np.mean(values)), float(np.std(values))


def fid(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to the feature sets (biased at small n)."""
    if len(x) < 2 or len(y) < 2:
        return float("nan")
    mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean, _ = linalg.sqrtm(cov_x @ cov_y, disp=False)
    if not np.isfinite(covmean).all():  # singular product: regularise as in the reference code
        eps = np.eye(len(cov_x)) * 1e-6
        covmean = linalg.sqrtm((cov_x + eps) @ (cov_y + eps))
    covmean = np.real(covmean)
    value = np.sum((mu_x - mu_y) ** 2) + np.trace(cov_x) + np.trace(cov_y) - 2 * np.trace(covmean)
    return float(max(value, 0.0))
