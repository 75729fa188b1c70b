"""What the residuals of a fit say: standardized residuals, their structure, and one-line
findings.

With the observed and predicted spectra ``S_obs, S_pred`` ``(n_freq, ny, nx)`` and the noise
σ of one readout (a number, a map ``(ny, nx)`` or ``(n_freq, ny, nx)``), the standardized
residual is ``z(ω, r) = (S_obs − S_pred) / σ``, i.i.d. ``N(0, 1)`` where the model and σ are
right (the fitted parameters take a few degrees of freedom, ignored next to the ``n_freq ·
n_pix`` readouts).  Over the ``n_pix`` used pixels of the mask:

    χ²/dof       = mean z²                                          null 1
    m(ω)         = mean_r z(ω, r)      spectral structure            null N(0, 1/n_pix)
    spectral χ²  = n_pix Σ_ω (m(ω) − m̄)² / (n_freq − 1)             null 1, sd √(2/n_freq)
    p(r)         = mean_ω z(ω, r)      spatial structure             null N(0, 1/n_freq)
    spatial χ²   = mean_r n_freq p(r)²                              null 1, sd √(2/n_pix)
    ρ_s          = Σ_pairs p(r) p(r') / (n_pairs · mean p²) over neighbouring used pixels:
                   the lag-1 autocorrelation of p about 0 (null ≈ 0, sd ≈ 1/√(2 n_pix); a
                   constant offset gives 1)
    coverage     = the fraction of used pixels whose p(r) is beyond 3 null sd (|p| √n_freq > 3;
                   null 0.27 %): a background covers the window, a missed source a few pixels
    flat share   = (Σ_r n_freq p(r)² − n_pix) / (Σ z² − N): the part of the residual's excess
                   over white noise that is constant in frequency per pixel (NaN where that
                   excess is within :data:`STRUCTURE_SIGMAS` null deviations, √(2N), of 0)
    bright ratio = mean z² on the brightest readouts (top :data:`BRIGHT_QUANTILE` of S_pred)
                   over mean z² on the rest                         null 1
    ρ_ω          = lag-1 autocorrelation along frequency of z on the bright readouts
    U shape      = correlation of m(ω) with (ω − ω_mid)², ω_mid the middle of the readout
                   span: residuals higher at both ends of the span than in its middle, what a
                   flat background leaves where the sources' lines (centred in the band)
                   absorbed it, or too narrow a linewidth

The spectral χ² is taken about the mean over frequencies, so that an offset common to every
frequency (a background) shows in the spatial statistics, not in it.  The structure
statistics are compared with their null after dividing by χ²/dof, so that a
σ that is merely off by a factor (white residuals, wrong scale) shows in χ²/dof alone.
:func:`findings` turns a summary into one-line diagnoses with the thresholds below.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from nvbayes.errors import MeasurementError

#: χ²/dof above this: the residuals exceed the noise.  1.5 is far outside the null's spread
#: (√(2/N) ≈ 0.01 on a 24² × 50 spectrum) and above what a σ estimated from the data misses
#: (a few per cent, tests/test_noise_model.py): σ itself would be 20 % too small.
CHI2_HIGH = 1.5
#: χ²/dof below this: the residuals fall short of the noise (σ 20 % too large, or the fit
#: follows the noise).
CHI2_LOW = 0.67
#: A structure statistic is significant beyond this many null standard deviations.
STRUCTURE_SIGMAS = 5.0
#: ... and only when its excess over the null is at least this large (relative), so that a
#: huge spectrum does not flag a structure far below the noise.
STRUCTURE_EXCESS = 0.25
#: Spatial autocorrelation of the per-pixel mean residual above which it is "smooth in space"
#: (null sd ≈ 1/√(2 n_pix) ≈ 0.03 on 24²; a background of correlation length ~ the window
#: gives ≳ 0.8).
SPATIAL_CORRELATION = 0.3
#: Share of the excess residual that is constant in frequency above which it "dominates".
#: A missed source's line, broad next to the readout span, is mostly flat too (~75 % on the
#: default readout); what tells a background is :data:`BACKGROUND_COVERAGE`.
FLAT_SHARE = 0.5
#: Fraction of the pixels with a significant per-pixel mean residual above which the
#: structure covers the window (a background), not a few sources (null 0.27 %; one missed
#: source covers ~2 % of a 24² window, a background of amplitude ~σ/2 about 20 %).
BACKGROUND_COVERAGE = 0.1
#: The bright readouts: the top 10 % of the predicted signal.
BRIGHT_QUANTILE = 0.9
#: χ² on the bright readouts over the rest above which the residuals "grow with the signal"
#: (null sd ≈ √(2/(0.1 N)) ≈ 0.03 on 24² × 50).
BRIGHT_RATIO = 1.5
#: Correlation of the per-frequency mean residual with a bowl above which it is "U-shaped".
U_SHAPE = 0.7
#: Lag-1 autocorrelation along frequency of the bright residuals below which they are white
#: (noise), above which smooth (a misfit line).  Null ≈ 0; a shifted Lorentzian gives ≳ 0.8.
WHITE_CORRELATION = 0.2


@dataclass(frozen=True)
class ResidualSummary:
    """The statistics of the module docstring (NaN where undefined: one readout frequency,
    one pixel, or no excess), and the counts they rest on."""

    chi2_dof: float
    spectral_chi2: float
    spatial_chi2: float
    spatial_autocorrelation: float
    coverage: float
    flat_share: float
    bright_ratio: float
    bright_autocorrelation: float
    spectral_u_shape: float
    n_freq: int
    n_pix: int

    @property
    def dof(self) -> int:
        return self.n_freq * self.n_pix

    def significant(self, statistic: str) -> bool:
        """Whether ``spectral_chi2`` or ``spatial_chi2``, divided by χ²/dof, exceeds its null
        (1) by :data:`STRUCTURE_SIGMAS` null standard deviations and by
        :data:`STRUCTURE_EXCESS`."""
        value = getattr(self, statistic)
        n = self.n_freq if statistic == "spectral_chi2" else self.n_pix
        if not (math.isfinite(value) and self.chi2_dof > 0 and n > 1):
            return False
        excess = value / self.chi2_dof - 1.0
        return excess > max(STRUCTURE_SIGMAS * math.sqrt(2.0 / n), STRUCTURE_EXCESS)

    def to_dict(self) -> dict:
        return asdict(self)


def standardized(observed: torch.Tensor, predicted: torch.Tensor,
                 sigma: "float | torch.Tensor") -> torch.Tensor:
    """``z = (S_obs − S_pred) / σ`` ``(n_freq, ny, nx)``, σ a number, a map ``(ny, nx)`` or
    ``(n_freq, ny, nx)``."""
    sigma = torch.as_tensor(sigma, dtype=observed.dtype, device=observed.device)
    if sigma.dim() not in (0, 2, 3) or (sigma.dim() and sigma.shape[-2:] != observed.shape[-2:]):
        raise MeasurementError(f"a noise sigma of shape {tuple(sigma.shape)} does not fit a "
                               f"spectrum of shape {tuple(observed.shape)}",
                               "give a number, a (y, x) map or one sigma per readout")
    return (observed - predicted) / sigma


def _lag_correlation(p: torch.Tensor, used: torch.Tensor) -> float:
    """``ρ_s`` of a map ``(ny, nx)`` (module docstring): the mean product of neighbouring used
    pixels (both axes) over the mean square of the used pixels."""
    square = float(p[used].pow(2).mean())
    products, pairs = 0.0, 0
    for a, b, ok in ((p[1:], p[:-1], used[1:] & used[:-1]),
                     (p[:, 1:], p[:, :-1], used[:, 1:] & used[:, :-1])):
        products += float((a * b)[ok].sum())
        pairs += int(ok.sum())
    if pairs == 0 or square <= 0:
        return math.nan
    return products / pairs / square


def _checked(observed, predicted, sigma, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, used)``: the standardized residuals ``(n_freq, ny, nx)`` and the used pixels with
    finite residuals ``(ny, nx)``."""
    observed = torch.as_tensor(observed, dtype=torch.float64)
    predicted = torch.as_tensor(predicted, dtype=torch.float64)
    if observed.dim() != 3 or observed.shape != predicted.shape:
        raise MeasurementError(f"residuals need two spectra of one shape (n_freq, ny, nx), "
                               f"got {tuple(observed.shape)} and {tuple(predicted.shape)}",
                               "select one sample")
    z = standardized(observed, predicted, sigma)
    used = torch.ones(z.shape[1:], dtype=torch.bool) if mask is None else \
        torch.as_tensor(mask, dtype=torch.bool)
    used = used & torch.isfinite(z).all(0)
    if not used.any():
        raise MeasurementError("no used pixel with finite residuals",
                               "check the mask and the noise sigma (it must be > 0)")
    return z, used


def profiles(observed: torch.Tensor, predicted: torch.Tensor, sigma: "float | torch.Tensor",
             mask: "torch.Tensor | None" = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m, p)``: the mean standardized residual of every readout frequency over the used
    pixels ``(n_freq,)`` and of every pixel over the frequencies ``(ny, nx)`` (NaN where the
    pixel is not used); arguments as :func:`summarize`."""
    z, used = _checked(observed, predicted, sigma, mask)
    by_pixel = torch.where(used, z.mean(0), torch.full_like(z[0], math.nan))
    return z[:, used].mean(1), by_pixel


def summarize(observed: torch.Tensor, predicted: torch.Tensor, sigma: "float | torch.Tensor",
              mask: "torch.Tensor | None" = None, freqs: "torch.Tensor | None" = None
              ) -> ResidualSummary:
    """The :class:`ResidualSummary` of a fit: spectra ``(n_freq, ny, nx)``, σ (a number, a
    map or one per readout), an optional pixel mask ``(ny, nx)`` (true: use) and the readout
    frequencies ``(n_freq,)`` (default evenly spaced)."""
    z, used = _checked(observed, predicted, sigma, mask)
    n_freq, n_pix = z.shape[0], int(used.sum())
    zu = z[:, used]                                             # (n_freq, n_pix)
    square = float(zu.pow(2).sum())
    chi2 = square / zu.numel()
    by_freq = zu.mean(1)
    spectral = (float(n_pix * (by_freq - by_freq.mean()).pow(2).sum() / (n_freq - 1))
                if n_freq > 1 else math.nan)
    per_pixel = torch.where(used, z.mean(0), torch.zeros_like(z[0]))
    spatial = float((n_freq * zu.mean(0).pow(2)).mean())
    flat = float((n_freq * zu.mean(0).pow(2)).sum())
    excess = square - zu.numel()
    flat_share = (min(max((flat - n_pix) / excess, 0.0), 1.0)
                  if n_freq > 1 and excess > STRUCTURE_SIGMAS * math.sqrt(2.0 * zu.numel())
                  else math.nan)
    bright_ratio, bright_rho = _bright(zu, torch.as_tensor(predicted,
                                                           dtype=torch.float64)[:, used])
    return ResidualSummary(
        chi2_dof=chi2, spectral_chi2=spectral,
        spatial_chi2=spatial if n_freq > 1 else chi2,
        spatial_autocorrelation=_lag_correlation(per_pixel, used),
        coverage=float((zu.mean(0).abs() * math.sqrt(n_freq) > 3.0).double().mean()),
        flat_share=flat_share, bright_ratio=bright_ratio, bright_autocorrelation=bright_rho,
        spectral_u_shape=_u_shape(by_freq, freqs),
        n_freq=n_freq, n_pix=n_pix)


def _bright(z: torch.Tensor, signal: torch.Tensor) -> tuple[float, float]:
    """``(bright ratio, ρ_ω)`` of residuals ``z`` and predicted ``signal``, both
    ``(n_freq, n_pix)`` (module docstring)."""
    threshold = torch.quantile(signal.flatten(), BRIGHT_QUANTILE)
    bright = signal > threshold
    if not bright.any() or bright.all():
        return math.nan, math.nan
    square = z * z
    ratio = float(square[bright].mean() / square[~bright].mean().clamp(min=1e-300))
    pairs = bright[1:] & bright[:-1]
    if not pairs.any():
        return ratio, math.nan
    below, above = z[:-1][pairs], z[1:][pairs]
    norm = float((below.pow(2).mean() * above.pow(2).mean()).sqrt())
    return ratio, float((below * above).mean()) / norm if norm > 0 else math.nan


def _u_shape(by_freq: torch.Tensor, freqs: "torch.Tensor | None") -> float:
    """The correlation of the per-frequency mean residual ``(n_freq,)`` with the square of the
    frequency's distance from the middle of the readout span (1: higher at both ends)."""
    if by_freq.numel() < 3:
        return math.nan
    if freqs is None:
        freqs = torch.arange(by_freq.numel(), dtype=by_freq.dtype)
    freqs = torch.as_tensor(freqs, dtype=by_freq.dtype)
    bowl = (freqs - 0.5 * (freqs[0] + freqs[-1])) ** 2
    a, b = by_freq - by_freq.mean(), bowl - bowl.mean()
    norm = float((a.pow(2).sum() * b.pow(2).sum()).sqrt())
    return float((a * b).sum()) / norm if norm > 0 else math.nan


def findings(summary: ResidualSummary) -> list[str]:
    """One-line diagnoses of a :class:`ResidualSummary`, most specific first; none where the
    residuals look like white noise of the stated σ."""
    lines = []
    spatial = summary.significant("spatial_chi2")
    smooth = summary.spatial_autocorrelation > SPATIAL_CORRELATION
    if (spatial and smooth and summary.flat_share > FLAT_SHARE
            and summary.coverage > BACKGROUND_COVERAGE):
        lines.append(f"residuals structured and flat in frequency ({summary.flat_share:.0%} "
                     f"of their excess is constant per pixel, over {summary.coverage:.0%} of "
                     f"the pixels, spatial correlation {summary.spatial_autocorrelation:.2f}):"
                     " a background the model lacks?")
    elif spatial:
        lines.append(f"residuals structured in space (per-pixel mean chi2 "
                     f"{summary.spatial_chi2 / summary.chi2_dof:.3g} x the white level): "
                     "sources missed or misplaced?")
    if summary.significant("spectral_chi2"):
        level = (f"per-frequency mean chi2 {summary.spectral_chi2 / summary.chi2_dof:.3g} x "
                 "the white level")
        if summary.spectral_u_shape > U_SHAPE:
            lines.append(f"residuals structured in frequency, higher at both ends of the "
                         f"readout span than in its middle ({level}, U shape "
                         f"{summary.spectral_u_shape:.2f}): a flat background the sources "
                         "absorbed, or too narrow a linewidth?")
        else:
            lines.append(f"residuals structured in frequency ({level}): a Larmor frequency, "
                         "linewidth or readout grid off?")
    if summary.bright_ratio > BRIGHT_RATIO:
        grows = (f"chi2 {summary.bright_ratio:.3g} x higher on the brightest "
                 f"{1 - BRIGHT_QUANTILE:.0%} of readouts")
        if math.isnan(summary.bright_autocorrelation):
            lines.append(f"residuals grow with the signal ({grows}): shot noise the sigma "
                         "does not include, or the sources misfit?")
        elif summary.bright_autocorrelation < WHITE_CORRELATION:
            lines.append(f"residuals grow with the signal ({grows}, and white): shot noise "
                         "the sigma does not include?")
        else:
            lines.append(f"residuals largest on the bright readouts and smooth in frequency "
                         f"({grows}, correlation {summary.bright_autocorrelation:.2f}): the "
                         "sources' lines misfit?")
    if summary.chi2_dof > CHI2_HIGH:
        cause = ("the model misses signal (above)" if lines
                 else "the noise sigma is underestimated")
        lines.append(f"chi2/dof = {summary.chi2_dof:.3g}: {cause}")
    elif summary.chi2_dof < CHI2_LOW:
        lines.append(f"chi2/dof = {summary.chi2_dof:.3g}: the noise sigma is overestimated, "
                     "or the fit follows the noise")
    return lines


__all__ = ["BACKGROUND_COVERAGE", "BRIGHT_QUANTILE", "BRIGHT_RATIO", "CHI2_HIGH", "CHI2_LOW",
           "FLAT_SHARE", "ResidualSummary", "SPATIAL_CORRELATION", "STRUCTURE_EXCESS",
           "STRUCTURE_SIGMAS", "U_SHAPE", "WHITE_CORRELATION", "findings", "profiles",
           "standardized", "summarize"]
