"""How far F2's factorization is from the source-side physics of F3 (paper appendix A.8).

F2 evaluates the Lorentzian at the readout pixel, F3 at each source.  They agree when the
Larmor frequencies of the sources that a readout pixel sees are equal.  The spread that matters
is the power-weighted RMS detuning of those sources from the readout pixel's own ω_L:

    s(r)² = Σ_s ρ(s) P(r − s) (ω_L(s) − ω_L(r))² / Σ_s ρ(s) P(r − s)

and the in-kernel spread of a scene, in units of the linewidth, is

    χ = sqrt( Σ_r N(r) s(r)² / Σ_r N(r) ) / γ,     N(r) = (P ∗ ρ)(r).

Expanding the square turns both sums into three convolutions with P (of ρ, ρω_L, ρω_L²), so χ
costs three FFTs.
"""

from __future__ import annotations

import torch

from .kernels import AXES, Z_AXIS, cached_spectrum, convolve


def larmor_spread(rho: torch.Tensor, larmor: torch.Tensor, spacing: float, standoff: float,
                  nv_axis=Z_AXIS) -> torch.Tensor:
    """Per-pixel power-weighted RMS Larmor detuning ``s(r)`` in GHz: ``(..., ny, nx)``."""
    rho = rho.to(torch.float64)
    larmor = torch.broadcast_to(torch.as_tensor(larmor, dtype=torch.float64), rho.shape)
    spectrum = cached_spectrum("power", rho.shape[-2:], spacing, standoff, "normalized",
                               nv_axis, AXES, rho)
    m0 = convolve(rho, spectrum)
    m1 = convolve(rho * larmor, spectrum)
    m2 = convolve(rho * larmor * larmor, spectrum)
    second = (m2 - 2.0 * larmor * m1 + larmor * larmor * m0) / m0
    return second.clamp(min=0.0).sqrt()


def in_kernel_chi(rho: torch.Tensor, larmor: torch.Tensor, spacing: float, standoff: float,
                  linewidth: float, nv_axis=Z_AXIS) -> torch.Tensor:
    """Scene-level ``χ = Δω_L(kernel) / γ``, noise-weighted over pixels: shape ``(...)``."""
    rho = rho.to(torch.float64)
    spectrum = cached_spectrum("power", rho.shape[-2:], spacing, standoff, "normalized",
                               nv_axis, AXES, rho)
    weight = convolve(rho, spectrum)
    spread = larmor_spread(rho, larmor, spacing, standoff, nv_axis)
    mean_sq = (weight * spread**2).sum((-2, -1)) / weight.sum((-2, -1))
    return mean_sq.sqrt() / linewidth


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """``‖approx − exact‖₂ / ‖exact‖₂`` over all but the batch axes.

    ``(..., n_freq, ny, nx)`` × 2 → ``(...)``.
    """
    dims = (-3, -2, -1)
    return torch.linalg.vector_norm(approx - exact, dim=dims) / torch.linalg.vector_norm(
        exact, dim=dims)
