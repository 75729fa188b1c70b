"""``nvbayes rucl3``: the α-RuCl3 cross-check (§5.5, appendix E.8): fit, landscape, depth,
slope, spectral (step 3), rates and simulate, each in the physical or the paper's convention."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import xarray as xr

from nvbayes.cli import Parser
from nvbayes.data.io import write_folder
from nvbayes.data.rucl3 import describe, is_synthetic, load_nv_data, write_nv_data
from nvbayes.data.rucl3_spec import Physics, load_ansatz
from nvbayes.errors import NvbayesError
from nvbayes.figures import save_figure
from nvbayes.figures.rucl3 import plot_depths, plot_landscape, plot_slope
from nvbayes.model.rucl3 import (
    depth_table,
    landscape,
    sheet_rate,
    slope_analysis,
    synthetic_data,
    synthetic_spectral,
)
from nvbayes.physics.conventions import CONVENTIONS
from nvbayes.physics.operators import OPERATORS
from nvbayes.physics.relaxation import COMPONENTS, DIAMOND_100_POLAR_DEG, nv_frequency_hz
from nvbayes.results.run import POSTERIOR
from nvbayes.results.store import replaceable_folder
from nvbayes.workflows.benchmark.plan import parse_operators
from nvbayes.workflows.rucl3 import (
    METHODS,
    fit_ansatz,
    fit_spectral,
    save_ansatz_run,
    save_spectral_run,
)

from .common import RUNS, check_seed, operator_argument, parse_numbers, warn

DESCRIPTION = ("The paper's α-RuCl3 cross-check (§5.5, appendix E.8) on per-NV data (.csv or "
               ".nc; see nvbayes.data.rucl3).  DATA defaults to the shipped SYNTHETIC set, "
               "generated from the model at the published constants.  Every step runs in "
               "the physical convention (Fermi's golden rule, transverse noise; default) or "
               "the paper's (Gamma_F2 = K d^-4, Gamma_F1 = K d^-2).")


def add_arguments(p) -> None:
    steps = p.add_subparsers(dest="step", required=True, parser_class=Parser)
    fit = steps.add_parser("fit", help="sample the Gaussian-ansatz posterior (NUTS or Laplace)",
                           description="Fit log10 A, sigma_g and one depth per NV (SRIM "
                                       "prior) to Gamma_Ru; write a run folder.")
    _inputs(fit)
    operator_argument(fit, "operator of the rates")
    fit.add_argument("--method", default="nuts", choices=METHODS, help="nuts or laplace (nuts)")
    _sampler(fit, "draws per chain (NUTS 500, Laplace 2000)")
    land = steps.add_parser("landscape", help="step 4: log-MSE landscape and its conditioning",
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
    spectral = steps.add_parser(
        "spectral", help="step 3: tau_c and the bath linewidth from one NV's field-dependent "
                         "rates (NUTS)",
        description="Fit Gamma(B) = Gamma_1 L(B)/L(B_1), L = tau_c/(1 + w^2 tau_c^2), to one "
                    "NV's rates at several fields (.csv/.nc with a 'measurement' column; "
                    "default: the shipped SYNTHETIC set); the linewidth is 1/tau_c.")
    _inputs(spectral)
    _sampler(spectral, "draws per chain (500)")
    rates = steps.add_parser("rates", help="print the flake's F2 and F1 rates at a depth",
                             description="The step-1 flake's relaxation rates at one depth "
                                         "under both operators.")
    rates.add_argument("--depth-nm", type=float, required=True, help="NV depth in nm")
    rates.add_argument("--field-gauss", type=float, default=0.0, help="axial field in G (0)")
    _settings(rates)
    sim = steps.add_parser("simulate", help="write a synthetic per-NV or step-3 set (.csv or .nc)")
    sim.add_argument("--simulator", type=str.upper, choices=tuple(OPERATORS),
                     help="operator generating the rates (toml: F2)")
    sim.add_argument("--data-seed", type=int, help="seed of the synthetic set (toml: 0)")
    sim.add_argument("--spectral", action="store_true",
                     help="write a step-3 set (one NV at several fields) instead")
    sim.add_argument("--fields", help="fields of a step-3 set in G, comma-separated "
                                      "(default: the paper's 2,313,383.5)")
    _settings(sim)
    sim.add_argument("--out", type=Path, required=True, help="output .csv or .nc")


def run(args) -> None:
    STEPS[args.step](args)


def _inputs(p, operators: bool = False) -> None:
    p.add_argument("data", type=Path, nargs="?",
                   help="per-NV .csv or .nc (default: the shipped SYNTHETIC set)")
    if operators:
        p.add_argument("--operators", default="F2,F1", help="operators (F2,F1)")
    _settings(p)
    p.add_argument("--out", type=Path, help="output folder (default under runs/)")


def _sampler(p, draws_help: str) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of the fit (0)")
    p.add_argument("--chains", type=int, help="NUTS chains (models/rucl3.toml: 4)")
    p.add_argument("--warmup", type=int, help="NUTS warm-up steps per chain (500)")
    p.add_argument("--draws", type=int, help=draws_help)


def _settings(p) -> None:
    """The spec, the convention and the physical convention's NV and flake."""
    p.add_argument("--spec", default="rucl3", help="ansatz file (models/rucl3.toml)")
    p.add_argument("--convention", default="physical", type=str.lower, choices=CONVENTIONS,
                   help="physical: Fermi's golden rule with the field transverse to the NV "
                        "(default); paper: Gamma_F2 = K d^-4, Gamma_F1 = K d^-2, "
                        "K = 54.0 * 14.5^4 s^-1 nm^4, which reproduces the paper's numbers")
    g = p.add_argument_group("physical convention (defaults: [physics] of the spec)")
    g.add_argument("--noise", type=str.lower, choices=COMPONENTS,
                   help="field component that relaxes the NV: transverse (T1), or axial for "
                        "comparison")
    g.add_argument("--nv-polar-deg", type=float,
                   help=f"NV axis angle from z in degrees (0; (100) diamond: "
                        f"{DIAMOND_100_POLAR_DEG:.4f})")
    g.add_argument("--nv-azimuth-deg", type=float, help="NV axis azimuth in degrees (0)")
    layers = g.add_mutually_exclusive_group()
    layers.add_argument("--layers", type=int, help="layers of the flake (1)")
    layers.add_argument("--thickness-nm", type=float,
                        help="flake thickness in nm: thickness / spacing layers (rounded)")
    g.add_argument("--layer-spacing-nm", type=float, help="interlayer distance in nm (0.57)")
    g.add_argument("--layer-densities", help="spin density of each layer in m^-2, nearest "
                                             "first, comma-separated (default: the "
                                             "crystallographic density in every layer)")


def _spec(args):
    """The ansatz spec with the command line's physics settings."""
    spec = load_ansatz(args.spec)
    ph = spec.physics
    changes = {k: getattr(args, k) for k in ("noise", "nv_polar_deg", "nv_azimuth_deg",
                                              "layers", "layer_spacing_nm")
               if getattr(args, k, None) is not None}
    if getattr(args, "thickness_nm", None) is not None:
        spacing = changes.get("layer_spacing_nm", ph.layer_spacing_nm)
        if not args.thickness_nm >= spacing:
            raise NvbayesError(f"--thickness-nm {args.thickness_nm:g} is thinner than one "
                               f"layer ({spacing:g} nm)", "give the flake's thickness in nm")
        changes["layers"] = int(round(args.thickness_nm / spacing))
    if getattr(args, "layer_densities", None):
        densities = parse_numbers(args.layer_densities, "--layer-densities", "6.45e18,6.45e18")
        changes["layer_densities_m2"] = densities
        changes.setdefault("layers", len(densities))
    elif "layers" in changes and ph.layer_densities_m2:
        changes["layer_densities_m2"] = ()
    if changes:
        spec = dataclasses.replace(spec, physics=Physics(**(dataclasses.asdict(ph) | changes)))
    return spec


def _read(args, label: str = "nv"):
    """``(spec, data, tag)`` of a step, announcing the data and the convention."""
    spec = _spec(args)
    data = load_nv_data(args.data, label)
    print(f"data: {describe(data)}")
    print(f"rates: {spec.rates(args.convention).describe()}")
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
                                                f"{args.convention}-seed{args.seed}", POSTERIOR)
    run = fit_ansatz(spec, data, args.operator, args.method, seed=args.seed,
                     chains=args.chains, warmup=args.warmup, draws=args.draws,
                     convention=args.convention)
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
    spec, data, ops, out = _open_step(args, "landscape")
    land = xr.concat([landscape(spec, data, op, args.grid, args.depths, args.convention)
                      for op in ops], dim="operator", combine_attrs="drop_conflicts")
    print(f"depths: {land['depth'].attrs['source']}")
    for op in ops:
        one = land.sel(operator=op)
        a, s = one["minimum"].values
        where = "" if int(one["minimum_interior"]) else " (on the prior box's edge)"
        print(f"{op}: minimum log10 A = {a:.3f}, sigma_g = {s:.2f} nm{where}, L = "
              f"{float(one['minimum_loss']):.4g}")
        for axes, label in (("log", "(log10 A, log10 sigma_g)"),
                            ("paper", "the paper's axes (log10 A, sigma_g/nm)")):
            h = one.sel(axes=axes)
            v = h["soft_direction"].values
            if int(h["indefinite"]):
                text = ("not a minimum (the Hessian has a negative eigenvalue): no condition "
                        "number")
            elif int(h["rank_deficient"]):
                text = (f"rank-deficient (lambda_min/lambda_max = "
                        f"{h['eigenvalues'].values[0] / h['eigenvalues'].values[1]:.1e}, at "
                        f"round-off); null direction ({v[0]:+.3f}, {v[1]:+.3f})")
            else:
                text = (f"condition number {float(h['condition_number']):,.0f}; softest "
                        f"direction ({v[0]:+.3f}, {v[1]:+.3f})")
            print(f"    {label}: {text}")
    _write(out, "landscape", land, plot_landscape(land, is_synthetic(data)))


def run_depth(args) -> None:
    spec, data, ops, out = _open_step(args, "depth")
    table = depth_table(spec, data, ops, args.convention)
    lo, hi = spec.protocol.depth_window_nm
    if args.convention == "physical":
        print(f"sheet: {spec.constants.spin_density_m2:g} m^-2 per layer, "
              f"{spec.constants.moment_bohr:g} mu_B, radius "
              f"{spec.constants.sheet_radius_nm:g} nm")
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
    spec, data, ops, out = _open_step(args, "slope")
    slopes = slope_analysis(spec, data, ops, args.convention)
    a = slopes.attrs
    print(f"alpha = {a['alpha']:g} +- {a['alpha_err']:g}; measured slope b = "
          f"{a['measured_slope']:.3f} +- {a['measured_slope_err']:.3f} ({a['measured_source']})")
    for op in ops:
        one = slopes.sel(operator=op)
        print(f"{op}: paper exponent {float(one['exponent_paper']):g} -> b_pred = "
              f"{float(one['slope_paper']):.2f} +- {float(one['slope_paper_err']):.2f} "
              f"(z = {float(one['z_paper']):+.2f}); the {args.convention} flake's exponent at "
              f"{a['exponent_depth_nm']:g} nm {float(one['exponent_model']):.3f} -> "
              f"{float(one['slope_model']):.2f} (z = {float(one['z_model']):+.2f})")
    _write(out, "slope", slopes, plot_slope(data, slopes, is_synthetic(data)).figure)


def _open_step(args, step: str):
    """``(spec, data, operators, out)`` of step 1, 2 or 4; ``out`` holds ``STEP.nc``."""
    spec, data, tag = _read(args)
    ops = parse_operators(args.operators)
    out = replaceable_folder(args.out or RUNS / f"rucl3-{step}-{tag}-{args.convention}",
                             f"{step}.nc")
    return spec, data, ops, out


def run_spectral(args) -> None:
    check_seed(args.seed)
    spec, data, tag = _read(args, "measurement")
    out = replaceable_folder(args.out or RUNS / f"rucl3-spectral-{tag}-{args.convention}-"
                                                f"seed{args.seed}", POSTERIOR)
    run = fit_spectral(spec, data, seed=args.seed, chains=args.chains, warmup=args.warmup,
                       draws=args.draws, convention=args.convention)
    for message in run.messages:
        warn(message)
    folder = save_spectral_run(run, out)
    print("step 3 is the same in both conventions: the Lorentzian does not depend on them")
    cols = ["mean", "sd", "hdi_5%", "hdi_95%", "ess_bulk", "r_hat"]
    print(run.summary[cols].to_string())
    post = run.idata.posterior
    for name, unit in (("tau_c_ns", "ns"), ("linewidth", "1e9 s^-1 (the paper's GHz)")):
        lo, mid, hi = np.quantile(post[name].values, [0.05, 0.5, 0.95])
        print(f"{name}: median {mid:.3g}, 90 % interval {lo:.3g} to {hi:.3g} {unit}")
    print(f"wall time: {run.config['run']['wall_time_s']:.1f} s")
    print(f"run: {folder}")


def run_rates(args) -> None:
    spec = _spec(args)
    if not args.depth_nm > 0:
        raise NvbayesError(f"--depth-nm must be positive, got {args.depth_nm}",
                           "give the NV depth in nm")
    freq = float(nv_frequency_hz(args.field_gauss)) / 1e9
    print(spec.rates(args.convention).describe())
    note = " (the paper's rates do not depend on it)" if args.convention == "paper" else ""
    print(f"depth {args.depth_nm:g} nm, field {args.field_gauss:g} G (f = {freq:.4f} GHz)"
          f"{note}")
    rates = {op: float(sheet_rate(spec, args.depth_nm, op, args.field_gauss, args.convention))
             for op in ("F2", "F1")}
    for op, value in rates.items():
        print(f"{op}: {value:.6g} s^-1")
    print(f"F1/F2 = {rates['F1'] / rates['F2']:.6g}")


def run_simulate(args) -> None:
    if args.out.suffix.lower() not in (".csv", ".nc"):
        raise NvbayesError(f"--out {args.out} is neither .csv nor .nc", "name a .csv or .nc")
    spec = _spec(args)
    if args.spectral:
        if args.convention == "paper":
            raise NvbayesError("the paper's rates do not depend on the field, so they make no "
                               "step-3 set", "drop --convention paper (step 3 is physical)")
        fields = parse_numbers(args.fields, "--fields", "2,313,383.5,900") if args.fields else None
        data = synthetic_spectral(spec, args.data_seed, fields)
    else:
        if args.fields:
            raise NvbayesError("--fields is for a step-3 set", "add --spectral, or drop it")
        data = synthetic_data(spec, args.simulator, args.data_seed, args.convention)
    write_nv_data(data, args.out)
    print(f"data: {describe(data)}")
    print(f"rates: {spec.rates(data.attrs['convention']).describe()}")
    print(args.out)


#: The steps of ``nvbayes rucl3``.
STEPS = {"fit": run_fit, "landscape": run_landscape, "depth": run_depth, "slope": run_slope,
         "spectral": run_spectral, "rates": run_rates, "simulate": run_simulate}
