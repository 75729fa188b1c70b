"""Reconstruction metrics: exact values on identical maps, hand-computed cases, invariances."""

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from nvbayes import metrics
from nvbayes.data.scenes import sample_scene
from nvbayes.metrics import (
    centre_disk,
    centre_mass_ratio,
    density_mse,
    evaluate,
    find_peaks,
    gmsd,
    hungarian_f1,
    larmor_mae,
    larmor_mae_detected,
    masked_ssim,
    sliced_wasserstein,
    ssim_map,
)

N = 32


def points(*positions, n=N, weights=None):
    a = np.zeros((n, n))
    for k, p in enumerate(positions):
        a[p] = 1.0 if weights is None else weights[k]
    return a


@pytest.fixture(scope="module")
def scene_map():
    return sample_scene("medium/medium", 5).density()


def test_identical_maps_are_perfect(scene_map):
    m = evaluate(scene_map, scene_map, np.full_like(scene_map, 2.0), np.full_like(scene_map, 2.0))
    assert m["gmsd"] == 0.0
    assert m["hungarian_f1"] == 1.0
    assert m["swd"] == pytest.approx(0.0, abs=1e-12)
    assert m["density_mse"] == 0.0
    assert m["masked_ssim"] == pytest.approx(1.0, abs=1e-12)
    assert m["larmor_mae"] == 0.0


def test_swd_of_a_one_pixel_shift_by_hand():
    """Two unit point masses one pixel apart along x: in direction θ = (sin φ, cos φ) the
    projections differ by cos φ/(n − 1) (coordinates scaled to [0, 1]), so
    SWD = mean_φ |cos φ| / (n − 1) over the 128 seeded angles, ≈ (2/π)/(n − 1)."""
    a, b = points((10, 12)), points((10, 13))
    phi = np.random.default_rng(0).uniform(0.0, 2.0 * math.pi, size=128)
    by_hand = np.abs(np.cos(phi)).mean() / (N - 1)
    assert sliced_wasserstein(a, b) == pytest.approx(by_hand, rel=1e-12)
    assert sliced_wasserstein(a, b) == pytest.approx(2 / math.pi / (N - 1), rel=0.1)


def test_swd_of_a_split_mass_by_hand():
    """One mass against two halves at ±d along y: each half travels d|sin φ|, so W2 = d|sin φ|."""
    a = points((16, 16))
    b = points((13, 16), (19, 16), weights=[0.5, 0.5])
    phi = np.random.default_rng(0).uniform(0.0, 2.0 * math.pi, size=128)
    by_hand = (3 / (N - 1)) * np.abs(np.sin(phi)).mean()
    assert sliced_wasserstein(a, b) == pytest.approx(by_hand, rel=1e-12)


def test_swd_is_symmetric_and_ignores_scale(scene_map):
    other = sample_scene("medium/medium", 6).density()
    d = sliced_wasserstein(scene_map, other)
    assert d > 0
    assert sliced_wasserstein(other, scene_map) == pytest.approx(d, rel=1e-12)
    assert sliced_wasserstein(3.0 * scene_map, other) == pytest.approx(d, rel=1e-12)


def test_hungarian_f1_with_a_false_positive_and_a_miss():
    truth = points((5, 5), (5, 20), (20, 12))
    # (6, 6) matches (5, 5) at √2 px; (5, 22) matches (5, 20) at exactly 2 px;
    # (28, 28) is a false positive; (20, 12) is missed.
    pred = points((6, 6), (5, 22), (28, 28))
    assert hungarian_f1(pred, truth) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))


def test_hungarian_f1_matching_is_one_to_one_and_radius_is_strict():
    truth = points((10, 10))
    two_near = points((10, 9), (10, 11))   # both within 1 px of the one true peak
    assert hungarian_f1(two_near, truth) == pytest.approx(2 * 1 / (2 * 1 + 1 + 0))
    assert hungarian_f1(points((10, 13)), truth) == 0.0   # 3 px: outside the 2 px radius


def test_hungarian_f1_ignores_peaks_below_five_percent():
    truth = points((8, 8), (8, 20))
    pred = points((8, 8), (8, 20), (20, 20), weights=[1.0, 0.06, 0.04])
    assert len(find_peaks(pred)) == 2
    assert hungarian_f1(pred, truth) == 1.0


def test_hungarian_f1_is_zero_in_the_degenerate_case():
    truth = points((8, 8))
    assert hungarian_f1(np.zeros((N, N)), truth) == 0.0
    assert hungarian_f1(truth, np.zeros((N, N))) == 0.0


def test_gmsd_is_scale_invariant_and_positive_for_different_maps(scene_map):
    assert gmsd(5.0 * scene_map, scene_map) == pytest.approx(0.0, abs=1e-15)
    other = sample_scene("medium/medium", 6).density()
    assert 0 < gmsd(other, scene_map) <= 1
    assert gmsd(other, scene_map) == pytest.approx(gmsd(scene_map, other), rel=1e-12)


def test_gmsd_by_hand_on_a_step_edge():
    """A vertical 0 → 1 step: the Prewitt x-derivative (rows averaged, central difference)
    is 1 on the two columns beside the edge and 0 elsewhere.  Against a blank map GMS is
    c/(1 + c) there and 1 elsewhere; GMSD is that set's std."""
    step = np.zeros((N, N))
    step[:, N // 2:] = 1.0
    blank = np.zeros((N, N))
    c = metrics.GMSD_C
    g = 1.0
    values = np.ones((N, N))
    values[:, N // 2 - 1:N // 2 + 1] = c / (g * g + c)
    assert gmsd(blank, step) == pytest.approx(values.std(), rel=1e-12)


def test_masked_ssim_agrees_with_scikit_image(scene_map):
    rng = np.random.default_rng(0)
    recon = np.clip(scene_map + 0.05 * rng.standard_normal(scene_map.shape), 0, None)
    ours = ssim_map(recon, scene_map, data_range=1.0)
    _, theirs = structural_similarity(recon, scene_map, data_range=1.0, gaussian_weights=True,
                                      sigma=1.5, use_sample_covariance=False, full=True)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    support = scene_map > 0
    data_range = scene_map.max() - scene_map.min()
    _, ref = structural_similarity(recon, scene_map, data_range=data_range,
                                   gaussian_weights=True, sigma=1.5,
                                   use_sample_covariance=False, full=True)
    assert masked_ssim(recon, scene_map) == pytest.approx(ref[support].mean(), rel=1e-10)


def test_density_mse_and_larmor_mae_by_hand():
    truth = points((3, 3), (10, 10), weights=[1.0, 0.5])
    recon = truth.copy()
    recon[3, 3] = 0.8
    recon[0, 0] = 0.4
    assert density_mse(recon, truth) == pytest.approx((0.2**2 + 0.4**2) / N**2)
    w_true = np.full((N, N), 2.0)
    w_hat = w_true.copy()
    w_hat[3, 3] = 2.3          # on the support
    w_hat[0, 0] = 9.0          # off the support: ignored
    assert larmor_mae(w_hat, w_true, truth) == pytest.approx(0.15)
    # only (3, 3) is detected (0.8 > 0.3 · 0.8; (10, 10) is missed in this reconstruction)
    missed = recon.copy()
    missed[10, 10] = 0.1
    w_hat[10, 10] = 1.0                      # its error (1 GHz) must not count
    assert larmor_mae_detected(w_hat, w_true, truth, missed) == pytest.approx(0.3)
    assert math.isnan(larmor_mae_detected(w_hat, w_true, truth, points((0, 1))))


def test_centre_mass_ratio_definition():
    inside = sum(1 for i in range(64) for j in range(64)
                 if (i - 31.5) ** 2 + (j - 31.5) ** 2 <= 8**2)
    assert centre_disk((64, 64)).sum() == inside
    assert centre_mass_ratio(np.ones((64, 64))) == pytest.approx(inside / 64**2)
    assert inside / 64**2 == pytest.approx(math.pi / 64, rel=0.05)
    assert centre_mass_ratio(points((31, 32), n=64)) == 1.0
    assert centre_mass_ratio(points((5, 5), (50, 58), n=64)) == 0.0
    assert centre_mass_ratio(-np.ones((64, 64))) == 0.0
    half = points((32, 32), (5, 5), n=64, weights=[1.0, 1.0])
    assert centre_mass_ratio(half) == pytest.approx(0.5)
