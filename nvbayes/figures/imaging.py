"""Figures: a measurement at a glance (noise map, spectrum at one pixel, truth)."""

from __future__ import annotations

import matplotlib
import numpy as np
import torch
import xarray as xr
from matplotlib.patches import Ellipse
from scipy import stats

from nvbayes.errors import ParameterError
from nvbayes.figures import Figure, subplots
from nvbayes.metrics import wilson
from nvbayes.physics.noise_map import log_map, log_noise_map, normalized_noise_map

#: Colour maps whose masked (NaN) pixels show grey: dead or saturated pixels in a figure.
LOG_MAP_CMAP = matplotlib.colormaps["magma"].with_extremes(bad="0.7")
MASK_NOTE = " (grey: masked)"


def _mask_of(dataset) -> "np.ndarray | None":
    """The used pixels of a measurement or a run's observed data, or ``None`` (all)."""
    return np.asarray(dataset["mask"].values) != 0 if "mask" in dataset else None


def _grid(image: xr.DataArray) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Pixel positions ``x``, ``y`` (nm) and the ``imshow`` extent of a ``(y, x)`` map."""
    x, y = image["x"].values, image["y"].values
    return x, y, (x[0], x[-1], y[-1], y[0])


def masked_log_map(spectrum: np.ndarray, mask: "np.ndarray | None" = None) -> np.ndarray:
    """``ℓ = log10 N̂`` of a spectrum ``(n_freq, ny, nx)`` over the used pixels, NaN on the
    masked ones (whatever they read)."""
    if mask is None:
        return log_noise_map(torch.from_numpy(np.asarray(spectrum, dtype=np.float64))).numpy()
    clean = np.where(mask, spectrum, 0.0)
    ell = log_noise_map(torch.from_numpy(clean), mask=torch.from_numpy(mask)).numpy()
    return np.where(mask, ell, np.nan)


def _finite_min(*images) -> float:
    return min(float(np.nanmin(img)) for img in images)


def brightest_pixel(measurement: xr.Dataset) -> tuple[int, int]:
    """``(iy, ix)`` of the largest noise-map value of a single measurement (used pixels)."""
    noise = measurement["spectrum"].values.sum(0)
    mask = _mask_of(measurement)
    if mask is not None:
        noise = np.where(mask, noise, -np.inf)
    return tuple(int(i) for i in np.unravel_index(np.argmax(noise), noise.shape))


def plot_measurement(measurement: xr.Dataset, pixel: "tuple[int, int] | None" = None,
                     title: str = "") -> Figure:
    """Noise map ℓ = log10 N̂, the spectrum at ``pixel`` (default: brightest), and the truth.

    ``measurement`` holds one sample (no ``sample`` dimension).
    """
    spectrum = measurement["spectrum"]
    ny, nx = spectrum.shape[-2:]
    iy, ix = brightest_pixel(measurement) if pixel is None else pixel
    if not (0 <= iy < ny and 0 <= ix < nx):
        raise ParameterError(f"pixel ({iy}, {ix}) is outside the {ny} x {nx} grid",
                             f"pass --pixel Y X with 0 <= Y < {ny} and 0 <= X < {nx}")
    has_truth = "rho_true" in measurement
    x, y, extent = _grid(spectrum)
    mask = _mask_of(measurement)
    fig, axes = subplots(1, 4 if has_truth else 2, figsize=(17 if has_truth else 9, 4),
                             layout="constrained")

    ell = masked_log_map(spectrum.values, mask)
    im = axes[0].imshow(ell, extent=extent, cmap=LOG_MAP_CMAP, vmin=max(_finite_min(ell), -6),
                        vmax=0)
    axes[0].plot(x[ix], y[iy], "c+", ms=12, mew=2)
    axes[0].set(title="noise map log10 N/max N" + (MASK_NOTE if mask is not None else ""),
                xlabel="x (nm)", ylabel="y (nm)")
    fig.colorbar(im, ax=axes[0], shrink=0.85)

    freq = measurement["freq"].values
    axes[1].plot(freq, spectrum.values[:, iy, ix], "o-", ms=3, label=f"pixel y={iy}, x={ix}")
    if "larmor_true" in measurement:
        axes[1].axvline(float(measurement["larmor_true"].values[iy, ix]), color="k", ls="--",
                        label="true Larmor")
    units = spectrum.attrs.get("units", "")
    axes[1].set(title="spectrum at pixel", xlabel="frequency (GHz)", ylabel=f"S ({units})")
    axes[1].legend(fontsize=8)

    if has_truth:
        rho = measurement["rho_true"].values
        im = axes[2].imshow(rho, extent=extent, cmap="viridis")
        axes[2].set(title="true density", xlabel="x (nm)")
        fig.colorbar(im, ax=axes[2], shrink=0.85)
        support = rho > 0
        larmor = np.where(support, measurement["larmor_true"].values, np.nan) \
            if "larmor_true" in measurement else np.full_like(rho, np.nan)
        band = measurement.attrs["larmor_band_ghz"]
        axes[3].imshow(np.zeros_like(rho), extent=extent, cmap="Greys", vmin=0, vmax=1)
        yy, xx = np.nonzero(support)
        sc = axes[3].scatter(x[xx], y[yy], c=larmor[support], cmap="coolwarm", s=40,
                             vmin=band[0], vmax=band[1], edgecolors="k")
        axes[3].set(title="true Larmor on support (GHz)", xlabel="x (nm)",
                    xlim=extent[:2], ylim=extent[2:])
        fig.colorbar(sc, ax=axes[3], shrink=0.85)

    label = title or _describe(measurement)
    fig.suptitle(label)
    return fig


def _describe(measurement: xr.Dataset) -> str:
    parts = [f"operator {measurement.attrs.get('operator', '?')}",
             f"z0 = {measurement.attrs.get('standoff_nm')} nm"]
    noise = measurement.attrs.get("noise")
    if noise is not None and np.isfinite(noise):
        parts.append(f"noise {noise}")
    if "nv_axis" in measurement.attrs:
        parts.append("NV axis (" + ", ".join(f"{v:.3g}" for v in
                                             np.ravel(measurement.attrs["nv_axis"])) + ")")
    mask = _mask_of(measurement)
    if mask is not None:
        parts.append(f"{int((~mask).sum())} pixels masked")
    if "scene_class" in measurement.coords:
        parts.insert(0, f"{measurement['scene_class'].values} seed {measurement['seed'].values}")
    return ", ".join(parts)


def _log_map(noise: np.ndarray, mask: "np.ndarray | None" = None) -> np.ndarray:
    t = torch.from_numpy(np.asarray(noise, dtype=np.float64))
    if mask is None:
        return log_map(normalized_noise_map(t)).numpy()
    ell = log_map(normalized_noise_map(t, torch.from_numpy(mask))).numpy()
    return np.where(mask, ell, np.nan)


def plot_run(run) -> Figure:
    """Truth | reconstruction | Larmor map | observed and predicted log noise maps.

    Without a truth the first panel is left out.  A run with posterior draws gets
    :func:`plot_posterior` instead.
    """
    if run.draws > 1:
        return plot_posterior(run)
    truth = run.truth
    has_truth = truth is not None and "rho_true" in truth
    x, y, extent = _grid(run.rho)
    mask = _mask_of(run.idata.observed_data)
    n = 5 if has_truth else 4
    fig, axes = subplots(1, n, figsize=(4.2 * n, 4), layout="constrained")
    axes = list(axes)
    rho = run.rho.values
    vmax = max(float(rho.max()), float(truth["rho_true"].max()) if has_truth else 0.0)
    if has_truth:
        ax = axes.pop(0)
        im = ax.imshow(truth["rho_true"].values, extent=extent, cmap="viridis", vmin=0,
                       vmax=vmax)
        ax.set(title="true density", xlabel="x (nm)", ylabel="y (nm)")
        fig.colorbar(im, ax=ax, shrink=0.85)
    ax = axes.pop(0)
    im = ax.imshow(rho, extent=extent, cmap="viridis", vmin=0, vmax=vmax)
    ax.set(title="reconstruction (scale-corrected)", xlabel="x (nm)")
    fig.colorbar(im, ax=ax, shrink=0.85)

    ax = axes.pop(0)
    band = run.idata.observed_data.attrs.get("larmor_band_ghz")
    threshold = run.config["model"].get("field", {}).get("support_threshold", 0.3)
    yy, xx = np.nonzero(rho > threshold * rho.max())
    ax.imshow(np.zeros_like(rho), extent=extent, cmap="Greys", vmin=0, vmax=1)
    sc = ax.scatter(x[xx], y[yy], c=run.larmor.values[yy, xx], cmap="coolwarm", s=40,
                    edgecolors="k", vmin=None if band is None else band[0],
                    vmax=None if band is None else band[1])
    if has_truth and "larmor_true" in truth:
        ty, tx = np.nonzero(truth["rho_true"].values > 0)
        ax.scatter(x[tx], y[ty], s=120, facecolors="none", edgecolors="g", label="true sources")
        ax.legend(fontsize=7, loc="lower right")
    ax.set(title="Larmor on predicted support (GHz)", xlabel="x (nm)", xlim=extent[:2],
           ylim=extent[2:])
    fig.colorbar(sc, ax=ax, shrink=0.85)

    observed = masked_log_map(run.observed.values, mask)
    predicted = _log_map(run.predicted_noise_map.values, mask)
    low = max(_finite_min(observed, predicted), -6)
    note = MASK_NOTE if mask is not None else ""
    for ax, img, label in ((axes[0], observed, "observed"), (axes[1], predicted, "predicted")):
        im = ax.imshow(img, extent=extent, cmap=LOG_MAP_CMAP, vmin=low, vmax=0)
        ax.set(title=f"{label} log10 N/max N{note}", xlabel="x (nm)")
        fig.colorbar(im, ax=ax, shrink=0.85)

    fig.suptitle(_title(run))
    return fig


def _title(run) -> str:
    cfg = run.config["run"]
    parts = [f"{run.config['model']['name']} {cfg['method']}", f"operator {cfg['operator']}",
             f"seed {cfg['seed']}", f"{cfg['wall_time_s']:.0f} s"]
    if run.metrics is not None:
        m = run.metrics
        parts.append(f"F1 {float(m['hungarian_f1']):.2f}, SWD {float(m['swd']):.3f}, "
                     f"GMSD {float(m['gmsd']):.3f}")
    return " | ".join(parts)


def plot_posterior(run) -> Figure:
    """Truth (or the observed log noise map) | posterior mean | posterior standard deviation,
    then the 5 % and 95 % quantiles (the 90 % credible interval, pixel by pixel) and the
    predicted log noise map of the posterior mean.  Densities share one colour scale."""
    post = run.idata.posterior["rho"]
    x, y, extent = _grid(post)
    mask = _mask_of(run.idata.observed_data)
    mean = post.mean(("chain", "draw")).values
    sd = post.std(("chain", "draw")).values
    q05, q95 = (post.quantile(q, ("chain", "draw")).values for q in (0.05, 0.95))
    truth = run.truth
    has_truth = truth is not None and "rho_true" in truth
    vmax = max(float(q95.max()), float(truth["rho_true"].max()) if has_truth else 0.0)
    fig, axes = subplots(2, 3, figsize=(13, 8), layout="constrained")
    if has_truth:
        first = (truth["rho_true"].values, "true density", "viridis", 0, vmax)
    else:
        first = (masked_log_map(run.observed.values, mask),
                 "observed log10 N/max N", LOG_MAP_CMAP, -4, 0)
    panels = [first,
              (mean, f"posterior mean ({run.draws} draws)", "viridis", 0, vmax),
              (sd, "posterior standard deviation", "cividis", 0, None),
              (q05, "5 % quantile", "viridis", 0, vmax),
              (q95, "95 % quantile", "viridis", 0, vmax),
              (_log_map(run.predicted_noise_map.values, mask),
               "predicted log10 N/max N (mean)", LOG_MAP_CMAP, -4, 0)]
    for ax, (img, title, cmap, lo, hi) in zip(axes.flat, panels, strict=True):
        im = ax.imshow(img, extent=extent, cmap=cmap, vmin=lo, vmax=hi)
        ax.set(title=title, xlabel="x (nm)", ylabel="y (nm)")
        fig.colorbar(im, ax=ax, shrink=0.85)
    if has_truth:
        ty, tx = np.nonzero(truth["rho_true"].values > 0)
        for ax in axes.flat[1:5]:
            ax.scatter(x[tx], y[ty], s=90, facecolors="none", edgecolors="r", lw=0.8)
    corrected = run.idata.posterior.attrs.get("scale_corrected", 1)
    fig.suptitle(_title(run) + (" | densities scale-corrected per draw" if corrected
                                else " | generative likelihood, no scale correction"))
    return fig


def plot_hessian_spectrum(hessian) -> Figure:
    """Appendix C.1: the Laplace Hessian's eigenvalues against the spatial frequency of their
    eigenvectors (log scale), with the fitted exponential envelope, and sorted."""
    lam = hessian["eigenvalue"].values
    kz = hessian["spatial_frequency"].values * float(hessian.attrs["standoff_nm"])
    keep = lam > 0
    rate = float(hessian.attrs["decay_per_standoff"])
    fig, (a, b) = subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    a.scatter(kz[keep], lam[keep], s=4, alpha=0.5, label="eigenmodes")
    grid = np.linspace(kz[keep].min(), kz[keep].max(), 50)
    anchor = np.median(np.log(lam[keep][kz[keep] <= np.quantile(kz[keep], 0.1)]))
    k0 = np.median(kz[keep][kz[keep] <= np.quantile(kz[keep], 0.1)])
    a.plot(grid, np.exp(anchor - rate * (grid - k0)), "r-",
           label=f"exp(-{rate:.2f} k z0), fitted")
    if "sampled_transfer" in hessian:
        standoff = float(hessian.attrs["standoff_nm"])
        kk = hessian["k_axis"].values * standoff
        transfer = hessian["sampled_transfer"].values
        scale = np.exp(anchor) / np.interp(k0, kk, transfer)
        a.plot(kk, scale * transfer, "g--", label="|P(k)|² of the sampled kernel")
        continuum = hessian["continuum_transfer"].values
        a.plot(kk, np.exp(anchor) / np.interp(k0, kk, continuum) * continuum, "k:",
               label="|P(k)|² of the continuum kernel (App. C.1)")
        a.set_ylim(0.5 * lam[keep].min(), 2 * lam[keep].max())
    a.set(yscale="log", xlabel="spatial frequency k z0 of the eigenvector",
          ylabel="Hessian eigenvalue", title="eigenvalue against spatial frequency")
    a.legend(fontsize=8)
    b.semilogy(np.arange(1, keep.sum() + 1), np.sort(lam[keep])[::-1], "k-")
    b.set(xlabel="mode (sorted)", ylabel="eigenvalue",
          title=f"spectrum: condition number {float(hessian.attrs['condition_number']):.3g}")
    return fig


def plot_coverage(coverage) -> Figure:
    """Calibration curves (coverage against nominal level, per method and quantity) and the
    coverage at the nominal level with Wilson 95 % intervals."""
    level = float(coverage.attrs["nominal_level"])
    quantities = list(coverage["quantity"].values)
    methods = list(coverage["method"].values)
    fig, (a, b) = subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    styles = {"x": "-", "y": "--", "mass": ":"}
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    levels = coverage["level"].values
    for i, method in enumerate(methods):
        for q in quantities:
            a.plot(levels, coverage["coverage"].sel({"method": method, "quantity": q}), styles[q],
                   color=colours[i % len(colours)], marker="o", ms=3, label=f"{method} {q}")
    a.plot([0, 1], [0, 1], "k-", lw=0.8, label="calibrated")
    a.set(xlabel="nominal level", ylabel="coverage", xlim=(0, 1), ylim=(0, 1.02),
          title="calibration curves")
    a.legend(fontsize=7, ncol=2)
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        values, errors = [], [[], []]
        for q in quantities:
            p = float(coverage["coverage"].sel({"method": method, "quantity": q, "level": level}))
            n = int(coverage["sources"].sel({"method": method, "quantity": q}))
            lo, hi = wilson(p, n)
            values.append(p)
            errors[0].append(max(p - lo, 0.0))
            errors[1].append(max(hi - p, 0.0))
        b.bar(np.arange(len(quantities)) + (i - (len(methods) - 1) / 2) * width, values, width,
              yerr=errors, capsize=3, color=colours[i % len(colours)], label=method)
    b.axhline(level, color="k", lw=0.8, ls="--", label=f"nominal {level:.0%}")
    b.set_xticks(np.arange(len(quantities)), ["position x", "position y", "amplitude (mass)"])
    b.set(ylim=(0, 1.05), ylabel="coverage",
          title=f"{level:.0%} intervals, {coverage.sizes['scene']} scenes")
    b.legend(fontsize=8)
    return fig


def plot_rank_histograms(sbc) -> Figure:
    """SBC rank histograms: one panel per (method, quantity), the expected count per bin and
    its central 99 % binomial band, the χ² p-value in the title."""
    methods, quantities = list(sbc["method"].values), list(sbc["quantity"].values)
    bins = sbc.sizes["bin"]
    fig, axes = subplots(len(methods), len(quantities), squeeze=False, sharex=True,
                         figsize=(1.7 * len(quantities) + 1, 1.6 * len(methods) + 0.8),
                         layout="constrained")
    for a, method in enumerate(methods):
        done = int(sbc["replications_done"].sel({"method": method}))
        lo, hi = stats.binom.interval(0.99, max(done, 1), 1.0 / bins)
        for b, q in enumerate(quantities):
            ax = axes[a, b]
            counts = sbc["histogram"].sel({"method": method, "quantity": q}).values
            ax.axhspan(lo, hi, color="0.85", lw=0)
            ax.axhline(done / bins, color="k", lw=0.8)
            ax.bar(np.arange(bins), counts, width=0.9, color="C0")
            p = float(sbc["p_value"].sel({"method": method, "quantity": q}))
            ax.set_title(f"{q}\np = {p:.3f}", fontsize=7, color="C3" if p < 0.01 else "k")
            ax.tick_params(labelsize=6)
            if b == 0:
                ax.set_ylabel(f"{method}\n(n = {done})", fontsize=8)
    fig.suptitle("SBC rank histograms (grey: 99 % band of a uniform histogram)", fontsize=9)
    return fig


def plot_catalogue(run, ax=None):
    """The catalogue on the observed log noise map: each source's posterior mean position, its
    90 % position ellipse (from the covariance of the x, y draws; magnified by the factor in
    the title where the ellipses are smaller than a pixel) and, when known, the true sources.
    Returns the axes (a new figure's when ``ax`` is None)."""
    catalogue = run.tables["catalogue"]
    observed = run.observed
    x, y = observed["x"].values, observed["y"].values
    spacing = float(x[1] - x[0])
    if ax is None:
        ax = subplots(figsize=(6.4, 5.6), layout="constrained")[1]
    image = ax.imshow(_log_map(observed.values.sum(0)), origin="lower", cmap="magma",
                      extent=(x[0] - spacing / 2, x[-1] + spacing / 2, y[0] - spacing / 2,
                              y[-1] + spacing / 2), vmin=-4, vmax=0)
    ax.figure.colorbar(image, ax=ax, label="observed log10 N / max N")
    radius = np.sqrt(stats.chi2.ppf(float(catalogue.attrs["interval_level"]), 2))
    shapes = []
    for k in range(catalogue.sizes["source"]):
        px = catalogue["x_nm"].isel(source=k).values.reshape(-1)
        py = catalogue["y_nm"].isel(source=k).values.reshape(-1)
        values, vectors = np.linalg.eigh(np.cov(px, py))
        shapes.append((px.mean(), py.mean(), np.sqrt(np.clip(values, 0, None)), vectors))
    largest = max(s[2][-1] for s in shapes) * radius
    magnify = max(1.0, float(np.round(0.5 * spacing / max(largest, 1e-12))))
    for mx, my, sd, vectors in shapes:
        angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
        ax.add_patch(Ellipse((mx, my), 2 * radius * sd[-1] * magnify,
                             2 * radius * sd[0] * magnify, angle=angle, fill=False,
                             color="c", lw=1.2))
        ax.plot(mx, my, "c+", ms=6)
    truth = run.truth
    if truth is not None and "rho_true" in truth:
        ty, tx = np.nonzero(truth["rho_true"].values > 0)
        ax.plot(x[tx], y[ty], "wx", ms=5, label="true source")
        ax.legend(fontsize=7, loc="upper right")
    ax.set(xlabel="x (nm)", ylabel="y (nm)",
           title=f"catalogue: {catalogue.sizes['source']} sources, "
                 f"{float(catalogue.attrs['interval_level']):.0%} position ellipses"
                 + (f" x{magnify:g}" if magnify > 1 else ""))
    return ax
