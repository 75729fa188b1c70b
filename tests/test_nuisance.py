"""The nuisance model (model/nuisance.py), its estimates from the data (inference/nuisance.py)
and MAP fits that carry it: each checked against an independent computation or a known
truth."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import xarray as xr

from nvbayes.data.realism import Realism, smooth_field
from nvbayes.data.scenes import SimulationSettings, simulate
from nvbayes.data.spec import NuisanceSpec, load_spec, parse_nuisance, with_nuisance
from nvbayes.errors import ParameterError
from nvbayes.inference.map import fit_map
from nvbayes.inference.nuisance import (
    background_surface,
    estimate_background,
    estimate_standoff,
    grid_side,
    pixel_background,
)
from nvbayes.metrics import hungarian_f1
from nvbayes.model.nuisance import apply_nuisance, background_map
from nvbayes.model.problem import InverseProblem
from nvbayes.physics.geometry import Grid
from nvbayes.physics.lorentzian import lorentzian, readout_frequencies
from nvbayes.physics.operators import make_operator

FREQS = readout_frequencies()


@pytest.mark.parametrize("name", ["F1", "F2"])
def test_operator_at_a_tensor_standoff_is_the_operator_built_there(name):
    """F(ρ; z) in the units of the recorded z_rec equals the operator built at z, times
    (z_rec / z)^6 (normalized units: a unit source at z_rec peaks at 1), for a batch of two
    standoffs at once; and its standoff gradient matches a central difference."""
    rho = torch.rand(2, 12, 12, dtype=torch.float64)
    recorded = make_operator(name, FREQS, 0.5, 20.0, 20.0)
    z = torch.tensor([17.0, 24.0], dtype=torch.float64, requires_grad=True)
    got = recorded(rho, 2.0, z)
    for i, zi in enumerate((17.0, 24.0)):
        at = make_operator(name, FREQS, 0.5, 20.0, zi)(rho[i], 2.0) * (20.0 / zi) ** 6
        torch.testing.assert_close(got[i], at, rtol=1e-12, atol=1e-15)
    got.sum().backward()
    h = 1e-4
    for i in range(2):
        up, down = z.detach().clone(), z.detach().clone()
        up[i] += h
        down[i] -= h
        numeric = (recorded(rho, 2.0, up)[i].sum() - recorded(rho, 2.0, down)[i].sum()) / (2 * h)
        assert float(z.grad[i]) == pytest.approx(float(numeric), rel=1e-6)


def test_apply_nuisance_is_gain_times_signal_plus_a_flat_background():
    op = make_operator("F2", FREQS, 0.5, 20.0, 20.0)
    rho, larmor = torch.rand(10, 10, dtype=torch.float64), torch.full((10, 10), 2.0)
    grid = torch.rand(4, 4, dtype=torch.float64)
    gamma = 0.1 * torch.randn(10, 10, dtype=torch.float64)
    out = apply_nuisance(op, rho, larmor, {"background": grid, "gain": gamma})
    signal = op(rho, larmor)
    background = out - signal * torch.exp(gamma)
    torch.testing.assert_close(background, background[:1].expand_as(background))   # flat
    torch.testing.assert_close(background[0], background_map(grid, (10, 10)))
    # bilinear with align_corners: the grid's corners are the corner pixels
    torch.testing.assert_close(background[0, [0, 0, -1, -1], [0, -1, 0, -1]],
                               grid[[0, 0, -1, -1], [0, -1, 0, -1]])
    torch.testing.assert_close(apply_nuisance(op, rho, larmor, {}), signal)


def _problem(realism: Realism, scene="medium/far", seed=1, n=48, noise=0.01):
    data = simulate(scene, seed, SimulationSettings(grid=Grid(n), noise=noise,
                                                    realism=realism))
    return data, InverseProblem.from_measurement(data)


def test_background_estimate_from_the_spectral_shape():
    """A 30 % background is recovered within 2 % of the spectrum's peak; none reads ~0."""
    data, problem = _problem(Realism(background=0.3, record_sigma=False))
    grid = estimate_background(problem, 8)
    error = background_map(grid, problem.shape).numpy() - data["background_true"].values
    assert np.abs(error).max() < 0.02 * data["spectrum"].values.max()
    clean, problem = _problem(Realism(record_sigma=False))
    grid = estimate_background(problem, 8)
    assert float(grid.max()) < 0.01 * clean["spectrum"].values.max()


def _best_candidate_background(spectrum, freqs, linewidth):
    """The estimator without the F test, written out in numpy: at each pixel the least-squares
    ``A L(ω; ω_c) + b`` (``A ≥ 0``) of least residual over the candidates, kept wherever it
    fits at all."""
    s = spectrum.reshape(len(freqs), -1)
    centres = np.linspace(freqs[0], freqs[-1], int(40 * (freqs[-1] - freqs[0])))
    best = np.full(s.shape[1], np.inf)
    b = s.mean(0)
    for c in centres:
        shape = lorentzian(torch.as_tensor(freqs), torch.tensor([[c]], dtype=torch.float64),
                           linewidth)[:, 0, 0].numpy()
        design = np.stack([shape, np.ones_like(shape)], 1)
        coef, *_ = np.linalg.lstsq(design, s, rcond=None)
        rss = ((s - design @ coef) ** 2).sum(0)
        better = (coef[0] >= 0) & (rss < best)
        best, b = np.where(better, rss, best), np.where(better, coef[1], b)
    return b


def test_flat_spectra_give_an_unbiased_background():
    """Pure noise on a flat background b₀ (no source): the per-pixel estimate is unbiased
    within 0.02 σ over 64² pixels (its standard error is about 0.003 σ).  Keeping the best
    Lorentzian wherever it fits better at all (the estimator before the F test) puts the mean
    more than 0.1 σ below b₀ (0.27 σ here): the selection bias the test removes."""
    b0, sigma = 1.0, 0.1
    spectrum = b0 + sigma * torch.randn(len(FREQS), 64, 64,
                                        generator=torch.Generator().manual_seed(0),
                                        dtype=torch.float64)
    bias = float(pixel_background(spectrum, torch.as_tensor(FREQS), 0.5).mean()) - b0
    assert abs(bias) < 0.02 * sigma
    before = _best_candidate_background(spectrum.numpy(), np.asarray(FREQS), 0.5).mean() - b0
    assert before < -0.1 * sigma


def test_background_surface_is_odd_so_unbiased_where_the_truth_is_zero():
    """The surface fit is odd in its data, surface(−b) = −surface(b) (least squares with a
    sign-symmetric outlier rule, no clamp at 0): on zero-mean noise its expectation is 0.
    Clamping the grid at 0 would lift a clean measurement's estimate, and the fit would
    subtract that lift from the signal."""
    noise = torch.randn(40, 40, generator=torch.Generator().manual_seed(5),
                        dtype=torch.float64)
    for m in (2, 6):
        torch.testing.assert_close(background_surface(-noise, m), -background_surface(noise, m),
                                   rtol=1e-12, atol=1e-14)


def test_grid_side_by_cross_validation():
    """A background exactly bilinear on a 4 × 4 grid, plus white noise at 5 % of its span, is
    given side 4 (finer grids only fit noise out of sample); on a smooth random field the
    side chosen predicts the true field at least as well as the fixed side 8 of the first
    release."""
    rng = torch.Generator().manual_seed(1)
    grid = 1.0 + torch.rand(4, 4, generator=rng, dtype=torch.float64)
    surface = background_map(grid, (48, 48))
    noisy = surface + 0.05 * torch.randn(48, 48, generator=rng, dtype=torch.float64)
    assert grid_side(noisy) == 4
    field = torch.as_tensor(smooth_field((64, 64), np.random.default_rng(3)))
    noisy = field + 0.01 * torch.randn(64, 64, generator=rng, dtype=torch.float64)
    side = grid_side(noisy)

    def error(m):
        return float((background_map(background_surface(noisy, m), (64, 64)) - field).abs().mean())

    assert error(side) <= error(8)


@pytest.mark.parametrize("error", [-0.1, 0.2])
def test_standoff_estimate_from_the_point_spread(error):
    """The recorded standoff 20 nm, the true one 18 or 24 nm: recovered within 0.5 nm."""
    data, problem = _problem(Realism(standoff_error=error, background=0.3,
                                     record_sigma=False), scene="many/close", seed=2)
    z = estimate_standoff(problem, estimate_background(problem, 8))
    assert z == pytest.approx(float(data["standoff_true"]), abs=0.5)


def test_a_known_background_leaves_the_density_map_unchanged():
    """Tikhonov with the background held at its spectral estimate, on data + a 30 %
    background, gives the map it gives on the same data without it: the same Hungarian F1,
    and on the sources' pixels the maps (each over its maximum there) agree within 0.05
    (0.019 measured).  Tikhonov is linear in the data, so what it shows is the estimate's
    error alone.  (L-BFGS on this scene, 40 steps, adds the window-centre peak of section 5.3
    with the background held, F1 0.86 against 1.0; over the 32 held-out `lab` scenes of
    docs/results.md L-BFGS with the held background scores F1 0.872 ± 0.041.)"""
    settings = dict(scene="few/far", seed=4, n=32)
    clean, clean_problem = _problem(Realism(record_sigma=False), **settings)
    data, problem = _problem(Realism(background=0.3, record_sigma=False), **settings)
    spec = load_spec("tikhonov", "robust")
    plain = fit_map(clean_problem, spec, "F2", show=False)
    held = fit_map(problem, with_nuisance(spec, parse_nuisance("background")), "F2",
                   show=False)
    support = clean["rho_true"].values > 0
    truth = data["rho_true"].values
    assert hungarian_f1(held.rho, truth) == hungarian_f1(plain.rho, truth) > 0.8
    on_sources = [r.rho[support] / r.rho[support].max() for r in (plain, held)]
    np.testing.assert_allclose(on_sources[1], on_sources[0], atol=0.05)
    true_peak = float(data["background_true"].values.max() / data["spectrum"].values.max())
    assert held.stats["background_max_rel"] == pytest.approx(true_peak, abs=0.02)
    residual = data["spectrum"].values - held.predicted
    assert abs(residual.mean()) < 0.02 * data["background_true"].values.mean()


def test_nuisances_are_refused_where_the_objective_has_none(tmp_path):
    with pytest.raises(ParameterError):
        with_nuisance(load_spec("netmy-fast", "paper"), parse_nuisance("background"))
    with pytest.raises(ParameterError):
        parse_nuisance("backgrund")
    assert not with_nuisance(load_spec("netmy-fast", "paper"), NuisanceSpec()).nuisance.any
    data = tmp_path / "scene.nc"
    cli = [sys.executable, "-m", "nvbayes.cli"]
    subprocess.run(cli + ["simulate", "--scene", "few/far", "--grid", "24", "--out", str(data)],
                   check=True, capture_output=True)
    for extra in (["--protocol", "paper"], ["--method", "laplace"]):
        out = tmp_path / f"run{len(extra[1])}"
        done = subprocess.run(cli + ["fit", str(data), "--model", "lbfgs", "--nuisance",
                                     "background", "--out", str(out), *extra],
                              capture_output=True, text=True)
        assert done.returncode == 2 and not out.exists(), done.stderr
        assert done.stderr.count("\n") == 1 and "nuisance" in done.stderr


def test_a_fit_says_when_its_model_misses_a_background_and_the_nuisance_model_mends_it(
        tmp_path):
    """A 30 % background left out of the model: the run prints a residual note naming a
    background; with ``--nuisance background`` the residuals' χ²/dof falls more than tenfold
    and the scene's sources are found."""
    data = tmp_path / "bg.nc"
    cli = [sys.executable, "-m", "nvbayes.cli"]
    subprocess.run(cli + ["simulate", "--scene", "few/far", "--grid", "24", "--realism",
                          "background", "--out", str(data)], check=True, capture_output=True)
    chi2, f1 = {}, {}
    for nuisance in ("none", "background"):
        out = tmp_path / nuisance
        done = subprocess.run(cli + ["fit", str(data), "--model", "lbfgs", "--nuisance",
                                     nuisance, "--out", str(out)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        notes = [line for line in done.stderr.splitlines() if line.startswith("nvbayes: note:")]
        if nuisance == "none":
            assert any("background" in line for line in notes), done.stderr
        with xr.open_dataset(out / "residuals.nc") as table:
            chi2[nuisance] = float(table.attrs["chi2_dof"])
        with xr.open_dataset(out / "metrics.nc") as metrics:
            f1[nuisance] = float(metrics["hungarian_f1"])
    assert chi2["background"] < chi2["none"] / 10
    assert f1["background"] == 1.0 and f1["none"] < 0.5
