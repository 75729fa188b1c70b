"""Benchmark figures: metric box plots per scene class, and the paper's Figure-3 grid.

- ``boxplot-METRIC.png``: one panel per scene class; for each method one box per inversion
  operator over every complete (sample, seed) pair of the class (as in ``summary.md``).
- ``grid-CLASS.png`` (``grid.png`` without classes): the first sample of the class at the
  first seed, truth | each method, one row per inversion operator, one colour scale per row.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.patches import Rectangle

from nvbayes.figures import Figure, subplots
from nvbayes.metrics import complete_pairs

OPERATOR_COLOURS = {"F1": "tab:orange", "F2": "tab:blue"}
BOX_METRICS = ("hungarian_f1", "swd", "gmsd", "density_mse", "masked_ssim", "centre_mass_ratio")


def scene_classes(results: xr.Dataset) -> list[tuple[str, np.ndarray]]:
    if "scene_class" not in results.coords:
        return [("all samples", np.arange(results.sizes["sample"]))]
    names = list(dict.fromkeys(results["scene_class"].values.tolist()))
    return [(c, np.flatnonzero(results["scene_class"].values == c)) for c in names]


def box_plot(results: xr.Dataset, metric: str) -> Figure:
    groups = scene_classes(results)
    cols = min(4, len(groups))
    rows = -(-len(groups) // cols)
    methods, ops = list(results["method"].values), list(results["operator"].values)
    fig, axes = subplots(rows, cols, figsize=(3.2 * cols + 1, 3.0 * rows),
                             squeeze=False, sharey=True, layout="constrained")
    width = 0.8 / len(ops)
    complete = complete_pairs(results)
    values = results[metric].where(complete)
    for ax, (name, idx) in zip(axes.flat, groups, strict=False):
        for j, op in enumerate(ops):
            data = []
            for m in methods:
                v = values.sel({"method": m, "operator": op}).isel(sample=idx)
                v = v.values.ravel()
                data.append(v[np.isfinite(v)])
            pos = np.arange(len(methods)) + (j - (len(ops) - 1) / 2) * width
            box = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True,
                             showfliers=True, flierprops={"markersize": 2})
            for patch in box["boxes"]:
                patch.set_facecolor(OPERATOR_COLOURS.get(op, "tab:grey"))
                patch.set_alpha(0.6)
        ax.set_xticks(np.arange(len(methods)), methods, rotation=45, ha="right", fontsize=8)
        done = int(complete.isel(sample=idx).any("seed").sum())
        ax.set_title(f"{name} ({done} samples)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(metric)
    handles = [Rectangle((0, 0), 1, 1, color=OPERATOR_COLOURS.get(op, "tab:grey"),
                             alpha=0.6) for op in ops]
    fig.legend(handles, [f"inversion {op}" for op in ops], loc="outside upper right",
               fontsize=8)
    fig.suptitle(f"{metric} per scene class (every sample and seed that all methods finished)")
    return fig


def qualitative_grid(results: xr.Dataset, maps: dict, truth: np.ndarray,
                     sample: int) -> Figure:
    """Truth | each method's density map, one row per inversion operator.

    ``maps[method, operator]`` is the ``(ny, nx)`` map of ``sample`` at the first seed, or
    ``None`` where the cell failed or has not run (``results`` says which).
    """
    methods, ops = list(results["method"].values), list(results["operator"].values)
    seed = int(results["seed"].values[0])
    cols = 1 + len(methods)
    fig, axes = subplots(len(ops), cols, figsize=(2.4 * cols, 2.5 * len(ops)),
                             squeeze=False, layout="constrained")
    for i, op in enumerate(ops):
        row = [maps.get((m, op)) for m in methods]
        vmax = max([truth.max()] + [r.max() for r in row if r is not None])
        axes[i, 0].imshow(truth, cmap="viridis", vmin=0, vmax=vmax)
        axes[i, 0].set_title("truth", fontsize=9)
        axes[i, 0].set_ylabel(f"inversion {op}")
        for j, (m, rho) in enumerate(zip(methods, row, strict=True), start=1):
            ax = axes[i, j]
            cell = results.sel({"method": m, "operator": op, "sample": sample, "seed": seed})
            if rho is None:
                error = str(cell["error"].values)
                ax.text(0.5, 0.5, "not run" if error == "not run" else "failed",
                        ha="center", va="center", transform=ax.transAxes)
                ax.set_title(m, fontsize=9)
            else:
                ax.imshow(rho, cmap="viridis", vmin=0, vmax=vmax)
                ax.set_title(f"{m}\nF1 {float(cell['hungarian_f1']):.2f}, "
                             f"SWD {float(cell['swd']):.3f}", fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    cls = (str(results["scene_class"].values[sample]) if "scene_class" in results.coords
           else "")
    fig.suptitle(f"sample {sample} {cls} (data {results.attrs.get('data_operator', '?')}), "
                 f"seed {seed}; one colour scale per row")
    return fig


