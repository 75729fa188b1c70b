"""``nvbayes diagnose``: the centre-collapse mechanism of one measurement as a dataset.

:func:`diagnose` measures, under F1 and F2 (paper section 5.3 and appendix E.5):

1. the iter-0 gradient ``∂D/∂ρ`` at the energy-matched uniform density (band-centre ω_L), with
   its peak and centre-to-outer ratio (:mod:`.geometry`), and the same gradient with the
   maximum of the predicted noise map held fixed, which removes the peak coupling (P3) and
   leaves the window bias (P2) alone;
2. the realized first step ``Δρ`` of every parameterized method and its filtered gradient
   (:mod:`.update`), and the starting kernel ``G_θ`` applied to the gradient of item 1;
3. the centre-mass ratio of every method after a fixed budget of solver steps
   (:mod:`.budget`);
4. the loss ``D`` along the straight path from a centre-collapsed iterate (the most centred
   free-density fit of item 3 under F2) to the true density, true Larmor map held, and its
   barrier (needs ``rho_true``);
5. the ADMM sweep over samples × 8 loss settings, run to termination.

:func:`write_diagnostics` puts ``diagnostics.nc``, ``diagnostics.md`` and the figures in a
run folder, atomically.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from nvbayes import __version__
from nvbayes.data.io import select_sample, write_folder, write_netcdf
from nvbayes.data.spec import ModelSpec
from nvbayes.figures import diagnostics as figures
from nvbayes.figures import save_figure
from nvbayes.inference.map import uniform_level
from nvbayes.metrics import (
    OUTER_RING_FRACTION,
    centre_mass_ratio,
    centre_to_outer_ratio,
    ring_masks,
)
from nvbayes.model.problem import InverseProblem
from nvbayes.physics.noise_map import LOG_EPS, noise_map
from nvbayes.progress import progress_bar

from .budget import admm_settings, budget_fit, is_free_density, sweep_centre_mass
from .geometry import (
    barrier,
    distance_from_centre,
    fidelity_gradient,
    path_losses,
    peak_location,
    uniform_start,
)
from .update import first_step

SCHEMA = "nvbayes.diagnostics/1"
OPERATORS = ("F1", "F2")
DATASET, TABLE = "diagnostics.nc", "diagnostics.md"
#: The paper's numbers (section 5.3, appendix E.5), for the report.
PAPER = {"iter0_ratio_F2": 18.29, "realized_ratio": 1.6, "barrier_height_F2": 1.12,
         "barrier_position_F2": 0.20,
         "budget_centre_mass": {"netmy": 0.00, "gsplat": 0.064, "lbfgs": 0.081, "admm": 0.153,
                                "tikhonov": 0.223},
         "sweep_mean": {"F1": 0.553, "F2": 0.776}, "sweep_std": {"F1": 0.344, "F2": 0.369}}


def _iter0(problem: InverseProblem, level: float, log_eps: float) -> dict:
    rho, larmor = uniform_start(problem, level)
    _, outer = ring_masks(problem.n)
    out = {"gradient": [], "fixed": [], "margin": [], "noise_peak": []}
    for op in OPERATORS:
        out["gradient"].append(fidelity_gradient(problem, op, rho, larmor, log_eps))
        out["fixed"].append(fidelity_gradient(problem, op, rho, larmor, log_eps,
                                              fixed_peak=True))
        with torch.no_grad():
            n_map = noise_map(problem.operator(op)(rho, larmor)).numpy()
        out["margin"].append(float(1.0 - n_map[outer].mean() / n_map.max()))
        out["noise_peak"].append(peak_location(n_map))
    return out


def diagnose(data: xr.Dataset, methods: dict[str, ModelSpec], *, sample: "int | None" = None,
             admm: "ModelSpec | None" = None, budget: int = 200,
             sweep_samples: tuple = (), seed: int = 0, log_eps: float = LOG_EPS,
             path_points: int = 101, source: str = "", protocol: str = "paper",
             show: "bool | None" = None) -> xr.Dataset:
    """The diagnostics of measurement ``sample`` of ``data`` (see the module docstring).

    ``methods`` (name → model) are fitted for the fixed budget of ``budget`` steps; the
    parameterized ones also give their first step.  ``admm`` with ``sweep_samples`` (indices
    into ``data``) runs the sweep.  ``protocol`` (the one ``methods`` were resolved under) is
    recorded.  Returns an ``nvbayes.diagnostics/1`` dataset.

    >>> ds = diagnose(data, resolve_methods("netmy,admm", "fast"), budget=200)  # doctest: +SKIP
    >>> ds["iter0_ratio"].sel(operator="F2")                                  # doctest: +SKIP
    """
    start = time.perf_counter()
    one = select_sample(data, sample)
    problem = InverseProblem.from_measurement(one)
    n = problem.n
    steppable = [m for m, s in methods.items()
                 if s.solver == "gradient" and not is_free_density(s)]
    settings = admm_settings(admm) if admm is not None and sweep_samples else {}
    total = len(steppable) * 2 + len(methods) * 2 + len(sweep_samples) * len(settings) * 2
    bar = progress_bar(total, "diagnose", "task", show)

    def tick(what: str) -> None:
        if bar is not None:
            bar.set_postfix_str(what)
            bar.update(1)

    level = uniform_level(problem)
    iter0 = _iter0(problem, level, log_eps)

    steps = {}
    for name in steppable:
        for k, op in enumerate(OPERATORS):
            steps[name, op] = first_step(problem, methods[name], op, seed=seed,
                                         gradient=iter0["gradient"][k])
            tick(f"first step {name} {op}")

    fits = {}
    for name, spec in methods.items():
        for op in OPERATORS:
            fits[name, op] = budget_fit(problem, spec, op, budget, seed)
            tick(f"{name} {op} {budget} steps")

    sweep = np.full((len(OPERATORS), len(sweep_samples), len(settings)), np.nan)
    for j, index in enumerate(sweep_samples):
        sweep_problem = InverseProblem.from_measurement(select_sample(data, int(index)))
        for k, spec in enumerate(settings.values()):
            for i, op in enumerate(OPERATORS):
                sweep[i, j, k] = sweep_centre_mass(sweep_problem, spec, op)
                tick(f"ADMM sample {index} setting {k + 1} {op}")
    if bar is not None:
        bar.close()

    ds = xr.Dataset(coords={"operator": list(OPERATORS), "y": one["y"].values,
                            "x": one["x"].values})
    for c in ("y", "x"):
        ds[c].attrs.update(units="nm", long_name=f"{c} position in the source plane")
    yx = ("operator", "y", "x")
    ds["iter0_gradient"] = (yx, np.stack(iter0["gradient"]), {
        "long_name": "dD/drho at the energy-matched uniform density (band-centre Larmor)",
        "units": "1 / density unit"})
    ds["iter0_gradient_fixed_peak"] = (yx, np.stack(iter0["fixed"]), {
        "long_name": "dD/drho with max N_pred held constant (no peak coupling P3)"})
    ds["iter0_ratio"] = ("operator", [centre_to_outer_ratio(g) for g in iter0["gradient"]],
                         {"long_name": "centre-to-outer-ring ratio of |dD/drho|"})
    ds["iter0_fixed_peak_ratio"] = ("operator", [centre_to_outer_ratio(g)
                                                 for g in iter0["fixed"]])
    peaks = [peak_location(g) for g in iter0["gradient"]]
    ds["iter0_peak_iy"] = ("operator", [p[0] for p in peaks])
    ds["iter0_peak_ix"] = ("operator", [p[1] for p in peaks])
    ds["iter0_peak_distance"] = ("operator", [distance_from_centre(p, n) for p in peaks],
                                 {"units": "pixel",
                                  "long_name": "distance of the gradient's peak from the "
                                               "grid centre"})
    ds["uniform_noise_map_margin"] = ("operator", iter0["margin"], {
        "long_name": "1 - (outer-ring mean of N_pred) / max N_pred at the uniform density"})
    ds["uniform_noise_map_peak_distance"] = ("operator", [
        distance_from_centre(p, n) for p in iter0["noise_peak"]], {"units": "pixel"})
    ds.attrs["uniform_level"] = level

    if steppable:
        ds = ds.assign_coords(update_method=steppable)
        uyx = ("update_method",) + yx
        ds["realized_update"] = (uyx, np.stack([[steps[m, op].delta for op in OPERATORS]
                                                for m in steppable]), {
            "long_name": "rho after the first solver step minus rho before (same beta)"})
        ds["filtered_gradient"] = (uyx, np.stack([[steps[m, op].filtered for op in OPERATORS]
                                                  for m in steppable]), {
            "long_name": "J_full J_stage^T dL/drho at the start (Lemma 2)"})
        ds["uniform_filtered_gradient"] = (uyx, np.stack(
            [[steps[m, op].uniform_filtered for op in OPERATORS] for m in steppable]), {
            "long_name": "G_theta = J J^T of the start applied to iter0_gradient"})
        ds["update_start"] = (("update_method", "y", "x"),
                              np.stack([steps[m, "F2"].rho_start for m in steppable]))
        for var, attr in (("realized_ratio", "delta_ratio"),
                          ("filtered_ratio", "filtered_ratio"),
                          ("stage_gradient_ratio", "stage_gradient_ratio")):
            ds[var] = (("update_method", "operator"),
                       [[getattr(steps[m, op], attr) for op in OPERATORS] for m in steppable])
        ds["uniform_filtered_ratio"] = (("update_method", "operator"), [
            [centre_to_outer_ratio(steps[m, op].uniform_filtered) for op in OPERATORS]
            for m in steppable])

    names = list(methods)
    ds = ds.assign_coords(method=names)
    ds["budget_rho"] = (("method",) + yx, np.stack([[fits[m, op].rho for op in OPERATORS]
                                                   for m in names]), {
        "long_name": f"scale-corrected density after {budget} solver steps"})
    ds["budget_centre_mass"] = (("method", "operator"), [
        [centre_mass_ratio(fits[m, op].rho) for op in OPERATORS] for m in names])
    ds["budget_runtime"] = (("method", "operator"), [
        [fits[m, op].wall_time_s for op in OPERATORS] for m in names], {"units": "s"})

    truth = "rho_true" in one
    free = [m for m in names if is_free_density(methods[m])]
    if truth and free:
        collapse = max(free, key=lambda m: centre_mass_ratio(fits[m, "F2"].rho))
        rho_c, rho_t = fits[collapse, "F2"].rho, one["rho_true"].values
        ts = np.linspace(0.0, 1.0, int(path_points))
        ds = ds.assign_coords(t=ts)
        ds["t"].attrs["long_name"] = "rho(t) = (1 - t) rho_collapse + t rho_true"
        curves = [path_losses(problem, op, rho_c, rho_t, one["larmor_true"].values, ts,
                              log_eps) for op in OPERATORS]
        ds["barrier_loss"] = (("operator", "t"), np.stack(curves),
                              {"long_name": "D along the path, true Larmor map"})
        summaries = [barrier(ts, c) for c in curves]
        for key in ("height", "relative_height", "position"):
            ds[f"barrier_{key}"] = ("operator", [s[key] for s in summaries])
        ds["barrier_monotone"] = ("operator", np.array([int(s["monotone"]) for s in summaries],
                                                       dtype=np.int8))
        ds["rho_collapse"] = (("y", "x"), rho_c)
        ds["rho_true"] = (("y", "x"), rho_t)
        ds.attrs["collapse_method"] = collapse
    else:
        ds.attrs["barrier"] = ("not computed: " + ("the measurement has no rho_true"
                                                   if not truth else
                                                   "no free-density method in the budget"))

    if settings:
        ds = ds.assign_coords(sweep_sample=np.asarray(sweep_samples, dtype=np.int64),
                              setting=list(settings))
        ds["sweep_centre_mass"] = (("operator", "sweep_sample", "setting"), sweep, {
            "long_name": "centre-mass ratio of ADMM run to termination"})

    ds.attrs.update(
        schema=SCHEMA, nvbayes_version=__version__, source=source,
        sample=-1 if sample is None else int(sample), seed=int(seed), budget_steps=int(budget),
        log_eps=float(log_eps), protocol=str(protocol), methods=",".join(names),
        rings=(f"centre disk r <= n/8, outer ring {OUTER_RING_FRACTION:g} n <= r < n/2, "
               "r from the grid centre in pixels; ratio = mean|g| disk / mean|g| ring"),
        data_fidelity="D = mean (log10(N_pred/max N_pred + eps) - log10(N_obs/max N_obs + eps))^2",
        wall_time_s=time.perf_counter() - start)
    return ds


def _pair(ds: xr.Dataset, var: str, fmt: str = "{:.3g}", **sel) -> list[str]:
    return [fmt.format(float(ds[var].sel({"operator": op, **sel}))) for op in OPERATORS]


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def diagnostics_markdown(ds: xr.Dataset) -> str:
    """The numbers of a diagnostics dataset beside the paper's, as Markdown tables."""
    n = ds.sizes["x"]
    lines = [f"# Centre-collapse diagnostics ({n} x {n}, {ds.attrs['source'] or 'in memory'}"
             f", sample {ds.attrs['sample']})", "",
             f"Rings: {ds.attrs['rings']}.  Data fidelity D with eps = {ds.attrs['log_eps']:g}; "
             f"protocol {ds.attrs.get('protocol', 'paper')}.",
             "", _row(["quantity", "F1", "F2", "paper"]), _row(["---"] * 4)]
    distance = [f"{float(ds['iter0_peak_distance'].sel(operator=op)):.1f} px "
                f"(y {int(ds['iter0_peak_iy'].sel(operator=op))}, "
                f"x {int(ds['iter0_peak_ix'].sel(operator=op))})" for op in OPERATORS]
    lines += [
        _row(["iter-0 gradient centre/outer ratio", *_pair(ds, "iter0_ratio"),
              f"{PAPER['iter0_ratio_F2']} (F2)"]),
        _row(["iter-0 gradient peak, distance from grid centre", *distance,
              "at the grid centre (F2)"]),
        _row(["same, max N_pred held fixed (window bias P2 alone)",
              *_pair(ds, "iter0_fixed_peak_ratio"), "—"]),
        _row(["uniform density: 1 − outer-ring N_pred / max N_pred",
              *_pair(ds, "uniform_noise_map_margin"), "—"]),
    ]
    if "update_method" in ds.coords:
        for m in ds["update_method"].values:
            paper = f"{PAPER['realized_ratio']}" if m == "netmy" else "—"
            lines += [
                _row([f"{m}: realized first step abs(Δρ), ratio",
                      *_pair(ds, "realized_ratio", update_method=m), paper]),
                _row([f"{m}: filtered gradient J Jᵀ ∇ρL, ratio",
                      *_pair(ds, "filtered_ratio", update_method=m), "—"]),
                _row([f"{m}: raw stage gradient ∇ρL at its start, ratio",
                      *_pair(ds, "stage_gradient_ratio", update_method=m), "—"]),
                _row([f"{m}: G_θ applied to the iter-0 gradient, ratio",
                      *_pair(ds, "uniform_filtered_ratio", update_method=m), "—"]),
            ]
    if "barrier_loss" in ds:
        cells = []
        for op in OPERATORS:
            s = ds.sel(operator=op)
            mono = ", monotone" if int(s["barrier_monotone"]) else ""
            curve = s["barrier_loss"].values
            cells.append(f"h = {float(s['barrier_height']):.3g} "
                         f"(×{float(s['barrier_relative_height']):.3f}) at t = "
                         f"{float(s['barrier_position']):.2f}{mono}; D {curve[0]:.3g} → "
                         f"{curve[-1]:.3g}, lowest at t = "
                         f"{float(ds['t'].values[int(np.argmin(curve))]):.2f}")
        lines.append(_row([f"energy barrier from {ds.attrs['collapse_method']} to the truth",
                           *cells, f"F2: h ≈ {PAPER['barrier_height_F2']} at t = "
                                   f"{PAPER['barrier_position_F2']}; F1 monotone"]))
    else:
        lines.append(_row(["energy barrier", ds.attrs.get("barrier", ""), "", ""]))
    lines += ["", f"Centre-mass ratio after {ds.attrs['budget_steps']} solver steps:", "",
              _row(["method", "F1", "F2", "paper (F2)", "s per fit (F1, F2)"]),
              _row(["---"] * 5)]
    for m in ds["method"].values:
        paper = PAPER["budget_centre_mass"].get(str(m))
        lines.append(_row([m, *_pair(ds, "budget_centre_mass", method=m),
                           "—" if paper is None else f"{paper:.3g}",
                           ", ".join(_pair(ds, "budget_runtime", "{:.1f}", method=m))]))
    if "sweep_centre_mass" in ds:
        lines += ["", f"ADMM sweep ({ds.sizes['sweep_sample']} samples × "
                      f"{ds.sizes['setting']} loss settings, run to termination), "
                      "centre-mass ratio mean ± sd:", "",
                  _row(["settings", "F1", "F2", "paper"]), _row(["---"] * 4)]
        values = ds["sweep_centre_mass"]
        groups = [("all", list(ds["setting"].values))] + [
            (f"data term {t}", [s for s in ds["setting"].values if str(s).startswith(t + "/")])
            for t in ("log_mse", "noise_map")]
        for label, settings in groups:
            cells = []
            for op in OPERATORS:
                v = values.sel(operator=op, setting=settings).values
                cells.append(f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}")
            paper = (f"{PAPER['sweep_mean']['F1']} ± {PAPER['sweep_std']['F1']} → "
                     f"{PAPER['sweep_mean']['F2']} ± {PAPER['sweep_std']['F2']}"
                     if label == "all" else "—")
            lines.append(_row([label, *cells, paper]))
    lines += ["", f"Wall time {ds.attrs['wall_time_s']:.0f} s."]
    return "\n".join(lines) + "\n"


FIGURES = ("iter0_gradient.png", "first_step.png", "energy_barrier.png", "centre_mass.png",
           "admm_sweep.png")


def write_diagnostics(ds: xr.Dataset, folder: "str | Path") -> Path:
    """Write ``diagnostics.nc``, ``diagnostics.md`` and the figures into ``folder``
    (replaced atomically: a failure leaves no partial folder)."""
    def fill(tmp: Path) -> None:
        write_netcdf(ds, tmp / DATASET)
        (tmp / TABLE).write_text(diagnostics_markdown(ds))
        save_figure(figures.plot_iter0(ds), tmp / FIGURES[0])
        if "update_method" in ds.coords:
            save_figure(figures.plot_update(ds), tmp / FIGURES[1])
        if "barrier_loss" in ds:
            save_figure(figures.plot_barrier(ds), tmp / FIGURES[2])
        save_figure(figures.plot_budget(ds, PAPER["budget_centre_mass"]), tmp / FIGURES[3])
        if "sweep_centre_mass" in ds:
            save_figure(figures.plot_sweep(ds, PAPER["sweep_mean"]).figure, tmp / FIGURES[4])

    return write_folder(folder, fill)
