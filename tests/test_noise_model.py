"""The read-plus-shot noise model estimated from one spectrum (physics/noise_model.py): its
two parameters recovered on simulated lab data, no slope without shot noise, equivariance
under a change of unit, masks, uneven readout grids, and its building blocks.

Tolerances, set from what was measured (24² scenes, 50 readouts, seeds 0–3 of medium/far
and many/close, read noise 1 % of the dynamic range, shot noise 5 % of the peak): read
variance within 5 % (measured 3.1 %), slope within 35 % per scene (28 %) and 10 % on average
(−0.6 %), within 3.5 standard errors (2.6); without shot noise the shot variance claimed at
the brightest readout below a quarter of the read variance (0.22).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nvbayes.data.realism import Realism
from nvbayes.data.scenes import SimulationSettings, simulate
from nvbayes.errors import MeasurementError
from nvbayes.physics.geometry import Grid
from nvbayes.physics.noise_map import sensor_noise_sigma
from nvbayes.physics.noise_model import (
    MIN_PER_BIN,
    AffineNoise,
    affine_noise_model,
    affine_sigma,
    divided_difference_weights,
    overlap_factor,
    quantile_bins,
    screened_variance,
    smooth_levels,
)

GRID = Grid(24)
SCENES = [(name, seed) for name in ("medium/far", "many/close") for seed in range(4)]


def _lab(name: str, seed: int, shot: float, noise: float = 0.01):
    data = simulate(name, seed, SimulationSettings(
        grid=GRID, noise=noise, realism=Realism(shot_noise=shot, record_sigma=False)))
    spectrum = torch.tensor(data["spectrum"].values)
    freqs = torch.tensor(data["freq"].values)
    return (spectrum, freqs, float(data["read_sigma_true"]) ** 2,
            float(data["shot_noise_true"]))


def _synthetic(freqs: torch.Tensor, a: float, k: float, seed: int = 0,
               shape=(32, 32)) -> torch.Tensor:
    """Lorentzian lines of log-uniform amplitude (0.01 … 1) on ``freqs``, with noise of
    variance ``a + k S``."""
    gen = torch.Generator().manual_seed(seed)
    amplitude = 10 ** (-2 * torch.rand(shape, generator=gen, dtype=torch.float64))
    centre = 1.5 + torch.rand(shape, generator=gen, dtype=torch.float64)
    clean = amplitude * 0.25 / ((freqs[:, None, None] - centre) ** 2 + 0.25)
    noise = torch.randn(clean.shape, generator=gen, dtype=torch.float64)
    return clean + noise * (a + k * clean).sqrt()


def test_read_variance_and_shot_slope_are_recovered():
    """Shot noise 5 % of the peak (its variance at the peak ~6× the read variance)."""
    errors_a, errors_k = [], []
    for name, seed in SCENES:
        spectrum, freqs, a, k = _lab(name, seed, shot=0.05)
        model = affine_noise_model(spectrum, freqs=freqs)
        errors_a.append(model.read_variance / a - 1)
        errors_k.append(model.slope / k - 1)
        assert abs(model.slope - k) < 3.5 * model.slope_se, (name, seed)
    assert np.max(np.abs(errors_a)) < 0.05, errors_a
    assert np.max(np.abs(errors_k)) < 0.35, errors_k
    assert abs(np.mean(errors_k)) < 0.10, errors_k


def test_without_shot_noise_the_slope_is_small_and_the_intercept_is_the_read_noise():
    for name, seed in SCENES:
        spectrum, freqs, a, k = _lab(name, seed, shot=0.0)
        assert k == 0.0
        model = affine_noise_model(spectrum, freqs=freqs)
        assert model.read_variance == pytest.approx(a, rel=0.05)
        # the shot variance it claims at the brightest readout: a quarter of the read's at most
        assert model.slope * float(spectrum.max()) < 0.25 * a, (name, seed)
        # and the read noise agrees with the plain MAD estimator's
        sigma = float(sensor_noise_sigma(spectrum, freqs=freqs))
        assert model.read_variance ** 0.5 == pytest.approx(sigma, rel=0.05)


@pytest.mark.parametrize("factor", [1e-6, 1.0 / 3.0, 1e4])
def test_a_change_of_unit_rescales_the_model(factor):
    """``S → cS`` gives ``a → c² a``, ``k → c k`` (and the standard errors alike)."""
    spectrum, freqs, _, _ = _lab("medium/far", 1, shot=0.05)
    base = affine_noise_model(spectrum, freqs=freqs)
    scaled = affine_noise_model(spectrum * factor, freqs=freqs)
    expected = base.scaled(factor)
    for name in ("read_variance", "slope", "read_variance_se", "slope_se"):
        assert getattr(scaled, name) == pytest.approx(getattr(expected, name), rel=1e-9), name
    # and the frequency unit does not matter either (GHz or Hz)
    hertz = affine_noise_model(spectrum, freqs=freqs * 1e9)
    assert hertz.read_variance == pytest.approx(base.read_variance, rel=1e-9)
    assert hertz.slope == pytest.approx(base.slope, rel=1e-9)


def test_an_uneven_readout_grid_is_handled():
    gen = torch.Generator().manual_seed(3)
    freqs = torch.sort(1.0 + 2.0 * torch.rand(60, generator=gen, dtype=torch.float64)).values
    a, k = 1e-4, 4e-3
    model = affine_noise_model(_synthetic(freqs, a, k), freqs=freqs)
    assert model.read_variance == pytest.approx(a, rel=0.1)
    assert model.slope == pytest.approx(k, rel=0.25)


def test_masked_pixels_are_ignored():
    spectrum, freqs, _, _ = _lab("many/close", 0, shot=0.05)
    mask = torch.ones(spectrum.shape[1:], dtype=torch.bool)
    mask[:6] = False
    broken = spectrum.clone()
    broken[:, :6] = torch.nan
    broken[:, 3, 3] = 1e6
    expected = affine_noise_model(spectrum[:, 6:], freqs=freqs)
    got = affine_noise_model(broken, mask=mask, freqs=freqs)
    assert got.read_variance == pytest.approx(expected.read_variance, rel=1e-12)
    assert got.slope == pytest.approx(expected.slope, rel=1e-12)
    full = affine_noise_model(spectrum, mask=torch.ones_like(mask), freqs=freqs)
    assert full == affine_noise_model(spectrum, freqs=freqs)


def test_a_noiseless_spectrum_has_no_noise():
    freqs = torch.linspace(1.0, 3.0, 50, dtype=torch.float64)
    spectrum = _synthetic(freqs, 0.0, 0.0)
    model = affine_noise_model(spectrum, freqs=freqs)
    # what is left is the Lorentzian's fourth derivative: σ below 10⁻⁴ of the peak
    peak = float(spectrum.max())
    assert model.read_variance + model.slope * peak < (1e-4 * peak) ** 2


def test_too_little_data_is_a_user_error():
    with pytest.raises(MeasurementError, match="readout frequencies"):
        affine_noise_model(torch.randn(6, 8, 8, dtype=torch.float64))
    with pytest.raises(MeasurementError, match="too few"):
        affine_noise_model(torch.randn(50, 1, 2, dtype=torch.float64))
    with pytest.raises(MeasurementError, match="one spectrum"):
        affine_noise_model(torch.randn(2, 50, 8, 8, dtype=torch.float64))


def test_sigma_from_the_model():
    model = AffineNoise(4.0, 2.0)
    signal = torch.tensor([[[0.0]], [[6.0]], [[-1.0]]], dtype=torch.float64)
    assert affine_sigma(model, signal=signal).flatten().tolist() == [2.0, 4.0, 2.0]
    spectrum = torch.arange(5, dtype=torch.float64)[:, None, None].expand(5, 2, 3)
    smooth = smooth_levels(spectrum)
    assert smooth.shape == spectrum.shape
    assert smooth[:, 0, 0].tolist() == [0.5, 1.0, 2.0, 3.0, 3.5]
    assert torch.equal(affine_sigma(model, spectrum), model.sigma(smooth))


def test_divided_differences_and_bins():
    gen = torch.Generator().manual_seed(0)
    freqs = torch.sort(torch.rand(12, generator=gen, dtype=torch.float64)).values
    # order 2 is the second difference of sensor_noise_sigma
    below, above = freqs[1:-1] - freqs[:-2], freqs[2:] - freqs[1:-1]
    norm = torch.sqrt(above ** 2 + (below + above) ** 2 + below ** 2)
    second = torch.stack([above, -(below + above), below]) / norm
    torch.testing.assert_close(divided_difference_weights(freqs, 12, 2), second)
    # order 4: unit norm, blind to cubics
    w = divided_difference_weights(freqs, 12, 4)
    torch.testing.assert_close(w.pow(2).sum(0), torch.ones(8, dtype=torch.float64))
    cubic = 1 + freqs - 2 * freqs ** 2 + 3 * freqs ** 3
    runs = torch.stack([cubic[i: 8 + i] for i in range(5)])
    assert (w * runs).sum(0).abs().max() < 1e-6
    even = divided_difference_weights(None, 50, 4)
    assert overlap_factor(even) == pytest.approx(1 + 2 * (56 ** 2 + 28 ** 2 + 8 ** 2 + 1) / 70 ** 2)
    for n in (200, 999, 5000, 123456):
        sizes = quantile_bins(n)
        assert sum(sizes) == n and min(sizes) >= MIN_PER_BIN
    assert quantile_bins(150) == [150]
    values = torch.randn(20000, generator=gen, dtype=torch.float64)
    values[:10] = 1e6                                     # hot readouts do not count
    assert float(screened_variance(values)) == pytest.approx(1.0, rel=0.05)
