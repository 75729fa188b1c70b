"""Residual diagnostics (physics/residuals.py): white residuals say nothing, a smooth offset
flat in frequency reads as a background, unmodelled shot noise as shot noise, a missed source
as spatial structure, a shifted line as a misfit, and a wrong σ in χ²/dof alone; and the
run's residual table (results/residuals.py) with σ estimated from the data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr
from scipy.ndimage import gaussian_filter

from nvbayes.data.realism import Realism
from nvbayes.data.scenes import SimulationSettings, simulate
from nvbayes.errors import MeasurementError
from nvbayes.physics.geometry import Grid
from nvbayes.physics.residuals import CHI2_HIGH, ResidualSummary, findings, standardized, summarize
from nvbayes.results.residuals import residual_table

GRID = Grid(24)


def _scene(seed: int = 1, shot: float = 0.0):
    """``(observed, clean, read σ)`` of a medium/far scene with 1 % read noise."""
    def run(noise, realism):
        data = simulate("medium/far", seed, SimulationSettings(grid=GRID, noise=noise,
                                                               realism=realism))
        return data, torch.tensor(data["spectrum"].values)
    data, observed = run(0.01, Realism(shot_noise=shot, record_sigma=False))
    _, clean = run(0.0, Realism(record_sigma=False))
    return observed, clean, float(data["read_sigma_true"])


def _about(text: str, lines: list[str]) -> bool:
    return any(text in line for line in lines)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_white_residuals_have_unit_chi2_and_no_finding(seed):
    observed, clean, sigma = _scene(seed)
    summary = summarize(observed, clean, sigma)
    assert summary.chi2_dof == pytest.approx(1.0, abs=0.03)
    assert summary.spectral_chi2 == pytest.approx(1.0, abs=5 * math.sqrt(2 / 50))
    assert summary.spatial_chi2 == pytest.approx(1.0, abs=5 * math.sqrt(2 / 576))
    assert abs(summary.spatial_autocorrelation) < 0.15
    assert summary.coverage < 0.02
    assert summary.bright_ratio == pytest.approx(1.0, abs=0.2)
    assert (summary.n_freq, summary.n_pix, summary.dof) == (50, 576, 50 * 576)
    assert findings(summary) == []


def test_a_smooth_offset_flat_in_frequency_reads_as_a_background():
    observed, clean, sigma = _scene()
    field = gaussian_filter(np.random.default_rng(0).standard_normal((24, 24)), 4.0)
    offset = 0.8 * sigma * (0.5 + 0.5 * (field - field.min()) / np.ptp(field))
    summary = summarize(observed + torch.tensor(offset), clean, sigma)
    assert summary.flat_share > 0.9 and summary.spatial_autocorrelation > 0.8
    lines = findings(summary)
    assert _about("flat in frequency", lines) and _about("background", lines), lines
    assert not _about("shot noise", lines)
    # the same offset, zero-mean (both signs), is a background all the same
    centred = 2 * sigma * (field - field.mean()) / np.ptp(field)
    lines = findings(summarize(observed + torch.tensor(centred), clean, sigma))
    assert _about("background", lines), lines


def test_unmodelled_shot_noise_reads_as_shot_noise():
    observed, clean, sigma = _scene(shot=0.05)
    summary = summarize(observed, clean, sigma)          # σ: the read noise alone
    assert summary.bright_ratio > 2.0 and abs(summary.bright_autocorrelation) < 0.1
    lines = findings(summary)
    assert _about("grow with the signal", lines) and _about("shot noise", lines), lines
    assert not _about("background", lines)
    # with σ² = a + k S_clean the residuals are white again
    a, k = sigma ** 2, 0.05 ** 2 * float(clean.max())
    assert findings(summarize(observed, clean, (a + k * clean).sqrt())) == []


def test_a_background_the_sources_absorbed_is_u_shaped_in_frequency():
    """A flat offset explained by lines in the middle of the band: zero per-pixel mean, but
    the residual is higher at the ends of the readout span than in its middle."""
    observed, clean, sigma = _scene()
    freqs = torch.linspace(1.0, 3.0, 50, dtype=torch.float64)
    line = 0.25 / ((freqs - 2.0) ** 2 + 0.25)
    offset = 3 * sigma
    predicted = clean + offset * (line / line.mean())[:, None, None]
    summary = summarize(observed + offset, predicted, sigma, freqs=freqs)
    assert summary.spectral_u_shape > 0.9
    lines = findings(summary)
    assert _about("both ends of the readout span", lines), lines
    assert not _about("flat in frequency", lines)


def test_a_missed_source_is_spatial_structure_not_a_background():
    observed, clean, sigma = _scene()
    iy, ix = np.unravel_index(int(clean.sum(0).argmax()), clean.shape[1:])
    predicted = clean.clone()
    predicted[:, iy - 3: iy + 4, ix - 3: ix + 4] = 0.0
    lines = findings(summarize(observed, predicted, sigma))
    assert _about("structured in space", lines), lines
    assert not _about("background", lines)
    assert _about("chi2/dof", lines) and _about("misses signal", lines)


def test_a_shifted_line_is_a_misfit():
    observed, clean, sigma = _scene()
    lines = findings(summarize(observed, torch.roll(clean, 1, dims=0), sigma))
    assert _about("smooth in frequency", lines) and _about("misfit", lines), lines


@pytest.mark.parametrize("factor, word", [(0.7, "underestimated"), (1.5, "overestimated")])
def test_a_wrong_sigma_shows_in_chi2_alone(factor, word):
    observed, clean, sigma = _scene()
    summary = summarize(observed, clean, factor * sigma)
    assert summary.chi2_dof == pytest.approx(factor ** -2, rel=0.05)
    lines = findings(summary)
    assert len(lines) == 1 and word in lines[0], lines


def test_sigma_shapes_masks_and_noise_maps():
    observed, clean, sigma = _scene()
    base = summarize(observed, clean, sigma)
    as_map = summarize(observed, clean, torch.full((24, 24), sigma, dtype=torch.float64))
    full = summarize(observed, clean, torch.full(observed.shape, sigma, dtype=torch.float64))
    assert base == as_map == full
    mask = torch.ones(24, 24, dtype=torch.bool)
    mask[:, :4] = False
    broken = observed.clone()
    broken[:, :, :4] = torch.nan
    masked = summarize(broken, clean, sigma, mask)
    assert masked.n_pix == 24 * 20 and math.isfinite(masked.chi2_dof)
    assert masked == summarize(observed[:, :, 4:], clean[:, :, 4:], sigma)
    # a noise map (one "frequency"): no spectral statistics, the spatial ones still
    one = summarize(observed.sum(0, keepdim=True), clean.sum(0, keepdim=True),
                    sigma * math.sqrt(50))
    assert math.isnan(one.spectral_chi2) and math.isnan(one.flat_share)
    assert one.chi2_dof == pytest.approx(1.0, abs=0.2) and findings(one) == []
    with pytest.raises(MeasurementError, match="does not fit"):
        standardized(observed, clean, torch.ones(3, 5))
    with pytest.raises(MeasurementError, match="one shape"):
        summarize(observed, clean[:-1], sigma)


def test_findings_thresholds():
    quiet = ResidualSummary(chi2_dof=1.0, spectral_chi2=1.0, spatial_chi2=1.0,
                            spatial_autocorrelation=0.0, coverage=0.0, flat_share=math.nan,
                            bright_ratio=1.0, bright_autocorrelation=0.0,
                            spectral_u_shape=0.0, n_freq=50, n_pix=576)
    assert findings(quiet) == []
    loud = ResidualSummary(**(quiet.to_dict() | {"chi2_dof": 2 * CHI2_HIGH}))
    assert findings(loud) == [f"chi2/dof = {2 * CHI2_HIGH:.3g}: the noise sigma is "
                              "underestimated"]


# ---- the run's residual table (results/residuals.py) -----------------------------------------


def _arrays(observed: torch.Tensor, freqs=None):
    n_freq = observed.shape[0]
    coords = {"freq": np.linspace(1.0, 3.0, n_freq) if freqs is None else freqs,
              "y": np.arange(observed.shape[1]) * 20.0, "x": np.arange(observed.shape[2]) * 20.0}
    return xr.DataArray(observed.numpy(), dims=("freq", "y", "x"), coords=coords)


def test_residual_table_of_a_spectrum_and_of_a_noise_map():
    observed, clean, sigma = _scene(shot=0.05)
    obs = _arrays(observed)
    pred = obs.copy(data=clean.numpy())
    table = residual_table(obs, None, predicted=pred)
    assert table.attrs["compared"] == "spectrum"
    assert table.attrs["sigma_from"] == "affine noise model"
    # σ from the read-plus-shot model of the data: white residuals, no finding
    assert table.attrs["chi2_dof"] == pytest.approx(1.0, abs=0.1)
    assert table.attrs["findings"] == ""
    assert table.attrs["shot_slope"] > 0 and table.attrs["read_variance"] > 0
    assert table["pixel_mean"].dims == ("y", "x") and table["freq_mean"].dims == ("freq",)
    # a sampling run keeps noise maps: the table compares them
    mask = xr.DataArray(np.ones((24, 24), np.uint8), dims=("y", "x"))
    mask[:2] = 0
    maps = residual_table(obs, mask, predicted_noise_map=pred.sum("freq"))
    assert maps.attrs["compared"] == "noise map" and "freq_mean" not in maps
    assert maps.attrs["n_pix"] == 22 * 24 and np.isnan(maps["pixel_mean"][0]).all()
    assert maps.attrs["chi2_dof"] == pytest.approx(1.0, abs=0.25)


def test_residual_table_falls_back_to_white_noise_on_a_short_spectrum():
    observed, clean, _ = _scene()
    obs = _arrays(observed[::10])                        # 5 readouts
    table = residual_table(obs, None, predicted=obs.copy(data=clean[::10].numpy()))
    assert table.attrs["sigma_from"] == "white sensor noise"
    assert table.attrs["shot_slope"] == 0.0
    assert residual_table(obs[:2], None, predicted=obs[:2]) is None
