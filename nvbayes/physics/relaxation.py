"""Relaxation rate that a layer of fluctuating spins adds to one NV centre, in SI units.

A single NV with unit axis ``n`` at depth ``d`` below a plane of independent fluctuating spins
(areal density ``ρ(r)`` in m⁻², effective moment ``μ_eff``) relaxes (T1) faster by
(Tetienne et al., PRB 87, 235436 (2013); the paper's Eqs. 14–15, appendix A.9)

    Γ = 3 γe² ⟨B⊥²⟩ · τc / (1 + ω² τc²),

with ``γe`` the electron gyromagnetic ratio, ``τc`` the correlation time of the spin bath,
``ω = 2π f`` the NV transition frequency (``f = D − (γe/2π) B`` at an axial field ``B``) and
``⟨B⊥²⟩ = ⟨|B|²⟩ − ⟨(B·n)²⟩`` the variance of the field *transverse* to the NV axis: the
spin-flip transitions ``|0⟩ ↔ |±1⟩`` are driven by ``S_x, S_y``, so only the field
perpendicular to ``n`` relaxes the NV.  (The axial variance ``⟨(B·n)²⟩`` dephases; it is kept
as ``component="axial"`` for comparison with the imaging operators, which use it.)

The field covariance.  A spin at ``R = (x, y, d)`` from the NV with moment ``m`` makes
``B = (μ0/4π) T m``, ``T = (3 R̂R̂ᵀ − I)/|R|³``.  Each spin fluctuates isotropically,
``⟨m mᵀ⟩ = (μ_eff²/3) I``, so ``⟨B Bᵀ⟩ = (μ0/4π)² μ_eff²/3 · C`` with the geometric tensor

    F2 (independent spins, powers add)   C = ∫ ρ T Tᵀ d²r = ∫ ρ (3 R̂R̂ᵀ + I)/|R|⁶ d²r,
    F1 (one coherent moment, fields add) C = M Mᵀ,   M = ∫ ρ T d²r.

For a z-axis NV the F2 kernels are ``nᵀ T Tᵀ n = (r² + 4d²)/|R|⁸`` (axial) and
``tr − axial = (5r² + 2d²)/|R|⁸`` (transverse); both integrate to ``3π/(2d⁴)`` over an infinite
sheet, but under a Gaussian of width ``σg`` the transverse/axial ratio runs from 1/2 (a point
source) to 1 (the sheet).  Under F1 a source centred under the NV has ``M = m_zz
diag(−½, −½, 1)`` (T is traceless), so transverse/axial is exactly 1/2 for a z-axis NV.

Sources, each with ``power_tensor(depth)`` (F2's ``C``, m⁻⁶) and ``field_tensor(depth)``
(F1's ``M``, m⁻³), both ``(..., 3, 3)``:

* :class:`PointSource`: ``count`` spins at a lateral offset ``(x, y)``.
* :class:`UniformDisc`: a sheet of density ``ρ`` and radius ``a`` centred under the NV
  (``a = ∞``: the infinite sheet, whose coherent field is zero).
* :class:`GaussianDensity`: ``ρ(r) = A exp(−|r|²/2σ²)`` (the paper's α-RuCl3 ansatz).
* :class:`Flake`: layers of one source at depths ``d + k·s``, each with its own density.

A source centred under the NV is described by three radial integrals, from which both
tensors follow: ``J6 = ∫ ρ |R|⁻⁶``, ``J8 = ∫ ρ d² |R|⁻⁸`` and ``m_zz = ∫ ρ (3d² − |R|²)|R|⁻⁵``;
then ``C = diag(c⊥, c⊥, c_zz)`` with ``c_zz = 3 J8 + J6`` and ``c⊥ = (5 J6 − 3 J8)/2``.
``power(depth) = c_zz`` and ``field(depth) = m_zz`` are the z-axis quantities of the imaging
operators (:mod:`nvbayes.physics.kernels`).  For the disc they are closed forms; for the
Gaussian, with ``x = |r|²/d²`` and ``k = d²/2σ²``,

    J6   = A π d⁻⁴ ∫₀^∞ e^{−kx} (1+x)⁻³ dx,      J8 = A π d⁻⁴ ∫₀^∞ e^{−kx} (1+x)⁻⁴ dx,
    m_zz = A (2π k / d) ∫₀^∞ x e^{−kx} (1+x)^{−3/2} dx    (integrated by parts: integrand ≥ 0),

evaluated by the trapezoidal rule in ``ln x`` (323 nodes over 28 decades), which converges
geometrically for these analytic integrands; the tests compare them with closed forms
(exponential integrals and ``erfcx``), with direct sums over grids of point spins, and with
the sheet limit.

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
#: Polar angle of an NV axis in a (100)-cut diamond, arccos(1/√3) = 54.7356°.
DIAMOND_100_POLAR_DEG = math.degrees(math.acos(1.0 / math.sqrt(3.0)))
#: Which part of the field covariance relaxes the NV (``transverse``: T1) or is reported.
COMPONENTS = ("transverse", "axial")

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


def lorentzian(field_gauss, tau_c_s) -> torch.Tensor:
    """``τc / (1 + ω² τc²)`` in s at the NV frequency of ``field_gauss`` (broadcasts)."""
    omega = 2 * math.pi * nv_frequency_hz(field_gauss)
    tau = torch.as_tensor(tau_c_s, dtype=torch.float64)
    return tau / (1.0 + (omega * tau) ** 2)


def nv_axis(polar_deg: float = 0.0, azimuth_deg: float = 0.0) -> torch.Tensor:
    """The NV axis as a unit vector ``(3,)``: polar angle from z (the sample normal) and
    azimuth from x, in degrees.  A (100)-diamond NV: ``polar_deg=DIAMOND_100_POLAR_DEG``."""
    for name, value in (("polar angle", polar_deg), ("azimuth", azimuth_deg)):
        if not math.isfinite(float(value)):
            raise ParameterError(f"NV axis {name} must be finite, got {value}",
                                 "give the angle in degrees")
    theta, phi = math.radians(float(polar_deg)), math.radians(float(azimuth_deg))
    return torch.tensor([math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi),
                         math.cos(theta)], dtype=torch.float64)


def check_component(component: str) -> str:
    value = str(component).lower()
    if value not in COMPONENTS:
        raise ParameterError(f"unknown field component {component!r}",
                             f"use one of {', '.join(COMPONENTS)}")
    return value


@dataclass(frozen=True)
class SpinBath:
    """The spins' effective moment and their correlation time.

    ``rate_per_variance(field)`` is ``3 γe² τc / (1 + ω² τc²)``: Γ per unit ⟨B⊥²⟩, s⁻¹ T⁻².
    ``variance_scale`` is ``(μ0/4π)² μ_eff²/3``: ⟨B B⟩ per unit geometric tensor, T² m⁶.
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
        return 3.0 * GYROMAGNETIC_RATIO**2 * lorentzian(field_gauss, self.tau_c_s)


@functools.lru_cache(maxsize=None)
def _log_nodes(dtype: torch.dtype, device: str) -> torch.Tensor:
    lo, hi = _LOG_X_RANGE
    n = int(round((hi - lo) / _LOG_X_STEP)) + 1
    return torch.linspace(lo, hi, n, dtype=dtype, device=device)


def _radial_integral(integrand, k: torch.Tensor) -> torch.Tensor:
    """``∫₀^∞ integrand(x, k) dx`` by the trapezoidal rule in ``s = ln x``; ``k`` is ``(...)``.

    ``integrand`` may return ``(m, ..., n_nodes)`` for ``m`` integrals at once."""
    s = _log_nodes(k.dtype, str(k.device))
    x = torch.exp(s)
    values = integrand(x, k.unsqueeze(-1)) * x
    h = s[1] - s[0]
    return h * (values.sum(-1) - 0.5 * (values[..., 0] + values[..., -1]))


def _as_tensors(*values):
    tensors = [torch.as_tensor(v, dtype=torch.float64) if not torch.is_tensor(v) else v
               for v in values]
    return torch.broadcast_tensors(*tensors)


def _diagonal(perpendicular: torch.Tensor, zz: torch.Tensor) -> torch.Tensor:
    """``diag(perpendicular, perpendicular, zz)`` as ``(..., 3, 3)``."""
    return torch.diag_embed(torch.stack([perpendicular, perpendicular, zz], dim=-1))


class _Centred:
    """A source centred under the NV and symmetric about z, given by its ``radial(depth)``
    integrals ``(J6, J8)`` and its coherent field ``field(depth) = m_zz``."""

    def power(self, depth) -> torch.Tensor:
        """``∫ ρ (r² + 4d²)/|R|⁸ d²r`` in m⁻⁶: the z-axis axial F2 integral (depth in m)."""
        j6, j8 = self.radial(depth)
        return 3 * j8 + j6

    def power_tensor(self, depth) -> torch.Tensor:
        j6, j8 = self.radial(depth)
        return _diagonal(2.5 * j6 - 1.5 * j8, 3 * j8 + j6)

    def field_tensor(self, depth) -> torch.Tensor:
        zz = self.field(depth)
        return _diagonal(-0.5 * zz, zz)


@dataclass(frozen=True)
class PointSource:
    """``count`` spins at one point, offset ``(x, y)`` (m) laterally from the NV."""

    count: "torch.Tensor | float"
    x: "torch.Tensor | float" = 0.0
    y: "torch.Tensor | float" = 0.0

    def _unit(self, depth):
        count, x, y, depth = _as_tensors(self.count, self.x, self.y, depth)
        vector = torch.stack([x, y, depth], dim=-1)
        r2 = (vector**2).sum(-1)
        outer = vector[..., :, None] * vector[..., None, :] / r2[..., None, None]
        return count[..., None, None], outer, r2[..., None, None]

    def power_tensor(self, depth) -> torch.Tensor:
        count, outer, r2 = self._unit(depth)
        return count * (3 * outer + torch.eye(3, dtype=outer.dtype)) / r2**3

    def field_tensor(self, depth) -> torch.Tensor:
        count, outer, r2 = self._unit(depth)
        return count * (3 * outer - torch.eye(3, dtype=outer.dtype)) / r2**1.5


@dataclass(frozen=True)
class UniformDisc(_Centred):
    """A uniform sheet of areal density ``density`` (m⁻²) and radius ``radius`` (m).

    ``radius = inf`` is the infinite sheet (whose coherent field is zero).  With
    ``o = a² + d²``: ``J6 = (πρ/2)(d⁻⁴ − o⁻²)``, ``J8 = (πρ d²/3)(d⁻⁶ − o⁻³)``,
    ``m_zz = 2πρ a²/o^{3/2}``.
    """

    density: "torch.Tensor | float"
    radius: "torch.Tensor | float" = math.inf

    def radial(self, depth):
        density, depth, radius = _as_tensors(self.density, depth, self.radius)
        d2 = depth**2
        outer = radius**2 + d2
        return (density * 0.5 * math.pi * (d2**-2 - outer**-2),
                density * math.pi / 3 * d2 * (d2**-3 - outer**-3))

    def field(self, depth) -> torch.Tensor:
        """``∫ g_zz(r, d) ρ d²r`` in m⁻³ (depth in m); zero for the infinite sheet."""
        density, depth, radius = _as_tensors(self.density, depth, self.radius)
        a2 = radius**2
        finite = torch.isfinite(radius)
        safe = torch.where(finite, a2, torch.ones_like(a2))
        value = 2 * math.pi * safe / (safe + depth**2) ** 1.5
        return density * torch.where(finite, value, torch.zeros_like(value))


@dataclass(frozen=True)
class GaussianDensity(_Centred):
    """The Gaussian ansatz ``ρ(r) = A exp(−|r|²/2σ²)`` (A in m⁻², σ in m) under the NV."""

    amplitude: "torch.Tensor | float"
    sigma: "torch.Tensor | float"

    def radial(self, depth):
        amplitude, sigma, depth = _as_tensors(self.amplitude, self.sigma, depth)
        k = depth**2 / (2 * sigma**2)
        def integrands(x, kk):
            inverse = torch.exp(-kk * x) / (1 + x) ** 3
            return torch.stack([inverse, inverse / (1 + x)])

        j6, j8 = amplitude * math.pi * depth**-4 * _radial_integral(integrands, k)
        return j6, j8

    def field(self, depth) -> torch.Tensor:
        """``∫ g_zz(r, d) ρ d²r`` in m⁻³ (depth in m)."""
        amplitude, sigma, depth = _as_tensors(self.amplitude, self.sigma, depth)
        k = depth**2 / (2 * sigma**2)
        integral = _radial_integral(lambda x, kk: x * torch.exp(-kk * x) * (1 + x) ** -1.5, k)
        return amplitude * 2 * math.pi * k / depth * integral


def check_layers(spacing: float, weights) -> None:
    """A flake's layers: at least one, each weight ``>= 0``; a positive spacing if several."""
    if not weights or any(not (w >= 0 and math.isfinite(w)) for w in weights):
        raise ParameterError("a flake needs at least one layer, each with a density >= 0",
                             "give one non-negative density per layer")
    if len(weights) > 1 and not (spacing > 0 and math.isfinite(spacing)):
        raise ParameterError(f"layer spacing must be positive, got {spacing}",
                             "give the interlayer distance in nm")


@dataclass(frozen=True)
class Flake:
    """A multi-layer flake: layer ``k`` is ``layer`` at depth ``d + k·spacing`` with its
    density scaled by ``weights[k]`` (``weights[0]`` is usually 1).

    F2 adds the layers' power tensors; F1 adds their field tensors (all spins coherent).
    A thick flake of equal layers turns F2's sheet law ``d⁻⁴`` into ``d⁻³`` once it is much
    thicker than ``d``: ``Σ_k 3π/2(d + ks)⁴ → π/(2 s d³)``.
    """

    layer: object
    spacing: float
    weights: tuple = (1.0,)

    def __post_init__(self):
        check_layers(self.spacing, self.weights)

    def _sum(self, tensor, depth) -> torch.Tensor:
        """``Σ_k w_k tensor(d + k·s)``, all layers at once along a new leading axis."""
        depth = torch.as_tensor(depth, dtype=torch.float64)
        offsets = torch.arange(len(self.weights), dtype=depth.dtype) * self.spacing
        weights = torch.tensor(self.weights, dtype=depth.dtype)
        keep = weights > 0
        offsets, weights = offsets[keep], weights[keep]
        first = tensor(depth + offsets[0])             # its shape: the source's batch shape
        if len(offsets) == 1:
            return weights[0] * first
        layers = depth + offsets[1:].reshape(-1, *([1] * (first.dim() - 2)))
        rest = tensor(layers)
        return weights[0] * first + (weights[1:].reshape(-1, *([1] * (rest.dim() - 1)))
                                     * rest).sum(0)

    def power_tensor(self, depth) -> torch.Tensor:
        return self._sum(self.layer.power_tensor, depth)

    def field_tensor(self, depth) -> torch.Tensor:
        return self._sum(self.layer.field_tensor, depth)


def covariance(source, depth, operator: str) -> torch.Tensor:
    """The geometric field covariance ``C`` (m⁻⁶) of the module docstring, ``(..., 3, 3)``."""
    if check_inversion_operator(operator) == "F2":
        return source.power_tensor(depth)
    m = source.field_tensor(depth)
    return m @ m.transpose(-1, -2)


def geometric_variance(source, depth, operator: str, axis=None,
                       component: str = "transverse") -> torch.Tensor:
    """``tr C − nᵀCn`` (transverse) or ``nᵀCn`` (axial) in m⁻⁶; ``axis`` defaults to z."""
    component = check_component(component)
    n = nv_axis() if axis is None else torch.as_tensor(axis, dtype=torch.float64)
    if n.shape != (3,) or abs(float(n.norm()) - 1.0) > 1e-9:
        raise ParameterError("the NV axis must be a unit 3-vector", "use nv_axis(polar, azimuth)")
    c = covariance(source, depth, operator)
    n = n.to(c.dtype)
    axial = (c * (n[:, None] * n[None, :])).sum((-2, -1))
    if component == "axial":
        return axial
    return torch.diagonal(c, dim1=-2, dim2=-1).sum(-1) - axial


def field_variance(source, depth, operator: str, bath: SpinBath, axis=None,
                   component: str = "transverse") -> torch.Tensor:
    """``⟨B⊥²⟩`` (or ``⟨(B·n)²⟩``) in T² from a source at ``depth`` (m)."""
    return bath.variance_scale * geometric_variance(source, depth, operator, axis, component)


def relaxation_rate(source, depth, operator: str, bath: SpinBath, field_gauss=0.0,
                    axis=None, component: str = "transverse") -> torch.Tensor:
    """Γ in s⁻¹ that ``source`` adds to an NV at ``depth`` (m) under ``operator``."""
    return bath.rate_per_variance(field_gauss) * field_variance(
        source, depth, operator, bath, axis, component)


def depth_exponent(rate, depth: float) -> float:
    """The local power law ``−d ln Γ / d ln d`` at ``depth`` of ``rate(depth)``, by autograd."""
    log_d = torch.tensor(math.log(float(depth)), dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(torch.log(rate(torch.exp(log_d))), log_d)
    return -float(grad)


__all__ = [
    "COMPONENTS", "DIAMOND_100_POLAR_DEG", "GYROMAGNETIC_RATIO", "TESLA_PER_GAUSS",
    "ZERO_FIELD_SPLITTING_HZ", "Flake", "GaussianDensity", "PointSource", "SpinBath",
    "UniformDisc", "check_component", "check_layers", "covariance", "depth_exponent",
    "field_variance", "geometric_variance", "lorentzian", "nv_axis", "nv_frequency_hz",
    "relaxation_rate",
]
