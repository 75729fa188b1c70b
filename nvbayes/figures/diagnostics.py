"""Figures of ``nvbayes diagnose`` (paper Figures 4 and 10), from a diagnostics dataset."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.patches import Circle

from nvbayes.figures import Figure, new_axes, subplots
from nvbayes.metrics import CENTRE_RADIUS_FRACTION, OUTER_RING_FRACTION

_PAPER_MARK = dict(marker="_", color="k", ms=22, mew=2.5, ls="none")


def _extent(ds: xr.Dataset) -> tuple:
    x, y = ds["x"].values, ds["y"].values
    half = 0.5 * (x[1] - x[0])
    return (x[0] - half, x[-1] + half, y[-1] + half, y[0] - half)


def _rings(ax, ds: xr.Dataset) -> None:
    """Draw the centre disk and the outer ring (nm)."""
    x, y = ds["x"].values, ds["y"].values
    n, dx = len(x), x[1] - x[0]
    centre = (0.5 * (x[0] + x[-1]), 0.5 * (y[0] + y[-1]))
    for radius, style in ((CENTRE_RADIUS_FRACTION * n, "-"), (OUTER_RING_FRACTION * n, "--"),
                          (0.5 * n, "--")):
        ax.add_patch(Circle(centre, radius * dx, fill=False, color="w", lw=1, ls=style))


def _sources(ax, ds: xr.Dataset) -> None:
    if "rho_true" not in ds:
        return
    iy, ix = np.nonzero(ds["rho_true"].values > 0)
    ax.plot(ds["x"].values[ix], ds["y"].values[iy], "o", mfc="none", mec="c", ms=7, mew=1)


def _image(fig, ax, image, ds, title, cmap="magma", rings=True) -> None:
    im = ax.imshow(image, extent=_extent(ds), cmap=cmap)
    if rings:
        _rings(ax, ds)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x (nm)", fontsize=8)
    ax.tick_params(labelsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8)


def plot_iter0(ds: xr.Dataset) -> Figure:
    """Per operator: the surface of |∂D/∂ρ| at the uniform start, its map with the rings,
    the peak and the true sources, and the map with the maximum held fixed."""
    fig = Figure(figsize=(15, 9), layout="constrained")
    xx, yy = np.meshgrid(ds["x"].values, ds["y"].values)
    for row, op in enumerate(ds["operator"].values):
        g = np.abs(ds["iter0_gradient"].sel(operator=op).values)
        ratio = float(ds["iter0_ratio"].sel(operator=op))
        ax = fig.add_subplot(2, 3, 3 * row + 1, projection="3d")
        ax.plot_surface(xx, yy, g, cmap="magma", linewidth=0, antialiased=False)
        ax.set_title(f"{op}: |dD/drho| at the uniform start", fontsize=9)
        ax.set_xlabel("x (nm)", fontsize=7)
        ax.set_ylabel("y (nm)", fontsize=7)
        ax.tick_params(labelsize=6)
        ax = fig.add_subplot(2, 3, 3 * row + 2)
        _image(fig, ax, g, ds, f"{op}: centre/outer ratio {ratio:.2f}")
        iy, ix = int(ds["iter0_peak_iy"].sel(operator=op)), int(ds["iter0_peak_ix"].sel(
            operator=op))
        ax.plot(ds["x"].values[ix], ds["y"].values[iy], "x", color="lime", ms=10, mew=2)
        _sources(ax, ds)
        fixed = np.abs(ds["iter0_gradient_fixed_peak"].sel(operator=op).values)
        ax = fig.add_subplot(2, 3, 3 * row + 3)
        _image(fig, ax, fixed, ds, f"{op}: max N_pred held fixed (no P3), ratio "
                                   f"{float(ds['iter0_fixed_peak_ratio'].sel(operator=op)):.2f}")
        _sources(ax, ds)
    fig.suptitle("Iter-0 data-fidelity gradient (rings: centre disk n/8, outer ring 3n/8 to "
                 "n/2; x: peak; o: true sources)", fontsize=10)
    return fig


def plot_update(ds: xr.Dataset) -> Figure:
    """Per parameterized method and operator: the start, |Δρ| of the first step, the
    filtered gradient |J Jᵀ ∇L| and the start's kernel applied to the uniform-start
    gradient."""
    methods = ds["update_method"].values
    rows = [(m, op) for m in methods for op in ds["operator"].values]
    fig, axes = subplots(len(rows), 4, figsize=(17, 3.6 * len(rows)),
                             layout="constrained", squeeze=False)
    for r, (m, op) in enumerate(rows):
        sel = dict(update_method=m, operator=op)
        panels = [
            (ds["update_start"].sel(update_method=m).values, f"{m}: rho at the start",
             "viridis"),
            (np.abs(ds["realized_update"].sel(**sel).values),
             f"{m} {op}: |delta rho|, ratio {float(ds['realized_ratio'].sel(**sel)):.2f}",
             "magma"),
            (np.abs(ds["filtered_gradient"].sel(**sel).values),
             f"{m} {op}: |J J^T dL/drho|, ratio {float(ds['filtered_ratio'].sel(**sel)):.2f}",
             "magma"),
            (np.abs(ds["uniform_filtered_gradient"].sel(**sel).values),
             f"{m} {op}: |G iter-0 gradient|, ratio "
             f"{float(ds['uniform_filtered_ratio'].sel(**sel)):.2f}", "magma"),
        ]
        for ax, (image, title, cmap) in zip(axes[r], panels, strict=True):
            _image(fig, ax, image, ds, title, cmap)
    fig.suptitle("First solver step in image space (Lemma 2: delta rho ~ -eta J J^T dL/drho)",
                 fontsize=10)
    return fig


def plot_barrier(ds: xr.Dataset) -> Figure:
    """D(t)/D(0) along the collapse-to-truth path under each operator, and its two ends."""
    fig, axes = subplots(1, 3, figsize=(16, 4.6), layout="constrained",
                             gridspec_kw={"width_ratios": [1.4, 1, 1]})
    t = ds["t"].values
    for op, colour in zip(ds["operator"].values, ("tab:blue", "tab:red"), strict=True):
        curve = ds["barrier_loss"].sel(operator=op).values
        h = float(ds["barrier_height"].sel(operator=op))
        pos = float(ds["barrier_position"].sel(operator=op))
        axes[0].plot(t, curve / curve[0], color=colour,
                     label=f"{op}: D(0) = {curve[0]:.3g}, h = {h:.3g} at t = {pos:.2f}")
        k = int(np.argmax(curve))
        axes[0].plot(t[k], curve[k] / curve[0], "o", color=colour)
    axes[0].axhline(1.0, color="0.6", lw=0.8)
    axes[0].set(xlabel="t", ylabel="D(t) / D(0)",
                title="loss along rho(t) = (1 - t) rho_collapse + t rho_true")
    axes[0].legend(fontsize=8)
    _image(fig, axes[1], ds["rho_collapse"].values, ds,
           f"rho_collapse ({ds.attrs.get('collapse_method', '')}, F2, "
           f"{ds.attrs['budget_steps']} steps)", "viridis")
    _image(fig, axes[2], ds["rho_true"].values, ds, "rho_true", "viridis")
    return fig


def plot_budget(ds: xr.Dataset, paper: dict) -> Figure:
    """Figure 4a/c: every method's density after the budget, per operator, and the
    centre-mass ratios (black bars: the paper's, F2)."""
    methods, ops = list(ds["method"].values), list(ds["operator"].values)
    fig = Figure(figsize=(3.0 * (len(methods) + 1), 10), layout="constrained")
    grid = fig.add_gridspec(3, len(methods) + 1, height_ratios=[1, 1, 1.1])
    for r, op in enumerate(ops):
        for c, m in enumerate(methods):
            ax = fig.add_subplot(grid[r, c])
            cm = float(ds["budget_centre_mass"].sel({"method": m, "operator": op}))
            _image(fig, ax, ds["budget_rho"].sel({"method": m, "operator": op}).values, ds,
                   f"{m} {op}: centre mass {cm:.3f}", "viridis", rings=False)
        if "rho_true" in ds:
            ax = fig.add_subplot(grid[r, -1])
            _image(fig, ax, ds["rho_true"].values, ds, "truth", "viridis", rings=False)
    ax = fig.add_subplot(grid[2, :])
    x = np.arange(len(methods))
    for k, (op, colour) in enumerate(zip(ops, ("tab:blue", "tab:red"), strict=True)):
        ax.bar(x + (k - 0.5) * 0.35, ds["budget_centre_mass"].sel(operator=op).values, 0.35,
               color=colour, label=op)
    marks = [paper.get(m, np.nan) for m in methods]
    ax.plot(x + 0.175, marks, label="paper (F2)", **_PAPER_MARK)
    ax.set_xticks(x, methods)
    ax.set(ylabel="centre-mass ratio",
           title=f"centre-mass ratio after {ds.attrs['budget_steps']} solver steps")
    ax.legend()
    return fig


def plot_sweep(ds: xr.Dataset, paper_mean: dict, ax=None):
    """The ADMM sweep: every (sample, setting) per operator, split by data term, with the
    mean ± sd and the paper's means; drawn into ``ax`` (default: a new figure's), returned."""
    ax = new_axes(ax, (8, 4.8))
    settings = [str(s) for s in ds["setting"].values]
    rng = np.random.default_rng(0)
    for k, op in enumerate(ds["operator"].values):
        values = ds["sweep_centre_mass"].sel(operator=op).values      # (sample, setting)
        for term, marker in (("log_mse", "o"), ("noise_map", "s")):
            cols = [j for j, s in enumerate(settings) if s.startswith(term + "/")]
            v = values[:, cols].ravel()
            ax.plot(k + 0.12 * rng.standard_normal(v.size), v, marker, alpha=0.6,
                    color="tab:blue" if term == "log_mse" else "tab:orange",
                    label=f"data term {term}" if k == 0 else None)
        mean, sd = np.nanmean(values), np.nanstd(values)
        ax.errorbar(k + 0.35, mean, sd, fmt="D", color="k", capsize=4,
                    label="mean ± sd" if k == 0 else None)
        ax.plot(k + 0.35, paper_mean.get(str(op), np.nan),
                label="paper mean" if k == 0 else None, **_PAPER_MARK)
    ax.set_xticks(range(ds.sizes["operator"]), list(ds["operator"].values))
    ax.set(ylabel="centre-mass ratio at termination",
           title=f"ADMM sweep: {ds.sizes['sweep_sample']} samples x "
                 f"{ds.sizes['setting']} loss settings")
    ax.legend(fontsize=8)
    return ax
