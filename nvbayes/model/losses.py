"""The terms of the NeTMY objective (paper Eq. 6, appendix D.4) as plain tensor functions.

Spectra are ``(..., n_freq, ny, nx)``, densities ``(..., ny, nx)``; every function returns one
value per leading index, shape ``(...)``.  With ``N = Σ_ω S`` the noise map and ``Ā`` the
spatial mean of a map ``A``:

    D      = mean_r (log10(N̂_pred + ε) − log10(N̂_obs + ε))²        N̂ = N / max N   (Eq. 19)
    R_nm   = mean_r (N_pred / N̄_pred − N_obs / N̄_obs)²
    R_ds   = mean_r (ρ² / mean(ρ²) − N_obs / N̄_obs)²
    ‖ρ‖₁   = Σ_r |ρ|
    ‖ρ‖₂²  = Σ_r ρ²                                                   (Tikhonov, appendix E.2)
    TV(ρ)  = Σ_r |ρ(r + e_x) − ρ(r)| + |ρ(r + e_y) − ρ(r)|           (anisotropic)
    R_sh   = Σ_r w(r) mean_ω (s_pred − s_obs)² / Σ_r w(r),   s = S / mean_ω S,  w = max(N̂_obs, 0)
    R_E    = (ln E_pred − ln E_obs)²,   E = Σ_{ω,r} S                     (scale anchor)

D lives in :mod:`nvbayes.physics.noise_map`.  R_sh, the spectrum-shape term, is not in the
paper: F1 and F2 factor as ``A(r) L(ω; ω_L(r))``, so the frequency-normalized spectrum ``s``
at a pixel depends on ω_L(r) alone and the term pins ω_L wherever the observation is bright.
The noise-map terms see ω_L only through ``Σ_ω L``, which hardly changes across the band.

R_E, the scale anchor, is not in the paper either.  D, R_nm and R_ds are blind to ρ → cρ, so
without it ℓ1 and TV, which are not, keep shrinking the overall scale (the energy-ratio
correction undoes it only after the fit); a field with a softplus head then drifts into the
head's exponential tail, where every dim region dies.  R_E pins the total power, as the scale
correction would, during the fit.

Every data term takes an optional pixel mask ``m`` (bool ``(ny, nx)``, true on the pixels to
use): its pixel means, maxima and sums then run over ``m`` alone, so a dead or saturated
pixel carries no weight, whatever it reads.  The regularizers of ρ keep every pixel: a source
under a dead pixel still lights its neighbours.
"""

from __future__ import annotations

import torch

from nvbayes.physics.noise_map import log_mse, masked_mean, noise_map, normalized_noise_map

__all__ = [
    "anisotropic_tv", "density_map_mse", "direct_density_mse", "energy_mismatch",
    "frequency_normalized", "l1_norm", "l2_norm", "log_mse", "log_ratio_squared", "map_total",
    "mean_normalized", "noise_map_mse", "shape_mse", "total_power", "spectrum_shape_mse",
    "spectrum_shape_weights",
]

_TINY = 1e-30


def mean_normalized(image: torch.Tensor, mask: "torch.Tensor | None" = None) -> torch.Tensor:
    """``A / Ā`` over the last two axes (``Ā`` over the pixels of ``mask``)."""
    mean = masked_mean(image, mask)[..., None, None]
    return image / mean.clamp(min=_TINY)


def _mse(a: torch.Tensor, b: torch.Tensor, mask: "torch.Tensor | None" = None) -> torch.Tensor:
    d = a - b
    return masked_mean(d * d, mask)


def noise_map_mse(predicted: torch.Tensor, observed: torch.Tensor,
                  mask: "torch.Tensor | None" = None) -> torch.Tensor:
    """``R_nm``: MSE of the mean-normalized noise maps of two spectra."""
    return _mse(mean_normalized(noise_map(predicted), mask),
                mean_normalized(noise_map(observed), mask), mask)


def direct_density_mse(rho: torch.Tensor, observed: torch.Tensor,
                       mask: "torch.Tensor | None" = None) -> torch.Tensor:
    """``R_ds``: MSE between ``ρ²`` and the observed noise map, both mean-normalized."""
    return density_map_mse(rho, mean_normalized(noise_map(observed), mask), mask)


def density_map_mse(rho: torch.Tensor, target: torch.Tensor,
                    mask: "torch.Tensor | None" = None) -> torch.Tensor:
    """``R_ds`` against its ``target``, the observed mean-normalized noise map (computed once
    by a model that evaluates the term at every step)."""
    return _mse(mean_normalized(rho * rho, mask), target, mask)


def l1_norm(rho: torch.Tensor) -> torch.Tensor:
    """``Σ_r |ρ(r)|``."""
    return rho.abs().sum(dim=(-2, -1))


def l2_norm(rho: torch.Tensor) -> torch.Tensor:
    """``Σ_r ρ(r)²``, the squared ℓ2 norm."""
    return (rho * rho).sum(dim=(-2, -1))


def anisotropic_tv(rho: torch.Tensor) -> torch.Tensor:
    """``Σ |∂_x ρ| + |∂_y ρ|`` with forward differences inside the window."""
    dx = (rho[..., :, 1:] - rho[..., :, :-1]).abs().sum(dim=(-2, -1))
    dy = (rho[..., 1:, :] - rho[..., :-1, :]).abs().sum(dim=(-2, -1))
    return dx + dy


def total_power(spectrum: torch.Tensor, mask: "torch.Tensor | None" = None) -> torch.Tensor:
    """``E = Σ_{ω,r} S`` (over the pixels of ``mask``): ``(..., n_freq, ny, nx) → (...)``."""
    return map_total(noise_map(spectrum), mask)


def map_total(noise: torch.Tensor, mask: "torch.Tensor | None" = None) -> torch.Tensor:
    """``E = Σ_r N(r)`` of a noise map (over the pixels of ``mask``): ``(..., ny, nx) →
    (...)``."""
    if mask is not None:
        noise = noise * mask.to(noise.dtype)
    return noise.sum(dim=(-2, -1))


def energy_mismatch(predicted: torch.Tensor, observed: torch.Tensor,
                    mask: "torch.Tensor | None" = None) -> torch.Tensor:
    """``R_E = (ln E_pred − ln E_obs)²`` with ``E = Σ_{ω,r} S``; ``(...)``."""
    return log_ratio_squared(total_power(predicted, mask), total_power(observed, mask))


def log_ratio_squared(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(ln a − ln b)²`` of two positive totals (``R_E`` of ``E_pred`` and ``E_obs``)."""
    d = torch.log(a.clamp(min=_TINY)) - torch.log(b.clamp(min=_TINY))
    return d * d


def spectrum_shape_weights(observed: torch.Tensor, mask: "torch.Tensor | None" = None
                           ) -> torch.Tensor:
    """Pixel weights ``w = max(N̂_obs, 0)`` of the shape term (0 off ``mask``),
    ``(..., ny, nx)``."""
    weights = normalized_noise_map(noise_map(observed), mask).clamp(min=0.0)
    return weights if mask is None else weights * mask.to(weights.dtype)


def frequency_normalized(spectrum: torch.Tensor) -> torch.Tensor:
    """``s = S / mean_ω S`` per pixel; 0 where the mean is not positive (noise-only pixels)."""
    mean = spectrum.mean(dim=-3, keepdim=True)
    positive = mean > 0
    return torch.where(positive, spectrum / torch.where(positive, mean, 1.0), 0.0)


def spectrum_shape_mse(predicted: torch.Tensor, observed: torch.Tensor,
                       weights: "torch.Tensor | None" = None) -> torch.Tensor:
    """``R_sh``: weighted mean over pixels of the per-pixel MSE of frequency-normalized spectra.

    ``weights`` (``(..., ny, nx)``, default :func:`spectrum_shape_weights` of ``observed``);
    pixels whose observed power is not positive have weight 0.
    """
    if weights is None:
        weights = spectrum_shape_weights(observed)
    return shape_mse(predicted, frequency_normalized(observed), weights)


def shape_mse(predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
              ) -> torch.Tensor:
    """``R_sh`` against its ``target``, the observed frequency-normalized spectrum ``s_obs``
    (computed once by a model that evaluates the term at every step)."""
    d = frequency_normalized(predicted) - target
    per_pixel = (d * d).mean(dim=-3)
    total = weights.sum(dim=(-2, -1)).clamp(min=_TINY)
    return (weights * per_pixel).sum(dim=(-2, -1)) / total
