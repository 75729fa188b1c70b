"""``nvbayes rucl3``: the α-RuCl3 cross-check (§5.5, appendix E.8): fit, landscape, depth,
slope and simulate."""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from nvbayes.cli import Parser
from nvbayes.data.io import write_folder
from nvbayes.data.rucl3 import describe, is_synthetic, load_nv_data, write_nv_data
from nvbayes.data.rucl3_spec import load_ansatz
from nvbayes.errors import NvbayesError
from nvbayes.figures import save_figure
from nvbayes.figures.rucl3 import plot_depths, plot_landscape, plot_slope
from nvbayes.model.rucl3 import depth_table, landscape, slope_analysis, synthetic_data
from nvbayes.physics.operators import OPERATORS
from nvbayes.results.run import POSTERIOR
from nvbayes.results.store import replaceable_folder
from nvbayes.workflows.benchmark.plan import parse_operators
from nvbayes.workflows.rucl3 import METHODS, fit_ansatz, save_ansatz_run

from .common import RUNS, check_seed, operator_argument, warn

DESCRIPTION = ("The paper's α-RuCl3 cross-check (§5.5, appendix E.8) on per-NV data (.csv or "
               ".nc; see nvbayes.data.rucl3).  DATA defaults to the shipped SYNTHETIC set, "
               "generated from the model at the published constants.")


def add_arguments(p) -> None:
    steps = p.add_subparsers(dest="step", required=True, parser_class=Parser)
    fit = steps.add_parser("fit", help="sample the Gaussian-ansatz posterior (NUTS or Laplace)",
                           description="Fit log10 A, sigma_g and one depth per NV (SRIM "
                                       "prior) to Gamma_Ru; write a run folder.")
    _inputs(fit)
    operator_argument(fit, "operator of the rates")
    fit.add_argument("--method", default="nuts", choices=METHODS, help="nuts or laplace (nuts)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the fit (0)")
    fit.add_argument("--chains", type=int, help="NUTS chains (models/rucl3.toml: 4)")
    fit.add_argument("--warmup", type=int, help="NUTS warm-up steps per chain (500)")
    fit.add_argument("--draws", type=int, help="draws per chain (NUTS 500, Laplace 2000)")
    land = steps.add_parser("landscape", help="log-MSE landscape and Hessian condition number",
                            description="Step 4: L(log10 A, sigma_g) on a grid, its minimum "
                                        "and the condition number of its Hessian there.")
    _inputs(land, operators=True)
    land.add_argument("--grid", type=int, help="grid points per axis (90)")
    land.add_argument("--depths", default="auto", choices=("auto", "true"),
                      help="fixed NV depths: auto = depth_nm of the data, else from the "
                           "internal rates (Gamma_int ~ d^-alpha, geometric mean at the SRIM "
                           "mean); true = the true depths of a synthetic set")
    depth = steps.add_parser("depth", help="step 1: implied depth per NV under each operator")
    _inputs(depth, operators=True)
    slope = steps.add_parser("slope", help="step 2: predicted internal-rate slopes 4/α and 2/α")
    _inputs(slope, operators=True)
    sim = steps.add_parser("simulate", help="write a synthetic per-NV set (.csv or .nc)")
    sim.add_argument("--simulator", type=str.upper, choices=tuple(OPERATORS),
                     help="operator generating the rates (toml: F2)")
    sim.add_argument("--data-seed", type=int, help="seed of the synthetic set (toml: 0)")
    sim.add_argument("--spec", default="rucl3", help="ansatz file (models/rucl3.toml)")
    sim.add_argument("--out", type=Path, required=True, help="output .csv or .nc")


def run(args) -> None:
    STEPS[args.step](args)


def _inputs(p, operators: bool = False) -> None:
    p.add_argument("data", type=Path, nargs="?",
                   help="per-NV .csv or .nc (default: the shipped SYNTHETIC set)")
    if operators:
        p.add_argument("--operators", default="F2,F1", help="operators (F2,F1)")
    p.add_argument("--spec", default="rucl3", help="ansatz file (models/rucl3.toml)")
    p.add_argument("--out", type=Path, help="output folder (default under runs/)")


def _read(args):
    """``(spec, data, tag)`` of a step, announcing synthetic data."""
    spec = load_ansatz(args.spec)
    data = load_nv_data(args.data)
    print(f"data: {describe(data)}")
    return spec, data, args.data.stem if args.data is not None else "synthetic"


def _write(out: Path, name: str, dataset: xr.Dataset, figure) -> None:
    """``NAME.nc`` and the figure ``NAME.png`` in the folder ``out``, atomically."""
    def fill(tmp: Path) -> None:
        dataset.to_netcdf(tmp / f"{name}.nc", engine="netcdf4")
        save_figure(figure, tmp / f"{name}.png")

    write_folder(out, fill)
    print(f"folder: {out}")


def run_fit(args) -> None:
    check_seed(args.seed)
    spec, data, tag = _read(args)
    out = replaceable_folder(args.out or RUNS / f"rucl3-{tag}-{args.operator}-{args.method}-"
                                                f"seed{args.seed}", POSTERIOR)
    run = fit_ansatz(spec, data, args.operator, args.method, seed=args.seed,
                     chains=args.chains, warmup=args.warmup, draws=args.draws)
    for message in run.messages:
        warn(message)
    folder = save_ansatz_run(run, out)
    cols = [c for c in ("mean", "sd", "hdi_5%", "hdi_95%", "ess_bulk", "r_hat")
            if c in run.summary.columns]
    print(run.summary[cols].to_string())
    if run.method == "nuts":
        div = int(run.idata.sample_stats["diverging"].sum())
        print(f"divergences: {div}; max R-hat {float(run.summary['r_hat'].max()):.3f}; "
              f"min ESS (bulk) {float(run.summary['ess_bulk'].min()):.0f}")
    else:
        condition = run.tables["laplace"].attrs["condition_number"]
        print(f"Laplace: Hessian condition number {condition:.4g} (unconstrained coordinates)")
    print(f"wall time: {run.config['run']['wall_time_s']:.1f} s")
    print(f"run: {folder}")


def run_landscape(args) -> None:
    spec, data, tag = _read(args)
    ops = parse_operators(args.operators)
    out = replaceable_folder(args.out or RUNS / f"rucl3-landscape-{tag}", "landscape.nc")
    land = xr.concat([landscape(spec, data, op, args.grid, args.depths) for op in ops],
                     dim="operator", combine_attrs="drop_conflicts")
    print(f"depths: {land['depth'].attrs['source']}")
    for op in ops:
        one = land.sel(operator=op)
        a, s = one["minimum"].values
        where = "" if int(one["minimum_interior"]) else " (on the prior box's edge)"
        print(f"{op}: minimum log10 A = {a:.3f}, sigma_g = {s:.2f} nm{where}, L = "
              f"{float(one['minimum_loss']):.4g}, condition number "
              f"{float(one['condition_number']):,.0f} (log10 A, sigma_g/nm) and "
              f"{float(one['condition_number_log']):,.0f} (log10 A, log10 sigma_g)")
    _write(out, "landscape", land, plot_landscape(land, is_synthetic(data)))


def run_depth(args) -> None:
    spec, data, tag = _read(args)
    ops = parse_operators(args.operators)
    out = replaceable_folder(args.out or RUNS / f"rucl3-depth-{tag}", "depth.nc")
    table = depth_table(spec, data, ops)
    lo, hi = spec.protocol.depth_window_nm
    print(f"sheet: {spec.constants.spin_density_m2:g} m^-2, {spec.constants.moment_bohr:g} "
          f"mu_B, radius {spec.constants.sheet_radius_nm:g} nm")
    print("NV       Gamma_Ru [s^-1]  " + "  ".join(f"d*({op}) [nm]" for op in ops))
    for i, label in enumerate(table["nv"].values):
        cells = []
        for op in ops:
            d = float(table["implied_depth"].sel(operator=op).values[i])
            cells.append(f"{'no solution' if d != d else f'{d:.2f}':>12}")
        print(f"{label:<8} {float(table['gamma_ru'].values[i]):>15.4g}  " + "  ".join(cells))
    for op in ops:
        one = table.sel(operator=op)
        print(f"{op}: {int(one['n_in_window'])}/{table.sizes['nv']} NVs in [{lo:g}, {hi:g}] nm, "
              f"{int(one['n_solved'])} solved; sheet rate at {spec.protocol.point_depth_nm:g} nm "
              f"= {float(one['point_rate']):.4g} s^-1")
    if "F1" in ops and "F2" in ops:
        ratio = float(table["point_rate"].sel(operator="F1") / table["point_rate"].sel(
            operator="F2"))
        paper = spec.paper.rate_f1_per_s / spec.paper.rate_f2_per_s
        print(f"point ratio F1/F2 = {ratio:.4g} (paper: {spec.paper.rate_f1_per_s:g} / "
              f"{spec.paper.rate_f2_per_s:g} = {paper:.4g})")
    _write(out, "depth", table, plot_depths(spec, table, is_synthetic(data)).figure)


def run_slope(args) -> None:
    spec, data, tag = _read(args)
    ops = parse_operators(args.operators)
    out = replaceable_folder(args.out or RUNS / f"rucl3-slope-{tag}", "slope.nc")
    slopes = slope_analysis(spec, data, ops)
    a = slopes.attrs
    print(f"alpha = {a['alpha']:g} +- {a['alpha_err']:g}; measured slope b = "
          f"{a['measured_slope']:.3f} +- {a['measured_slope_err']:.3f} ({a['measured_source']})")
    for op in ops:
        one = slopes.sel(operator=op)
        print(f"{op}: paper exponent {float(one['exponent_paper']):g} -> b_pred = "
              f"{float(one['slope_paper']):.2f} +- {float(one['slope_paper_err']):.2f} "
              f"(z = {float(one['z_paper']):+.2f}); this model's sheet exponent at "
              f"{a['exponent_depth_nm']:g} nm {float(one['exponent_model']):.3f} -> "
              f"{float(one['slope_model']):.2f} (z = {float(one['z_model']):+.2f})")
    _write(out, "slope", slopes, plot_slope(data, slopes, is_synthetic(data)).figure)


def run_simulate(args) -> None:
    if args.out.suffix.lower() not in (".csv", ".nc"):
        raise NvbayesError(f"--out {args.out} is neither .csv nor .nc", "name a .csv or .nc")
    data = synthetic_data(load_ansatz(args.spec), args.simulator, args.data_seed)
    write_nv_data(data, args.out)
    print(f"data: {describe(data)}")
    print(args.out)


#: The steps of ``nvbayes rucl3``.
STEPS = {"fit": run_fit, "landscape": run_landscape, "depth": run_depth, "slope": run_slope,
         "simulate": run_simulate}
