"""KID/FID on the fixed random feature network."""

import numpy as np
import torch

from cfxray.evaluation.realism import RandomFeatureNet, extract_features, fid, kid


def blobs(n, seed, size=32):
    """Smooth bright blobs on a dark background: a toy image distribution."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    centres = torch.rand(n, 2, generator=g) - 0.5
    d2 = (xx - centres[:, 0, None, None]) ** 2 + (yy - centres[:, 1, None, None]) ** 2
    return torch.exp(-d2 / 0.1).unsqueeze(1)


def test_feature_net_is_fixed_by_its_seed():
    x = blobs(4, 0)
    a = extract_features(RandomFeatureNet(seed=0), x)
    assert a.shape == (4, RandomFeatureNet().dim)
    assert np.array_equal(a, extract_features(RandomFeatureNet(seed=0), x))
    assert not np.allclose(a, extract_features(RandomFeatureNet(seed=1), x))


def test_kid_and_fid_near_zero_for_same_distribution_large_for_noise():
    net = RandomFeatureNet()
    real_a, real_b = extract_features(net, blobs(60, 1)), extract_features(net, blobs(60, 2))
    noise = extract_features(net, torch.rand(60, 1, 32, 32, generator=torch.Generator().manual_seed(3)))
    same, _ = kid(real_a, real_a, subset_size=60)
    between, _ = kid(real_a, real_b, subset_size=30)
    against_noise, _ = kid(real_a, noise, subset_size=30)
    assert abs(same) < 0.02 * against_noise
    assert abs(between) < 0.1 * against_noise
    assert fid(real_a, real_a) < 1e-6 * fid(real_a, noise)
    assert fid(real_a, real_b) < 0.2 * fid(real_a, noise)


def test_kid_undefined_for_tiny_sets():
    feats = np.ones((1, 3))
    assert np.isnan(kid(feats, feats)[0]) and np.isnan(fid(feats, feats))
