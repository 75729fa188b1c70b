"""Forward operators F1, F2, F3: shared operator checks and the physics they must show.

Tolerances: float64 comparisons of two exact computations at 1e-10 relative (observed ~1e-15);
float32 against float64 at 1e-5 relative.
"""

import math

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from nvbayes.data.scenes import larmor_spread_scene
from nvbayes.errors import ParameterError
from nvbayes.physics import (
    MU0_OVER_4PI,
    DirectOperator,
    Grid,
    ScalarOperator,
    TensorOperator,
    in_kernel_chi,
    kernel_table,
    log_mse,
    lorentzian,
    make_operator,
    readout_frequencies,
    relative_error,
)

N = 16
SPACING = 20.0
STANDOFF = 20.0
GAMMA = 0.5
FREQS = readout_frequencies(n_freq=12)
OPERATORS = ["F1", "F2", "F3"]


def op(name, units="normalized", standoff=STANDOFF, spacing=SPACING, freqs=FREQS, **kw):
    return make_operator(name, freqs, GAMMA, spacing, standoff, units=units, **kw)


def random_rho(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=dtype)


def random_larmor(*shape, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return 1.5 + torch.rand(*shape, generator=g, dtype=dtype)


def point_source(n=N, at=(7, 9), weight=1.0):
    rho = torch.zeros(n, n, dtype=torch.float64)
    rho[at] = weight
    return rho


# --------------------------------------------------------------------------------------------
# Checks every operator passes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPERATORS)
def test_shape_and_batch_axis(name):
    """A batch of densities gives the stack of the individual spectra."""
    o = op(name)
    rho, larmor = random_rho(3, 2, N, N), random_larmor(3, 2, N, N)
    batched = o(rho, larmor)
    assert batched.shape == (3, 2, len(FREQS), N, N)
    for i in range(3):
        for j in range(2):
            single = o(rho[i, j], larmor[i, j])
            torch.testing.assert_close(batched[i, j], single, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", OPERATORS)
def test_noise_map_is_the_spectrum_summed_over_frequency(name):
    """``noise_map`` (F1, F2: ``A · Σ_ω L``, no spectrum formed) equals ``Σ_ω S``, batched,
    and at a standoff given as a tensor for the factorized operators."""
    o = op(name)
    rho, larmor = random_rho(2, N, N), random_larmor(2, N, N)
    torch.testing.assert_close(o.noise_map(rho, larmor), o(rho, larmor).sum(-3),
                               rtol=1e-12, atol=0)
    if name != "F3":
        z = torch.tensor([18.0, 23.0], dtype=torch.float64)
        torch.testing.assert_close(o.noise_map(rho, larmor, z), o(rho, larmor, z).sum(-3),
                                   rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", OPERATORS)
def test_nonnegative_for_nonnegative_density(name):
    assert (op(name)(random_rho(N, N), random_larmor(N, N)) >= 0).all()


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("flip", ["x", "y", "transpose"])
def test_equivariant_under_grid_symmetries(name, flip):
    """Mirroring or transposing ρ and ω_L mirrors the spectrum (z-axis NV, square grid)."""
    def t(a):
        if flip == "x":
            return a.flip(-1)
        if flip == "y":
            return a.flip(-2)
        return a.transpose(-1, -2)

    o = op(name)
    rho, larmor = random_rho(N, N), random_larmor(N, N)
    torch.testing.assert_close(o(t(rho), t(larmor)), t(o(rho, larmor)), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["F1", "F2"])
def test_float32_matches_float64(name):
    o = op(name)
    rho, larmor = random_rho(N, N), random_larmor(N, N)
    s64 = o(rho, larmor)
    s32 = o(rho.float(), larmor.float())
    assert s32.dtype == torch.float32
    assert relative_error(s32.double(), s64) < 1e-5


def test_f3_is_float64_whatever_the_input():
    assert op("F3")(random_rho(N, N, dtype=torch.float32), 2.0).dtype == torch.float64


@pytest.mark.parametrize("name", ["F1", "F2"])
def test_gradcheck(name):
    """Autograd gradients of the FFT operators match finite differences."""
    o = op(name, freqs=readout_frequencies(n_freq=4))
    rho = random_rho(6, 6).requires_grad_()
    larmor = random_larmor(6, 6).requires_grad_()
    assert torch.autograd.gradcheck(lambda r, w: o(r, w), (rho, larmor))
    assert torch.autograd.gradcheck(lambda r, w: o.noise_map(r, w), (rho, larmor))


def test_gradcheck_log_map_fidelity():
    """The log-MSE fidelity on max-normalized noise maps differentiates correctly through F2."""
    o = op("F2", freqs=readout_frequencies(n_freq=4))
    observed = o(random_rho(6, 6, seed=5), random_larmor(6, 6, seed=6)).detach()
    rho = random_rho(6, 6).requires_grad_()
    larmor = random_larmor(6, 6).requires_grad_()
    assert torch.autograd.gradcheck(lambda r, w: log_mse(o(r, w), observed), (rho, larmor))


# --------------------------------------------------------------------------------------------
# Physics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_f2_equals_f3_for_constant_larmor(seed):
    """Same kernel, same window, no wrap-around: F2 = F3 to float64 round-off."""
    rho = random_rho(N, N, seed=seed)
    rho[rho < 0.7] = 0.0  # sparse and dense parts both exercised
    s2, s3 = op("F2")(rho, 2.1), op("F3")(rho, 2.1)
    assert relative_error(s2, s3) <= 1e-10
    assert ((s2 - s3).abs().max() / s3.abs().max()) <= 1e-10


def test_f2_equals_f3_on_a_64_grid_at_paper_settings():
    freqs = readout_frequencies()
    rho = random_rho(64, 64, seed=3)
    s2 = TensorOperator(freqs, GAMMA, SPACING, STANDOFF)(rho, 1.8)
    s3 = DirectOperator(freqs, GAMMA, SPACING, STANDOFF)(rho, 1.8)
    assert relative_error(s2, s3) <= 1e-10


def test_f1_of_single_source_is_rho_squared_times_gzz_channel():
    """F1(w δ) = w² G_zz² L = w · (zz channel of F2 at weight w)."""
    w = 0.7
    rho = point_source(weight=w)
    f1 = op("F1")(rho, 2.0)
    zz = op("F2", channels=("z",))(point_source(weight=1.0), 2.0)
    # FFT round-off is absolute: 1e-15 of the unit peak
    torch.testing.assert_close(f1, w * w * zz, rtol=1e-12, atol=1e-15)
    # and the channel itself is the closed form G_zz² = ((3 z0² − |R|²)/|R|⁵)² · z0⁶/4
    grid = torch.arange(N, dtype=torch.float64)
    iy, ix = torch.meshgrid(grid - 7.0, grid - 9.0, indexing="ij")
    r2 = (iy**2 + ix**2) * SPACING**2 + STANDOFF**2
    gzz2 = ((3 * STANDOFF**2 - r2) / r2**2.5) ** 2 * STANDOFF**6 / 4
    lz = lorentzian(FREQS, torch.full((N, N), 2.0, dtype=torch.float64), GAMMA)
    torch.testing.assert_close(zz, gzz2 * lz, rtol=1e-12, atol=1e-15)


def _shifted_scalar_kernel(at):
    """g_nv(r − s) on the window for a source at pixel ``at``, from the offset table."""
    table = kernel_table("scalar", (N, N), SPACING, STANDOFF)
    y0, x0 = N - 1 - at[0], N - 1 - at[1]
    return table[y0:y0 + N, x0:x0 + N]


def test_f1_of_two_sources_carries_the_cross_term():
    """F1 = (w1 g1 + w2 g2)² L: the diagonal terms plus 2 w1 w2 g1 g2 L (paper Eq. 10)."""
    (a, wa), (b, wb) = ((5, 5), 0.6), ((5, 8), 0.9)
    rho = point_source(at=a, weight=wa) + point_source(at=b, weight=wb)
    ga, gb = _shifted_scalar_kernel(a), _shifted_scalar_kernel(b)
    lz = lorentzian(FREQS, torch.full((N, N), 2.0, dtype=torch.float64), GAMMA)
    f1 = op("F1")(rho, 2.0)
    diagonal = (wa**2 * ga**2 + wb**2 * gb**2) * lz
    torch.testing.assert_close(f1 - diagonal, 2 * wa * wb * ga * gb * lz, rtol=1e-9, atol=1e-15)
    assert (2 * wa * wb * ga * gb).abs().max() > 1e-3  # the cross term is not negligible here


def test_f2_is_linear():
    o = op("F2")
    r1, r2, larmor = random_rho(N, N, seed=2), random_rho(N, N, seed=3), random_larmor(N, N)
    a, b = 0.37, 2.5
    torch.testing.assert_close(o(a * r1 + b * r2, larmor), a * o(r1, larmor) + b * o(r2, larmor),
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name, power", [("F1", 2), ("F2", 1), ("F3", 1)])
@pytest.mark.parametrize("c", [0.1, 3.0])
def test_operator_has_the_homogeneity_it_declares(name, power, c):
    """F(cρ) = c^p F(ρ) with the operator's own ``homogeneity`` p (F1 quadratic, F2 and F3
    linear): the scale correction reads p from the operator."""
    o = op(name)
    assert o.homogeneity == power
    rho, larmor = random_rho(N, N), random_larmor(N, N)
    torch.testing.assert_close(o(c * rho, larmor), c ** o.homogeneity * o(rho, larmor),
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", ["power", "scalar"])
def test_fft_convolution_equals_direct_sum(kind):
    """The FFT path equals a direct linear convolution with the tabulated kernel."""
    rho = random_rho(N, N, seed=4)
    table = kernel_table(kind, (N, N), SPACING, STANDOFF).numpy()
    direct = convolve2d(rho.numpy(), table, mode="full")[N - 1:2 * N - 1, N - 1:2 * N - 1]
    o = op("F2" if kind == "power" else "F1")
    fft = o.source_power(rho).numpy()
    expected = direct if kind == "power" else direct**2
    np.testing.assert_allclose(fft, expected, rtol=1e-10, atol=1e-14 * np.abs(expected).max())


@pytest.mark.parametrize("name", OPERATORS)
def test_si_and_normalized_units_differ_by_one_shared_constant(name):
    """S_SI / S_norm = (μ0/4π)² · 4 / z0⁶ (z0 in metres) for every operator."""
    rho, larmor = random_rho(N, N), random_larmor(N, N)
    ratio = op(name, units="si")(rho, larmor) / op(name)(rho, larmor)
    z0 = STANDOFF * 1e-9
    expected = MU0_OVER_4PI**2 * 4 / z0**6
    torch.testing.assert_close(ratio, torch.full_like(ratio, expected), rtol=1e-10, atol=0)


def test_normalized_power_kernel_peaks_at_one():
    table = kernel_table("power", (N, N), SPACING, STANDOFF)
    assert table.max().item() == pytest.approx(1.0, rel=1e-14)
    assert table[N - 1, N - 1].item() == pytest.approx(1.0, rel=1e-14)


def test_peak_noise_of_single_source_falls_as_z0_to_minus_6():
    """N at the pixel above one source, in SI units, ∝ z0⁻⁶ with the analytic prefactor."""
    standoffs = np.array([5.0, 10.0, 20.0, 40.0, 80.0])
    freqs = torch.tensor([2.0], dtype=torch.float64)
    peaks = []
    for z0 in standoffs:
        s = TensorOperator(freqs, GAMMA, SPACING, z0, units="si")(point_source(at=(8, 8)), 2.0)
        peaks.append(s[0, 8, 8].item())
    slope = np.polyfit(np.log(standoffs), np.log(peaks), 1)[0]
    assert slope == pytest.approx(-6.0, abs=1e-9)
    assert peaks[2] == pytest.approx(MU0_OVER_4PI**2 * 4 / (20e-9) ** 6, rel=1e-12)


@pytest.mark.parametrize("z0_px", [2.0, 3.0, 4.0])
def test_sheet_power_matches_the_d4_law(z0_px):
    """A uniform sheet of areal density σ gives σ (μ0/4π)² 3π / (2 z0⁴) above its centre.

    With u = (in-plane distance)², |R|² + 3z0² = u + 4z0², so
    ∫ P d²r = (μ0/4π)² π ∫₀^∞ (u + 4z0²)/(u + z0²)⁴ du = (μ0/4π)² π (1/2 + 1) / z0⁴:
    the D⁻⁴ law of the paper's appendix A.9.  The grid sum approximates the integral
    (window 64 px ≥ 16 z0).
    """
    n, spacing_nm = 64, 5.0
    z0_nm = z0_px * spacing_nm
    sigma = 1e16  # m⁻²
    cell = (spacing_nm * 1e-9) ** 2
    rho = torch.full((n, n), sigma * cell, dtype=torch.float64)
    s = TensorOperator(torch.tensor([2.0], dtype=torch.float64), GAMMA, spacing_nm, z0_nm,
                       units="si")(rho, 2.0)
    centre = s[0, n // 2, n // 2].item()
    analytic = sigma * MU0_OVER_4PI**2 * 3 * math.pi / (2 * (z0_nm * 1e-9) ** 4)
    assert centre == pytest.approx(analytic, rel=2e-3)


def test_sheet_power_slope_is_minus_4():
    n, spacing_nm = 96, 5.0
    z0s = np.array([10.0, 15.0, 20.0, 25.0])
    rho = torch.ones(n, n, dtype=torch.float64)
    vals = [TensorOperator(torch.tensor([2.0]), GAMMA, spacing_nm, z0, units="si")(rho, 2.0)
            [0, n // 2, n // 2].item() for z0 in z0s]
    slope = np.polyfit(np.log(z0s), np.log(vals), 1)[0]
    assert slope == pytest.approx(-4.0, abs=0.01)


def test_lorentzian_peak_and_half_width():
    larmor = torch.full((1, 1), 2.0, dtype=torch.float64)
    freqs = torch.tensor([2.0, 2.0 + GAMMA, 2.0 - GAMMA, 2.0 + 3 * GAMMA], dtype=torch.float64)
    values = lorentzian(freqs, larmor, GAMMA)[:, 0, 0]
    torch.testing.assert_close(values, torch.tensor([1.0, 0.5, 0.5, 0.1], dtype=torch.float64))


def test_readout_grid_covers_band_plus_linewidth():
    f = readout_frequencies((1.5, 2.5), 0.5, 50)
    assert f[0].item() == pytest.approx(1.0) and f[-1].item() == pytest.approx(3.0)
    assert len(f) == 50


def test_f2_f3_error_grows_with_in_kernel_larmor_spread():
    """F2's readout-side Lorentzian departs from F3 as χ = Δω_L/γ grows (appendix A.8)."""
    freqs = readout_frequencies()
    errors = []
    for chi in [1e-4, 0.1, 0.3, 1.0]:
        rho, larmor = larmor_spread_scene(chi, seed=0, grid=Grid(32, SPACING, STANDOFF))
        assert in_kernel_chi(rho, larmor, SPACING, STANDOFF, GAMMA).item() == pytest.approx(chi)
        o2 = TensorOperator(freqs, GAMMA, SPACING, STANDOFF)
        o3 = DirectOperator(freqs, GAMMA, SPACING, STANDOFF)
        errors.append(relative_error(o2(rho, larmor), o3(rho, larmor)).item())
    assert errors[0] < 1e-3 * errors[2]
    assert errors == sorted(errors)
    # the paper's magnitudes: a few 1e-2 at χ≈0.3, ~1e-1 at χ≈1
    assert 5e-3 < errors[2] < 1e-1
    assert 3e-2 < errors[3] < 4e-1


def test_bad_parameters_raise_parameter_error():
    with pytest.raises(ParameterError, match="standoff"):
        op("F2", standoff=-1.0)
    with pytest.raises(ParameterError, match="operator"):
        make_operator("F9", FREQS, GAMMA, SPACING, STANDOFF)
    with pytest.raises(ParameterError, match="Larmor"):
        op("F2")(random_rho(N, N), torch.ones(3, 3))
    with pytest.raises(ParameterError, match="linewidth"):
        ScalarOperator(FREQS, 0.0, SPACING, STANDOFF)
