"""Reconstruction metrics of the paper (appendix E.3) and two of nvbayes's own.

All functions take 2-D maps ``(ny, nx)`` (numpy arrays or tensors) of the reconstruction
``rho_hat`` and the truth ``rho_true`` and return a float.

=====================  =============================================================  =====
metric                 definition                                                     best
=====================  =============================================================  =====
``gmsd``               std over pixels of GMS = (2 g_a g_b + c)/(g_a² + g_b² + c),    0
                       g = Prewitt gradient magnitude of each map rescaled to max 1,
                       c = 0.0026, borders replicated
``hungarian_f1``       peaks = 3×3 local maxima above 5% of each map's maximum,       1
                       matched one-to-one (Hungarian) within 2 px;
                       F1 = 2TP / (2TP + FP + FN), 0 if either map has no peak
``swd``                mean over 128 seeded directions θ of the 1-D Wasserstein-2     0
                       distance between θ-projections of the mass-normalized maps,
                       pixel coordinates scaled to [0, 1] across the grid
``density_mse``        mean (ρ̂ − ρ)² over all pixels                                   0
``masked_ssim``        SSIM map (Gaussian window σ = 1.5, 11 × 11, K = 0.01, 0.03,   1
                       data range of the truth) averaged over the true support ρ > 0
``centre_mass_ratio``  share of reconstructed mass inside the central disk of          —
                       radius n/8 pixels about the grid centre (8 px at 64 × 64)
``larmor_mae``         mean |ω̂_L − ω_L| over the true support, GHz                    0
``noise_mse``          pixel mean of (ℓ_pred − ℓ_obs)², ℓ = log10(max(N̂, 0) + ε),     0
                       N̂ = N / max N, ε = 1e-10 (the paper's Table 2 "NoiseMSE")
=====================  =============================================================  =====

The paper does not define NoiseMSE beyond "noise-map MSE"; its values (0.21 to 24.3 in
Tables 2 and 8) exceed 1, which a mean square of two maps normalized to a peak of 1 cannot,
so it is read here as the mean square of the log maps of the paper's data fidelity D at the
paper's ε (Eq. 3), computed on the observed pixels alone when the measurement has a mask.

Negative reconstructed values carry no mass: ``swd`` and ``centre_mass_ratio`` clip them at 0.
The centre-mass ratio is not defined in the paper; this definition (fixed for nvbayes) follows
its Figure 4c: a map collapsed onto the window centre scores near 1, a uniform map
π/64 ≈ 0.049, and a scene whose sources all lie outside the disk 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from nvbayes.physics.noise_map import log_map, masked_mean, normalized_noise_map
from nvbayes.results.run import SCALE_NOTE

GMSD_C = 0.0026
PEAK_THRESHOLD = 0.05
MATCH_RADIUS_PX = 2.0
SWD_DIRECTIONS = 128
SWD_SEED = 0
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # radius int(3.5 · 1.5 + 0.5) = 5 → an 11 × 11 window
SSIM_K = (0.01, 0.03)
CENTRE_RADIUS_FRACTION = 1.0 / 8.0
DETECTION_THRESHOLD = 0.3   # τ of the paper's Larmor support mask (Eq. 26)

OUTER_RING_FRACTION = 3.0 / 8.0   # the outer ring of the diagnostics: r > 3n/8 px


@dataclass(frozen=True)
class Metric:
    """One entry of the metric registry: what a score is called, in what unit, and which
    way it improves (``better``: +1 higher is better, −1 lower is better, 0 neither)."""

    name: str
    long_name: str
    units: str
    better: int

    @property
    def attrs(self) -> dict:
        """The netCDF attributes of a variable holding this metric."""
        return {"long_name": self.long_name, "units": self.units}


#: The metric registry: every score nvbayes writes, in the order tables show them.  The
#: centre-mass ratio describes a reconstruction; its right value depends on the scene.
METRICS = {m.name: m for m in (
    Metric("gmsd", "gradient magnitude similarity deviation", "1", -1),
    Metric("hungarian_f1", "peak F1 after Hungarian matching within 2 px", "1", +1),
    Metric("swd", "sliced Wasserstein-2 distance of the mass-normalized maps", "1", -1),
    Metric("density_mse", "mean squared density error", "(fluctuators per pixel)^2", -1),
    Metric("masked_ssim", "SSIM averaged over the true support", "1", +1),
    Metric("centre_mass_ratio", "share of reconstructed mass within n/8 px of the grid "
           "centre", "1", 0),
    Metric("larmor_mae", "mean absolute Larmor error on the true support", "GHz", -1),
    Metric("noise_mse", "mean squared difference of the log max-normalized noise maps "
           "(eps 1e-10)", "1", -1),
    Metric("larmor_mae_detected", "mean absolute Larmor error where a source is both true "
           "and detected", "GHz", -1),
    Metric("runtime_s", "wall time of the fit", "s", -1),
)}
#: The scores of one density map and Larmor map (a benchmark cell's metrics).
MAP_METRICS = ("gmsd", "hungarian_f1", "swd", "density_mse", "masked_ssim",
               "centre_mass_ratio", "larmor_mae", "noise_mse")
#: ε of the NoiseMSE's log maps: the paper's ε of D.
NOISE_MSE_EPS = 1e-10
#: Which way each metric improves (from :data:`METRICS`).
BETTER = {name: metric.better for name, metric in METRICS.items()}

_PREWITT_X = np.array([[1.0, 0.0, -1.0]] * 3) / 3.0
_PREWITT_Y = _PREWITT_X.T


def _map(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"metrics take 2-D maps, got shape {a.shape}")
    return a


def _unit_max(a: np.ndarray) -> np.ndarray:
    peak = a.max()
    return a / peak if peak > 0 else np.zeros_like(a)


def gradient_magnitude(a: np.ndarray) -> np.ndarray:
    """Prewitt gradient magnitude with replicated borders."""
    gx = ndimage.correlate(a, _PREWITT_X, mode="nearest")
    gy = ndimage.correlate(a, _PREWITT_Y, mode="nearest")
    return np.hypot(gx, gy)


def gmsd(rho_hat, rho_true, c: float = GMSD_C) -> float:
    """Gradient magnitude similarity deviation (lower is better)."""
    ga = gradient_magnitude(_unit_max(_map(rho_hat)))
    gb = gradient_magnitude(_unit_max(_map(rho_true)))
    gms = (2.0 * ga * gb + c) / (ga * ga + gb * gb + c)
    return float(gms.std())


def find_peaks(a, threshold: float = PEAK_THRESHOLD) -> np.ndarray:
    """``(k, 2)`` pixel indices of 3×3 local maxima above ``threshold × max``."""
    a = _map(a)
    peak = a.max()
    if not peak > 0:
        return np.zeros((0, 2), dtype=np.int64)
    local = ndimage.maximum_filter(a, size=3, mode="constant", cval=-np.inf)
    return np.argwhere((a == local) & (a > threshold * peak))


def match_peaks(pred: np.ndarray, true: np.ndarray, radius: float = MATCH_RADIUS_PX
                ) -> tuple[int, int, int]:
    """``(TP, FP, FN)`` of a one-to-one matching of peak sets within ``radius`` pixels."""
    if len(pred) == 0 or len(true) == 0:
        return 0, len(pred), len(true)
    dist = np.sqrt(((pred[:, None, :] - true[None, :, :]) ** 2).sum(-1))
    cost = np.where(dist <= radius, dist, 1e6)
    rows, cols = linear_sum_assignment(cost)
    tp = int((dist[rows, cols] <= radius).sum())
    return tp, len(pred) - tp, len(true) - tp


def hungarian_f1(rho_hat, rho_true, threshold: float = PEAK_THRESHOLD,
                 radius: float = MATCH_RADIUS_PX) -> float:
    """Peak-matching F1 (higher is better); 0 when either map has no supra-threshold peak."""
    pred, true = find_peaks(rho_hat, threshold), find_peaks(rho_true, threshold)
    if len(pred) == 0 or len(true) == 0:
        return 0.0
    tp, fp, fn = match_peaks(pred, true, radius)
    return 2.0 * tp / (2.0 * tp + fp + fn)


def swd_directions(n: int = SWD_DIRECTIONS, seed: int = SWD_SEED) -> np.ndarray:
    """``(n, 2)`` unit vectors (y, x) at angles drawn uniformly in [0, 2π) from ``seed``."""
    angles = np.random.default_rng(seed).uniform(0.0, 2.0 * math.pi, size=n)
    return np.stack([np.sin(angles), np.cos(angles)], axis=1)


def sliced_wasserstein(rho_hat, rho_true, n_directions: int = SWD_DIRECTIONS,
                       seed: int = SWD_SEED) -> float:
    """Mean 1-D Wasserstein-2 distance over seeded projections (lower is better).

    NaN if either map carries no positive mass.
    """
    a, b = np.clip(_map(rho_hat), 0, None), np.clip(_map(rho_true), 0, None)
    if a.sum() <= 0 or b.sum() <= 0:
        return float("nan")
    ny, nx = a.shape
    scale = max(ny, nx) - 1
    coords = np.argwhere(np.ones_like(a, dtype=bool)) / scale
    theta = swd_directions(n_directions, seed)
    w2 = wasserstein_1d(coords @ theta.T, a.ravel() / a.sum(), coords @ theta.T,
                        b.ravel() / b.sum())
    return float(w2.mean())


def wasserstein_1d(u: np.ndarray, a: np.ndarray, v: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact W2 between weighted point sets, one per column.

    ``u (m, k)`` with weights ``a (m,)`` and ``v (p, k)`` with ``b (p,)``; returns ``(k,)``.
    ``W2² = ∫₀¹ (F_u⁻¹(t) − F_v⁻¹(t))² dt``, integrated exactly over the merged steps of both
    quantile functions.
    """
    u_t, v_t = torch.from_numpy(u.T.copy()), torch.from_numpy(v.T.copy())
    u_sorted, iu = torch.sort(u_t, dim=1)
    v_sorted, iv = torch.sort(v_t, dim=1)
    cu = torch.cumsum(torch.from_numpy(a)[iu], dim=1)
    cv = torch.cumsum(torch.from_numpy(b)[iv], dim=1)
    levels, _ = torch.sort(torch.cat([cu, cv], dim=1), dim=1)
    levels = levels.clamp(max=1.0)
    ku = torch.searchsorted(cu, levels).clamp(max=u_sorted.shape[1] - 1)
    kv = torch.searchsorted(cv, levels).clamp(max=v_sorted.shape[1] - 1)
    step = torch.diff(levels, dim=1, prepend=torch.zeros_like(levels[:, :1]))
    gap = u_sorted.gather(1, ku) - v_sorted.gather(1, kv)
    return (step * gap * gap).sum(1).sqrt().numpy()


def density_mse(rho_hat, rho_true) -> float:
    """Pixel mean squared error (lower is better)."""
    d = _map(rho_hat) - _map(rho_true)
    return float((d * d).mean())


def ssim_map(x, y, data_range: float) -> np.ndarray:
    """Per-pixel SSIM with a Gaussian window (σ = 1.5, 11 × 11), reflected borders."""
    x, y = _map(x), _map(y)

    def blur(img):
        return ndimage.gaussian_filter(img, SSIM_SIGMA, mode="reflect", truncate=SSIM_TRUNCATE)

    c1, c2 = (SSIM_K[0] * data_range) ** 2, (SSIM_K[1] * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def masked_ssim(rho_hat, rho_true) -> float:
    """SSIM averaged over the true support ``ρ > 0`` (higher is better); NaN if it is empty."""
    truth = _map(rho_true)
    support = truth > 0
    if not support.any():
        return float("nan")
    data_range = float(truth.max() - truth.min()) or 1.0
    return float(ssim_map(rho_hat, truth, data_range)[support].mean())


def centre_disk(shape: tuple[int, int], fraction: float = CENTRE_RADIUS_FRACTION) -> np.ndarray:
    """Boolean mask of pixels within ``fraction × n`` pixels of the grid centre."""
    ny, nx = shape
    yy, xx = np.meshgrid(np.arange(ny) - (ny - 1) / 2, np.arange(nx) - (nx - 1) / 2,
                         indexing="ij")
    return np.hypot(yy, xx) <= fraction * min(ny, nx)


def centre_mass_ratio(rho_hat) -> float:
    """Share of (positive) reconstructed mass inside the central disk; 0 for an empty map."""
    a = np.clip(_map(rho_hat), 0, None)
    total = a.sum()
    return float(a[centre_disk(a.shape)].sum() / total) if total > 0 else 0.0


def larmor_mae(larmor_hat, larmor_true, rho_true) -> float:
    """Mean absolute Larmor error on the true support, GHz; NaN if the support is empty."""
    support = _map(rho_true) > 0
    if not support.any():
        return float("nan")
    return float(np.abs(_map(larmor_hat) - _map(larmor_true))[support].mean())


def larmor_mae_detected(larmor_hat, larmor_true, rho_true, rho_hat,
                        threshold: float = DETECTION_THRESHOLD) -> float:
    """Larmor MAE on the true-support pixels that the reconstruction also holds
    (``ρ̂ > threshold · max ρ̂``, the support mask of the NeTMY Larmor head), GHz.

    Separates how well ω_L is identified from whether the source was found; NaN if no true
    source pixel is detected.
    """
    rho_hat = _map(rho_hat)
    found = (_map(rho_true) > 0) & (rho_hat > threshold * rho_hat.max())
    if not found.any():
        return float("nan")
    return float(np.abs(_map(larmor_hat) - _map(larmor_true))[found].mean())


def noise_mse(noise_pred, noise_obs, mask=None, eps: float = NOISE_MSE_EPS) -> float:
    """NoiseMSE of a predicted and an observed noise map ``N`` ``(ny, nx)`` (see the module
    docstring); over the pixels of the boolean ``mask`` alone when one is given."""
    pred = torch.as_tensor(_map(noise_pred))
    obs = torch.as_tensor(np.nan_to_num(_map(noise_obs)))
    used = None if mask is None else torch.as_tensor(np.asarray(mask, dtype=bool))
    diff = (log_map(normalized_noise_map(pred, used), eps)
            - log_map(normalized_noise_map(obs, used), eps)) ** 2
    return float(masked_mean(diff, used))


def evaluate(rho_hat, rho_true, larmor_hat=None, larmor_true=None, noise_pred=None,
             noise_obs=None, mask=None) -> dict[str, float]:
    """Every metric of this module for one reconstruction, keyed by name (``noise_mse``
    where the predicted and observed noise maps ``N`` are given)."""
    out = {
        "gmsd": gmsd(rho_hat, rho_true),
        "hungarian_f1": hungarian_f1(rho_hat, rho_true),
        "swd": sliced_wasserstein(rho_hat, rho_true),
        "density_mse": density_mse(rho_hat, rho_true),
        "masked_ssim": masked_ssim(rho_hat, rho_true),
        "centre_mass_ratio": centre_mass_ratio(rho_hat),
    }
    if larmor_hat is not None and larmor_true is not None:
        out["larmor_mae"] = larmor_mae(larmor_hat, larmor_true, rho_true)
        out["larmor_mae_detected"] = larmor_mae_detected(larmor_hat, larmor_true, rho_true,
                                                         rho_hat)
    if noise_pred is not None and noise_obs is not None:
        out["noise_mse"] = noise_mse(noise_pred, noise_obs, mask)
    return out


def _radius(n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2.0
    return np.hypot(yy, xx)


def ring_masks(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(centre_disk, outer_ring)``, boolean ``(n, n)`` masks (see the module docstring)."""
    r = _radius(n)
    return r <= CENTRE_RADIUS_FRACTION * n, (r >= OUTER_RING_FRACTION * n) & (r < n / 2.0)


def centre_to_outer_ratio(image) -> float:
    """``mean |g|`` over the centre disk over ``mean |g|`` over the outer ring."""
    a = np.abs(np.asarray(image, dtype=np.float64))
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"need a square 2-D map, got shape {a.shape}")
    centre, outer = ring_masks(a.shape[0])
    return float(a[centre].mean() / a[outer].mean())


def evaluate_run(run) -> "xr.Dataset | None":
    """The metrics of a :class:`~nvbayes.results.run.Run` against its truth as a dataset
    (``metrics.nc``), also stored as ``run.metrics``; ``None`` without a truth."""
    truth = run.truth
    if truth is None or "rho_true" not in truth:
        return None
    larmor_true = truth["larmor_true"].values if "larmor_true" in truth else None
    observed = run.idata.observed_data
    mask = observed["mask"].values.astype(bool) if "mask" in observed else None
    values = evaluate(run.rho.values, truth["rho_true"].values,
                      run.larmor.values if larmor_true is not None else None, larmor_true,
                      run.predicted_noise_map.values, observed["spectrum"].sum("freq").values,
                      mask)
    run.metrics = xr.Dataset({k: ((), v, METRICS[k].attrs) for k, v in values.items()},
                             attrs={"operator": run.config["run"]["operator"],
                                    "model": run.config["model"]["name"],
                                    "scale_note": SCALE_NOTE})
    return run.metrics


def complete_pairs(results: xr.Dataset) -> xr.DataArray:
    """``(sample, seed)`` mask: True where every method × operator cell has run."""
    return (results["error"] != "not run").all(("method", "operator"))


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson 95 % interval of a binomial proportion ``p`` of ``n`` trials."""
    if n == 0:
        return math.nan, math.nan
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # the interval holds p; at p = 0 or 1 its end is p exactly (round-off aside)
    return min(max(centre - half, 0.0), p), max(min(centre + half, 1.0), p)
