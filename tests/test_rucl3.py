"""The α-RuCl3 workflow: priors, per-NV files, the E.8 steps, Laplace, NUTS and the CLI."""

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
import xarray as xr

from nvbayes.cli import main
from nvbayes.data.rucl3 import (
    SPECTRAL_SCHEMA,
    NVDataError,
    read_nv_data,
    shipped_synthetic_path,
    validate_nv_data,
    write_nv_data,
)
from nvbayes.data.rucl3_spec import load_ansatz
from nvbayes.errors import ParameterError
from nvbayes.inference.laplace import run_laplace
from nvbayes.model.ansatz import PositiveNormal
from nvbayes.model.rucl3 import (
    ansatz_model,
    implied_depths,
    landscape,
    measured_slope,
    sheet_rate,
    slope_analysis,
    synthetic_data,
    synthetic_spectral,
)
from nvbayes.model.spectral import spectral_rate
from nvbayes.physics.relaxation import DIAMOND_100_POLAR_DEG, nv_frequency_hz
from nvbayes.results.run import Run
from nvbayes.workflows.rucl3 import fit_ansatz, save_ansatz_run

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import arviz as az


@pytest.fixture(scope="module")
def spec():
    return load_ansatz()


@pytest.fixture(scope="module")
def shipped():
    return read_nv_data(shipped_synthetic_path())


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# ---- priors ----------------------------------------------------------------------------------


def test_positive_normal_is_a_normalized_truncated_normal():
    d = PositiveNormal(torch.tensor(14.0, dtype=torch.float64),
                       torch.tensor(5.0, dtype=torch.float64))
    x = torch.linspace(1e-9, 80, 400001, dtype=torch.float64)
    density = torch.exp(d.log_prob(x))
    assert float(torch.trapezoid(density, x)) == pytest.approx(1.0, abs=1e-6)
    torch.manual_seed(0)
    draws = d.sample((200000,))
    assert float(draws.min()) > 0
    se = float(draws.std()) / math.sqrt(draws.numel())
    assert abs(float(draws.mean()) - float(d.mean)) < 4 * se


@pytest.mark.parametrize("operator", ["F2", "F1"])
def test_the_sampling_reparameterization_keeps_the_stated_prior(spec, operator):
    """Uniform (ln σg, log10_scale) restricted to the amplitude box is uniform in
    (log10 A, ln σg): log10 A uniform on its box and independent of σg (KS tests)."""
    from scipy import stats

    model = ansatz_model(spec, operator)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    lo, hi = (math.log(v) for v in spec.prior.sigma_g_nm)
    log_sigma = lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)
    u_lo, u_hi = model._scale_box
    scale = u_lo + (u_hi - u_lo) * torch.rand(n, generator=g, dtype=torch.float64)
    phys = model.physical({"log_sigma_g": log_sigma, "log10_scale": scale,
                           "depth": torch.ones(n)})
    a_lo, a_hi = spec.prior.log10_amplitude
    keep = (phys["log10_amplitude"] >= a_lo) & (phys["log10_amplitude"] <= a_hi)
    amp = phys["log10_amplitude"][keep].numpy()
    assert stats.kstest(amp, stats.uniform(a_lo, a_hi - a_lo).cdf).pvalue > 1e-3
    small = phys["sigma_g"][keep].numpy() < 20.0   # the median of the log-uniform prior
    assert abs(small.mean() - 0.5) < 4 * math.sqrt(0.25 / small.size)
    assert stats.ks_2samp(amp[small], amp[~small]).pvalue > 1e-3
    # the box of log10_scale contains the image of the whole prior box
    edges = torch.exp(torch.tensor([lo, hi], dtype=torch.float64))
    for a in (a_lo, a_hi):
        image = a + model.log10_factor(edges)
        assert bool(((image >= u_lo) & (image <= u_hi)).all())


# ---- per-NV files ----------------------------------------------------------------------------


def test_shipped_set_is_the_model_at_the_published_constants(spec, shipped):
    again = synthetic_data(spec)
    for name in again.data_vars:
        np.testing.assert_allclose(shipped[name].values, again[name].values, rtol=1e-12)
    assert shipped.attrs["synthetic"] == 1
    assert "SYNTHETIC" in shipped.attrs["description"]
    assert shipped.attrs["true_log10_amplitude"] == pytest.approx(
        math.log10(spec.constants.spin_density_m2), abs=1e-12)
    assert list(shipped["nv"].values) == ["NV2", "NV3", "NV4", "NV6", "NV7", "NV8", "NV9",
                                          "NV10"]


@pytest.mark.parametrize("suffix", [".csv", ".nc"])
def test_per_nv_files_round_trip_exactly(shipped, tmp_path, suffix):
    back = read_nv_data(write_nv_data(shipped, tmp_path / f"set{suffix}"))
    for name in shipped.data_vars:
        np.testing.assert_array_equal(back[name].values, shipped[name].values)
    assert list(back["nv"].values) == list(shipped["nv"].values)
    assert back.attrs["synthetic"] == 1


def _table(**columns):
    return xr.Dataset({k: ("nv", np.asarray(v, dtype=float)) for k, v in columns.items()},
                      coords={"nv": [f"NV{i}" for i in range(len(next(iter(columns.values()))))]})


def test_flake_and_bare_rates_give_gamma_ru():
    data = validate_nv_data(_table(field_gauss=[2, 2, 2], gamma_flake=[500, 300, 250],
                                   gamma_flake_err=[30, 40, 20], gamma_bare=[200, 100, 150],
                                   gamma_bare_err=[40, 30, 15]))
    np.testing.assert_array_equal(data["gamma_ru"].values, [300, 200, 100])
    np.testing.assert_allclose(data["gamma_ru_err"].values, [50, 50, 25])
    assert data["gamma_ru"].attrs["units"] == "s-1"


@pytest.mark.parametrize("columns, problem", [
    (dict(field_gauss=[2, 2], gamma_ru=[100, -5], gamma_ru_err=[1, 1]), "must be positive"),
    (dict(field_gauss=[2, 2], gamma_ru=[100, 50]), "needs gamma_ru_err"),
    (dict(field_gauss=[2, 2], gamma_flake=[100, 50], gamma_flake_err=[1, 1],
          gamma_bare=[40, 60], gamma_bare_err=[1, 1]), "gamma_flake <= gamma_bare"),
    (dict(gamma_ru=[100, 50], gamma_ru_err=[1, 1]), "no field_gauss"),
    (dict(field_gauss=[2, 2], gamma_ru=[100, np.nan], gamma_ru_err=[1, 1]), "not finite"),
    (dict(field_gauss=[2], gamma_ru=[100], gamma_ru_err=[1]), "has 1 NV"),
])
def test_bad_per_nv_data_is_refused(columns, problem):
    with pytest.raises(NVDataError, match=problem):
        validate_nv_data(_table(**columns))


# ---- the steps of appendix E.8 ---------------------------------------------------------------


def test_implied_depths_invert_the_sheet_rate(spec):
    depths = np.array([9.0, 12.5, 14.49, 20.0, 31.0])
    for op in ("F2", "F1"):
        rates = sheet_rate(spec, depths, op, 2.0)
        data = validate_nv_data(_table(field_gauss=np.full(5, 2.0), gamma_ru=rates,
                                       gamma_ru_err=0.1 * rates))
        np.testing.assert_allclose(implied_depths(spec, data, op), depths, rtol=1e-9)
    # F1's sheet rate saturates as d -> 0: a larger measured rate has no depth
    too_fast = 10 * sheet_rate(spec, 0.1, "F1", 2.0)
    data = validate_nv_data(_table(field_gauss=[2.0, 2.0], gamma_ru=[too_fast, too_fast],
                                   gamma_ru_err=[1.0, 1.0]))
    assert np.isnan(implied_depths(spec, data, "F1")).all()


def test_slopes_follow_the_power_laws(spec):
    """Γ_int ∝ d^-α and Γ_Ru ∝ d^-4 give a measured slope of exactly 4/α."""
    d = np.array([8.0, 11.0, 14.0, 19.0, 26.0])
    alpha = spec.protocol.alpha
    data = validate_nv_data(_table(field_gauss=np.full(5, 2.0), gamma_bare=300 * d**-alpha,
                                   gamma_bare_err=np.ones(5), gamma_ru=5e6 * d**-4.0,
                                   gamma_ru_err=np.ones(5)))
    slope = measured_slope(data)
    assert slope.value == pytest.approx(4 / alpha, rel=1e-12)
    out = slope_analysis(spec, data)
    # the paper's predictions b = 4/α = 3.77 (F2) and 2/α = 1.89 (F1), appendix E.8
    assert float(out["slope_paper"].sel(operator="F2")) == pytest.approx(3.77, abs=5e-3)
    assert float(out["slope_paper"].sel(operator="F1")) == pytest.approx(1.89, abs=5e-3)
    assert float(out["exponent_model"].sel(operator="F2")) == pytest.approx(4.0, abs=1e-6)


def test_landscape_recovers_noiseless_truth_and_its_hessian(spec):
    """Noiseless F2 rates at known depths: the minimum is the truth, L = 0 there, and the
    autograd Hessian equals central finite differences of the loss."""
    depths = np.array([7.0, 10.0, 14.0, 19.0, 25.0, 33.0])
    truth = (18.6, 9.0)
    model = ansatz_model(spec, "F2")
    with torch.no_grad():
        rates = model.rates(torch.tensor(truth[0], dtype=torch.float64),
                            torch.tensor(truth[1], dtype=torch.float64),
                            torch.as_tensor(depths), torch.full((6,), 2.0,
                                                                dtype=torch.float64)).numpy()
    data = validate_nv_data(_table(field_gauss=np.full(6, 2.0), gamma_ru=rates,
                                   gamma_ru_err=0.1 * rates, depth_nm=depths))
    land = landscape(spec, data, "F2", grid=30)
    np.testing.assert_allclose(land["minimum"].values, truth, rtol=1e-5)
    assert float(land["minimum_loss"]) < 1e-12
    assert float(land["log_mse"].min()) >= float(land["minimum_loss"])

    def loss(a, s):
        pred = np.log(model.rates(torch.tensor(a, dtype=torch.float64),
                                  torch.tensor(s, dtype=torch.float64),
                                  torch.as_tensor(depths),
                                  torch.full((6,), 2.0, dtype=torch.float64)).numpy())
        return float(np.mean((pred - np.log(rates)) ** 2))

    a, s = land["minimum"].values
    h = (1e-3, 1e-2)
    fd = np.empty((2, 2))
    fd[0, 0] = (loss(a + h[0], s) - 2 * loss(a, s) + loss(a - h[0], s)) / h[0] ** 2
    fd[1, 1] = (loss(a, s + h[1]) - 2 * loss(a, s) + loss(a, s - h[1])) / h[1] ** 2
    fd[0, 1] = fd[1, 0] = (loss(a + h[0], s + h[1]) - loss(a + h[0], s - h[1])
                           - loss(a - h[0], s + h[1]) + loss(a - h[0], s - h[1])) / (
        4 * h[0] * h[1])
    np.testing.assert_allclose(land["hessian"].sel(axes="paper").values, fd, rtol=1e-4)
    eig = np.linalg.eigvalsh(fd)
    kappa = land["condition_number"]
    assert float(kappa.sel(axes="paper")) == pytest.approx(eig.max() / eig.min(), rel=1e-3)
    # at a minimum (zero gradient) the Hessian in (log10 A, log10 σg) is J H J
    jac = np.diag([1.0, s * math.log(10)])
    eig = np.linalg.eigvalsh(jac @ fd @ jac)
    assert float(kappa.sel(axes="log")) == pytest.approx(eig.max() / eig.min(), rel=1e-3)
    assert not land["rank_deficient"].any()


# ---- inference ------------------------------------------------------------------------------


def test_laplace_recovers_the_linear_gaussian_posterior():
    """x ~ N(0, s0² I), y ~ N(A x, σ² I): the posterior precision is AᵀA/σ² + I/s0²."""
    import pyro
    import pyro.distributions as dist

    g = torch.Generator().manual_seed(1)
    a_mat = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = torch.randn(6, generator=g, dtype=torch.float64)
    s0, sigma = 2.0, 0.3

    def model(y):
        x = pyro.sample("x", dist.Normal(torch.zeros(3, dtype=torch.float64), s0).to_event(1))
        pyro.sample("y", dist.Normal(x @ a_mat.T, sigma).to_event(1), obs=y)

    result = run_laplace(model, y, steps=500, lr=0.05, draws=20000, seed=0)
    precision = a_mat.T @ a_mat / sigma**2 + torch.eye(3, dtype=torch.float64) / s0**2
    mean = torch.linalg.solve(precision, a_mat.T @ y / sigma**2)
    np.testing.assert_allclose(result.hessian, precision.numpy(), rtol=1e-8)
    np.testing.assert_allclose(result.mode["x"], mean.numpy(), rtol=1e-8, atol=1e-10)
    cov = np.cov(result.samples["x"][0].T)
    np.testing.assert_allclose(cov, torch.linalg.inv(precision).numpy(), atol=0.05 * float(
        torch.linalg.inv(precision).diagonal().max()))


def test_laplace_fit_of_the_ansatz_writes_a_run(spec, shipped, tmp_path):
    run = fit_ansatz(spec, shipped, "F2", "laplace", draws=400)
    folder = save_ansatz_run(run, tmp_path / "lap")
    idata = az.from_netcdf(str(folder / "posterior.nc"))
    assert idata.posterior["depth"].shape == (1, 400, 8)
    lap = xr.open_dataset(folder / "laplace.nc")
    eig = lap["eigenvalues"].values
    assert (eig > 0).all()
    assert lap.attrs["condition_number"] == pytest.approx(eig.max() / eig.min())
    assert (folder / "posterior.png").stat().st_size > 10_000
    back = Run.load(folder)                      # the imaging runs' container, one folder
    assert back.method == "laplace" and back.history is None
    xr.testing.assert_identical(back.tables["laplace"], run.tables["laplace"])
    np.testing.assert_allclose(back.summary["mean"].values, run.summary["mean"].values)


@pytest.fixture(scope="module")
def nuts_run(spec, shipped):
    """A short NUTS run: enough for the run folder's layout, not for the posterior."""
    return fit_ansatz(spec, shipped, "F2", "nuts", seed=0, chains=2, warmup=8, draws=8)


@pytest.mark.slow      # 4 x 300 NUTS iterations: about 9 CPU-minutes on the 2-core AMD EPYC
def test_nuts_recovers_the_synthetic_parameters(spec, shipped):
    nuts_run = fit_ansatz(spec, shipped, "F2", "nuts", seed=0, chains=4, warmup=150, draws=150)
    post = nuts_run.idata.posterior
    truth = {"log10_amplitude": shipped.attrs["true_log10_amplitude"],
             "sigma_g": shipped.attrs["true_sigma_g_nm"],
             "depth": shipped["depth_true_nm"].values}
    for name, value in truth.items():
        lo, hi = (post[name].quantile(q, dim=("chain", "draw")).values for q in (0.05, 0.95))
        assert np.all((lo <= value) & (value <= hi)), name
    summary = nuts_run.summary
    # 150 draws per chain: the broad σg marginal (2 to 170 nm) mixes to R-hat 1.05 at most
    assert float(summary["r_hat"].max()) < 1.1


@pytest.mark.slow
def test_nuts_recovers_f1_truth_from_f1_data(spec):
    data = synthetic_data(spec, operator="F1", seed=1)
    run = fit_ansatz(spec, data, "F1", "nuts", seed=1, chains=4, warmup=300, draws=300)
    post = run.idata.posterior
    for name, value in (("log10_amplitude", data.attrs["true_log10_amplitude"]),
                        ("sigma_g", data.attrs["true_sigma_g_nm"]),
                        ("depth", data["depth_true_nm"].values)):
        lo, hi = (post[name].quantile(q, dim=("chain", "draw")).values for q in (0.05, 0.95))
        assert np.all((lo <= value) & (value <= hi)), name
    # measured 1.08 (σg) at 300 + 300 per chain since the transverse-noise change (1.05 before)
    assert float(run.summary["r_hat"].max()) < 1.1


def test_nuts_run_folder_opens_in_arviz(nuts_run, tmp_path):
    folder = save_ansatz_run(nuts_run, tmp_path / "nuts")
    idata = az.from_netcdf(str(folder / "posterior.nc"))
    assert set(idata.groups()) >= {"posterior", "sample_stats", "observed_data",
                                   "constant_data"}
    assert idata.posterior.sizes["chain"] == 2 and idata.posterior.sizes["draw"] == 8
    assert idata.sample_stats["diverging"].dtype == bool
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = az.summary(idata, var_names=["log10_amplitude", "sigma_g", "depth"])
    assert len(summary) == 10 and summary["r_hat"].notna().all()
    tree = xr.open_datatree(folder / "posterior.nc")
    assert "posterior" in tree.children
    assert idata.posterior.attrs["synthetic"] == 1


# ---- command line ---------------------------------------------------------------------------


def test_rucl3_commands_run_on_the_shipped_set(tmp_path, capsys):
    code, out, _ = run_cli(["rucl3", "depth", "--out", tmp_path / "depth"], capsys)
    assert code == 0 and "SYNTHETIC" in out and "F2:" in out and "point ratio" in out
    assert (tmp_path / "depth" / "depth.png").is_file()
    table = xr.open_dataset(tmp_path / "depth" / "depth.nc")
    assert set(table["operator"].values) == {"F1", "F2"}
    code, out, _ = run_cli(["rucl3", "slope", "--out", tmp_path / "slope"], capsys)
    assert code == 0 and "b_pred = 3.77" in out
    code, out, _ = run_cli(["rucl3", "landscape", "--grid", "15", "--out", tmp_path / "land"],
                           capsys)
    assert code == 0 and "condition number" in out
    land = xr.open_dataset(tmp_path / "land" / "landscape.nc")
    assert land["log_mse"].shape == (2, 15, 15)
    code, out, _ = run_cli(["rucl3", "landscape", "--grid", "9", "--depths", "true",
                            "--operators", "F1", "--out", tmp_path / "true"], capsys)
    assert code == 0 and "true depths" in out


def test_rucl3_simulate_then_fit_a_users_file(tmp_path, capsys):
    path = tmp_path / "mine.nc"
    code, _, _ = run_cli(["rucl3", "simulate", "--simulator", "F1", "--data-seed", "3", "--out",
                          path], capsys)
    assert code == 0 and read_nv_data(path).attrs["true_operator"] == "F1"
    code, out, _ = run_cli(["rucl3", "fit", path, "--operator", "F1", "--method", "laplace",
                            "--draws", "100", "--out", tmp_path / "run"], capsys)
    assert code == 0 and "condition number" in out
    assert (tmp_path / "run" / "posterior.nc").is_file()


@pytest.mark.parametrize("args, problem", [
    (["rucl3", "fit", "missing.csv"], "no such file"),
    (["rucl3", "fit", "--operator", "F3"], "invalid choice: 'F3'"),
    (["rucl3", "fit", "--method", "svi"], "invalid choice: 'svi'"),
    (["rucl3", "landscape", "--operators", "F2,F2"], "repeated operator"),
    (["rucl3", "simulate", "--out", "x.txt"], "neither .csv nor .nc"),
    (["rucl3", "rates", "--depth-nm", "-1"], "must be positive"),
    (["rucl3", "rates", "--depth-nm", "14", "--thickness-nm", "0.1"], "thinner than one layer"),
    (["rucl3", "rates", "--depth-nm", "14", "--layer-densities", "1e18,x"], "not a list of"),
    (["rucl3", "rates", "--depth-nm", "14", "--layers", "2", "--thickness-nm", "5"],
     "not allowed with argument"),
    (["rucl3", "depth", "--convention", "nature"], "invalid choice: 'nature'"),
    (["rucl3", "simulate", "--spectral", "--convention", "paper", "--out", "s.csv"],
     "do not depend on the field"),
    (["rucl3", "spectral", shipped_synthetic_path()], "has no 'measurement' column"),
])
def test_bad_rucl3_arguments_give_one_line(args, problem, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(args, capsys)
    assert code == 2 and problem in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_rucl3_never_replaces_a_foreign_folder(tmp_path, capsys):
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "mine.txt").write_text("keep me")
    for step in ("fit", "depth", "slope", "landscape"):
        code, _, err = run_cli(["rucl3", step, "--out", keep], capsys)
        assert code == 2 and "is not an output folder" in err
    assert sorted(p.name for p in keep.iterdir()) == ["mine.txt"]
    code, _, _ = run_cli(["rucl3", "depth", "--out", tmp_path / "d"], capsys)
    code, _, _ = run_cli(["rucl3", "depth", "--out", tmp_path / "d"], capsys)
    assert code == 0


def test_imaging_fit_refuses_the_ansatz_file(tmp_path, capsys):
    data = tmp_path / "m.nc"
    code, _, _ = run_cli(["simulate", "--scene", "few/far", "--grid", "24", "--freqs", "10",
                          "--out", data], capsys)
    assert code == 0
    code, _, err = run_cli(["fit", data, "--model", "rucl3", "--out", tmp_path / "run"],
                           capsys)
    assert code == 2 and "α-RuCl3" in err and "nvbayes rucl3 fit" in err
    assert not (tmp_path / "run").exists()


# ---- the two conventions ----------------------------------------------------------------------


def test_the_paper_convention_reproduces_the_papers_numbers(spec):
    """Appendix E.8: 54.0 and 11,353.5 s⁻¹ at 14.5 nm, slopes 4/α = 3.77 and 2/α = 1.89."""
    assert float(sheet_rate(spec, 14.5, "F2", 2.0, "paper")) == pytest.approx(54.0, rel=1e-3)
    assert float(sheet_rate(spec, 14.5, "F1", 2.0, "paper")) == pytest.approx(11353.5, rel=1e-3)
    data = validate_nv_data(_table(field_gauss=np.full(3, 2.0), gamma_ru=[100.0, 50.0, 30.0],
                                   gamma_ru_err=[5.0, 5.0, 5.0]))
    slopes = slope_analysis(spec, data, convention="paper")
    assert slopes.attrs["convention"] == "paper"
    np.testing.assert_allclose(slopes["exponent_model"].values, [4.0, 2.0], atol=1e-9)
    np.testing.assert_allclose(slopes["slope_model"].values, [3.77, 1.89], atol=5e-3)
    # the physical convention: the golden rule's 720.7 s⁻¹ for the sheet at zero field
    assert float(sheet_rate(spec, 14.5, "F2", 0.0)) == pytest.approx(720.7, abs=0.05)


def test_the_paper_f1_landscape_is_rank_deficient_along_a_sigma_const(spec, shipped):
    paper = landscape(spec, shipped, "F1", grid=15, convention="paper")
    assert paper.attrs["convention"] == "paper"
    assert paper["rank_deficient"].all()
    assert not np.isfinite(paper["condition_number"].values).any()
    # null direction in (log10 A, log10 σg): (1, -1)/√2, the valley A² σg² = const
    direction = paper["soft_direction"].sel(axes="log").values
    assert abs(direction @ np.array([1.0, -1.0]) / math.sqrt(2)) == pytest.approx(1.0, abs=1e-6)
    for op in ("F1", "F2"):
        physical = landscape(spec, shipped, op, grid=30)
        assert not physical["rank_deficient"].any() and not physical["indefinite"].any()
        assert np.isfinite(physical["condition_number"].values).all()


def test_physical_rates_are_set_by_the_spec_physics(spec):
    base = float(sheet_rate(spec, 14.5, "F2"))
    axial = dataclasses.replace(spec, physics=dataclasses.replace(spec.physics, noise="axial"))
    # equal for an infinite sheet; the 1 µm disc differs at 1e-7
    assert float(sheet_rate(axial, 14.5, "F2")) == pytest.approx(base, rel=1e-6)
    tilted = dataclasses.replace(spec, physics=dataclasses.replace(
        spec.physics, nv_polar_deg=DIAMOND_100_POLAR_DEG))
    assert float(sheet_rate(tilted, 14.5, "F2")) == pytest.approx(base * 4 / 3, rel=1e-6)
    empty_second = dataclasses.replace(spec, physics=dataclasses.replace(
        spec.physics, layers=2, layer_densities_m2=(spec.constants.spin_density_m2, 0.0)))
    assert float(sheet_rate(empty_second, 14.5, "F2")) == pytest.approx(base, rel=1e-12)
    with pytest.raises(ParameterError, match="layer densities"):
        dataclasses.replace(spec.physics, layers=3, layer_densities_m2=(1e18,))


# ---- step 3 ---------------------------------------------------------------------------------


def test_spectral_data_round_trip_and_validation(spec, tmp_path):
    data = synthetic_spectral(spec)
    assert data.attrs["schema"] == SPECTRAL_SCHEMA
    back = read_nv_data(write_nv_data(data, tmp_path / "s.csv"), "measurement")
    np.testing.assert_array_equal(back["gamma_ru"].values, data["gamma_ru"].values)
    assert float(back.attrs["true_tau_c_ns"]) == spec.constants.tau_c_ns
    shipped = read_nv_data(shipped_synthetic_path("measurement"), "measurement")
    np.testing.assert_allclose(shipped["gamma_ru"].values, data["gamma_ru"].values, rtol=1e-12)
    one_field = data.assign(field_gauss=("measurement", np.full(3, 2.0)))
    with pytest.raises(NVDataError, match="one field"):
        validate_nv_data(one_field, "x", "measurement")
    with pytest.raises(NVDataError, match="has 2 measurement"):
        validate_nv_data(data.isel(measurement=[0, 1]), "x", "measurement")


def test_spectral_rate_is_the_lorentzian_ratio():
    """Γ(B)/Γ(B₁) = (1 + ω₁²τ²)/(1 + ω²τ²) by hand; the rate at B₁ is Γ₁."""
    tau = 0.41e-9
    w = [2 * math.pi * float(nv_frequency_hz(b)) for b in (2.0, 383.5)]
    ratio = float(spectral_rate(math.log10(0.41), 3.0, 383.5, 2.0)) / 1e3
    assert ratio == pytest.approx((1 + (w[0] * tau) ** 2) / (1 + (w[1] * tau) ** 2), rel=1e-12)
    assert float(spectral_rate(-1.0, 2.5, 2.0, 2.0)) == pytest.approx(10**2.5, rel=1e-12)


def test_spectral_step_recovers_tau_c_where_the_fields_reach_low_frequency(spec, tmp_path,
                                                                           capsys):
    path = tmp_path / "wide.csv"
    code, _, _ = run_cli(["rucl3", "simulate", "--spectral", "--fields", "2,313,383.5,700,900",
                          "--data-seed", "1", "--out", path], capsys)
    assert code == 0
    code, out, _ = run_cli(["rucl3", "spectral", path, "--chains", "2", "--warmup", "150",
                            "--draws", "150", "--out", tmp_path / "run"], capsys)
    assert code == 0 and "same in both conventions" in out and "SYNTHETIC" in out
    idata = az.from_netcdf(str(tmp_path / "run" / "posterior.nc"))
    post = idata.posterior
    for name, truth in (("tau_c_ns", 0.41), ("linewidth", 1 / 0.41)):
        lo, hi = np.quantile(post[name].values, [0.05, 0.95])
        assert lo <= truth <= hi, name
        assert hi / lo < 1.5, name               # these fields pin τc to tens of per cent
    assert post.attrs["convention"] == "physical"
    assert (tmp_path / "run" / "spectral.png").stat().st_size > 10_000


def test_rates_command_prints_both_conventions(capsys):
    code, out, _ = run_cli(["rucl3", "rates", "--depth-nm", "14.5", "--convention", "paper"],
                           capsys)
    assert code == 0 and "F2: 54 s^-1" in out and "F1: 11353.5 s^-1" in out
    assert "F1/F2 = 210.25" in out and "paper convention" in out
    code, out, _ = run_cli(["rucl3", "rates", "--depth-nm", "14.5"], capsys)
    assert code == 0 and "F2: 720.704 s^-1" in out and "transverse" in out


def test_a_flake_given_by_thickness_is_the_same_as_by_layers(capsys):
    _, by_layers, _ = run_cli(["rucl3", "rates", "--depth-nm", "14.5", "--layers", "10"],
                              capsys)
    _, by_thickness, _ = run_cli(["rucl3", "rates", "--depth-nm", "14.5", "--thickness-nm",
                                  "5.7"], capsys)
    assert by_layers == by_thickness and "5.7 nm thick" in by_layers


def test_every_step_names_its_convention(tmp_path, capsys):
    code, out, _ = run_cli(["rucl3", "depth", "--convention", "paper", "--out",
                            tmp_path / "d"], capsys)
    assert code == 0 and "paper convention" in out
    table = xr.open_dataset(tmp_path / "d" / "depth.nc")
    assert table.attrs["convention"] == "paper"
    # the paper's numbers: 54.0 and 11,353.5 at 14.5 nm
    np.testing.assert_allclose(table["point_rate"].sel(operator=["F2", "F1"]).values,
                               [54.0, 11353.5], rtol=1e-3)
    code, out, _ = run_cli(["rucl3", "fit", "--method", "laplace", "--draws", "50",
                            "--convention", "paper", "--out", tmp_path / "f"], capsys)
    assert code == 0 and "paper convention" in out
    run = Run.load(tmp_path / "f")
    assert run.idata.posterior.attrs["convention"] == "paper"
    assert run.config["run"]["convention"] == "paper"
