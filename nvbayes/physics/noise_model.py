"""The sensor noise as a function of the signal, estimated from one spectrum: read noise plus
shot noise.

A lab's readout has a signal-independent read noise and a photon (shot) noise whose variance
grows with the signal; to first order::

    Var[S(ω, r)] = a + k · S(ω, r)        a = σ_read² ≥ 0,  k ≥ 0

(:mod:`nvbayes.data.realism` simulates exactly this).  Both parameters come from the data
alone.  A normalized divided difference along frequency, ``ΔS(ω) = Σ_i w_i S(ω_i)`` over a
run of consecutive readouts with ``Σ w = 0`` and ``Σ w² = 1`` (the second divided difference
of :func:`~nvbayes.physics.noise_map.sensor_noise_sigma` is the run of three, weights
``(h₊, −(h₋ + h₊), h₋) / √(h₊² + (h₋ + h₊)² + h₋²)``), removes the
smooth Lorentzian and keeps the noise:

    Var[ΔS(ω)] = Σ_i w_i² Var[S(ω_i)] = a + k · Σ_i w_i² S(ω_i) ≈ a + k · s(ω),

``s`` the mean of the run's readouts (the local level), uncorrelated with ``ΔS`` under white
noise because ``Σ w = 0``.  The estimator

1. sorts the differences into bins (:func:`quantile_bins`: equal-count bins, the top one
   halved again and again) by their *outer* level ``u``, the mean of the :data:`OUTER`
   readouts on either side of the run, which shares no readout with ``ΔS`` or ``s``:
   binning by a noisy level selects its noise, so a bin's mean ``s̄_b`` estimates its clean
   level without bias only when the bins are chosen by an independent copy;
2. takes the robust variance ``v_b = (1.4826 · MAD)²`` of each bin and fits the line
   ``v_b = a + k s̄_b`` by weighted least squares, weights ``n_b / v_b²`` (the inverse
   variance of a variance from ``n_b`` values, up to a constant); where the fit has a
   negative ``a`` or ``k``, that term is set to 0 and the other refitted;
3. refits :data:`REFINE` times: each difference standardized by the last fit's σ at its own
   clean level (:func:`shrunk_levels`), a bin's variance is the screened mean square of the
   standardized values (:func:`screened_variance`) times the bin's mean model variance, and
   the weights are ``n_b / (a + k s̄_b)²`` from the last fit.  A MAD follows the majority of a
   bin whose values mix variances (bright and dark pixels that share a level ``u`` by
   chance), and weights from the estimates themselves favour the bins that happen to come
   out low: both pull ``k`` down, by 10–50 % on simulated scenes.

The divided difference is of order :data:`ORDER` = 4 (a run of five readouts), not the
second: it also leaves the Lorentzian's curvature, which the second difference keeps on the
brightest peaks, and which made a slope out of nothing where the read noise is well below
the peak (section "Accuracy").

The estimate is equivariant under a change of unit, ``S → cS`` (c > 0) gives ``a → c² a`` and
``k → c k``: no result depends on the unit a spectrum is written in.  It is blind to
anything smooth in frequency (a flat background adds to the level, not to ``ΔS``).
Shapes: a spectrum ``(n_freq, ny, nx)``, a mask ``(ny, nx)`` (true: use the pixel), σ
``(n_freq, ny, nx)``.

Accuracy on simulated 24² scenes (medium/far and many/close, 6 seeds each, 50 readouts;
tests/test_noise_model.py): the read variance within ~5 % (mean error ~1 %); the slope
within ~25 % (mean error −2 … −5 %, standard deviation 5–10 %) where the shot noise at the
peak is 5–10 % of the peak; at a lab's 1 % (shot and read noise alike at the peak) the slope
is barely identifiable from one spectrum (standard deviation ~30–40 %).  Without shot noise
the slope comes out at most a fifth of the read variance at the brightest readout (clipping
at 0 leaves a small positive mean).  With the second difference instead, the Lorentzian's
curvature raised that to about half where the read noise is 0.3 % of the peak.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nvbayes.errors import MeasurementError

from .noise_map import MAD_TO_SIGMA

#: Order of the divided difference (module docstring): its run is ORDER + 1 readouts.
ORDER = 4
#: Readouts on each side of a difference's run that set its outer level ``u``, by which its
#: bin is chosen: more average the noise of ``u`` down (bins that mix fewer clean levels) at
#: the cost of ``2 · OUTER`` differences per pixel and a ``u`` that flattens the peaks (which
#: only orders the bins; a bin's level is the mean of ``s``).  Fewer where the spectrum has
#: too few readouts.
OUTER = 3
#: Equal-count bins of the level before the top one is split (:func:`quantile_bins`).
#: Enough for the line to have a lever arm from the dark pixels to the bright peaks, few
#: enough that each bin rests on hundreds of values on a 24² grid (40 × 576 / 24 ≈ 960).
BINS = 24
#: Fewest differences in a bin: the relative standard error of a MAD variance from n Gaussian
#: values is about 2.3/√n, 23 % at 100, and the line's weights account for it.
MIN_PER_BIN = 100
#: ``n · Var[v̂] / v²`` of a bin's variance estimate from n Gaussian values: 5.44 for the
#: squared MAD (4 × 1.36, the MAD's asymptotic variance), 2 for a mean square; they turn the
#: weights into inverse variances, and so give the fit's standard errors.
MAD_SPREAD, SQUARE_SPREAD = 5.44, 2.0
#: Refits with standardized values (module docstring, step 3); two settle the slope well
#: inside its sampling error.
REFINE = 2
#: A refit's screen, in robust standard deviations (:func:`screened_variance`).
SCREEN = 5.0


@dataclass(frozen=True)
class AffineNoise:
    """``Var[S] = read_variance + slope · S`` (module docstring), in the spectrum's units
    (``read_variance`` in unit², ``slope`` in unit), with the standard errors of the line's
    fit (before clipping at 0; NaN where unknown)."""

    read_variance: float
    slope: float
    read_variance_se: float = float("nan")
    slope_se: float = float("nan")

    def variance(self, signal: torch.Tensor) -> torch.Tensor:
        """``a + k · max(S, 0)``, same shape as ``signal`` (a negative level, noise on an empty
        readout, has no shot noise)."""
        return self.read_variance + self.slope * signal.clamp(min=0.0)

    def sigma(self, signal: torch.Tensor) -> torch.Tensor:
        """σ of every readout of ``signal`` (the clean spectrum or, lacking it, a smooth
        estimate of it): ``√(a + k · max(S, 0))``, same shape."""
        return self.variance(signal).sqrt()

    def scaled(self, factor: float) -> "AffineNoise":
        """The model of the spectrum ``factor · S`` (``factor > 0``): ``(c² a, c k)``."""
        return AffineNoise(self.read_variance * factor ** 2, self.slope * factor,
                           self.read_variance_se * factor ** 2, self.slope_se * factor)


@dataclass(frozen=True)
class LevelledDifferences:
    """The differences of one spectrum, ready to bin: ``diff`` the normalized divided
    differences and ``level`` their local levels ``s`` (means of ``width`` readouts), both
    ``(m,)`` and sorted by their outer level; ``sizes`` the bin sizes
    (:func:`quantile_bins`); ``overlap`` the variance inflation of a bin's variance estimate
    from the overlapping runs (:func:`overlap_factor`)."""

    diff: torch.Tensor
    level: torch.Tensor
    width: int
    sizes: list
    overlap: float = 1.0


def divided_difference_weights(freqs: "torch.Tensor | None", n_freq: int, order: int,
                               dtype=torch.float64, device=None) -> torch.Tensor:
    """``(order + 1, n_freq − order)``: the weights of the ``order``-th divided difference on
    every run of ``order + 1`` consecutive readouts, ``w_i ∝ 1 / Π_{j≠i} (ω_i − ω_j)``,
    normalized to ``Σ w² = 1``.  They annihilate every polynomial of degree below ``order``
    (``Σ w = 0`` for order ≥ 1); order 2 gives the weights of
    :func:`~nvbayes.physics.noise_map.sensor_noise_sigma`.  ``freqs`` ``(n_freq,)``, strictly
    increasing, default evenly spaced."""
    if freqs is None:
        freqs = torch.arange(n_freq, dtype=dtype, device=device)
    freqs = torch.as_tensor(freqs, dtype=dtype, device=device)
    runs = torch.stack([freqs[i: n_freq - order + i] for i in range(order + 1)])
    gaps = runs[:, None, :] - runs[None, :, :]                  # (order+1, order+1, runs)
    eye = torch.eye(order + 1, dtype=torch.bool, device=gaps.device)[:, :, None]
    weights = 1.0 / torch.where(eye, torch.ones_like(gaps), gaps).prod(dim=1)
    return weights / weights.pow(2).sum(0).sqrt()


def overlap_factor(weights: torch.Tensor) -> float:
    """``1 + 2 Σ_l ρ_l²``, ``ρ_l`` the correlation (under white noise) of two differences
    whose runs start ``l`` readouts apart, averaged over the runs of ``weights``
    ``(order + 1, runs)`` (:func:`divided_difference_weights`).  Squares of Gaussians of
    correlation ρ correlate as ρ², so a variance estimated from the overlapping differences of
    one pixel's spectrum varies this many times more than one from independent values
    (2.63 for order 4, 1.94 for order 2)."""
    width, runs = weights.shape
    total = 1.0
    for lag in range(1, min(width, runs)):
        rho = (weights[lag:, :runs - lag] * weights[:width - lag, lag:]).sum(0)
        total += 2.0 * float((rho * rho).mean())
    return total


def local_levels(spectrum: torch.Tensor, freqs: "torch.Tensor | None" = None,
                 order: int = ORDER, outer: int = OUTER
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ΔS, s, u)``, each ``(n_freq − order − 2·outer, ny, nx)``: the normalized divided
    difference of ``order`` on each run of ``order + 1`` readouts (leaving out ``outer`` runs
    at either end), the mean ``s`` of the run's readouts, and the mean ``u`` of the ``outer``
    readouts on either side beyond the run (module docstring)."""
    n_freq, width = spectrum.shape[-3], order + 1
    if outer < 1 or n_freq < width + 2 * outer:
        raise MeasurementError(
            f"cannot fit the noise model to {n_freq} readout frequencies",
            f"record the noise sigma in the measurement or read out at least {width + 2} "
            "frequencies")
    w = divided_difference_weights(freqs, n_freq, order, spectrum.dtype, spectrum.device)
    start = torch.arange(outer, n_freq - order - outer, device=spectrum.device)
    w = w[:, start][:, :, None, None]
    diff = sum(w[i] * spectrum[..., start + i, :, :] for i in range(width))
    cumulative = torch.cat([torch.zeros_like(spectrum[..., :1, :, :]),
                            spectrum.cumsum(-3)], dim=-3)
    level = (cumulative[..., start + width, :, :] - cumulative[..., start, :, :]) / width
    below = cumulative[..., start, :, :] - cumulative[..., start - outer, :, :]
    above = (cumulative[..., start + width + outer, :, :]
             - cumulative[..., start + width, :, :])
    return diff, level, (below + above) / (2 * outer)


def quantile_bins(n: int, bins: int = BINS, minimum: int = MIN_PER_BIN) -> list[int]:
    """Sizes of the bins of ``n`` sorted values (summing to ``n``): ``bins`` equal bins, the
    top one then split in two again and again, its lower half kept and its upper half split
    on, while both halves keep ``minimum`` values, so that the few bright readouts, whose
    levels spread the most, get bins of their own.  Every bin holds at least ``minimum``
    values (fewer bins when ``n`` is small; one bin when ``n < 2 · minimum``)."""
    bins = max(1, min(int(bins), n // minimum))
    sizes = [n // bins + (1 if i < n % bins else 0) for i in range(bins)]
    top = sizes.pop()
    while top >= 2 * minimum:
        sizes.append(top - top // 2)
        top //= 2
    return sizes + [top]


def levelled_differences(spectrum: torch.Tensor, mask: "torch.Tensor | None" = None,
                         freqs: "torch.Tensor | None" = None, order: int = ORDER,
                         bins: int = BINS) -> LevelledDifferences:
    """The differences of ``spectrum`` ``(n_freq, ny, nx)`` over the (finite) pixels of
    ``mask``, sorted by their outer level, with their bins.  The outer level reaches
    :data:`OUTER` readouts out, or fewer where the spectrum is short."""
    outer = min(OUTER, (spectrum.shape[-3] - order - 1) // 2)
    diff, level, far = local_levels(spectrum, freqs, order, outer)
    if mask is not None:
        diff, level, far = diff[:, mask], level[:, mask], far[:, mask]
    diff, level, far = diff.flatten(), level.flatten(), far.flatten()
    keep = torch.isfinite(diff) & torch.isfinite(level) & torch.isfinite(far)
    diff, level, far = diff[keep], level[keep], far[keep]
    if diff.numel() < 2 * MIN_PER_BIN:
        raise MeasurementError(
            f"{diff.numel()} divided differences are too few to fit the noise model",
            "use more pixels or readout frequencies, or record the noise sigma in the file")
    by_level = torch.argsort(far)
    weights = divided_difference_weights(freqs, spectrum.shape[-3], order, spectrum.dtype,
                                          spectrum.device)
    return LevelledDifferences(diff[by_level], level[by_level], order + 1,
                               quantile_bins(diff.numel(), bins), overlap_factor(weights))


def shrunk_levels(level: torch.Tensor, model: AffineNoise, width: int) -> torch.Tensor:
    """The clean level of every difference of one bin ``(n,)``, predicted from its noisy
    level ``s`` (a mean of ``width`` readouts): ``s̄ + λ (s − s̄)`` with
    ``λ = max(0, 1 − σ_s² / var(s))``, ``σ_s² = (a + k s̄) / width`` the noise variance of
    ``s``.  Where the levels of a bin spread by their noise alone (the many faint bins) every
    difference gets the bin's mean; where they spread far beyond it (the bright bins) each
    keeps its own."""
    mean = level.mean()
    spread = level.var() if level.numel() > 1 else torch.zeros_like(mean)
    noise = (model.read_variance + model.slope * mean.clamp(min=0.0)) / width
    shrink = (1.0 - noise / spread).clamp(min=0.0) if spread > 0 else torch.zeros_like(mean)
    return mean + shrink * (level - mean)


def robust_variance(values: torch.Tensor) -> torch.Tensor:
    """``(1.4826 · median |x − median x|)²``: the variance of Gaussian values, blind to a
    minority of outliers."""
    return (MAD_TO_SIGMA * (values - values.median()).abs().median()) ** 2


def screened_variance(values: torch.Tensor, screen: float = SCREEN) -> torch.Tensor:
    """The mean square about the median of the values within ``screen`` robust standard
    deviations of it (:func:`robust_variance`): the variance of a bin whose values mix
    several variances, where a MAD would follow the majority, yet blind to gross outliers
    (a hot readout).  For Gaussian values the screen drops 6 × 10⁻⁷ of them at 5 σ, a bias
    below 10⁻⁵ that is ignored."""
    centred = values - values.median()
    limit = screen ** 2 * robust_variance(values)
    kept = centred[centred * centred <= limit] if limit > 0 else centred
    return kept.pow(2).mean()


def binned_variances(diffs: LevelledDifferences, model: "AffineNoise | None" = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(level, variance, count)``, each ``(m,)`` for the ``m`` bins: the mean level
    ``s̄_b``, the variance ``v_b`` and the number of differences of every bin.

    Without a ``model``, ``v_b`` is the robust variance of the bin's differences
    (:func:`robust_variance`).  With one, the differences are standardized by the model's σ at
    their own clean level (:func:`shrunk_levels`) and ``v_b`` is the screened variance of the
    standardized values times the bin's mean model variance (module docstring, step 3)."""
    levels, variances, counts = [], [], []
    for diff, level in zip(torch.split(diffs.diff, diffs.sizes),
                           torch.split(diffs.level, diffs.sizes), strict=True):
        if model is None:
            variance = robust_variance(diff)
        else:
            own = model.variance(shrunk_levels(level, model, diffs.width))
            own = own.clamp(min=torch.finfo(own.dtype).tiny)
            variance = screened_variance(diff / own.sqrt()) * own.mean()
        levels.append(level.mean())
        variances.append(variance)
        counts.append(float(diff.numel()))
    return (torch.stack(levels), torch.stack(variances),
            torch.tensor(counts, dtype=diffs.diff.dtype))


def _weighted_line(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                   intercept: bool = True, slope: bool = True) -> tuple[float, float]:
    """Weighted least squares ``y ≈ a + k x``, a term held at 0 where it is not fitted."""
    if intercept and slope:
        design = torch.stack([torch.ones_like(x), x], dim=1)
        root = w.sqrt()[:, None]
        coef = torch.linalg.lstsq(design * root, y[:, None] * root).solution[:, 0]
        return float(coef[0]), float(coef[1])
    if intercept:
        return float((w * y).sum() / w.sum()), 0.0
    denominator = float((w * x * x).sum())
    return 0.0, float((w * x * y).sum()) / denominator if denominator > 0 else 0.0


def _standard_errors(x: torch.Tensor, w: torch.Tensor) -> tuple[float, float]:
    """``(se_a, se_k)`` of the weighted line through points of inverse variance ``w``: the
    square roots of the diagonal of ``(Xᵀ W X)⁻¹``, ``X = [1, x]`` (NaN where singular)."""
    design = torch.stack([torch.ones_like(x), x], dim=1)
    information = design.T @ (w[:, None] * design)
    if float(torch.linalg.det(information)) <= 0:
        return float("nan"), float("nan")
    covariance = torch.linalg.inv(information)
    return float(covariance[0, 0].sqrt()), float(covariance[1, 1].sqrt())


def fit_affine(level: torch.Tensor, variance: torch.Tensor, count: torch.Tensor,
               model: "AffineNoise | None" = None, spread: float = MAD_SPREAD
               ) -> AffineNoise:
    """The line ``variance ≈ a + k · level`` through the bins of :func:`binned_variances`,
    weighted ``n_b / V_b²``, with ``a, k ≥ 0``: where the free fit has a negative term, that
    term is set to 0 and the other refitted.

    ``V_b`` is the previous fit's ``model`` variance at the bin's level where one is given,
    else the bin's own estimate ``v_b``: weights from the estimates themselves favour the bins
    that happen to come out low, and pull the line down.  ``spread`` (:data:`MAD_SPREAD`,
    :data:`SQUARE_SPREAD`) scales the weights to inverse variances for the standard errors.
    A bin of variance 0 (a noiseless spectrum) weighs as the smallest positive one."""
    expected = variance if model is None else model.variance(level)
    positive = expected[expected > 0]
    if positive.numel() == 0:
        return AffineNoise(0.0, 0.0, 0.0, 0.0)
    weight = count / (spread * expected.clamp(min=float(positive.min())) ** 2)
    if len(level) < 2 or float(level.max() - level.min()) <= 0:
        a, k = _weighted_line(level, variance, weight, slope=False)
        se_a, se_k = float(weight.sum().rsqrt()), float("nan")
    else:
        a, k = _weighted_line(level, variance, weight)
        se_a, se_k = _standard_errors(level, weight)
    if k < 0:
        a, k = _weighted_line(level, variance, weight, slope=False)
    elif a < 0:
        a, k = _weighted_line(level, variance, weight, intercept=False)
    return AffineNoise(max(a, 0.0), max(k, 0.0), se_a, se_k)


def affine_noise_model(spectrum: torch.Tensor, mask: "torch.Tensor | None" = None,
                       freqs: "torch.Tensor | None" = None, order: int = ORDER
                       ) -> AffineNoise:
    """``Var[S] = a + k S`` estimated from one spectrum ``(n_freq, ny, nx)`` (module
    docstring): ``AffineNoise(read_variance=a, slope=k)`` in the spectrum's units.

    ``mask`` ``(ny, nx)`` restricts the fit to the used pixels, ``freqs`` ``(n_freq,)``
    (default evenly spaced) sets the divided difference's weights, ``order`` its order (2: the
    second difference of :func:`~nvbayes.physics.noise_map.sensor_noise_sigma`).  Needs
    ``order + 3`` readout frequencies and ``2 ×`` :data:`MIN_PER_BIN` differences.

    >>> model = affine_noise_model(torch.as_tensor(data["spectrum"].values))  # doctest: +SKIP
    >>> model.read_variance ** 0.5, model.slope                                # doctest: +SKIP
    """
    spectrum = torch.as_tensor(spectrum)
    if spectrum.dim() != 3:
        raise MeasurementError(f"the noise model needs one spectrum (n_freq, ny, nx), got "
                               f"shape {tuple(spectrum.shape)}", "select one sample first")
    spectrum = spectrum.to(torch.float64)
    if mask is not None:
        mask = torch.as_tensor(mask, dtype=torch.bool, device=spectrum.device)
    if freqs is not None:
        freqs = torch.as_tensor(freqs, dtype=torch.float64, device=spectrum.device)
    diffs = levelled_differences(spectrum, mask, freqs, order)
    model = fit_affine(*binned_variances(diffs), spread=MAD_SPREAD * diffs.overlap)
    for _ in range(REFINE):
        if model.read_variance <= 0 and model.slope <= 0:
            break                                 # a noiseless spectrum: nothing to refine
        model = fit_affine(*binned_variances(diffs, model), model=model,
                           spread=SQUARE_SPREAD * diffs.overlap)
    return model


def smooth_levels(spectrum: torch.Tensor) -> torch.Tensor:
    """The spectrum averaged over each readout and its two neighbours (one neighbour at the
    ends), ``(n_freq, ny, nx)``: a stand-in for the clean spectrum whose noise does not set
    its own readout's σ alone."""
    inner = (spectrum[..., :-2, :, :] + spectrum[..., 1:-1, :, :]
             + spectrum[..., 2:, :, :]) / 3.0
    first = 0.5 * (spectrum[..., :1, :, :] + spectrum[..., 1:2, :, :])
    last = 0.5 * (spectrum[..., -2:-1, :, :] + spectrum[..., -1:, :, :])
    return torch.cat([first, inner, last], dim=-3)


def affine_sigma(model: AffineNoise, spectrum: "torch.Tensor | None" = None,
                 signal: "torch.Tensor | None" = None) -> torch.Tensor:
    """σ(ω, r) ``(n_freq, ny, nx)`` of every readout under ``model``: ``√(a + k · S)``, with
    ``S`` the clean spectrum ``signal`` where known (e.g. a fit's prediction), else the
    observed ``spectrum`` smoothed over neighbouring readouts (:func:`smooth_levels`)."""
    if signal is None:
        if spectrum is None:
            raise ValueError("affine_sigma needs the spectrum or the signal")
        signal = smooth_levels(torch.as_tensor(spectrum).to(torch.float64))
    return model.sigma(torch.as_tensor(signal).to(torch.float64))


__all__ = ["AffineNoise", "BINS", "LevelledDifferences", "MAD_SPREAD", "MIN_PER_BIN", "ORDER",
           "OUTER", "REFINE", "SCREEN", "SQUARE_SPREAD", "affine_noise_model", "affine_sigma",
           "binned_variances", "divided_difference_weights", "fit_affine",
           "levelled_differences", "local_levels", "overlap_factor", "quantile_bins",
           "robust_variance", "screened_variance", "shrunk_levels", "smooth_levels"]
