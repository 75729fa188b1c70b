"""Figures of the α-RuCl3 workflow; synthetic data are labelled in every title."""

from __future__ import annotations

import numpy as np
import xarray as xr

from nvbayes.data.rucl3_spec import AnsatzSpec
from nvbayes.figures import Figure, new_axes, subplots
from nvbayes.model.rucl3 import sheet_rate

SYNTHETIC_TITLE = "SYNTHETIC DATA (generated from the model, not measured)"


def _suptitle(fig: Figure, text: str, synthetic: bool) -> None:
    fig.suptitle(f"{text}\n{SYNTHETIC_TITLE}" if synthetic else text, fontsize=10,
                 color="firebrick" if synthetic else "black")


def plot_posterior(run) -> Figure:
    """(log10 A, σg) draws by chain | depth intervals per NV | predicted against measured Γ."""
    post = run.idata.posterior
    attrs = post.attrs
    synthetic = bool(attrs.get("synthetic", 0))
    fig, axes = subplots(1, 3, figsize=(15, 4.6))
    ax = axes[0]
    for c in post["chain"].values:
        ax.plot(post["log10_amplitude"].sel(chain=c), post["sigma_g"].sel(chain=c), ".",
                ms=3, alpha=0.4, label=f"chain {c}")
    if "true_log10_amplitude" in attrs:
        generator = attrs.get("true_operator", "")
        label = ("truth" if generator == attrs["operator"]
                 else f"generating values (under {generator})")
        ax.plot(float(attrs["true_log10_amplitude"]), float(attrs["true_sigma_g_nm"]), "r*",
                ms=14, label=label)
    ax.set_xlabel("log10 A  [A in m^-2]")
    ax.set_ylabel("sigma_g [nm]")
    ax.legend(fontsize=7)
    ax.set_title("posterior draws")

    ax = axes[1]
    depth = post["depth"]
    nv = [str(v) for v in depth["nv"].values]
    lo, mid, hi = (depth.quantile(q, dim=("chain", "draw")).values for q in (0.05, 0.5, 0.95))
    y = np.arange(len(nv))
    ax.errorbar(mid, y, xerr=[mid - lo, hi - mid], fmt="o", capsize=3, label="posterior 90%")
    const = run.idata.constant_data
    if "depth_true_nm" in const:
        ax.plot(const["depth_true_nm"].values, y, "r*", ms=10, label="truth")
    spec = run.config.get("spec", {}).get("prior", {})
    if spec:
        m, s = spec["depth_mean_nm"], spec["depth_sd_nm"]
        ax.axvspan(m - s, m + s, color="0.9", label="SRIM prior ±1 sd")
    ax.set_yticks(y, nv)
    ax.set_xlabel("NV depth [nm]")
    ax.legend(fontsize=7)
    ax.set_title("depths")

    ax = axes[2]
    observed = np.exp(run.idata.observed_data["log_rate_ru"].values)
    rate = post["rate_ru"]
    lo, mid, hi = (rate.quantile(q, dim=("chain", "draw")).values for q in (0.05, 0.5, 0.95))
    ax.errorbar(observed, mid, yerr=[mid - lo, hi - mid], fmt="o", capsize=3)
    span = [min(observed.min(), lo.min()) * 0.8, max(observed.max(), hi.max()) * 1.25]
    ax.plot(span, span, "k--", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured Gamma_Ru [s^-1]")
    ax.set_ylabel("posterior predicted Gamma_Ru [s^-1] (90%)")
    ax.set_title("fit")
    _suptitle(fig, f"Gaussian ansatz, {attrs['operator']}, {attrs['method']}: "
                   f"{attrs.get('data', '')}", synthetic)
    fig.tight_layout()
    return fig


def plot_landscape(land: xr.Dataset, synthetic: bool) -> Figure:
    """log10 of the log-MSE over (log10 A, σg) per operator, like the paper's Figure 5."""
    ops = [str(o) for o in land["operator"].values]
    fig, axes = subplots(1, len(ops), figsize=(5.6 * len(ops), 4.6), squeeze=False)
    for ax, op in zip(axes[0], ops, strict=True):
        one = land.sel(operator=op)
        z = np.log10(one["log_mse"].values.T)
        mesh = ax.pcolormesh(one["log10_amplitude"], one["sigma_g"], z, shading="auto",
                             cmap="viridis")
        ax.contour(one["log10_amplitude"], one["sigma_g"], z, levels=12, colors="w",
                   linewidths=0.5)
        a, s = one["minimum"].values
        ax.plot(a, s, "r*", ms=12, label="minimum")
        kappa = float(one["condition_number"])
        kappa_log = float(one["condition_number_log"])
        ax.set_title(f"{op}: kappa = {kappa:,.0f} (sigma_g in nm), {kappa_log:,.0f} "
                     "(log10 sigma_g)", fontsize=9)
        ax.set_xlabel("log10 A  [A in m^-2]")
        ax.set_ylabel("sigma_g [nm]")
        ax.legend(fontsize=7)
        fig.colorbar(mesh, ax=ax, label="log10 L")
    _suptitle(fig, "log-MSE landscape of the Gaussian ansatz", synthetic)
    fig.tight_layout()
    return fig


def plot_depths(spec: AnsatzSpec, table: xr.Dataset, synthetic: bool, ax=None):
    """Sheet rate Γ(d) per operator, the measured Γ_Ru and the implied depths, drawn into
    ``ax`` (default: a new figure's), which is returned."""
    ax = new_axes(ax, (7.5, 5))
    implied = table["implied_depth"].values
    top = max(200.0, 1.5 * float(np.nanmax(implied))) if np.isfinite(implied).any() else 200.0
    d = np.geomspace(2.0, top, 300)
    field = float(table["point_rate"].attrs.get("field_gauss", 0.0))
    colors = {"F2": "tab:blue", "F1": "tab:orange"}
    for op in [str(o) for o in table["operator"].values]:
        ax.plot(d, sheet_rate(spec, d, op, field), color=colors.get(op), label=f"sheet, {op}")
        depths = table["implied_depth"].sel(operator=op).values
        ok = np.isfinite(depths)
        ax.plot(depths[ok], table["gamma_ru"].values[ok], "o", color=colors.get(op), ms=5,
                label=f"d* under {op} ({int(table['n_in_window'].sel(operator=op))} in window)")
    for g in table["gamma_ru"].values:
        ax.axhline(g, color="0.7", lw=0.6)
    lo, hi = table.attrs["depth_window_nm"]
    ax.axvspan(lo, hi, color="0.92", label=f"[{lo:g}, {hi:g}] nm")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NV depth d [nm]")
    ax.set_ylabel("Gamma [s^-1]")
    ax.legend(fontsize=7)
    _suptitle(ax.figure, f"step 1: implied depths (sheet radius "
                         f"{table.attrs['sheet_radius_nm']:g} nm; grey lines: measured "
                         "Gamma_Ru)", synthetic)
    return ax


def plot_slope(data: xr.Dataset, slopes: xr.Dataset, synthetic: bool, ax=None):
    """ln Γ_Ru against ln Γ_bare with the measured and the predicted slopes, drawn into ``ax``
    (default: a new figure's), which is returned."""
    ax = new_axes(ax, (6.5, 5))
    if "gamma_bare" in data:
        x = np.log(data["gamma_bare"].values)
        y = np.log(data["gamma_ru"].values)
        ax.plot(x, y, "ko")
        for label, xi, yi in zip(data["nv"].values, x, y, strict=True):
            ax.annotate(str(label), (xi, yi), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        xs = np.linspace(x.min(), x.max(), 10)
        b = slopes.attrs["measured_slope"]
        ax.plot(xs, y.mean() + b * (xs - x.mean()), "k-",
                label=f"measured b = {b:.2f} ± {slopes.attrs['measured_slope_err']:.2f}")
        for op in [str(o) for o in slopes["operator"].values]:
            bp = float(slopes["slope_paper"].sel(operator=op))
            ax.plot(xs, y.mean() + bp * (xs - x.mean()), "--",
                    label=f"{op}: n/alpha = {bp:.2f}")
        ax.set_xlabel("ln Gamma_bare (internal rate)")
        ax.set_ylabel("ln Gamma_Ru")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no gamma_bare in the data:\nthe measured slope is the paper's",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    _suptitle(ax.figure, "step 2: internal-rate slope", synthetic)
    return ax


__all__ = ["plot_depths", "plot_landscape", "plot_posterior", "plot_slope"]
