"""The generative likelihood, its coordinates and posteriors, and simulation-based calibration.

Tolerances: exact identities (log densities against a hand computation, Jacobians, round
trips) to 1e-9 in float64; χ² tests at the 1 % level on seeded replications.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr
from pyro import poutine
from scipy import stats

from nvbayes.cli import main
from nvbayes.data.scenes import SimulationSettings, simulate
from nvbayes.inference.generative import (
    Coordinates,
    Priors,
    find_mode,
    sample_generative,
    whitening,
)
from nvbayes.model.generative import SPIKE_FRACTION, GenerativeSpectrumModel
from nvbayes.model.problem import InverseProblem
from nvbayes.physics.geometry import Grid
from nvbayes.physics.lorentzian import readout_frequencies
from nvbayes.physics.operators import make_operator
from nvbayes.workflows.fit import fit
from nvbayes.workflows.sbc import SbcPlan, ranks, sbc_ranks, tracked, uniformity

BAND = (1.5, 2.5)


def _model(n=4, gain_sd=0.3, sigma=0.02, mask=None, freqs=12):
    op = make_operator("F2", readout_frequencies(n_freq=freqs), 0.5, spacing=20.0, standoff=20.0)
    return GenerativeSpectrumModel(op, (n, n), sigma, BAND, 0.3, gain_sd, larmor_mask=mask)


@pytest.mark.parametrize("gain_sd", [None, 0.3])
def test_log_joint_equals_a_hand_computation(gain_sd):
    """log p = Σ log Expon + Σ log Uniform + log LogNormal(g) + Σ log Normal, term by term with
    scipy, for a per-pixel σ map; and the Pyro trace of the model gives the same number."""
    n = 3
    sigma = 0.01 + 0.02 * torch.rand(n, n, generator=torch.Generator().manual_seed(1),
                                     dtype=torch.float64)
    model = _model(n, gain_sd, sigma)
    truth = model.simulate(5)
    fitted = model.conditioned(truth["spectrum"])
    rho, larmor = truth["rho"].numpy(), truth["larmor"].numpy()
    gain = float(truth["gain"]) if gain_sd else 1.0
    clean = gain * model.operator(truth["rho"], model.larmor_map(truth["larmor"])).numpy()
    hand = (stats.expon(scale=0.3).logpdf(rho).sum()
            + stats.uniform(BAND[0], BAND[1] - BAND[0]).logpdf(larmor).sum()
            + stats.norm(clean, np.broadcast_to(sigma.numpy(), clean.shape)).logpdf(
                truth["spectrum"].numpy()).sum())
    if gain_sd:
        hand += stats.lognorm(s=gain_sd).logpdf(gain)
    direct = float(fitted.log_joint(truth["rho"], truth["larmor"], truth.get("gain")))
    data = {k: v for k, v in truth.items() if k != "spectrum"}
    trace = poutine.trace(poutine.condition(fitted, data=data)).get_trace()
    assert direct == pytest.approx(hand, rel=1e-12, abs=1e-9)
    assert float(trace.log_prob_sum()) == pytest.approx(hand, rel=1e-12, abs=1e-9)


def test_sparse_prior_is_the_two_exponential_mixture():
    """The sparse prior's log density equals the mixture written with scipy, the Pyro trace
    agrees, its mean is m, and forward draws put a fraction π of pixels in the slab."""
    op = make_operator("F2", readout_frequencies(n_freq=12), 0.5, spacing=20.0, standoff=20.0)
    m, p = 0.3, 0.1
    model = GenerativeSpectrumModel(op, (8, 8), 0.02, BAND, m, None, source_fraction=p)
    spike = SPIKE_FRACTION * m
    slab = (m - (1 - p) * spike) / p
    assert (1 - p) * spike + p * slab == pytest.approx(m, rel=1e-12)
    truth = model.simulate(2)
    rho = truth["rho"].numpy()
    hand = np.log((1 - p) * stats.expon(scale=spike).pdf(rho)
                  + p * stats.expon(scale=slab).pdf(rho)).sum()
    assert float(model.rho_log_prior(truth["rho"])) == pytest.approx(hand, rel=1e-12)
    fitted = model.conditioned(truth["spectrum"])
    data = {k: v for k, v in truth.items() if k != "spectrum"}
    trace = poutine.trace(poutine.condition(fitted, data=data)).get_trace()
    assert float(trace.log_prob_sum()) == pytest.approx(
        float(fitted.log_joint(truth["rho"], truth["larmor"])), rel=1e-12)
    draws = torch.cat([model.simulate(s)["rho"].reshape(-1) for s in range(40)])
    # above 10 ε a spike draw is e⁻¹⁰-rare and a slab draw almost sure (e^(-10ε/μ) ≈ 0.997)
    bright = float((draws > 10 * spike).double().mean())
    assert abs(bright - p * math.exp(-10 * spike / slab)) < 4 * math.sqrt(p * (1 - p) / 2560)


def test_simulation_is_seeded_and_follows_the_prior():
    model = _model(8, 0.3)
    a, b = model.simulate(3), model.simulate(3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rho = torch.cat([model.simulate(s)["rho"].reshape(-1) for s in range(20)])
    # Exponential(mean 0.3): the sample mean of 1280 values within 4 standard errors
    assert abs(float(rho.mean()) - 0.3) < 4 * 0.3 / math.sqrt(rho.numel())
    larmor = model.simulate(4)["larmor"]
    assert larmor.shape == (64,) and bool(((larmor > BAND[0]) & (larmor < BAND[1])).all())


def test_larmor_mask_scatters_the_latent_pixels():
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[1, 2] = mask[0, 0] = True
    model = _model(3, None, mask=mask)
    full = model.larmor_map(torch.tensor([1.6, 2.4], dtype=torch.float64))
    assert model.n_larmor == 2
    assert float(full[0, 0]) == 1.6 and float(full[1, 2]) == 2.4
    assert float(full[2, 2]) == pytest.approx(2.0)


@pytest.mark.parametrize("gain_sd", [None, 0.3])
def test_coordinates_round_trip_and_log_jacobian(gain_sd):
    """unpack ∘ pack is the identity, and log|J| is the log-determinant of the autograd
    Jacobian of z → (ρ, ω_L, g)."""
    model = _model(2, gain_sd)
    coords = Coordinates(model)
    truth = model.simulate(2)
    z = coords.pack(truth["rho"], truth["larmor"], truth.get("gain"))
    rho, larmor, gain, log_jac = coords.unpack(z)
    assert torch.allclose(rho, truth["rho"], rtol=1e-9, atol=1e-12)
    assert torch.allclose(larmor, truth["larmor"], rtol=1e-12)

    def params(v):
        r, w, g, _ = coords.unpack(v)
        parts = [r.reshape(-1), w] + ([g.reshape(1)] if g is not None else [])
        return torch.cat(parts)

    jac = torch.autograd.functional.jacobian(params, z)
    assert float(log_jac) == pytest.approx(float(torch.linalg.slogdet(jac)[1]), abs=1e-9)


def test_whitened_hessian_is_the_identity_at_the_mode():
    model = _model(3, 0.3)
    fitted = model.conditioned(model.simulate(7)["spectrum"])
    coords = Coordinates(fitted)
    start = coords.pack(torch.full((3, 3), 0.3, dtype=torch.float64),
                        torch.full((9,), 2.0, dtype=torch.float64), 1.0)
    mode = find_mode(coords, start)
    transform, gaussian = whitening(coords, mode)
    assert gaussian.nonpositive == 0
    h = torch.autograd.functional.hessian(lambda u: coords.energy(mode + transform @ u),
                                          torch.zeros(coords.size, dtype=torch.float64))
    assert torch.allclose(h, torch.eye(coords.size, dtype=torch.float64), atol=1e-6)


def test_laplace_draws_respect_the_supports():
    model = _model(4, 0.3)
    fitted = model.conditioned(model.simulate(11)["spectrum"])
    result = sample_generative(fitted, "laplace", seed=0, draws=50)
    assert result.rho.shape == (1, 50, 4, 4) and result.gain.shape == (1, 50)
    assert (result.rho >= 0).all() and (result.gain > 0).all()
    assert ((result.larmor >= BAND[0]) & (result.larmor <= BAND[1])).all()


# ---- SBC machinery ----------------------------------------------------------------------------

def _conjugate(sigma_used: float, replications=200, draws=99):
    """θ ~ N(0, 1), y_i ~ N(θ, 1) for i = 1 … 5; the posterior is N(Σy / (n + 1), 1 / (n + 1))
    under the right noise, and too narrow when computed with σ = ``sigma_used`` < 1."""
    n = 5

    def simulate(seed):
        rng = np.random.default_rng(seed)
        theta = rng.normal()
        return np.array([theta]), theta + rng.normal(size=n)

    def posterior(y, seed):
        precision = 1 + n / sigma_used ** 2
        mean = (y.sum() / sigma_used ** 2) / precision
        rng = np.random.default_rng(10_000 + seed)
        return (mean + rng.normal(size=(draws, 1)) / math.sqrt(precision))

    return sbc_ranks(simulate, posterior, replications, seed=0)


def test_sbc_passes_a_conjugate_model_and_fails_a_misspecified_one():
    good = _conjugate(1.0)
    assert uniformity(good[:, 0], 99, 10)[2] > 0.01
    bad = _conjugate(0.5)                      # σ halved: intervals too narrow, ∪-shaped ranks
    counts, _, p = uniformity(bad[:, 0], 99, 10)
    assert p < 0.01
    assert counts[0] + counts[-1] > 2 * counts[4:6].sum()


def test_uniformity_of_exactly_uniform_ranks():
    counts, chi2, p = uniformity(np.arange(100).repeat(2), 99, 10)
    assert (counts == 20).all() and chi2 == 0 and p == pytest.approx(1.0)


def test_ranks_count_draws_below_the_truth():
    draws = np.array([[0.1, 5.0], [0.2, 6.0], [0.3, 7.0]])
    assert ranks(draws, np.array([0.25, 4.0])).tolist() == [2, 0]


def test_tracked_quantities():
    plan = SbcPlan(grid=8, gain_sd=0.3)
    rho = np.arange(64, dtype=float).reshape(8, 8)
    values = tracked(plan, rho, rho + 100, np.array(2.0))
    names = plan.quantities()
    assert values[names.index("rho[4,4]")] == 36 and values[names.index("larmor[0,0]")] == 100
    assert values[names.index("mass_centre")] == rho[2:6, 2:6].sum()
    assert values[names.index("gain")] == 2.0


def test_sbc_command_on_a_local_cluster_resumes(tmp_path):
    """A real Dask LocalCluster fits the replications; the files describe themselves; a rerun
    computes nothing new."""
    out = tmp_path / "sbc"
    args = ["sbc", "--method", "laplace", "--replications", "6", "--grid", "4", "--draws", "19",
            "--bins", "4", "--workers", "2", "--out", str(out)]
    assert main(args) == 0
    ds = xr.open_dataset(out / "sbc.nc")
    assert ds.attrs["schema"] == "nvbayes.sbc/1"
    rank = ds["rank"].sel({"method": "laplace"}).values
    assert rank.shape == (6, len(SbcPlan(grid=4).quantities()))
    assert (rank >= 0).all() and (rank <= 19).all()
    assert int(ds["histogram"].sel({"method": "laplace"}).sum()) == 6 * rank.shape[1]
    assert (out / "sbc.png").stat().st_size > 0 and "| gain |" in (out / "sbc.md").read_text()
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    assert main(args[:-4] + ["--out", str(out)]) == 0          # in-process rerun: all cached
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}


@pytest.mark.parametrize("extra, word", [
    (["--draws", "100"], "bins"), (["--method", "map"], "method"), (["--grid", "2"], "grid"),
    (["--sigma", "0"], "sigma"), (["--gain-sd", "-1"], "gain"),
    (["--method", "nuts", "--grid", "32"], "NUTS")])
def test_sbc_bad_input_is_one_line_and_no_folder(tmp_path, capsys, extra, word):
    out = tmp_path / "sbc"
    assert main(["sbc", "--out", str(out)] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and word.lower() in err.lower() and not out.exists()


# ---- the fit workflow -------------------------------------------------------------------------

def _measurement(scale: float = 1.0, spectrum_scale: "str | None" = None):
    data = simulate("few/far", 2, SimulationSettings(grid=Grid(16)))
    data["spectrum"] = data["spectrum"] * scale
    data["noise_sigma"] = data["noise_sigma"] * scale
    if spectrum_scale is not None:
        data.attrs["spectrum_scale"] = spectrum_scale
    return data


def test_generative_laplace_fit_writes_the_gain_and_says_so():
    run = fit(_measurement(spectrum_scale="arbitrary"), model="netmy-fast", method="laplace",
              draws=40)
    post = run.idata.posterior
    assert run.config["run"]["likelihood"] == "generative"
    assert post["gain"].shape == (1, 40) and post.attrs["scale_corrected"] == 0
    absolute = fit(_measurement(), model="netmy-fast", method="laplace", draws=40)
    assert "gain" not in absolute.idata.posterior


def test_sparse_prior_darkens_the_empty_pixels():
    """``rho_prior="sparse"``: π is the peaks counted over the pixels, and the posterior mean
    on the pixels the truth leaves empty falls below the exponential prior's (its spike holds
    them within ε of zero)."""
    data = _measurement()
    empty = data["rho_true"].values == 0
    runs = {prior: fit(data, model="netmy-fast", method="laplace", draws=40, rho_prior=prior)
            for prior in ("exponential", "sparse")}
    stats = runs["sparse"].idata.sample_stats.attrs
    assert stats["rho_prior"] == "sparse"
    assert stats["source_fraction"] == pytest.approx(
        np.count_nonzero(data["rho_true"].values) / empty.size)
    means = {k: float(r.idata.posterior["rho"].mean(("chain", "draw")).values[empty].mean())
             for k, r in runs.items()}
    assert means["sparse"] < 0.5 * means["exponential"]


def test_generative_fit_does_not_depend_on_the_spectrum_unit():
    """With the gain latent, a spectrum written in units 1000× smaller gives the same
    posterior (the spectrum is divided by its unit scale first)."""
    one = fit(_measurement(1.0, "arbitrary"), model="netmy-fast", method="laplace", draws=30)
    other = fit(_measurement(1e3, "arbitrary"), model="netmy-fast", method="laplace", draws=30)
    a, b = one.idata.posterior, other.idata.posterior
    np.testing.assert_allclose(a["rho"].values, b["rho"].values, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(a["larmor"].values, b["larmor"].values, rtol=1e-6)


def test_spectrum_scale_is_read_and_validated():
    assert InverseProblem.from_measurement(_measurement()).absolute
    assert not InverseProblem.from_measurement(_measurement(spectrum_scale="arbitrary")).absolute
    with pytest.raises(ValueError, match="spectrum_scale"):
        InverseProblem.from_measurement(_measurement(spectrum_scale="volts"))


def test_priors_are_validated():
    with pytest.raises(ValueError, match="rho-mean"):
        Priors(rho_mean=-1.0)


def test_a_constant_sigma_map_gives_the_scalar_result():
    """A per-pixel σ map in the file (dims y, x) is the likelihood's σ: a constant map gives
    the posterior of the scalar σ."""
    data = _measurement()
    scalar = fit(data, model="netmy-fast", method="laplace", draws=20)
    mapped = data.copy()
    sigma = float(data["noise_sigma"])
    mapped["noise_sigma"] = (("y", "x"), np.full((data.sizes["y"], data.sizes["x"]), sigma))
    other = fit(mapped, model="netmy-fast", method="laplace", draws=20)
    np.testing.assert_allclose(scalar.idata.posterior["rho"].values,
                               other.idata.posterior["rho"].values, rtol=1e-9, atol=1e-12)
