"""Single-NV relaxation rates (nvbayes.physics.relaxation): closed forms, limits, grid sums.

Tolerances: quadrature against closed forms 1e-10 relative; against sums of the grid kernels
2e-3 (the grid's discretization); limits 1e-3 at σ/d = 1e-3 or 1e3.
"""

import math

import numpy as np
import pytest
import torch
from scipy.special import erfcx, expn

from nvbayes.data.rucl3_spec import load_ansatz
from nvbayes.errors import ParameterError
from nvbayes.physics.kernels import power_kernel, power_kernel_closed_form, scalar_kernel
from nvbayes.physics.relaxation import (
    DIAMOND_100_POLAR_DEG,
    GYROMAGNETIC_RATIO,
    Flake,
    GaussianDensity,
    PointSource,
    SpinBath,
    UniformDisc,
    covariance,
    depth_exponent,
    geometric_variance,
    nv_axis,
    nv_frequency_hz,
    relaxation_rate,
)
from nvbayes.physics.units import BOHR_MAGNETON, MU0_OVER_4PI

NM = 1e-9
DEPTH = 14.5 * NM
BATH = SpinBath(2.31, 0.41e-9)
SIGMA_OVER_DEPTH = [0.05, 0.3, 1.0, 3.0, 30.0]


def _power_closed_form(sigma, depth):
    """π d⁻⁴ e^k [3 E₄(k) + E₃(k)], k = d²/2σ² (∫ e^{−su} (u+c)^{−n} du = c^{1−n} e^{sc} Eₙ(sc))."""
    k = depth**2 / (2 * sigma**2)
    return math.pi * depth**-4 * math.exp(k) * (3 * expn(4, k) + expn(3, k))


def _field_closed_form(sigma, depth):
    """(π/σ²) [√π (1/√s + 2c√s) erfcx(√(sc)) − 2√c], s = 1/2σ², c = d²."""
    s, c = 1 / (2 * sigma**2), depth**2
    j = math.sqrt(math.pi) * (1 / math.sqrt(s) + 2 * c * math.sqrt(s)) * erfcx(
        math.sqrt(s * c)) - 2 * math.sqrt(c)
    return math.pi / sigma**2 * j


@pytest.mark.parametrize("ratio", SIGMA_OVER_DEPTH)
def test_gaussian_integrals_match_their_closed_forms(ratio):
    g = GaussianDensity(1.0, ratio * DEPTH)
    assert float(g.power(DEPTH)) == pytest.approx(_power_closed_form(ratio * DEPTH, DEPTH),
                                                  rel=1e-10)
    assert float(g.field(DEPTH)) == pytest.approx(_field_closed_form(ratio * DEPTH, DEPTH),
                                                  rel=1e-10)


def test_gaussian_limits_are_the_sheet_and_the_point_dipole():
    z = torch.tensor([0.0], dtype=torch.float64)
    wide = GaussianDensity(1.0, 1e3 * DEPTH)
    assert float(wide.power(DEPTH)) == pytest.approx(3 * math.pi / (2 * DEPTH**4), rel=1e-3)
    sigma = 1e-3 * DEPTH
    point = GaussianDensity(1.0, sigma)
    n_spins = 2 * math.pi * sigma**2
    p0 = float(power_kernel_closed_form(z, z, DEPTH))      # 4 / d⁶ directly above
    g0 = float(scalar_kernel(z, z, DEPTH))                 # 2 / d³
    assert float(point.power(DEPTH)) == pytest.approx(n_spins * p0, rel=1e-3)
    assert float(point.field(DEPTH)) == pytest.approx(n_spins * g0, rel=1e-3)


def _grid(half_width_nm, step_nm):
    axis = torch.arange(-half_width_nm, half_width_nm + step_nm / 2, step_nm,
                        dtype=torch.float64) * NM
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return xx, yy, (step_nm * NM) ** 2


def test_sources_agree_with_sums_of_the_grid_kernels():
    """Two independent computations: radial quadrature vs the imaging kernels on a grid."""
    xx, yy, area = _grid(400.0, 0.5)
    sigma = 20 * NM
    weights = torch.exp(-(xx**2 + yy**2) / (2 * sigma**2)) * area
    g = GaussianDensity(1.0, sigma)
    assert float((power_kernel(xx, yy, DEPTH) * weights).sum()) == pytest.approx(
        float(g.power(DEPTH)), rel=2e-3)
    assert float((scalar_kernel(xx, yy, DEPTH) * weights).sum()) == pytest.approx(
        float(g.field(DEPTH)), rel=2e-3)
    radius = 100 * NM
    disc = ((xx**2 + yy**2) <= radius**2).double() * area
    sheet = UniformDisc(1.0, radius)
    assert float((power_kernel(xx, yy, DEPTH) * disc).sum()) == pytest.approx(
        float(sheet.power(DEPTH)), rel=2e-3)
    assert float((scalar_kernel(xx, yy, DEPTH) * disc).sum()) == pytest.approx(
        float(sheet.field(DEPTH)), rel=2e-3)


def test_f2_sheet_rate_is_linear_in_density_and_falls_as_d_minus_4():
    one = relaxation_rate(UniformDisc(1e18), DEPTH, "F2", BATH)
    three = relaxation_rate(UniformDisc(3e18), DEPTH, "F2", BATH)
    deeper = relaxation_rate(UniformDisc(1e18), 2 * DEPTH, "F2", BATH)
    assert float(three / one) == pytest.approx(3.0, rel=1e-14)
    assert float(deeper / one) == pytest.approx(1 / 16, rel=1e-12)
    assert depth_exponent(lambda d: relaxation_rate(UniformDisc(1e18), d, "F2", BATH),
                          DEPTH) == pytest.approx(4.0, abs=1e-9)


def test_f2_sheet_rate_in_si_units_by_hand():
    """3 γe² τc/(1+ω²τc²) · (μ0/4π)² μ²/3 · ρ · 3π/(2d⁴) at zero field."""
    rho, tau, moment = 6.45e18, 0.41e-9, 2.31 * BOHR_MAGNETON
    omega = 2 * math.pi * 2.87e9
    expected = (3 * GYROMAGNETIC_RATIO**2 * tau / (1 + (omega * tau) ** 2)
                * MU0_OVER_4PI**2 * moment**2 / 3 * rho * 3 * math.pi / (2 * DEPTH**4))
    got = float(relaxation_rate(UniformDisc(rho), DEPTH, "F2", BATH, 0.0))
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("ratio", SIGMA_OVER_DEPTH)
def test_f1_is_quadratic_and_f2_linear_in_amplitude(ratio):
    sigma = ratio * DEPTH
    for op, power in (("F1", 2), ("F2", 1)):
        a = relaxation_rate(GaussianDensity(1e17, sigma), DEPTH, op, BATH)
        b = relaxation_rate(GaussianDensity(5e17, sigma), DEPTH, op, BATH)
        assert float(b / a) == pytest.approx(5.0**power, rel=1e-12)


def test_the_coherent_field_of_a_wide_sheet_vanishes_as_one_over_radius():
    assert float(UniformDisc(1.0).field(DEPTH)) == 0.0
    for radius in (1e-6, 1e-5):
        assert float(UniformDisc(1.0, radius).field(DEPTH)) == pytest.approx(
            2 * math.pi / radius, rel=1e-3)


def test_the_ansatz_valleys_are_exact_in_the_limits():
    """Point limit: both operators see only N = 2πAσ²; wide limit: F2 forgets σ, F1 sees A/σ."""
    small = 1e-3 * DEPTH
    for op in ("F1", "F2"):
        a = relaxation_rate(GaussianDensity(1e18, small), DEPTH, op, BATH)
        b = relaxation_rate(GaussianDensity(4e18, small / 2), DEPTH, op, BATH)
        assert float(b / a) == pytest.approx(1.0, rel=1e-3)
    wide = 1e3 * DEPTH
    a = relaxation_rate(GaussianDensity(1e18, wide), DEPTH, "F2", BATH)
    b = relaxation_rate(GaussianDensity(1e18, 3 * wide), DEPTH, "F2", BATH)
    assert float(b / a) == pytest.approx(1.0, rel=1e-3)
    wide = 1e4 * DEPTH   # F1's first correction is O(d/σ)
    a = relaxation_rate(GaussianDensity(1e18, wide), DEPTH, "F1", BATH)
    b = relaxation_rate(GaussianDensity(3e18, 3 * wide), DEPTH, "F1", BATH)
    assert float(b / a) == pytest.approx(1.0, rel=1e-3)


def test_rates_broadcast_and_have_correct_gradients():
    amps = torch.tensor([[1e17], [4e17], [9e17]], dtype=torch.float64)
    depths = torch.tensor([8.0, 12.0, 20.0, 35.0], dtype=torch.float64) * NM
    batch = relaxation_rate(GaussianDensity(amps, 15 * NM), depths, "F1", BATH)
    assert batch.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            one = relaxation_rate(GaussianDensity(float(amps[i, 0]), 15 * NM),
                                  float(depths[j]), "F1", BATH)
            assert float(batch[i, j]) == pytest.approx(float(one), rel=1e-12)

    def log_rate(log_sigma, log_depth):
        source = GaussianDensity(1e18, torch.exp(log_sigma) * NM)
        return torch.log(relaxation_rate(source, torch.exp(log_depth) * NM, "F2", BATH))

    inputs = (torch.tensor(math.log(10.0), dtype=torch.float64, requires_grad=True),
              torch.tensor(math.log(14.0), dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(log_rate, inputs)


def test_nv_frequency_and_published_bath_constants():
    assert float(nv_frequency_hz(0.0)) == pytest.approx(2.87e9)
    # γe/2π = 2.8025 MHz/G
    assert float(nv_frequency_hz(100.0)) == pytest.approx(2.87e9 - 280.25e6, rel=1e-4)
    with pytest.raises(ParameterError):
        nv_frequency_hz(1100.0)
    c = load_ansatz().constants
    # the calibrated bath linewidth is 1/τc (paper E.8 step 3): 1/0.41 ns = 2.439 GHz
    assert 1 / (c.tau_c_ns * 1e-9) == pytest.approx(c.bath_linewidth_ghz * 1e9, rel=5e-3)


def test_bad_sources_and_operators_are_refused():
    with pytest.raises(ParameterError):
        relaxation_rate(UniformDisc(1e18), DEPTH, "F3", BATH)
    with pytest.raises(ParameterError):
        SpinBath(-1.0, 1e-9)
    assert np.isfinite(float(relaxation_rate(UniformDisc(1e18, 1e-6), DEPTH, "f1", BATH)))


# ---- transverse noise, the NV axis, point sources and flakes ----------------------------------

Z = nv_axis()
TILTED = nv_axis(DIAMOND_100_POLAR_DEG, 30.0)


@pytest.mark.parametrize("ratio, expected", [(0.1, 0.52), (0.5, 0.72), (1.0, 0.85),
                                             (2.0, 0.94)])
def test_transverse_over_axial_of_the_gaussian_ansatz(ratio, expected):
    """F2, z-axis NV: ⟨B⊥²⟩/⟨B_z²⟩ = 0.52, 0.72, 0.85, 0.94 at σg/d = 0.1, 0.5, 1, 2."""
    g = GaussianDensity(1.0, ratio * DEPTH)
    t = geometric_variance(g, DEPTH, "F2", Z, "transverse")
    a = geometric_variance(g, DEPTH, "F2", Z, "axial")
    assert float(t / a) == pytest.approx(expected, abs=5e-3)
    assert float(a) == pytest.approx(float(g.power(DEPTH)), rel=1e-13)


def test_transverse_limits_point_half_sheet_one_and_f1_exactly_half():
    point = PointSource(1.0)
    # a spin straight below: C = diag(1, 1, 4)/d⁶
    c = covariance(point, DEPTH, "F2") * DEPTH**6
    np.testing.assert_allclose(c.numpy(), np.diag([1.0, 1.0, 4.0]), rtol=1e-12, atol=1e-12)
    for op in ("F1", "F2"):
        t = geometric_variance(point, DEPTH, op, Z)
        a = geometric_variance(point, DEPTH, op, Z, "axial")
        assert float(t / a) == pytest.approx(0.5, rel=1e-12)
    for source in (GaussianDensity(1.0, 7 * NM), UniformDisc(1.0, 300 * NM)):
        t = geometric_variance(source, DEPTH, "F1", Z)
        a = geometric_variance(source, DEPTH, "F1", Z, "axial")
        assert float(t / a) == pytest.approx(0.5, rel=1e-12)


def test_infinite_sheet_along_z_and_along_a_diamond_100_axis():
    """Sheet, F2: ⟨(B·n)²⟩ ∝ π(3 + 3n_z²)/(4d⁴), |B|² ∝ 3π/d⁴: along z both 3π/(2d⁴);
    at 54.7° (n_z² = 1/3) axial π/d⁴ and transverse 2π/d⁴."""
    sheet = UniformDisc(1.0)
    unit = math.pi / DEPTH**4
    for component in ("transverse", "axial"):
        assert float(geometric_variance(sheet, DEPTH, "F2", Z, component)) == pytest.approx(
            1.5 * unit, rel=1e-12)
    assert float(geometric_variance(sheet, DEPTH, "F2", TILTED, "axial")) == pytest.approx(
        unit, rel=1e-12)
    assert float(geometric_variance(sheet, DEPTH, "F2", TILTED)) == pytest.approx(
        2 * unit, rel=1e-12)


def _point_grid(half_width_nm, step_nm, weights):
    axis = torch.arange(-half_width_nm, half_width_nm + step_nm / 2, step_nm,
                        dtype=torch.float64) * NM
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    area = (step_nm * NM) ** 2
    return PointSource(weights(xx, yy) * area, xx, yy)


def test_sources_agree_with_a_direct_sum_of_point_spins():
    """Two independent computations of both tensors: radial integrals vs a grid of spins,
    seen along a tilted axis (no symmetry helps the sum)."""
    sigma, radius = 20 * NM, 100 * NM
    cases = [(GaussianDensity(1.0, sigma),
              lambda x, y: torch.exp(-(x**2 + y**2) / (2 * sigma**2))),
             (UniformDisc(1.0, radius), lambda x, y: ((x**2 + y**2) <= radius**2).double())]
    for source, weights in cases:
        grid = _point_grid(400.0, 0.5, weights)
        power = grid.power_tensor(DEPTH).sum((0, 1))
        field = grid.field_tensor(DEPTH).sum((0, 1))
        scale = float(source.power_tensor(DEPTH).abs().max())
        np.testing.assert_allclose(power.numpy(), source.power_tensor(DEPTH).numpy(),
                                   atol=2e-3 * scale)
        scale = float(source.field_tensor(DEPTH).abs().max())
        np.testing.assert_allclose(field.numpy(), source.field_tensor(DEPTH).numpy(),
                                   atol=2e-3 * scale)


def test_rotating_source_and_axis_together_changes_nothing():
    phi = 0.7
    offset = torch.tensor([12.0, 5.0], dtype=torch.float64) * NM
    turned = torch.tensor([[math.cos(phi), -math.sin(phi)], [math.sin(phi), math.cos(phi)]],
                          dtype=torch.float64) @ offset
    for op in ("F1", "F2"):
        a = geometric_variance(PointSource(1.0, *offset), DEPTH, op,
                               nv_axis(DIAMOND_100_POLAR_DEG, 10.0))
        b = geometric_variance(PointSource(1.0, *turned), DEPTH, op,
                               nv_axis(DIAMOND_100_POLAR_DEG, 10.0 + math.degrees(phi)))
        assert float(b) == pytest.approx(float(a), rel=1e-12)


def test_a_flake_adds_its_layers_and_thick_flakes_fall_as_d_minus_3():
    spacing = 0.57 * NM
    one = UniformDisc(6.45e18)
    flake = Flake(one, spacing, (1.0, 0.5, 2.0))
    by_hand = sum(w * 1.5 * math.pi * 6.45e18 / (DEPTH + k * spacing) ** 4
                  for k, w in enumerate((1.0, 0.5, 2.0)))
    assert float(geometric_variance(flake, DEPTH, "F2", Z)) == pytest.approx(by_hand, rel=1e-12)
    assert float(geometric_variance(Flake(one, spacing, (1.0,)), DEPTH, "F2", Z)) == (
        pytest.approx(float(geometric_variance(one, DEPTH, "F2", Z)), rel=1e-15))
    # F1 adds fields, then squares: two equal layers at the same depth give 4x one layer
    disc = UniformDisc(1e18, 200 * NM)
    twin = Flake(disc, 1e-30, (1.0, 1.0))
    assert float(geometric_variance(twin, DEPTH, "F1", Z)) == pytest.approx(
        4 * float(geometric_variance(disc, DEPTH, "F1", Z)), rel=1e-9)
    # batched: (3, 1) amplitudes against (4,) depths, layers summed by hand
    amps = torch.tensor([[1e18], [2e18], [3e18]], dtype=torch.float64)
    depths = torch.tensor([10.0, 14.0, 20.0, 25.0], dtype=torch.float64) * NM
    weights = (1.0, 0.5, 0.2, 0.1)
    batched = geometric_variance(Flake(GaussianDensity(amps, 10 * NM), spacing, weights),
                                 depths, "F2", TILTED)
    summed = sum(w * geometric_variance(GaussianDensity(amps, 10 * NM), depths + k * spacing,
                                        "F2", TILTED) for k, w in enumerate(weights))
    assert batched.shape == (3, 4)
    np.testing.assert_allclose(batched.numpy(), summed.numpy(), rtol=1e-13)
    thick = Flake(UniformDisc(1.0), 0.05 * NM, (1.0,) * 40000)   # 2 µm of layers
    exponent = depth_exponent(lambda d: geometric_variance(thick, d, "F2", Z), DEPTH)
    assert exponent == pytest.approx(3.0, abs=0.02)
    with pytest.raises(ParameterError):
        Flake(one, 0.0, (1.0, 1.0))
