"""Figures of the α-RuCl3 workflow; synthetic data are labelled in every title."""

from __future__ import annotations

import numpy as np
import xarray as xr

from nvbayes.data.rucl3_spec import AnsatzSpec
from nvbayes.figures import Figure, new_axes, subplots
from nvbayes.model.rucl3 import sheet_rate
from nvbayes.model.spectral import spectral_rate

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
    _suptitle(fig, f"Gaussian ansatz, {attrs['operator']}, {attrs['method']}, "
                   f"{attrs.get('convention', 'physical')} convention: {attrs.get('data', '')}",
              synthetic)
    fig.tight_layout()
    return fig


def _kappa(one: xr.Dataset, axes: str) -> str:
    h = one.sel(axes=axes)
    if int(h["indefinite"]):
        return "none (not a minimum)"
    if int(h["rank_deficient"]):
        return "rank-deficient"
    return f"{float(h['condition_number']):,.0f}"


def plot_landscape(land: xr.Dataset, synthetic: bool) -> Figure:
    """log10 of the log-MSE over (log10 A, σg) per operator, like the paper's Figure 5, with
    the valley floor (the best σg for each A) and the Hessian's softest direction."""
    ops = [str(o) for o in land["operator"].values]
    fig, axes = subplots(1, len(ops), figsize=(5.6 * len(ops), 4.8), squeeze=False)
    for ax, op in zip(axes[0], ops, strict=True):
        one = land.sel(operator=op)
        amps, sigmas = one["log10_amplitude"].values, one["sigma_g"].values
        z = np.log10(one["log_mse"].values.T)
        mesh = ax.pcolormesh(amps, sigmas, z, shading="auto", cmap="viridis")
        ax.contour(amps, sigmas, z, levels=12, colors="w", linewidths=0.5)
        ax.plot(amps, sigmas[np.argmin(one["log_mse"].values, axis=1)], "w:", lw=1.5,
                label="valley floor (best sigma_g per A)")
        a, s = one["minimum"].values
        v = one["soft_direction"].sel(axes="log").values
        t = np.linspace(-1.0, 1.0, 101) * (amps[-1] - amps[0]) / 2
        line_a, line_s = a + t * v[0], 10.0 ** (np.log10(s) + t * v[1])
        keep = (line_s >= sigmas[0]) & (line_s <= sigmas[-1])
        ax.plot(line_a[keep], line_s[keep], "r-", lw=1.2, label="softest Hessian direction")
        ax.plot(a, s, "r*", ms=12, label="minimum")
        ax.set_xlim(amps[0], amps[-1])
        ax.set_ylim(sigmas[0], sigmas[-1])
        ax.set_title(f"{op}: kappa = {_kappa(one, 'log')} in (log10 A, log10 sigma_g);\n"
                     f"{_kappa(one, 'paper')} in the paper's axes (log10 A, sigma_g/nm)",
                     fontsize=9)
        ax.set_xlabel("log10 A  [A in m^-2]")
        ax.set_ylabel("sigma_g [nm]")
        ax.legend(fontsize=7, loc="upper right")
        fig.colorbar(mesh, ax=ax, label="log10 L")
    _suptitle(fig, f"log-MSE landscape of the Gaussian ansatz ({land.attrs['convention']} "
                   "convention)", synthetic)
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
        ax.plot(d, sheet_rate(spec, d, op, field, table.attrs["convention"]),
                color=colors.get(op), label=f"sheet, {op}")
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
    convention = table.attrs["convention"]
    sheet = (f"sheet radius {table.attrs['sheet_radius_nm']:g} nm; "
             if convention == "physical" else "")
    _suptitle(ax.figure, f"step 1: implied depths, {convention} convention ({sheet}grey "
                         "lines: measured Gamma_Ru)", synthetic)
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
    _suptitle(ax.figure, "step 2: internal-rate slope (paper exponents; "
                         f"{slopes.attrs['convention']} convention for the model's)", synthetic)
    return ax


def plot_spectral(run) -> Figure:
    """Step 3: the rates against the field with the posterior's 90 % band | τc's posterior."""
    post = run.idata.posterior
    attrs = post.attrs
    fig, axes = subplots(1, 2, figsize=(11.5, 4.4))
    ax = axes[0]
    field = run.idata.constant_data["field_gauss"].values
    observed = np.exp(run.idata.observed_data["log_rate"].values)
    error = observed * run.idata.constant_data["relative_error"].values
    grid = np.linspace(0.0, 1000.0 * (1 - 1e-3), 200)
    tau = post["log10_tau_c_ns"].values.reshape(-1)
    rate_1 = post["log10_rate_1"].values.reshape(-1)
    pick = np.linspace(0, tau.size - 1, min(tau.size, 400)).astype(int)
    curves = spectral_rate(tau[pick, None], rate_1[pick, None], grid,
                           attrs["reference_field_gauss"]).numpy()
    lo, mid, hi = np.quantile(curves, [0.05, 0.5, 0.95], axis=0)
    ax.fill_between(grid, lo, hi, color="tab:blue", alpha=0.25, label="posterior 90 %")
    ax.plot(grid, mid, color="tab:blue", label="posterior median")
    ax.errorbar(field, observed, yerr=error, fmt="ko", capsize=3, label="measured")
    ax.set_yscale("log")
    ax.set_xlabel("axial field B [G]")
    ax.set_ylabel("Gamma_Ru [s^-1]")
    ax.legend(fontsize=7)
    ax.set_title(f"rates of {attrs.get('nv') or 'one NV'}")
    ax = axes[1]
    ax.hist(post["tau_c_ns"].values.reshape(-1), bins=np.geomspace(
        *(10.0 ** np.array([tau.min(), tau.max()])), 50), color="0.6")
    q = np.quantile(post["tau_c_ns"].values, [0.05, 0.95])
    ax.axvspan(*q, color="tab:blue", alpha=0.15, label=f"90 %: {q[0]:.3g} to {q[1]:.3g} ns")
    if "true_tau_c_ns" in attrs:
        ax.axvline(float(attrs["true_tau_c_ns"]), color="r", label="truth")
    ax.set_xscale("log")
    ax.set_xlabel("tau_c [ns]  (linewidth 1/tau_c)")
    ax.set_ylabel("draws")
    ax.legend(fontsize=7)
    ax.set_title("bath correlation time")
    _suptitle(fig, f"step 3: spectral calibration, NUTS ({attrs.get('convention', 'physical')} "
                   f"convention; the same in both): {attrs.get('data', '')}",
              bool(attrs.get("synthetic", 0)))
    fig.tight_layout()
    return fig


__all__ = ["plot_depths", "plot_landscape", "plot_posterior", "plot_slope", "plot_spectral"]
