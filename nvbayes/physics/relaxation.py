"""Relaxation rate that a layer of fluctuating spins adds to one NV centre, in SI units.

A single NV at depth ``d`` below a plane of independent fluctuating spins (areal density
``ρ(r)`` in m⁻², effective moment ``μ_eff``) sees a fluctuating field along its axis.  Its
longitudinal relaxation rate grows by (Tetienne et al., PRB 87, 235436 (2013); the paper's
Eqs. 14–15, appendix A.9)

    Γ = 3 γe² ⟨B²⟩ · τc / (1 + ω² τc²),

with ``γe`` the electron gyromagnetic ratio, ``τc`` the correlation time of the spin bath and
``ω = 2π f`` the NV transition frequency, ``f = D − (γe/2π) B`` at an axial field ``B``.
The field variance ``⟨B²⟩`` is where the operators of :mod:`nvbayes.physics.operators`
differ.  Each spin fluctuates isotropically, ``⟨m_a²⟩ = μ_eff²/3`` per channel ``a``, and the
kernels are those of a z-axis NV (``g_az``, ``g_zz``; :mod:`nvbayes.physics.kernels`):

    F2 (incoherent power sum)  ⟨B²⟩ = (μ0/4π)² μ_eff²/3 · ∫ P(r, d) ρ(r) d²r,
                               P = Σ_a g_az² = (|R|² + 3 d²)/|R|⁸;
    F1 (coherent square)       ⟨B²⟩ = (μ0/4π)² μ_eff²/3 · (∫ g_zz(r, d) ρ(r) d²r)²,
                               g_zz = (3 d² − |R|²)/|R|⁵.

F2 is linear in ρ, F1 quadratic, with the same constant, as in the imaging operators.  Two
source shapes are provided, both centred under the NV:

* :class:`UniformDisc`, a sheet of density ``ρ`` and radius ``a`` (``a = ∞``: the infinite
  sheet).  ``∫ P = π [d² (d⁻⁶ − (a²+d²)⁻³) + (d⁻⁴ − (a²+d²)⁻²)/2]``, which tends to
  ``3π/(2 d⁴)``: Γ ∝ ρ d⁻⁴.  ``∫ g_zz = 2π a²/(a²+d²)^{3/2}``, which vanishes as
  ``a → ∞``: a uniformly magnetized infinite sheet has no field outside it, so under F1 a
  sheet needs a finite extent.
* :class:`GaussianDensity`, ``ρ(r) = A exp(−|r|²/2σ²)`` (the paper's α-RuCl3 ansatz).  With
  ``x = |r|²/d²`` and ``k = d²/2σ²``

      ∫ P ρ    = A π d⁻⁴ ∫₀^∞ e^{−kx} [3 (1+x)⁻⁴ + (1+x)⁻³] dx,
      ∫ g_zz ρ = A (2π k / d) ∫₀^∞ x e^{−kx} (1+x)^{−3/2} dx      (after integrating by parts,
                                                                   so the integrand is ≥ 0).

  Both are evaluated by the trapezoidal rule in ``ln x`` (323 nodes over 28 decades), which
  converges geometrically for these analytic integrands; the tests compare them with their
  closed forms (exponential integrals and ``erfcx``) and with sums of the grid kernels.

All functions take tensors (float64 recommended) and broadcast; they are differentiable, for
the Gaussian-ansatz model of :mod:`nvbayes.model.ansatz`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from nvbayes.errors import ParameterError

from .operators import check_inversion_operator
from .units import BOHR_MAGNETON, MU0_OVER_4PI

#: Electron gyromagnetic ratio γe in rad s⁻¹ T⁻¹ (CODATA 2018).
GYROMAGNETIC_RATIO = 1.76085963023e11
#: NV ground-state zero-field splitting D in Hz.
ZERO_FIELD_SPLITTING_HZ = 2.87e9
#: Tesla per gauss.
TESLA_PER_GAUSS = 1e-4

_LOG_X_RANGE = (math.log(1e-16), math.log(1e12))
_LOG_X_STEP = 0.2


def nv_frequency_hz(field_gauss) -> torch.Tensor:
    """Lower NV transition frequency ``f = D − (γe/2π) B`` in Hz at an axial field in gauss."""
    field = torch.as_tensor(field_gauss, dtype=torch.float64)
    freq = ZERO_FIELD_SPLITTING_HZ - GYROMAGNETIC_RATIO / (2 * math.pi) * field * TESLA_PER_GAUSS
    if bool(torch.any(freq <= 0)):
        raise ParameterError("an axial field beyond the ground-state level crossing "
                             "(about 1024 G) leaves no positive NV frequency",
                             "give fields below 1000 G")
    return freq


@dataclass(frozen=True)
class SpinBath:
    """The spins' effective moment and their correlation time.

    ``rate_per_variance(field)`` is ``3 γe² τc / (1 + ω² τc²)``: Γ per unit ⟨B²⟩, s⁻¹ T⁻².
    ``variance_scale`` is ``(μ0/4π)² μ_eff²/3``: ⟨B²⟩ per unit geometric integral, T² m⁶
    (F2: the integral ∫ P ρ is in m⁻⁶; F1: (∫ g_zz ρ)² is in m⁻⁶ as well).
    """

    moment_bohr: float
    tau_c_s: float

    def __post_init__(self):
        if not (self.moment_bohr > 0 and math.isfinite(self.moment_bohr)):
            raise ParameterError(f"moment must be positive, got {self.moment_bohr}",
                                 "give the effective moment in Bohr magnetons")
        if not (self.tau_c_s > 0 and math.isfinite(self.tau_c_s)):
            raise ParameterError(f"correlation time must be positive, got {self.tau_c_s}",
                                 "give τc in seconds")

    @property
    def variance_scale(self) -> float:
        moment = self.moment_bohr * BOHR_MAGNETON
        return MU0_OVER_4PI**2 * moment**2 / 3.0

    def rate_per_variance(self, field_gauss=0.0) -> torch.Tensor:
        omega = 2 * math.pi * nv_frequency_hz(field_gauss)
        tau = self.tau_c_s
        return 3.0 * GYROMAGNETIC_RATIO**2 * tau / (1.0 + (omega * tau) ** 2)


@functools.lru_cache(maxsize=None)
def _log_nodes(dtype: torch.dtype, device: str) -> torch.Tensor:
    lo, hi = _LOG_X_RANGE
    n = int(round((hi - lo) / _LOG_X_STEP)) + 1
    return torch.linspace(lo, hi, n, dtype=dtype, device=device)


def _radial_integral(integrand, k: torch.Tensor) -> torch.Tensor:
    """``∫₀^∞ integrand(x, k) dx`` by the trapezoidal rule in ``s = ln x``; ``k`` is ``(...)``."""
    s = _log_nodes(k.dtype, str(k.device))
    x = torch.exp(s)
    values = integrand(x, k.unsqueeze(-1)) * x
    h = s[1] - s[0]
    return h * (values.sum(-1) - 0.5 * (values[..., 0] + values[..., -1]))


def _as_tensors(*values):
    tensors = [torch.as_tensor(v, dtype=torch.float64) if not torch.is_tensor(v) else v
               for v in values]
    return torch.broadcast_tensors(*tensors)



@dataclass(frozen=True)
class UniformDisc:
    """A uniform sheet of areal density ``density`` (m⁻²) and radius ``radius`` (m).

    ``radius = inf`` is the infinite sheet (whose coherent field is zero).
    """

    density: "torch.Tensor | float"
    radius: "torch.Tensor | float" = math.inf

    def power(self, depth) -> torch.Tensor:
        """``∫ P(r, d) ρ d²r`` in m⁻⁶ (depth in m)."""
        density, depth, radius = _as_tensors(self.density, depth, self.radius)
        d2 = depth**2
        outer = radius**2 + d2
        return density * math.pi * (d2 * (d2**-3 - outer**-3) + 0.5 * (d2**-2 - outer**-2))

    def field(self, depth) -> torch.Tensor:
        """``∫ g_zz(r, d) ρ d²r`` in m⁻³ (depth in m); zero for the infinite sheet."""
        density, depth, radius = _as_tensors(self.density, depth, self.radius)
        a2 = radius**2
        finite = torch.isfinite(radius)
        safe = torch.where(finite, a2, torch.ones_like(a2))
        value = 2 * math.pi * safe / (safe + depth**2) ** 1.5
        return density * torch.where(finite, value, torch.zeros_like(value))


@dataclass(frozen=True)
class GaussianDensity:
    """The Gaussian ansatz ``ρ(r) = A exp(−|r|²/2σ²)`` (A in m⁻², σ in m) under the NV."""

    amplitude: "torch.Tensor | float"
    sigma: "torch.Tensor | float"

    def power(self, depth) -> torch.Tensor:
        """``∫ P(r, d) ρ d²r`` in m⁻⁶ (depth in m)."""
        amplitude, sigma, depth = _as_tensors(self.amplitude, self.sigma, depth)
        k = depth**2 / (2 * sigma**2)
        integral = _radial_integral(
            lambda x, kk: torch.exp(-kk * x) * (3 * (1 + x) ** -4 + (1 + x) ** -3), k)
        return amplitude * math.pi * depth**-4 * integral

    def field(self, depth) -> torch.Tensor:
        """``∫ g_zz(r, d) ρ d²r`` in m⁻³ (depth in m)."""
        amplitude, sigma, depth = _as_tensors(self.amplitude, self.sigma, depth)
        k = depth**2 / (2 * sigma**2)
        integral = _radial_integral(lambda x, kk: x * torch.exp(-kk * x) * (1 + x) ** -1.5, k)
        return amplitude * 2 * math.pi * k / depth * integral


def field_variance(source, depth, operator: str, bath: SpinBath) -> torch.Tensor:
    """``⟨B²⟩`` along the NV axis in T² from a source at depth ``depth`` (m)."""
    op = check_inversion_operator(operator)
    geometric = source.power(depth) if op == "F2" else source.field(depth) ** 2
    return bath.variance_scale * geometric


def relaxation_rate(source, depth, operator: str, bath: SpinBath, field_gauss=0.0):
    """Γ in s⁻¹ that ``source`` adds to an NV at ``depth`` (m) under ``operator``."""
    return bath.rate_per_variance(field_gauss) * field_variance(source, depth, operator, bath)


def depth_exponent(source, depth, operator: str, bath: SpinBath, field_gauss=0.0) -> float:
    """The local power law ``−d ln Γ / d ln d`` at ``depth`` (m), by autograd."""
    log_d = torch.tensor(math.log(float(depth)), dtype=torch.float64, requires_grad=True)
    rate = relaxation_rate(source, torch.exp(log_d), operator, bath, field_gauss)
    (grad,) = torch.autograd.grad(torch.log(rate), log_d)
    return -float(grad)


__all__ = [
    "GYROMAGNETIC_RATIO", "TESLA_PER_GAUSS", "ZERO_FIELD_SPLITTING_HZ",
    "GaussianDensity", "SpinBath", "UniformDisc", "depth_exponent",
    "field_variance", "nv_frequency_hz", "relaxation_rate",
]
