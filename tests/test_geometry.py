"""Real geometry: rectangular grids, pixel masks, σ maps, uneven readout grids and a tilted NV
axis, through the operators, the losses, the inverse problem and whole fits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pyro import poutine
from scipy import stats

import nvbayes
from nvbayes.data.lab import from_arrays
from nvbayes.data.scenes import add_sensor_noise, sample_scene, sensor_sigma
from nvbayes.model.generative import GenerativeSpectrumModel
from nvbayes.model.losses import (
    energy_mismatch,
    noise_map_mse,
    spectrum_shape_mse,
    spectrum_shape_weights,
)
from nvbayes.model.problem import InverseProblem
from nvbayes.physics.geometry import Grid
from nvbayes.physics.kernels import NV_ORIENTATIONS, offsets, power_kernel, scalar_kernel
from nvbayes.physics.noise_map import log_mse, sensor_noise_sigma
from nvbayes.physics.operators import make_operator

TILTED = NV_ORIENTATIONS["111"]


# ---- operators ------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", ["z", "111", "-1-11"])
def test_f2_equals_f3_on_a_rectangular_grid_for_any_nv_axis(axis):
    """With one ω_L everywhere the readout-side and the source-side Lorentzian agree, so the
    FFT convolution (F2) must equal the direct sum (F3) on a 9 x 14 window (rel. 1e-10)."""
    rng = np.random.default_rng(0)
    rho = torch.from_numpy(rng.random((9, 14)) * (rng.random((9, 14)) < 0.2))
    freqs = np.linspace(1.0, 3.0, 7)
    f2, f3 = (make_operator(name, freqs, 0.5, 20.0, 20.0, nv_axis=NV_ORIENTATIONS[axis])
              for name in ("F2", "F3"))
    a, b = f2(rho, 2.1), f3(rho, 2.1)
    assert a.shape == (7, 9, 14)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12 * float(b.abs().max()))


def test_transposing_the_window_transposes_the_spectrum_for_the_z_axis():
    rho = torch.from_numpy(np.random.default_rng(1).random((6, 11)))
    f2 = make_operator("F2", [1.8, 2.0, 2.2], 0.5, 20.0, 20.0)
    torch.testing.assert_close(f2(rho.T, 2.0), f2(rho, 2.0).transpose(-2, -1))


def test_the_four_diamond_orientations_together_are_fourfold_symmetric():
    """The ⟨111⟩ axes of a (100) diamond map onto each other under a 90° turn about z, so the
    sum of their power kernels is invariant under (dx, dy) → (−dy, dx); one alone is not."""
    dy, dx = offsets((7, 7), 10.0, torch.float64)
    total = sum(power_kernel(dx, dy, 20.0, n) for n in list(NV_ORIENTATIONS.values())[1:])
    turned = sum(power_kernel(-dy, dx, 20.0, n) for n in list(NV_ORIENTATIONS.values())[1:])
    torch.testing.assert_close(total, turned, rtol=1e-12, atol=0)
    one, one_turned = power_kernel(dx, dy, 20.0, TILTED), power_kernel(-dy, dx, 20.0, TILTED)
    assert (one - one_turned).abs().max() > 1e-3 * one.abs().max()


def test_kernels_are_even_in_the_nv_axis():
    dy, dx = offsets((5, 6), 20.0, torch.float64)
    minus = tuple(-v for v in TILTED)
    torch.testing.assert_close(power_kernel(dx, dy, 20.0, TILTED),
                               power_kernel(dx, dy, 20.0, minus))
    torch.testing.assert_close(scalar_kernel(dx, dy, 20.0, TILTED),
                               scalar_kernel(dx, dy, 20.0, minus))


# ---- masked data terms ------------------------------------------------------------------------


def _spectra(seed=0, shape=(3, 6, 8)):
    rng = np.random.default_rng(seed)
    return (torch.from_numpy(rng.random(shape) + 0.05), torch.from_numpy(rng.random(shape) + 0.05))


def test_masked_log_mse_is_the_mean_over_the_used_pixels_alone():
    """Against an independent computation on the flattened used pixels."""
    pred, obs = _spectra()
    mask = torch.from_numpy(np.random.default_rng(2).random((6, 8)) > 0.3)
    n_pred, n_obs = pred.sum(0)[mask], obs.sum(0)[mask]
    expected = ((torch.log10(n_pred / n_pred.max() + 1e-10)
                 - torch.log10(n_obs / n_obs.max() + 1e-10)) ** 2).mean()
    torch.testing.assert_close(log_mse(pred, obs, mask=mask), expected)


@pytest.mark.parametrize("term", [log_mse, noise_map_mse, energy_mismatch, spectrum_shape_mse])
def test_masked_pixels_do_not_enter_a_data_term(term):
    pred, obs = _spectra(3)
    mask = torch.ones(6, 8, dtype=torch.bool)
    mask[1, 2] = mask[4, 5] = False
    other_pred, other_obs = pred.clone(), obs.clone()
    other_pred[:, ~mask] = 1e3
    other_obs[:, ~mask] = -7.0
    kwargs = {"mask": mask}
    if term is spectrum_shape_mse:
        a = term(pred, obs, spectrum_shape_weights(obs, mask))
        b = term(other_pred, other_obs, spectrum_shape_weights(other_obs, mask))
    else:
        a, b = term(pred, obs, **kwargs), term(other_pred, other_obs, **kwargs)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_noise_sigma_estimate_holds_on_an_uneven_readout_grid():
    """Δ²S has variance 6σ² whatever the spacing of the frequencies: white noise of σ = 0.03
    on a smooth Lorentzian, read out on sorted random frequencies, comes back within 5 %."""
    rng = np.random.default_rng(5)
    freqs = torch.from_numpy(np.sort(rng.uniform(1.0, 3.0, 40)))
    clean = 1.0 / (1.0 + ((freqs - 2.0) / 0.5) ** 2)
    spectrum = clean[:, None, None] * torch.ones(40, 30, 30) + 0.03 * torch.randn(
        40, 30, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mask = torch.ones(30, 30, dtype=torch.bool)
    mask[:, :5] = False
    spectrum[:, ~mask] = 50.0                         # saturated columns, masked
    assert float(sensor_noise_sigma(spectrum, mask, freqs)) == pytest.approx(0.03, rel=0.05)
    assert float(sensor_noise_sigma(spectrum, mask)) > 0.036    # the even-grid weights: biased


def test_a_masked_block_mean_has_the_sigma_the_problem_says():
    """σ of a block mean over the used pixels of a 2 x 2 block is √(Σ m σ²) / Σ m: Monte Carlo
    over 4000 draws of a σ map, to 5 %."""
    rng = np.random.default_rng(7)
    sigma = rng.uniform(0.5, 2.0, (4, 6))
    mask = rng.random((4, 6)) > 0.3
    mask[0, 0] = True
    draws = rng.standard_normal((4000, 1, 4, 6)) * sigma
    problem = InverseProblem(draws, np.array([2.0]), 20.0, 20.0, 0.5, (1.5, 2.5),
                             noise_sigma=sigma, mask=mask)
    coarse = problem.observed(2, dtype=torch.float64)[:, 0]       # (draws, 2, 3)
    used = problem.pixel_mask(2)
    predicted = problem.sigma(downsample=2)
    measured = coarse.std(0)
    torch.testing.assert_close(measured[used], predicted[used], rtol=0.05, atol=0)


def test_the_problem_never_reads_a_masked_pixel():
    spectrum = np.ones((2, 3, 4))
    spectrum[:, 1, 2] = np.nan
    mask = np.ones((3, 4), bool)
    mask[1, 2] = False
    problem = InverseProblem(spectrum, np.array([1.9, 2.1]), 20.0, 20.0, 0.5, (1.5, 2.5),
                             mask=mask)
    assert np.isfinite(problem.spectrum).all() and problem.spectrum[0, 1, 2] == 0
    assert problem.shape == (3, 4)


# ---- whole fits -----------------------------------------------------------------------------


def _lab_measurement(seed: int, ny=20, nx=28, replace_masked=None):
    """A rectangular, masked, uneven-frequency measurement of a few/far scene seen by NV
    centres along [111]: the arrays a lab would hand over, through ``from_arrays``."""
    rng = np.random.default_rng(seed)
    scene = sample_scene("few/far", rng, Grid(ny, 20.0, 20.0, nx=nx), nv_axis=TILTED)
    freqs = np.sort(np.concatenate([np.linspace(1.0, 3.0, 16), rng.uniform(1.6, 2.4, 8)]))
    op = make_operator("F3", freqs, 0.5, 20.0, 20.0, nv_axis=TILTED)
    clean = op(torch.from_numpy(scene.density()), torch.from_numpy(scene.larmor_field()))
    spectrum = add_sensor_noise(clean.numpy(), 0.01, rng)
    mask = rng.random((ny, nx)) > 0.05
    mask[:, 1] = False                                       # a dead column
    masked = np.where(mask, spectrum, np.nan) if replace_masked is None else np.where(
        mask, spectrum, replace_masked(rng, spectrum.shape))
    ds = from_arrays(masked, freqs, spacing_nm=20.0, standoff_nm=20.0, linewidth_ghz=0.5,
                     band=(1.5, 2.5), mask=mask, sigma=sensor_sigma(clean.numpy(), 0.01),
                     nv_axis=TILTED, dims=("freq", "y", "x"))
    ds["rho_true"] = (("y", "x"), scene.density())
    ds["larmor_true"] = (("y", "x"), scene.larmor_field())
    return ds


def _noise(rng, shape):
    return rng.normal(0.0, 100.0, shape)


@pytest.mark.parametrize("model, method, steps", [("tikhonov", "map", (300,)),
                                                  ("netmy-fast", "map", (150, 250)),
                                                  ("netmy-fast", "laplace", (150, 250))])
def test_masked_pixels_do_not_move_the_fit(model, method, steps, model_file):
    """The same fit, with the masked pixels NaN or replaced by loud noise: identical maps."""
    kwargs = dict(model=str(model_file(model, steps)), method=method, seed=0,
                  show_progress=False)
    if method == "laplace":
        kwargs["draws"] = 20
    a = nvbayes.fit(_lab_measurement(2), **kwargs)
    b = nvbayes.fit(_lab_measurement(2, replace_masked=_noise), **kwargs)
    np.testing.assert_array_equal(a.rho.values, b.rho.values)
    np.testing.assert_array_equal(a.larmor.values, b.larmor.values)


def test_a_lab_measurement_fits_and_finds_its_sources():
    run = nvbayes.fit(_lab_measurement(3), model="netmy-fast", method="map", seed=0,
                      show_progress=False)
    assert run.rho.shape == (20, 28)
    assert float(run.metrics["hungarian_f1"]) >= 0.5


# ---- σ maps in the likelihoods ----------------------------------------------------------------


def test_generative_log_joint_uses_the_sigma_map_and_skips_masked_pixels():
    """``log p`` with a σ map and a mask against scipy's normal and exponential densities,
    summed over the used pixels' readouts alone; the Pyro trace agrees."""
    rng = np.random.default_rng(11)
    shape, freqs = (4, 5), np.linspace(1.0, 3.0, 6)
    op = make_operator("F2", freqs, 0.5, 20.0, 20.0, nv_axis=TILTED)
    sigma = rng.uniform(0.05, 0.2, shape)
    mask = rng.random(shape) > 0.3
    rho = torch.from_numpy(rng.random(shape))
    larmor = torch.from_numpy(rng.uniform(1.5, 2.5, shape[0] * shape[1]))
    observed = torch.from_numpy(rng.random((6, *shape)))
    model = GenerativeSpectrumModel(op, shape, torch.from_numpy(sigma), (1.5, 2.5), 0.7,
                                    observed=observed, pixel_mask=torch.from_numpy(mask))
    mean = model.mean(rho, larmor).numpy()
    expected = (stats.norm.logpdf(observed.numpy(), mean, sigma)[:, mask].sum()
                + stats.expon.logpdf(rho.numpy(), scale=0.7).sum()
                + larmor.numel() * np.log(1.0 / 1.0))
    assert float(model.log_joint(rho, larmor)) == pytest.approx(expected, rel=1e-12)
    conditioned = poutine.condition(model, data={"rho": rho, "larmor": larmor})
    traced = poutine.trace(conditioned).get_trace().log_prob_sum()
    assert float(traced) == pytest.approx(expected, rel=1e-12)


def test_si_units_end_to_end_give_the_normalized_fit():
    """One scene, simulated and imported once in SI units (T²/Hz-scale spectra, the SI
    kernel) and once normalized: the fitted densities (fluctuators per pixel) agree."""
    def measurement(units: str):
        rng = np.random.default_rng(6)
        scene = sample_scene("few/far", rng, Grid(12, 20.0, 20.0, nx=16))
        freqs = np.linspace(1.0, 3.0, 20)
        op = make_operator("F3", freqs, 0.5, 20.0, 20.0, units=units)
        clean = op(torch.from_numpy(scene.density()), torch.from_numpy(scene.larmor_field()))
        noise = rng.standard_normal(clean.shape) * sensor_sigma(clean.numpy(), 0.01)
        return from_arrays(clean.numpy() + noise, freqs, spacing_nm=20.0, standoff_nm=20.0,
                           linewidth_ghz=0.5, band=(1.5, 2.5), units=units,
                           sigma=sensor_sigma(clean.numpy(), 0.01), dims=("freq", "y", "x"))

    si, normalized = measurement("si"), measurement("normalized")
    ratio = si["spectrum"].values / normalized["spectrum"].values
    assert abs(np.log10(np.median(ratio))) > 3            # the units really differ
    runs = [nvbayes.fit(m, model="netmy-fast", method="laplace", draws=10, seed=0,
                        show_progress=False) for m in (si, normalized)]
    a, b = (r.idata.posterior["rho"].mean(("chain", "draw")).values for r in runs)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(b.max()))
