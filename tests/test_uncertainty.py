"""Posterior inference for imaging: the calibrated likelihood, SVI, Laplace, NUTS, calibration.

Tolerances: exact identities (Hessians of quadratic models, round trips, analytic limits) to
1e-9 in float64; Monte Carlo estimates to the stated multiple of their standard error.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import xarray as xr
from torch.distributions import TransformedDistribution
from torch.distributions.transforms import AffineTransform, SigmoidTransform

from nvbayes.cli import main
from nvbayes.data.io import measurement_dataset, write_netcdf
from nvbayes.data.scenes import Scene, SimulationSettings, add_sensor_noise, simulate_spectrum
from nvbayes.data.spec import load_spec, spec_from_dict
from nvbayes.errors import ParameterError
from nvbayes.inference.draws import gauge_fixed
from nvbayes.inference.laplace import HessianGaussian
from nvbayes.inference.objective import stage_objective, traced_objective
from nvbayes.inference.pixel_posterior import (
    calibrated_sigma,
    exact_hessian,
    fit_nuts,
    negative_log_posterior,
    pixel_model,
    spatial_frequency,
    spectral_larmor,
)
from nvbayes.inference.svi import SupportLarmor, VariationalFieldGuide, fit_svi
from nvbayes.model.problem import InverseProblem
from nvbayes.physics.geometry import Grid
from nvbayes.physics.noise_map import sensor_noise_sigma
from nvbayes.results.run import Run, decay_rate
from nvbayes.workflows.calibrate import CalibrationPlan, interval, source_functionals, wilson

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

TINY = {
    "name": "tiny-uq", "log_eps": 1e-3,
    "field": {"kind": "neural", "octaves": 4, "width": 32, "depth": 3, "skip_layer": 0,
              "off_support": "centre"},
    "optimizer": {"name": "adamw"},
    "stages": [{"downsample": 2, "steps": 150, "lr": 2e-3,
                "weights": {"log_mse": 2.0, "noise_map": 0.5, "sparsity": 1e-2}},
               {"steps": 250, "lr": 1e-3,
                "weights": {"log_mse": 0.5, "noise_map": 2.0, "sparsity": 1e-2}}],
}


def point_measurement(n: int, positions, amplitudes, larmor, noise: float, seed: int = 0,
                      operator: str = "F3") -> xr.Dataset:
    """Sources at pixel ``positions`` on an ``n``² grid, simulated by ``operator`` with
    Gaussian sensor noise of ``noise`` × the clean dynamic range."""
    settings = SimulationSettings(grid=Grid(n), operator=operator, noise=noise)
    scene = Scene(settings.grid, "few/far", np.array(positions), np.array(amplitudes, float),
                  np.array(larmor, float))
    clean = simulate_spectrum(scene, operator, settings.linewidth, settings.freqs())
    spectrum = add_sensor_noise(clean, noise, np.random.default_rng(seed))
    return measurement_dataset(
        spectrum, settings.freqs().numpy(), settings.grid.coords,
        standoff_nm=settings.grid.standoff, linewidth_ghz=settings.linewidth,
        larmor_band_ghz=settings.band, operator=operator, noise=noise, units="normalized",
        rho_true=scene.density(), larmor_true=scene.larmor_field(), scene_class="few/far",
        seed=seed)


@pytest.fixture(scope="module")
def tiny_spec():
    return spec_from_dict(TINY)


@pytest.fixture(scope="module")
def two_sources():
    return point_measurement(16, [(5, 5), (10, 11)], [0.9, 0.6], [1.8, 2.2], 0.01)


# ------------------------------------------------------------------------ the likelihood

@pytest.mark.parametrize("noise", (0.003, 0.03))
def test_sensor_noise_estimate_agrees_with_the_simulated_noise(noise):
    """The second-difference estimate recovers the σ that was added (within 10 %)."""
    data = point_measurement(24, [(8, 8), (15, 16)], [1.0, 0.7], [1.7, 2.3], noise, seed=3)
    clean = point_measurement(24, [(8, 8), (15, 16)], [1.0, 0.7], [1.7, 2.3], 0.0)
    sigma_true = noise * float(clean.spectrum.max() - clean.spectrum.min())
    estimate = float(sensor_noise_sigma(torch.as_tensor(data.spectrum.values)))
    assert estimate == pytest.approx(sigma_true, rel=0.10)


def test_calibrated_model_is_blind_to_scale_except_through_the_total_power(two_sources):
    """``N̂`` is invariant under ρ → cρ, so the only scale-dependent data term is the total
    power, whose σ is ``σ √(n_freq n²)``."""
    problem = InverseProblem.from_measurement(two_sources)
    spec = load_spec("netmy-fast")
    larmor = spectral_larmor(problem)
    sigma = calibrated_sigma(problem)
    model = pixel_model(problem, spec, "F2", larmor, sigma)
    rho = torch.as_tensor(two_sources.rho_true.values) + 0.01
    terms = []
    for c in (1.0, 3.0):
        trace = pyro.poutine.trace(pyro.poutine.condition(model, {"rho": c * rho})).get_trace()
        trace.compute_log_prob()
        terms.append({k: float(v["log_prob_sum"]) for k, v in trace.nodes.items()
                      if v["type"] == "sample" and v["is_observed"] and k != "larmor"})
    assert terms[0]["normalized_noise_map"] == pytest.approx(terms[1]["normalized_noise_map"],
                                                             rel=1e-12)
    assert terms[0]["total_power"] != pytest.approx(terms[1]["total_power"], rel=1e-3)
    n_freq, n = problem.spectrum.shape[0], problem.n
    normal = pyro.poutine.trace(pyro.poutine.condition(model, {"rho": rho})).get_trace()
    assert normal.nodes["total_power"]["fn"].scale == pytest.approx(sigma * math.sqrt(n_freq)
                                                                   * n)


def test_spectral_larmor_recovers_the_source_frequencies(two_sources):
    problem = InverseProblem.from_measurement(two_sources)
    larmor = spectral_larmor(problem).numpy()
    truth = two_sources.larmor_true.values
    for y, x in np.argwhere(two_sources.rho_true.values > 0):
        assert larmor[y, x] == pytest.approx(truth[y, x], abs=0.01)


def test_gauge_fixed_draws_reproduce_the_observed_power(two_sources):
    problem = InverseProblem.from_measurement(two_sources)
    generator = torch.Generator().manual_seed(0)
    rho = torch.rand(2, 3, 16, 16, generator=generator, dtype=torch.float64)
    larmor = torch.full_like(rho, 2.0)
    fixed, _, nmap, alpha = gauge_fixed(problem, "F2", rho, larmor)
    assert fixed.shape == (2, 3, 16, 16) and alpha.shape == (2, 3)
    assert nmap.sum((-2, -1)) == pytest.approx(np.full((2, 3), two_sources.spectrum.sum()),
                                               rel=1e-10)
    np.testing.assert_allclose(fixed, rho.numpy() * alpha[..., None, None], rtol=1e-12)


# ------------------------------------------------------------------------------- Laplace

def test_laplace_recovers_the_analytic_covariance_of_a_linear_gaussian_model():
    """y = A x + ε, ε ~ N(0, s²), x ~ N(0, s0²): the Hessian of −log p is AᵀA/s² + I/s0²
    exactly, its inverse the posterior covariance, and the Laplace draws' covariance matches
    it to Monte Carlo error."""
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(12, 9, generator=generator, dtype=torch.float64)
    y = torch.randn(12, generator=generator, dtype=torch.float64)
    s, s0 = 0.3, 2.0

    def toy():
        x = pyro.sample("rho", dist.Normal(torch.zeros(3, 3, dtype=torch.float64), s0)
                        .to_event(2))
        pyro.sample("y", dist.Normal(a @ x.reshape(-1), s).to_event(1), obs=y)

    precision = a.T @ a / s**2 + torch.eye(9, dtype=torch.float64) / s0**2
    at = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    hessian = exact_hessian(negative_log_posterior(toy), at, block=4)
    torch.testing.assert_close(hessian, precision, rtol=1e-10, atol=1e-10)
    covariance = torch.linalg.inv(precision)
    mean = covariance @ (a.T @ y) / s**2
    draws = HessianGaussian.of(hessian).draws(mean.reshape(3, 3), 40000, generator)
    flat = draws.reshape(-1, 9)
    empirical = torch.cov(flat.T)
    # sd of a sample covariance entry ≈ sqrt((Σ_ii Σ_jj + Σ_ij²) / N)
    d = torch.diagonal(covariance)
    se = torch.sqrt((d[:, None] * d[None, :] + covariance**2) / flat.shape[0])
    assert bool(((empirical - covariance).abs() < 5 * se).all())
    assert bool(((flat.mean(0) - mean).abs() < 5 * torch.sqrt(d / flat.shape[0])).all())


def test_exact_hessian_matches_finite_differences_of_the_gradient(two_sources):
    problem = InverseProblem.from_measurement(two_sources)
    energy = negative_log_posterior(pixel_model(problem, load_spec("netmy-fast"), "F2",
                                                spectral_larmor(problem),
                                                calibrated_sigma(problem)))
    generator = torch.Generator().manual_seed(2)
    # a background without ties: TV's |Δρ| has a kink wherever neighbours are equal
    rho = (torch.as_tensor(two_sources.rho_true.values) + 0.02
           + 0.01 * torch.rand(16, 16, generator=generator, dtype=torch.float64))
    hessian = exact_hessian(energy, rho, block=64)
    v = torch.randn(rho.shape, generator=generator, dtype=torch.float64)
    eps = 1e-6

    def grad(x):
        x = x.clone().requires_grad_(True)
        return torch.autograd.grad(energy(x), x)[0].reshape(-1)

    fd = (grad(rho + eps * v) - grad(rho - eps * v)) / (2 * eps)
    torch.testing.assert_close(hessian @ v.reshape(-1), fd, rtol=1e-5,
                               atol=1e-5 * float(fd.abs().max()))
    torch.testing.assert_close(hessian, hessian.T)


def test_hessian_eigenvalues_fall_with_spatial_frequency(two_sources):
    """Appendix C.1: a fitted exponential envelope decays with k z0 (positive rate), and the
    smoothest tenth of the modes is stiffer than the roughest tenth."""
    problem = InverseProblem.from_measurement(two_sources)
    energy = negative_log_posterior(pixel_model(problem, load_spec("netmy-fast"), "F2",
                                                spectral_larmor(problem),
                                                calibrated_sigma(problem)))
    rho = torch.as_tensor(two_sources.rho_true.values) + 0.01
    eigenvalues, modes = torch.linalg.eigh(exact_hessian(energy, rho))
    k = spatial_frequency(modes, problem.spacing)
    lam = eigenvalues.numpy()
    assert decay_rate(k, lam, problem.standoff) > 0.1
    order = np.argsort(k)
    tenth = len(k) // 10
    assert np.median(lam[order[:tenth]]) > 2 * np.median(lam[order[-tenth:]])


def test_spatial_frequency_of_a_plane_wave():
    n, dx = 16, 20.0
    y, x = np.mgrid[0:n, 0:n]
    wave = np.cos(2 * np.pi * 3 * x / n).reshape(-1, 1)
    k = spatial_frequency(torch.as_tensor(wave), dx)
    assert k[0] == pytest.approx(2 * np.pi * 3 / (n * dx), rel=1e-12)


# ----------------------------------------------------------------------------------- SVI

def test_support_larmor_density_is_the_logit_normal_on_the_support():
    generator = torch.Generator().manual_seed(4)
    loc = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    scale = torch.rand(5, 5, generator=generator, dtype=torch.float64) + 0.1
    mask = (torch.rand(5, 5, generator=generator) > 0.5).to(torch.float64)
    q = SupportLarmor(loc, scale, mask, (1.5, 2.5), fill=2.0)
    value = q.rsample((3,))
    assert bool((value[:, mask == 0] == 2.0).all())
    assert bool(((value[:, mask == 1] > 1.5) & (value[:, mask == 1] < 2.5)).all())
    reference = TransformedDistribution(dist.Normal(loc, scale),
                                        [SigmoidTransform(), AffineTransform(1.5, 1.0)])
    expected = (reference.log_prob(value) * mask).sum((-2, -1))
    torch.testing.assert_close(q.log_prob(value), expected, rtol=1e-9, atol=1e-9)


def test_svi_objective_is_pyros_trace_elbo(two_sources, tiny_spec):
    """The solver's loss under the variational guide equals Trace_ELBO's estimate from the
    same draw, less the likelihood's Gaussian normalizers."""
    from pyro.infer import Trace_ELBO

    from nvbayes.inference.map import build_field

    problem = InverseProblem.from_measurement(two_sources)
    torch.manual_seed(0)
    net = build_field(tiny_spec, problem, scales=True).double()
    model, guide = stage_objective(problem, tiny_spec, tiny_spec.stages[-1], "F2", net,
                                   guide_type=VariationalFieldGuide,
                                   noise_sigma=calibrated_sigma(problem))
    pyro.set_rng_seed(7)
    loss, _ = traced_objective(model, guide, 2.0)
    pyro.set_rng_seed(7)
    elbo = Trace_ELBO().loss(model, guide, 2.0)
    assert float(loss.detach()) + model.constant == pytest.approx(elbo, rel=1e-9)


def _source_sd(draws, position):
    y, x = position
    return float(draws[..., y - 1: y + 2, x - 1: x + 2].sum((-2, -1)).std())


def test_svi_standard_deviation_shrinks_as_the_noise_falls(tiny_spec):
    sds = []
    for noise in (0.03, 0.003):
        data = point_measurement(16, [(8, 7)], [0.8], [2.0], noise, seed=5)
        result = fit_svi(InverseProblem.from_measurement(data), tiny_spec, "F2", seed=0,
                         show=False, draws=200)
        sds.append(_source_sd(result.rho, (8, 7)))
    assert sds[1] < 0.5 * sds[0]


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny_toml(tmp_path_factory):
    from nvbayes.data.io import toml_dumps

    path = tmp_path_factory.mktemp("models") / "tiny-uq.toml"
    path.write_text(toml_dumps(TINY))
    return path


def test_svi_run_opens_in_arviz_and_round_trips(two_sources, tiny_toml, tmp_path, capsys):
    data = write_netcdf(two_sources, tmp_path / "m.nc")
    code, out, err = run_cli(["fit", data, "--method", "svi", "--model", tiny_toml,
                              "--likelihood", "noise-map", "--draws", 50,
                              "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    idata = az.from_netcdf(str(tmp_path / "run" / "posterior.nc"))
    assert dict(idata.posterior["rho"].sizes) == {"chain": 1, "draw": 50, "y": 16, "x": 16}
    summary = az.summary(idata, var_names=["rho"], kind="stats")
    assert len(summary) == 16 * 16
    means = idata.posterior["rho"].mean(("chain", "draw")).values.reshape(-1)
    np.testing.assert_allclose(summary["mean"].values, means, atol=1e-3)
    assert idata.sample_stats["scale_correction"].shape == (1, 50)
    run = Run.load(tmp_path / "run")
    np.testing.assert_array_equal(run.idata.posterior["rho"].values,
                                  idata.posterior["rho"].values)
    assert run.config["run"]["method"] == "svi"
    assert (tmp_path / "run" / "reconstruction.png").is_file()


def test_laplace_run_writes_the_hessian_spectrum(two_sources, tiny_toml, tmp_path, capsys):
    data = write_netcdf(two_sources, tmp_path / "m.nc")
    code, out, err = run_cli(["fit", data, "--method", "laplace", "--model", tiny_toml,
                              "--likelihood", "noise-map", "--draws", 40,
                              "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    assert "condition number" in out
    run = Run.load(tmp_path / "run")
    h = run.hessian
    assert h.sizes["mode"] == 16 * 16
    lam = h.eigenvalue.values
    assert float(h.attrs["condition_number"]) == pytest.approx(lam.max() / lam[lam > 0].min(),
                                                               rel=1e-9)
    assert (tmp_path / "run" / "hessian_spectrum.png").is_file()
    assert run.idata.posterior["rho"].shape == (1, 40, 16, 16)
    assert float(run.idata.posterior["rho"].min()) >= 0


# ---------------------------------------------------------------------------------- NUTS

def test_nuts_on_an_8x8_free_grid_converges():
    data = point_measurement(8, [(4, 3)], [0.8], [2.0], 0.01, seed=2)
    result = fit_nuts(InverseProblem.from_measurement(data), load_spec("netmy-fast"), "F2",
                      chains=2, warmup=600, draws=300)
    assert result.rho.shape == (2, 300, 8, 8)
    rhat = az.rhat(az.from_dict(posterior={"rho": result.rho}))["rho"].values
    assert float(rhat.max()) < 1.05
    mass = result.rho[..., 3:6, 2:5].sum((-2, -1))
    assert abs(float(mass.mean()) - 0.8) < 0.15


# --------------------------------------------------------------------------- calibration

def test_source_functionals_of_the_truth_are_its_positions_and_amplitudes(two_sources):
    truth = two_sources.rho_true.values
    coords = two_sources.x.values
    sources = np.argwhere(truth > 0)
    values = source_functionals(truth, sources, coords, 2.0, 1.0)
    np.testing.assert_allclose(values[:, 0], coords[sources[:, 1]])
    np.testing.assert_allclose(values[:, 1], coords[sources[:, 0]])
    np.testing.assert_allclose(values[:, 2], truth[truth > 0])
    # a uniform background is removed by the ring, positions unchanged
    shifted = source_functionals(truth + 0.05, sources, coords, 2.0, 1.0)
    np.testing.assert_allclose(shifted, values, atol=1e-12)


def test_intervals_of_a_calibrated_posterior_cover_at_their_level():
    """Truths drawn from the posterior itself are covered at the nominal rate."""
    rng = np.random.default_rng(0)
    hits = []
    for _ in range(2000):
        centre = rng.normal()
        draws = centre + rng.normal(size=(400, 1))
        truth = centre + rng.normal()
        lo, hi = interval(draws, 0.9)
        hits.append(bool(lo[0] <= truth <= hi[0]))
    low, high = wilson(np.mean(hits), len(hits))
    assert low < 0.9 < high + 0.01


@pytest.mark.parametrize("n", (7, 22, 32, 100))
def test_wilson_interval_holds_the_proportion_at_the_ends(n):
    for hits in (0, 1, n - 1, n):
        lo, hi = wilson(hits / n, n)
        assert 0.0 <= lo <= hits / n <= hi <= 1.0
    assert wilson(0.0, n)[0] == 0.0 and wilson(1.0, n)[1] == 1.0
    # the textbook value: 0 of 22 gives [0, 0.149]
    assert wilson(0.0, 22)[1] == pytest.approx(0.1487, abs=1e-4)


def test_calibrate_cli_writes_and_resumes(tiny_toml, tmp_path, capsys):
    args = ["calibrate", "--method", "svi,laplace", "--grid", 16, "--scenes", 2,
            "--classes", "few/far", "--model", tiny_toml, "--draws", 30,
            "--out", tmp_path / "cal"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "| svi |" in out and "| laplace |" in out
    cov = xr.open_dataset(tmp_path / "cal" / "coverage.nc")
    assert set(cov["method"].values) == {"svi", "laplace"}
    assert (tmp_path / "cal" / "coverage.png").is_file()
    cells = sorted((tmp_path / "cal" / "cells").iterdir())
    stamps = [c.stat().st_mtime_ns for c in cells]
    code, again, err = run_cli(args, capsys)
    assert code == 0 and again == out
    assert [c.stat().st_mtime_ns for c in cells] == stamps
    code, _, err = run_cli(args[:-2] + ["--level", 0.8, "--out", tmp_path / "cal"], capsys)
    assert code == 2 and "other settings" in err


@pytest.mark.parametrize("extra, message", [
    (["--method", "nuts", "--grid", 32], "up to 16x16"),
    (["--method", "mcmc"], "unknown calibration method"),
    (["--level", 1.5], "--level"),
    (["--method", "svi", "--nuisance", "background"], "only the catalogue"),
    (["--method", "catalogue", "--nuisance", "glare"], "unknown nuisance"),
])
def test_calibrate_bad_input_is_one_line(extra, message, tmp_path, capsys):
    code, out, err = run_cli(["calibrate", "--out", tmp_path / "cal"] + extra, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cal").exists()


@pytest.mark.parametrize("extra, message", [
    (["--method", "nuts"], "up to 16x16"),
    (["--method", "svi", "--model", "tikhonov", "--likelihood", "noise-map"], "neural field"),
    (["--method", "laplace", "--likelihood", "exact"], "invalid choice"),
    (["--method", "laplace", "--gain", "maybe"], "invalid choice"),
    (["--method", "svi", "--draws", 1], "draws"),
    (["--method", "nuts", "--precision", "bf16"], "precision"),
])
def test_fit_bad_input_is_one_line(extra, message, tmp_path, capsys):
    data = point_measurement(24, [(8, 8)], [1.0], [2.0], 0.01)
    path = write_netcdf(data, tmp_path / "m.nc")
    code, out, err = run_cli(["fit", path, "--out", tmp_path / "run"] + extra, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_plan_validation():
    with pytest.raises(ParameterError):
        CalibrationPlan(scenes=0)
    assert dataclasses.replace(CalibrationPlan(), level=0.5).level == 0.5
