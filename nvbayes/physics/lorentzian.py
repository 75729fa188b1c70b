"""Spectral response of a fluctuating spin: the Lorentzian and the readout frequency grid.

    L(ω; ω_L) = γ² / ((ω − ω_L)² + γ²)

peaks at 1 on resonance, with half width at half maximum γ.  Frequencies are in GHz throughout
nvbayes (ω and γ need only share a unit).  The readout grid spans the Larmor band widened by one
linewidth γ on each side, so a source at the band edge still shows its peak and both
half-maximum points: the paper's band [1.5, 2.5] GHz with γ = 0.5 GHz is read out on
[1.0, 3.0] GHz (docs/architecture.md).
"""

from __future__ import annotations

import math

import torch

from nvbayes.errors import ParameterError

#: The paper's defaults (section 5.1, appendix A.7 and E.1).
LINEWIDTH_GHZ = 0.5
LARMOR_BAND_GHZ = (1.5, 2.5)
N_FREQ = 50


def lorentzian(freqs: torch.Tensor, larmor: torch.Tensor, linewidth: float) -> torch.Tensor:
    """``L(ω; ω_L)`` on every frequency and pixel.

    Parameters
    ----------
    freqs : ``(n_freq,)`` readout frequencies.
    larmor : ``(..., ny, nx)`` Larmor frequency per pixel.
    linewidth : γ > 0.

    Returns
    -------
    ``(..., n_freq, ny, nx)``
    """
    detuning = freqs[:, None, None] - larmor.unsqueeze(-3)
    return linewidth**2 / (detuning * detuning + linewidth**2)


#: Readout spans: ``wide`` = the band widened by γ on each side (nvbayes's default), ``band`` =
#: the Larmor band itself (the paper's appendix E.1, read literally: "50 frequencies on
#: [1.5, 2.5] GHz").
READOUTS = ("wide", "band")


def readout_frequencies(
    band: tuple[float, float] = LARMOR_BAND_GHZ,
    linewidth: float = LINEWIDTH_GHZ,
    n_freq: int = N_FREQ,
    dtype=torch.float64,
    readout: str = "wide",
) -> torch.Tensor:
    """``n_freq`` evenly spaced readout frequencies over ``[band_lo − γ, band_hi + γ]``
    (``readout="wide"``) or over the band itself (``"band"``, the paper's E.1)."""
    check_spectral(band, linewidth)
    if readout not in READOUTS:
        raise ParameterError(f"unknown readout span {readout!r}",
                             f"use one of {', '.join(READOUTS)}")
    if n_freq < 1:
        raise ParameterError(f"need at least one readout frequency, got {n_freq}",
                             "pass --freqs 1 or more (the paper uses 50)")
    widen = linewidth if readout == "wide" else 0.0
    lo, hi = band[0] - widen, band[1] + widen
    return torch.linspace(lo, hi, n_freq, dtype=dtype)


def check_spectral(band: tuple[float, float], linewidth: float) -> None:
    """Raise :class:`ParameterError` for a non-positive linewidth or an empty band."""
    if not (math.isfinite(linewidth) and linewidth > 0):
        raise ParameterError(f"linewidth must be positive, got {linewidth} GHz",
                             "pass a linewidth > 0 (the paper uses 0.5 GHz)")
    lo, hi = band
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ParameterError(f"Larmor band [{lo}, {hi}] GHz is not a positive interval",
                             "pass two frequencies 0 < low <= high (the paper uses 1.5 2.5)")
