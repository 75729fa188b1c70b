"""Estimates of the nuisances from the measured spectrum alone, before a fit.

**Background from the spectral shape.**  F2 factorizes at each readout pixel,
``S(ω, r) = A(r) L(ω; ω_L(r))``, while the background is flat in frequency, so each pixel's
spectrum is fitted by ``A L(ω; ω_c) + b`` with ``(A, b)`` by linear least squares for every
candidate ``ω_c`` on a grid over the readout band, keeping the candidate of least residual
(``A ≥ 0``).  The Lorentzian is kept only where it explains the spectrum beyond chance: its
F statistic ``(RSS₀ − RSS₁) / (RSS₁ / (n_freq − 3))`` against the flat fit ``b = mean_ω S``
(``RSS₀``) must exceed the ``1 − α / n_candidates`` quantile of ``F(1, n_freq − 3)``
(:data:`LORENTZIAN_ALPHA`, a Bonferroni bound over the candidates); elsewhere ``b`` is the
flat mean.  Without that test the best of the candidates fits part of every pixel's noise
with ``A > 0`` and takes its mean from ``b``: on empty pixels (most of a sparse scene) the
estimate then sits below the truth by about a quarter of a readout's noise σ, which is more
than the whole signal's mean over the window.  The per-pixel ``b(r)`` is then fitted by the
smooth background of :mod:`nvbayes.model.nuisance` (bilinear on an ``m × m`` grid, least
squares, pixels with a residual beyond :data:`OUTLIER_MADS` median absolute deviations
dropped once), ``m`` chosen by cross-validation (:func:`grid_side`).  The grid is not
clamped at 0: where the truth is 0 (clean data), clamping the noisy coefficients would lift
the estimate's mean, and the fit would subtract that lift from the signal (a joint fit starts
from the estimate made positive, :class:`~nvbayes.fields.nuisance.NuisanceParameters`).
The noise map alone cannot tell a flat background from a uniform density; the shape can.

**Standoff from the point spread.**  A point source's noise map is ``a P(r − s; z)``: its
width is set by the standoff z, and a free density cannot make a source look *narrower*, only
wider.  The background-subtracted noise map near its peaks is fitted by
``Σ_k a_k P(r − s_k; z) + c``, every peak a point source of free amplitude and position, all
at one shared z (``scipy.optimize.least_squares``).  Jointly with a free density the standoff
drifts *below* the truth (a shallower standoff plus a spread density explains the same map);
this estimate is what the ``profile`` standoff of :class:`~nvbayes.data.spec.NuisanceSpec`
holds fixed.  An extended source (a cloud of spins) looks deeper than it is.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from scipy.ndimage import maximum_filter
from scipy.optimize import least_squares
from scipy.stats import f as f_distribution

from nvbayes.data.spec import NuisanceSpec
from nvbayes.model.nuisance import background_map
from nvbayes.model.problem import InverseProblem
from nvbayes.physics.kernels import power_kernel
from nvbayes.physics.lorentzian import lorentzian
from nvbayes.physics.noise_map import MAD_TO_SIGMA, noise_map

#: Candidate Larmor frequencies of the per-pixel fit, per GHz of the readout band.
CANDIDATES_PER_GHZ = 40
#: Background grid sides that :func:`grid_side` chooses from.
GRID_SIDES = (2, 3, 4, 6, 8, 10, 12, 14, 16, 20, 24)
#: Family-wise false-alarm rate of the per-pixel Lorentzian over all candidates, per pixel.
LORENTZIAN_ALPHA = 0.01
#: Pixels whose background residual exceeds this many MADs are dropped from the surface fit.
OUTLIER_MADS = 3.0
#: Sources whose point spread is fitted, and the disc around each, in recorded standoffs.
PROFILE_SOURCES = 24
PROFILE_RADIUS = 2.5
#: Peaks below this fraction of the brightest are not fitted.
PEAK_FRACTION = 0.1


def pixel_background(spectrum: torch.Tensor, freqs: torch.Tensor, linewidth: float
                     ) -> torch.Tensor:
    """``b(r)`` of the per-pixel fit ``A L(ω; ω_c) + b``, or of the flat fit ``b`` where the
    Lorentzian does not pass its F test (module docstring): ``(n_freq, ny, nx) → (ny, nx)``,
    float64."""
    s = spectrum.to(torch.float64)
    freqs = torch.as_tensor(freqs, dtype=torch.float64)
    n_freq, ny, nx = s.shape
    span = float(freqs[-1] - freqs[0])
    count = max(int(CANDIDATES_PER_GHZ * span), 8)
    centres = torch.linspace(float(freqs[0]), float(freqs[-1]), count, dtype=torch.float64)
    shapes = lorentzian(freqs, centres[:, None, None], linewidth)[:, :, 0, 0]   # (c, f)
    flat = s.reshape(n_freq, -1)                                              # (f, P)
    mean = flat.mean(0)
    flat_rss = ((flat - mean) ** 2).sum(0)
    best_rss, best_b = flat_rss.clone(), mean.clone()
    for shape in shapes:
        design = torch.stack([shape, torch.ones_like(shape)], dim=1)            # (f, 2)
        coef = torch.linalg.inv(design.T @ design) @ (design.T @ flat)        # (2, P)
        rss = ((flat - design @ coef) ** 2).sum(0)
        better = (coef[0] >= 0) & (rss < best_rss)
        best_rss = torch.where(better, rss, best_rss)
        best_b = torch.where(better, coef[1], best_b)
    dof = n_freq - 3
    critical = float(f_distribution.ppf(1.0 - LORENTZIAN_ALPHA / count, 1, dof))
    statistic = (flat_rss - best_rss) / (best_rss / dof).clamp(min=1e-300)
    return torch.where(statistic > critical, best_b, mean).reshape(ny, nx)


def _basis(m: int, shape: tuple[int, int]) -> torch.Tensor:
    """``(m², ny, nx)``: the bilinear surface of each grid node alone."""
    return background_map(torch.eye(m * m, dtype=torch.float64).reshape(m * m, m, m), shape)


def _median(values: torch.Tensor) -> torch.Tensor:
    """The median, the mean of the two middle values for an even count (``torch.median``
    takes the lower one, which would make the outlier rule depend on the data's sign)."""
    return torch.quantile(values, 0.5)


def _inliers(residual: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Where ``residual`` lies within :data:`OUTLIER_MADS` median absolute deviations (scaled
    to σ) of the median of ``reference``, the residuals that set the scale."""
    centre = _median(reference)
    spread = OUTLIER_MADS * MAD_TO_SIGMA * _median((reference - centre).abs())
    return (residual - centre).abs() <= spread.clamp(min=1e-300)


def background_surface(per_pixel: torch.Tensor, m: int,
                       mask: "torch.Tensor | None" = None) -> torch.Tensor:
    """The ``m × m`` grid whose bilinear surface fits ``per_pixel`` ``(ny, nx)`` best (least
    squares, one outlier pass; not clamped, see the module docstring) → ``(m, m)``."""
    shape = tuple(per_pixel.shape)
    basis = _basis(m, shape).reshape(m * m, -1).T                          # (P, m²)
    target = per_pixel.reshape(-1).to(torch.float64)
    used = (torch.ones_like(target, dtype=torch.bool) if mask is None
            else torch.as_tensor(mask, dtype=torch.bool).reshape(-1))
    for _ in range(2):
        coef = torch.linalg.lstsq(basis[used], target[used, None]).solution[:, 0]
        residual = target - basis @ coef
        used = used & _inliers(residual, residual[used])
    return coef.reshape(m, m)


def grid_side(per_pixel: torch.Tensor, mask: "torch.Tensor | None" = None) -> int:
    """The background grid side that predicts ``per_pixel`` ``(ny, nx)`` best out of sample:
    two-fold cross-validation over the pixels of a checkerboard, each fold's surface
    (:func:`background_surface`) scored by the mean squared residual on the other fold, its
    outliers left out as in the fit (beyond :data:`OUTLIER_MADS` median absolute deviations:
    pixels under a source).  Sides from :data:`GRID_SIDES` up to a third of the shorter
    window side; the smallest of equal scores."""
    ny, nx = per_pixel.shape
    yy, xx = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
    even = (yy + xx) % 2 == 0
    used = (torch.ones(ny, nx, dtype=torch.bool) if mask is None
            else torch.as_tensor(mask, dtype=torch.bool))
    target = per_pixel.to(torch.float64)
    scores = {}
    for m in (m for m in GRID_SIDES if m <= min(ny, nx) // 3):
        score = 0.0
        for fold in (even, ~even):
            surface = background_map(background_surface(target, m, used & fold), (ny, nx))
            residual = (target - surface)[used & ~fold]
            score += float((residual[_inliers(residual, residual)] ** 2).mean())
        scores[m] = score
    return min(scores, key=lambda m: (scores[m], m)) if scores else 2


def estimate_background(problem: InverseProblem, m: int = 0) -> torch.Tensor:
    """The background grid ``(m, m)`` of one measurement, in its spectrum units (``m = 0``:
    the side :func:`grid_side` picks)."""
    spectrum = problem.observed(dtype=torch.float64)
    per_pixel = pixel_background(spectrum, torch.tensor(problem.freqs), problem.linewidth)
    mask = problem.pixel_mask()
    side = m or grid_side(per_pixel, mask)
    return background_surface(per_pixel, side, mask)


def _profile(params: np.ndarray, y: np.ndarray, x: np.ndarray, axis) -> np.ndarray:
    """``Σ_k a_k z⁶ P(r − s_k; z) + c`` at the points ``(y, x)`` (nm); ``params`` is
    ``(a_1, s_y1, s_x1, …, a_K, s_yK, s_xK, z, c)``."""
    *sources, z, offset = params
    out = np.full(y.shape, offset, dtype=np.float64)
    ty, tx = torch.from_numpy(y), torch.from_numpy(x)
    for a, sy, sx in np.reshape(sources, (-1, 3)):
        out += a * power_kernel(tx - sx, ty - sy, float(z), axis).numpy() * z ** 6
    return out


def _peaks(image: np.ndarray, minimum: float) -> np.ndarray:
    """``(k, 2)`` pixel indices of the local maxima (3 × 3) of ``image`` above ``minimum``,
    brightest first."""
    finite = np.where(np.isfinite(image), image, -np.inf)
    top = (finite == maximum_filter(finite, size=3, mode="nearest")) & (finite > minimum)
    found = np.argwhere(top)
    return found[np.argsort(-finite[top])]


def estimate_standoff(problem: InverseProblem, background: "torch.Tensor | None" = None
                      ) -> float:
    """The standoff (nm) from the point spread of the sources (module docstring);
    ``background`` ``(m, m)`` is subtracted first.  Every peak above :data:`PEAK_FRACTION` of
    the brightest (at most :data:`PROFILE_SOURCES`) is a point source of free amplitude and
    position (within a pixel of its peak), all at one shared standoff, fitted to the used
    pixels within :data:`PROFILE_RADIUS` standoffs of a peak.  A fit that ends on a bound of
    z, or no peak, gives the recorded standoff."""
    spectrum = problem.observed(dtype=torch.float64)
    noise = noise_map(spectrum)
    if background is not None:
        noise = noise - spectrum.shape[-3] * background_map(background, problem.shape)
    noise = noise.numpy().copy()
    if problem.mask is not None:
        noise[~problem.mask] = np.nan
    z0, spacing = problem.standoff, problem.spacing
    peaks = _peaks(noise, PEAK_FRACTION * np.nanmax(noise))[:PROFILE_SOURCES]
    if len(peaks) == 0:
        return float(z0)
    iy, ix = np.mgrid[0:noise.shape[0], 0:noise.shape[1]].astype(np.float64)
    near = np.zeros(noise.shape, dtype=bool)
    radius = PROFILE_RADIUS * z0 / spacing
    for py, px in peaks:
        near |= (iy - py) ** 2 + (ix - px) ** 2 <= radius ** 2
    near &= np.isfinite(noise)
    y, x, values = iy[near] * spacing, ix[near] * spacing, noise[near]
    unit = _profile(np.array([1.0, 0.0, 0.0, z0, 0.0]), np.zeros(1), np.zeros(1),
                    problem.nv_axis)[0]
    start, lower, upper = [], [], []
    for py, px in peaks:
        start += [max(noise[py, px], 0.0) / unit, py * spacing, px * spacing]
        lower += [0.0, (py - 1) * spacing, (px - 1) * spacing]
        upper += [np.inf, (py + 1) * spacing, (px + 1) * spacing]
    bounds_z = (0.3 * z0, 3.0 * z0)
    start += [z0, 0.0]
    lower += [bounds_z[0], -np.inf]
    upper += [bounds_z[1], np.inf]
    fit = least_squares(lambda p: _profile(p, y, x, problem.nv_axis) - values,
                        np.asarray(start), bounds=(lower, upper), x_scale="jac")
    z = float(fit.x[-2])
    if not (fit.success and 1.01 * bounds_z[0] < z < 0.99 * bounds_z[1]):
        return float(z0)
    return z


def estimates(problem: InverseProblem, nuisance: NuisanceSpec
              ) -> tuple[torch.Tensor, float]:
    """One measurement's ``(background grid (m, m), standoff nm)`` for the nuisances of
    ``nuisance``: the grid from the spectral shape (zeros where the background is not
    modelled), the standoff from the point spread (the recorded one where it is not)."""
    grid = estimate_background(problem, nuisance.background_grid)
    standoff = estimate_standoff(problem, grid) if nuisance.standoff else problem.standoff
    return (grid if nuisance.background else torch.zeros_like(grid)), float(standoff)


def less_background(problem: InverseProblem, grid: torch.Tensor) -> InverseProblem:
    """``problem`` less the background of ``grid`` (``([B,] m, m)``) in every readout."""
    flat = background_map(grid, problem.shape).numpy()
    return dataclasses.replace(problem, spectrum=problem.spectrum - flat[..., None, :, :])


def background_stats(background: torch.Tensor, problem: InverseProblem) -> dict:
    """A background map ``(ny, nx)`` as numbers for a run: its mean and maximum relative to
    the observed peak readout of ``problem`` (the same units)."""
    peak = float(problem.observed(dtype=torch.float64).max())
    return {"background_mean_rel": float(background.mean()) / peak,
            "background_max_rel": float(background.max()) / peak}


def held_at_estimates(problem: InverseProblem, nuisance: NuisanceSpec
                      ) -> tuple[InverseProblem, dict]:
    """``problem`` with the background and standoff of ``nuisance`` held at their
    :func:`estimates`: the spectrum less the background, the standoff the point spread's;
    and the estimates as numbers (``standoff_nm``, :func:`background_stats`).  For models
    that take the nuisances as fixed (the catalogue)."""
    grid, standoff = estimates(problem, nuisance)
    stats, out = {}, problem
    if nuisance.background:
        stats |= background_stats(background_map(grid, problem.shape), problem)
        out = less_background(out, grid)
    if nuisance.standoff:
        stats["standoff_nm"] = standoff
        out = dataclasses.replace(out, standoff=standoff)
    return out, stats


__all__ = ["background_stats", "background_surface", "estimate_background",
           "estimate_standoff", "estimates", "grid_side", "held_at_estimates", "less_background",
           "pixel_background"]
