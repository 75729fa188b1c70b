"""The simulator's lab nuisances (data/realism.py): each one checked against an independent
computation or an exact limit, and the paper's generator untouched when they are off."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch
import xarray as xr

from nvbayes.data.realism import LAB, NUISANCES, Realism, parse_realism
from nvbayes.data.scenes import SimulationSettings, dataset_plan, simulate, simulate_dataset
from nvbayes.errors import SceneError
from nvbayes.physics.geometry import Grid
from nvbayes.physics.operators import make_operator

GRID = Grid(24)


def _sim(realism: Realism, noise: float = 0.0, scene: str = "medium/far", seed: int = 5,
         grid: Grid = GRID) -> xr.Dataset:
    return simulate(scene, seed, SimulationSettings(grid=grid, noise=noise, realism=realism))


# a realism that takes the lab path (record_sigma off) with no physical nuisance
PLAIN = Realism(record_sigma=False)


def test_lab_path_without_nuisances_equals_the_papers_f3_generator():
    """Two independent direct sums (render's and F3's) give the same spectrum, noise and
    truth when no nuisance is on."""
    for noise in (0.0, 0.01):
        paper, lab = _sim(Realism(), noise), _sim(PLAIN, noise)
        np.testing.assert_allclose(lab["spectrum"], paper["spectrum"], rtol=1e-10, atol=1e-14)
        np.testing.assert_array_equal(lab["rho_true"], paper["rho_true"])
        np.testing.assert_array_equal(lab["larmor_true"], paper["larmor_true"])
        assert "noise_sigma" not in lab and "noise_sigma" in paper


def test_nuisances_keep_the_scene():
    """The scene (sources, amplitudes' ranks, frequencies) is drawn as without nuisances."""
    clean = _sim(Realism())
    for names in NUISANCES:
        data = _sim(parse_realism(names))
        if names != "amplitudes":
            np.testing.assert_array_equal(data["rho_true"] > 0, clean["rho_true"] > 0)
        table = data["sources_true"].values
        assert np.isin(np.round(table[:, 3], 12), np.round(
            np.unique(clean["larmor_true"].values), 12)).all() or names == "positions"


def test_background_is_flat_in_frequency_smooth_and_at_its_level():
    level = 0.3
    base = _sim(Realism(record_sigma=False))
    data = _sim(Realism(background=level, record_sigma=False))
    added = (data["spectrum"] - base["spectrum"]).values
    truth = data["background_true"].values
    np.testing.assert_allclose(added, np.broadcast_to(truth, added.shape), rtol=1e-9,
                               atol=1e-14)
    assert truth.max() == pytest.approx(level * base["spectrum"].values.max(), rel=1e-12)
    assert truth.min() >= 0.5 * truth.max() - 1e-15
    # smooth: neighbouring pixels differ by far less than the field's range
    step = np.abs(np.diff(truth, axis=-1)).max()
    assert step < 0.2 * (truth.max() - truth.min())


def test_a_standoff_error_is_the_f3_spectrum_at_the_true_standoff():
    """z_true = 1.2 z_rec: F3 on a grid at 24 nm, in the units of the recorded 20 nm."""
    data = _sim(Realism(standoff_error=0.2, record_sigma=False))
    assert float(data["standoff_true"]) == pytest.approx(24.0)
    assert data.attrs["standoff_nm"] == 20.0
    f3 = make_operator("F3", data["freq"].values, 0.5, GRID.spacing, 24.0)
    expected = f3(torch.from_numpy(data["rho_true"].values),
                  torch.from_numpy(data["larmor_true"].values)).numpy()
    # the Lorentzian sits at the source: larmor_true holds each source's frequency there
    np.testing.assert_allclose(data["spectrum"].values, expected * (20.0 / 24.0) ** 6,
                               rtol=1e-9, atol=1e-15)


def test_gain_multiplies_the_signal_pixel_by_pixel():
    base = _sim(PLAIN)
    data = _sim(Realism(gain_spread=0.05, record_sigma=False))
    gain = data["gain_true"].values
    np.testing.assert_allclose(data["spectrum"].values, base["spectrum"].values * gain,
                               rtol=1e-12, atol=1e-16)
    assert 0.02 < gain.std() < 0.08


def test_a_point_sized_cloud_is_a_point_source_and_positions_stay_in_their_pixel():
    base = _sim(Realism(continuous=True, record_sigma=False))
    tiny = _sim(Realism(continuous=True, cloud_nm=1e-6, record_sigma=False))
    np.testing.assert_allclose(tiny["spectrum"], base["spectrum"], rtol=1e-6)
    table = base["sources_true"].values
    pixel = np.rint(table[:, :2] / GRID.spacing)
    assert (np.abs(table[:, :2] / GRID.spacing - pixel) <= 0.5).all()
    assert not np.allclose(table[:, :2] / GRID.spacing, pixel)      # off the centres
    rho = base["rho_true"].values
    np.testing.assert_allclose(rho[pixel[:, 0].astype(int), pixel[:, 1].astype(int)],
                               table[:, 2])


def test_amplitude_range_and_depth_spread():
    data = _sim(Realism(amplitude_min=0.3, depth_spread_nm=1.0, record_sigma=False),
                scene="many/far", seed=2, grid=Grid(40))
    amplitudes = data["sources_true"].values[:, 2]
    assert (amplitudes >= 0.3).all() and (amplitudes <= 1.0).all()
    depth = data["depth_true"].values
    assert depth.mean() == pytest.approx(20.0, abs=0.2)
    assert depth.std() == pytest.approx(1.0, rel=0.15)


def test_shot_noise_variance_grows_with_the_signal():
    """Residual variance is σ_read² + k S: regress it on the clean spectrum of 16 noise
    draws of one scene."""
    settings = SimulationSettings(grid=GRID, noise=0.002,
                                  realism=Realism(shot_noise=0.05, record_sigma=False))
    data = simulate_dataset([("few/far", 11)] * 1, settings)
    clean = _sim(PLAIN, 0.0, "few/far", 11)["spectrum"].values
    k, read = float(data["shot_noise_true"][0]), float(data["read_sigma_true"][0])
    assert k == pytest.approx(0.05 ** 2 * clean.max())
    residual = data["spectrum"].values[0] - clean
    bright = clean > 0.5 * clean.max()
    dim = clean < 0.01 * clean.max()
    assert residual[bright].var() == pytest.approx(read ** 2 + k * clean[bright].mean(),
                                                   rel=0.3)
    assert residual[dim].std() == pytest.approx(read, rel=0.1)


def test_the_lab_preset_and_parsing():
    assert parse_realism("off").off and parse_realism("lab") == LAB
    assert parse_realism("background,gain") == Realism(background=LAB.background,
                                                       gain_spread=LAB.gain_spread)
    with pytest.raises(SceneError):
        parse_realism("backgorund")
    with pytest.raises(SceneError):
        Realism(background=-0.1)
    data = simulate_dataset(dataset_plan(["few/far", "many/close"], per_class=1),
                            SimulationSettings(grid=Grid(32), realism=LAB))
    assert "noise_sigma" not in data
    for name in ("standoff_true", "depth_true", "gain_true", "background_true",
                 "shot_noise_true", "sources_true"):
        assert data[name].dims[0] == "sample"
    counts = (~np.isnan(data["sources_true"].values[..., 0])).sum(-1)
    np.testing.assert_array_equal(counts, (data["rho_true"].values > 0).sum((-2, -1)))
    assert dataclasses.replace(LAB, record_sigma=True).record_sigma


def test_cli_simulates_lab_data_and_refuses_bad_realism(tmp_path):
    out = tmp_path / "lab.nc"
    run = [sys.executable, "-m", "nvbayes.cli", "simulate", "--scene", "few/far", "--grid", "24"]
    done = subprocess.run(run + ["--realism", "lab", "--background", "0.5", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with xr.open_dataset(out) as data:
        assert "noise_sigma" not in data
        peak = data["background_true"].values.max() / 0.5
        assert peak > 0 and data.attrs["realism"].startswith("amplitude_min=0.3")
    bad = tmp_path / "bad.nc"
    done = subprocess.run(run + ["--realism", "lab,sun", "--out", str(bad)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and not bad.exists()
    assert done.stderr.count("\n") == 1 and "unknown nuisance" in done.stderr


def test_a_clouds_recorded_position_is_the_first_moment_of_its_noise_map():
    """One cloud of spins (8 nm) on a fine grid (2 nm pixels, 20 nm standoff, NV axis z: a
    radially symmetric point spread): the power-weighted centroid of the noise map is the
    centroid of the spins, which is what ``sources_true`` records, within 0.05 nm; the
    cloud's drawn centre is off by about 8 / √8 nm, so a table of centres would fail."""
    from nvbayes.data.realism import render
    from nvbayes.physics.lorentzian import readout_frequencies

    realism = Realism(cloud_nm=8.0, record_sigma=False)
    lab = render(np.array([[64, 64]]), np.array([1.0]), np.array([2.0]), (128, 128), 2.0,
                 20.0, np.asarray(readout_frequencies()), 0.5, 0.0, realism, (0.0, 0.0, 1.0),
                 "normalized", np.random.default_rng(0), np.random.default_rng(7))
    noise = lab.spectrum.sum(0)
    yy, xx = np.indices(noise.shape) * 2.0
    first = np.array([(noise * yy).sum(), (noise * xx).sum()]) / noise.sum()
    np.testing.assert_allclose(first, lab.sources[0, :2], atol=0.05)
    assert np.hypot(*(lab.sources[0, :2] - 128.0)) > 0.5     # the centroid is not the centre
