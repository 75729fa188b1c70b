"""Output transforms from raw network channels to (ρ, ω_L) (paper Eq. 5 and Eq. 26).

    ρ      = softplus(h_ρ) · σ(g)                                  gated softplus, ρ ≥ 0
    ω_band = ω_min + (ω_max − ω_min) · σ(h_ω)                      inside the Larmor band
    m      = 1{ρ > τ · max ρ}   (a stop-gradient constant)          predicted support
    ω_L    = m · ω_band                                             0 off the support

Off the support ω_L is the fixed value 0, outside the band; it carries no meaning there and
no gradient reaches ``h_ω`` from those pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: The support threshold τ of Eq. 26.
SUPPORT_THRESHOLD = 0.3


def density_head(h_rho: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``softplus(h_ρ) · σ(g)``, elementwise."""
    return F.softplus(h_rho) * torch.sigmoid(gate)


def support_mask(rho: torch.Tensor, threshold: float = SUPPORT_THRESHOLD) -> torch.Tensor:
    """``1{ρ > τ max ρ}`` per map over the last two axes, detached, in ρ's dtype."""
    peak = rho.detach().amax(dim=(-2, -1), keepdim=True)
    return (rho.detach() > threshold * peak).to(rho.dtype)


def larmor_head(h_omega: torch.Tensor, band: tuple[float, float]) -> torch.Tensor:
    """``ω_min + (ω_max − ω_min) σ(h_ω)``, in GHz."""
    low, high = band
    return low + (high - low) * torch.sigmoid(h_omega)
