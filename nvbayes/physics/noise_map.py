"""Noise maps and the log-map data fidelity (paper section 3.2, appendix B.1).

    N(r)  = Σ_ω S(ω, r)                  noise map
    N̂(r)  = N(r) / max_r' N(r')          max-normalized noise map
    ℓ(r)  = log10(max(N̂(r), 0) + ε)      log map, ε = 1e-10 (the paper)
    D     = mean_r (ℓ_pred(r) − ℓ_obs(r))²
    ε_σ   = σ √n_freq / max_r N_obs(r)    noise floor of N̂ (nvbayes's robust protocol)

Sensor noise can push N below zero on background pixels, where the logarithm is undefined;
the log map clamps N̂ at 0 first, so such pixels read ``log10 ε = −10``, the same floor the
paper's ε gives an empty pixel.  Shapes: spectra ``(..., n_freq, ny, nx)``, maps
``(..., ny, nx)``, fidelity ``(...)``.
"""

from __future__ import annotations

import torch

from nvbayes.errors import MeasurementError

#: The paper's additive constant inside the logarithm (appendix B.1).
LOG_EPS = 1e-10


def masked_mean(image: torch.Tensor, mask: "torch.Tensor | None" = None) -> torch.Tensor:
    """Mean over the last two axes of ``image (..., ny, nx)``, over the pixels of ``mask``
    alone when one is given → ``(...)``."""
    if mask is None:
        return image.mean(dim=(-2, -1))
    weight = mask.to(image.dtype)
    return (image * weight).sum(dim=(-2, -1)) / weight.sum(dim=(-2, -1)).clamp(min=1.0)


def masked_max(image: torch.Tensor, mask: "torch.Tensor | None" = None,
               keepdim: bool = False) -> torch.Tensor:
    """Maximum over the last two axes, over the pixels of ``mask`` alone when given."""
    if mask is not None:
        image = torch.where(mask, image, torch.finfo(image.dtype).min)
    return image.amax(dim=(-2, -1), keepdim=keepdim)


def noise_map(spectrum: torch.Tensor) -> torch.Tensor:
    """``N = Σ_ω S``: ``(..., n_freq, ny, nx) → (..., ny, nx)``."""
    return spectrum.sum(-3)


def normalized_noise_map(noise: torch.Tensor, mask: "torch.Tensor | None" = None
                         ) -> torch.Tensor:
    """``N̂ = N / max N`` per map: ``(..., ny, nx) → (..., ny, nx)``, peak exactly 1 (over
    the pixels of ``mask``)."""
    return noise / masked_max(noise, mask, keepdim=True)


def log_map(normalized: torch.Tensor, eps: "float | torch.Tensor" = LOG_EPS) -> torch.Tensor:
    """``ℓ = log10(max(N̂, 0) + ε)``; ``ε`` a number or one per map, ``(...)``."""
    if isinstance(eps, torch.Tensor):
        eps = eps.to(normalized).reshape(*eps.shape, 1, 1)
    return torch.log10(normalized.clamp(min=0.0) + eps)


def noise_floor(spectrum: torch.Tensor, sigma: "float | torch.Tensor",
                minimum: float = LOG_EPS, mask: "torch.Tensor | None" = None) -> torch.Tensor:
    """``ε_σ = max(σ √n_freq / max_r N(r), minimum)``: the standard deviation of N̂ on a pixel
    with no signal, ``(..., n_freq, ny, nx)`` and σ (one readout's noise, a number or
    ``(...)``) → ``(...)``.

    ``N = Σ_ω S`` sums n_freq independent readouts, so its noise is ``σ √n_freq``; below that
    level N̂ is noise, and a log floor there stops noise-only pixels (about half of them read
    N̂ ≤ 0) from sitting at ``log10 1e-10 = −10``.  Unit-free: σ and S share their unit.
    ``minimum`` (default the paper's 1e-10) is the floor on noiseless data.  A σ map
    ``(ny, nx)`` enters as its root mean square over the pixels of ``mask``.
    """
    peak = masked_max(noise_map(spectrum), mask)
    sigma = torch.as_tensor(sigma, dtype=peak.dtype, device=peak.device)
    if sigma.dim() >= 2:
        sigma = masked_mean(sigma * sigma, mask).sqrt()
    floor = sigma * spectrum.shape[-3] ** 0.5 / peak
    return floor.clamp(min=minimum)


def log_noise_map(spectrum: torch.Tensor, eps: "float | torch.Tensor" = LOG_EPS,
                  mask: "torch.Tensor | None" = None) -> torch.Tensor:
    """Spectrum straight to its log map ``ℓ``: ``(..., n_freq, ny, nx) → (..., ny, nx)``."""
    return log_map(normalized_noise_map(noise_map(spectrum), mask), eps)


def log_mse(predicted: torch.Tensor, observed: torch.Tensor,
            eps: "float | torch.Tensor" = LOG_EPS, mask: "torch.Tensor | None" = None
            ) -> torch.Tensor:
    """Data fidelity ``D``: pixel mean of the squared log-map difference of two spectra.

    ``(..., n_freq, ny, nx)`` × 2 → ``(...)``.  Invariant to a positive rescaling of either
    spectrum (the scale ambiguity of appendix B.2).
    """
    diff = log_noise_map(predicted, eps, mask) - log_noise_map(observed, eps, mask)
    return masked_mean(diff * diff, mask)


#: Consistency constant of the median absolute deviation for Gaussian noise.
MAD_TO_SIGMA = 1.482602218505602


def sensor_noise_sigma(spectrum: torch.Tensor, mask: "torch.Tensor | None" = None,
                       freqs: "torch.Tensor | None" = None) -> torch.Tensor:
    """The standard deviation σ of white sensor noise on a spectrum, estimated from the data.

    ``(..., n_freq, ny, nx) → (...)``.  The Lorentzian (width γ) is smooth on the readout
    grid, so the second divided difference along frequency, which is blind to constant and
    linear trends,

        Δ²S = (h₊ S(ω₋) − (h₋ + h₊) S(ω) + h₋ S(ω₊)) / √(h₊² + (h₋ + h₊)² + h₋²),

    (``h₋ = ω − ω₋``, ``h₊ = ω₊ − ω``; ``(S₋ − 2S + S₊)/√6`` on an even grid) is noise of
    variance σ² plus a curvature term that only the few bright pixels carry; the median
    absolute deviation of ``Δ²S`` ignores them::

        σ̂ = 1.4826 · median |Δ²S − median Δ²S|

    ``freqs`` (``(n_freq,)``, default evenly spaced) sets the weights: on an uneven grid the
    plain second difference keeps a first-derivative term and overestimates σ.  With ``mask``
    the medians run over the used pixels alone.  Needs at least three readout frequencies.
    """
    n_freq = spectrum.shape[-3]
    if n_freq < 3:
        raise MeasurementError(
            f"cannot estimate the sensor noise from {n_freq} readout frequencies",
            "record the noise sigma in the measurement (nvbayes import --sigma) or read out "
            "at least 3 frequencies")
    if freqs is None:
        freqs = torch.arange(n_freq, dtype=spectrum.dtype, device=spectrum.device)
    freqs = torch.as_tensor(freqs, dtype=spectrum.dtype, device=spectrum.device)
    below, above = freqs[1:-1] - freqs[:-2], freqs[2:] - freqs[1:-1]
    norm = torch.sqrt(above ** 2 + (below + above) ** 2 + below ** 2)
    weights = [(w / norm)[:, None, None] for w in (above, -(below + above), below)]
    d2 = (weights[0] * spectrum[..., :-2, :, :] + weights[1] * spectrum[..., 1:-1, :, :]
          + weights[2] * spectrum[..., 2:, :, :])
    flat = d2.flatten(-3) if mask is None else d2[..., mask].flatten(-2)
    centred = flat - flat.median(dim=-1, keepdim=True).values
    return MAD_TO_SIGMA * centred.abs().median(dim=-1).values
