"""The ``nvbayes`` command line.

Every user mistake ends in one line on standard error, ``nvbayes: error: <problem>; <fix>``,
exit status 2, and no output file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .benchmark.ablation import SWEEPS, TABLE3_METRICS
from .benchmark.plan import DEFAULT_METHODS, PRESETS
from .diagnostics.budget import BUDGET_METHODS
from .errors import NvbayesError
from .physics.geometry import GRID, SPACING_NM, STANDOFF_NM, Grid
from .physics.lorentzian import LARMOR_BAND_GHZ, LINEWIDTH_GHZ, N_FREQ, READOUTS
from .physics.noise_map import LOG_EPS
from .scenes import NOISE
from .spec import DEFAULT_PROTOCOL, PROTOCOLS

RUNS = Path("runs")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line (exit status 2)."""

    def error(self, message):
        self.exit(2, f"nvbayes: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nvbayes", description="Probabilistic inversion of NV noise spectra.")
    parser.add_argument("--version", action="version", version=f"nvbayes {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sim = sub.add_parser("simulate", help="simulate measurements of synthetic scenes",
                         description="Simulate one measurement (--scene) or a data set "
                                     "(--classes with --per-class or --samples).")
    which = sim.add_mutually_exclusive_group(required=True)
    which.add_argument("--scene", help="one scene class, e.g. medium/far")
    which.add_argument("--classes", help="'all' (the paper's eight) or a comma list")
    count = sim.add_mutually_exclusive_group()
    count.add_argument("--per-class", type=int, help="samples per class (with --classes)")
    count.add_argument("--samples", type=int, help="samples in total, cycling the classes")
    sim.add_argument("--seed", type=int, default=0, help="seed (sample i uses seed + i)")
    sim.add_argument("--operator", default="F3", help="F1, F2 or F3 (default F3)")
    sim.add_argument("--noise", type=float, default=NOISE,
                     help=f"noise std as a fraction of the dynamic range (default {NOISE})")
    sim.add_argument("--grid", type=int, default=GRID, help=f"pixels per side ({GRID})")
    sim.add_argument("--spacing", type=float, default=SPACING_NM,
                     help=f"pixel spacing, nm ({SPACING_NM:g})")
    sim.add_argument("--standoff", type=float, default=STANDOFF_NM,
                     help=f"standoff z0, nm ({STANDOFF_NM:g})")
    sim.add_argument("--linewidth", type=float, default=LINEWIDTH_GHZ,
                     help=f"Lorentzian linewidth, GHz ({LINEWIDTH_GHZ:g})")
    sim.add_argument("--band", type=float, nargs=2, default=LARMOR_BAND_GHZ,
                     metavar=("LOW", "HIGH"), help="Larmor band, GHz (1.5 2.5)")
    sim.add_argument("--freqs", type=int, default=N_FREQ,
                     help=f"number of readout frequencies ({N_FREQ})")
    sim.add_argument("--units", default="normalized", choices=("normalized", "si"))
    _readout_argument(sim)
    sim.add_argument("--out", type=Path, help="output .nc (default under runs/)")
    sim.set_defaults(handler=_simulate)

    fit = sub.add_parser("fit", help="fit a measurement and write a run folder",
                         description="Fit one measurement with a model of models/ and write "
                                     "the run folder (posterior.nc, history.nc, metrics.nc, "
                                     "config.toml, reconstruction.png).  On a data set "
                                     "without --sample, fit every sample (or --samples), "
                                     "--batch at a time in one optimization loop, into one "
                                     "folder holding a run folder per sample and fits.csv.")
    fit.add_argument("data", type=Path, help="measurement .nc file")
    fit.add_argument("--model", default="netmy",
                     help="model name in models/ (netmy, netmy-fast, tikhonov, admm, lbfgs, "
                          "gsplat, deepdecoder) or a .toml path")
    fit.add_argument("--method", default="map",
                     help="map; svi (neural-field variational posterior), laplace (MAP, then "
                          "the exact pixel Hessian) or nuts (free grid up to 16x16) (map)")
    fit.add_argument("--draws", type=int,
                     help="posterior draws: svi and laplace 200, nuts 300 per chain")
    fit.add_argument("--chains", type=int, default=2, help="NUTS chains (2)")
    fit.add_argument("--warmup", type=int, default=1000, help="NUTS warm-up per chain (1000)")
    fit.add_argument("--operator", default="F2", help="likelihood operator, F1 or F2 (F2)")
    fit.add_argument("--sample", type=int, help="sample index in a data set")
    fit.add_argument("--samples", help="samples of a data set to fit, e.g. 0-7 or 1,4,9 "
                                       "(default: all)")
    fit.add_argument("--batch", type=int, default=8,
                     help="measurements per optimization loop when fitting several (8)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the fit (0)")
    fit.add_argument("--device", default="cpu", help="cpu or cuda (cpu)")
    fit.add_argument("--precision", default="fp32",
                     help="fp32, or bf16: the neural field's MLP in mixed precision (fp32)")
    _protocol_argument(fit)
    fit.add_argument("--out", type=Path, help="run folder (default runs/<data>-<model>-...)")
    fit.set_defaults(handler=_fit)

    cal = sub.add_parser(
        "calibrate", help="coverage of credible intervals on seeded synthetic scenes",
        description="Simulate seeded scenes, fit each with the sampling methods and measure how "
                    "often the central credible intervals of each source's position and "
                    "amplitude hold the truth.  Writes coverage.nc, coverage.md and "
                    "coverage.png; finished fits are kept in cells/, so rerunning the same "
                    "command resumes.")
    cal.add_argument("--methods", default="svi,laplace",
                     help="comma list of svi, laplace, nuts (svi,laplace; nuts needs --grid "
                          "16 or less)")
    cal.add_argument("--scenes", type=int, default=32, help="number of scenes (32)")
    cal.add_argument("--classes", default="few/far,medium/far",
                     help="scene classes, cycled (few/far,medium/far)")
    cal.add_argument("--grid", type=int, default=32, help="pixels per side (32)")
    cal.add_argument("--model", default="netmy-fast", help="model of models/ (netmy-fast)")
    cal.add_argument("--operator", default="F2", help="inversion operator, F1 or F2 (F2)")
    cal.add_argument("--simulator", default="F3",
                     help="operator that simulates the scenes: F3, or F2/F1 for a matched-model "
                          "control (F3)")
    cal.add_argument("--noise", type=float, default=NOISE, help=f"sensor noise ({NOISE})")
    cal.add_argument("--seed", type=int, default=0, help="seed of the first scene (0)")
    cal.add_argument("--level", type=float, default=0.9, help="nominal credible level (0.9)")
    cal.add_argument("--radius", type=float, default=2.0,
                     help="disc radius around each source, in standoffs (2)")
    cal.add_argument("--draws", type=int, default=200,
                     help="draws per fit (svi, laplace; per chain for nuts) (200)")
    cal.add_argument("--chains", type=int, default=2, help="NUTS chains (2)")
    cal.add_argument("--warmup", type=int, default=1000, help="NUTS warm-up per chain (1000)")
    cal.add_argument("--out", type=Path, help="output folder (default runs/calibration-...)")
    cal.set_defaults(handler=_calibrate)

    bench = sub.add_parser(
        "benchmark", help="methods x operators x samples x seeds, resumable",
        description="The paper's benchmark protocol (Tables 1 and 2): fit every sample of a "
                    "data set with each method under each inversion operator and seed; write "
                    "results.nc, summary.md and figures to --out.  Cross-fidelity by default "
                    "(data simulated by F3); --data-operator F1|F2 gives the matched-operator "
                    "table.  Rerunning with the same --out computes only the missing cells.")
    _data_arguments(bench)
    bench.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                       help="comma list: netmy (follows --preset), tikhonov, admm, lbfgs, "
                            "gsplat, deepdecoder, or .toml paths (default "
                            f"{','.join(DEFAULT_METHODS)})")
    bench.add_argument("--operators", default="F1,F2", help="inversion operators (F1,F2)")
    _run_arguments(bench)
    bench.set_defaults(handler=_benchmark)

    ablate = sub.add_parser(
        "ablate", help="NeTMY ablations (Table 3) and hyperparameter sweeps (Table 10)",
        description="Cumulative ablation of the NeTMY preset (full, -tv, -annealed-pe, -pe, "
                    "-multiscale, -l1, -gate, -rds; density MSE and masked SSIM as in the "
                    "paper's Table 3), or with --sweep one axis of Table 10 (lr, width, "
                    "octaves), through the benchmark machinery (resumable, Dask).")
    _data_arguments(ablate)
    kind = ablate.add_mutually_exclusive_group()
    kind.add_argument("--sweep", choices=sorted(SWEEPS),
                      help="sweep one axis instead of the cumulative ablation")
    kind.add_argument("--deviations", action="store_true",
                      help="the robust protocol against the paper's, one deviation at a time "
                           "(paper, robust, and robust less each setting)")
    ablate.add_argument("--values", help="comma list of values for --sweep (default: the "
                                         "paper's grid)")
    ablate.add_argument("--operators", default="F2", help="inversion operators (F2)")
    ablate.add_argument("--model", help="NeTMY model to ablate, a name or .toml path "
                                        "(default: the --preset's netmy)")
    _run_arguments(ablate)
    ablate.set_defaults(handler=_ablate)

    diag = sub.add_parser(
        "diagnose", help="centre-collapse mechanism: iter-0 gradient, first step, barrier",
        description="The optimization-geometry diagnostics of the paper's section 5.3 and "
                    "appendix E.5 on one measurement, under F1 and F2: the iter-0 gradient "
                    "of the data fidelity at a uniform density, the first solver step of the "
                    "parameterized methods and its filtered gradient J J^T dL/drho, the "
                    "energy barrier from a centre-collapsed iterate to the truth, the "
                    "centre-mass ratio of every method after --budget steps, and the ADMM "
                    "sweep (samples x 8 loss settings).  Writes diagnostics.nc, "
                    "diagnostics.md and figures to a run folder.")
    diag.add_argument("data", type=Path, help="measurement .nc file (rho_true for the barrier)")
    diag.add_argument("--sample", type=int,
                      help="sample of a data set to diagnose (default 0)")
    diag.add_argument("--methods", default=",".join(BUDGET_METHODS),
                      help="methods of the fixed-budget comparison: netmy (follows --preset), "
                           "tikhonov, admm, lbfgs, gsplat, deepdecoder or .toml paths "
                           f"(default {','.join(BUDGET_METHODS)})")
    diag.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                      help="NeTMY preset: paper = models/netmy.toml (default), fast = "
                           "models/netmy-fast.toml")
    diag.add_argument("--budget", type=int, default=200,
                      help="solver steps of every method in the comparison (200)")
    diag.add_argument("--sweep-samples",
                      help="samples for the ADMM sweep, e.g. 0-3, or 'none' (default: the "
                           "first 4 of the file)")
    diag.add_argument("--seed", type=int, default=0, help="seed of the fits (0)")
    diag.add_argument("--log-eps", type=float,
                      help=f"epsilon of the data fidelity's log map (default: {LOG_EPS:g}, the "
                           "paper's, under --protocol paper; the noise floor under robust)")
    _protocol_argument(diag)
    diag.add_argument("--out", type=Path,
                      help="run folder (default runs/diagnose-<data>[-sampleK])")
    diag.set_defaults(handler=_diagnose)

    rucl3 = sub.add_parser(
        "rucl3", help="α-RuCl3 relaxometry: Gaussian-ansatz HMC, depths, slopes, landscape",
        description="The paper's α-RuCl3 cross-check (§5.5, appendix E.8) on per-NV data "
                    "(.csv or .nc; see nvbayes.rucl3.data).  DATA defaults to the shipped "
                    "SYNTHETIC set, generated from the model at the published constants.")
    steps = rucl3.add_subparsers(dest="step", required=True, parser_class=_Parser)
    rfit = steps.add_parser("fit", help="sample the Gaussian-ansatz posterior (NUTS or Laplace)",
                            description="Fit log10 A, sigma_g and one depth per NV (SRIM "
                                        "prior) to Gamma_Ru; write a run folder.")
    _rucl3_arguments(rfit)
    rfit.add_argument("--operator", default="F2", help="F1 or F2 (F2)")
    rfit.add_argument("--method", default="nuts", help="nuts or laplace (nuts)")
    rfit.add_argument("--seed", type=int, default=0, help="seed (0)")
    rfit.add_argument("--chains", type=int, help="NUTS chains (models/rucl3.toml: 4)")
    rfit.add_argument("--warmup", type=int, help="NUTS warm-up steps per chain (500)")
    rfit.add_argument("--draws", type=int, help="draws per chain (NUTS 500, Laplace 2000)")
    rfit.set_defaults(handler=_rucl3_fit)
    land = steps.add_parser("landscape", help="log-MSE landscape and Hessian condition number",
                            description="Step 4: L(log10 A, sigma_g) on a grid, its minimum "
                                        "and the condition number of its Hessian there.")
    _rucl3_arguments(land, operators=True)
    land.add_argument("--grid", type=int, help="grid points per axis (90)")
    land.add_argument("--depths", default="auto", choices=("auto", "true"),
                      help="fixed NV depths: auto = depth_nm of the data, else from the "
                           "internal rates (Gamma_int ~ d^-alpha, geometric mean at the SRIM "
                           "mean); true = the true depths of a synthetic set")
    land.set_defaults(handler=_rucl3_landscape)
    depth = steps.add_parser("depth", help="step 1: implied depth per NV under each operator")
    _rucl3_arguments(depth, operators=True)
    depth.set_defaults(handler=_rucl3_depth)
    slope = steps.add_parser("slope", help="step 2: predicted internal-rate slopes 4/α and 2/α")
    _rucl3_arguments(slope, operators=True)
    slope.set_defaults(handler=_rucl3_slope)
    rsim = steps.add_parser("simulate", help="write a synthetic per-NV set (.csv or .nc)")
    rsim.add_argument("--operator", help="operator generating the rates (toml: F2)")
    rsim.add_argument("--seed", type=int, help="seed (toml: 0)")
    rsim.add_argument("--spec", default="rucl3", help="ansatz file (models/rucl3.toml)")
    rsim.add_argument("--out", type=Path, required=True, help="output .csv or .nc")
    rsim.set_defaults(handler=_rucl3_simulate)

    plot = sub.add_parser("plot", help="draw a measurement or redraw a run's figure",
                          description="Draw the noise map, the spectrum at a pixel and the "
                                      "truth of a measurement file, or redraw the figure of "
                                      "a run folder.")
    plot.add_argument("data", type=Path, help="measurement .nc file or run folder")
    plot.add_argument("--sample", type=int, help="sample index in a data set")
    plot.add_argument("--pixel", type=int, nargs=2, metavar=("Y", "X"),
                      help="pixel for the spectrum panel (default: brightest)")
    plot.add_argument("--out", type=Path, help="output .png (default runs/<name>.png)")
    plot.set_defaults(handler=_plot)
    return parser


def _protocol_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", choices=PROTOCOLS,
                   help="paper: the paper's objective verbatim (eps 1e-10, sums, its "
                        "settings); robust: nvbayes's measured choices (noise-floor eps, "
                        "unit-free spectrum, the model file's [robust] table).  Default: "
                        f"{DEFAULT_PROTOCOL}, or the protocol a model file names")


def _readout_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--readout", default="wide", choices=READOUTS,
                   help="readout frequencies over the band widened by one linewidth each "
                        "side (wide, default) or over the Larmor band itself (band: the "
                        "paper's appendix E.1)")


def _data_arguments(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--data", type=Path, help="measurement file with truth (rho_true)")
    which.add_argument("--classes", help="simulate: 'all' (the paper's eight) or a comma list")
    p.add_argument("--per-class", type=int, help="samples per class (with --classes)")
    p.add_argument("--data-seed", type=int, default=0,
                   help="seed of the first simulated sample (0)")
    p.add_argument("--data-operator", default="F3",
                   help="operator simulating the data: F3 (cross-fidelity, default), F1 or F2 "
                        "(matched-operator)")
    p.add_argument("--grid", type=int, default=GRID, help=f"pixels per side ({GRID})")
    p.add_argument("--noise", type=float, default=NOISE,
                   help=f"simulate: sensor noise as a fraction of the dynamic range ({NOISE})")
    _readout_argument(p)


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", default="0,1,2", help="fit seeds (0,1,2)")
    _protocol_argument(p)
    p.add_argument("--preset", default="fast", choices=sorted(PRESETS),
                   help="NeTMY preset: fast = models/netmy-fast.toml (default), paper = "
                        "models/netmy.toml")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per fit, on every executor (1)")
    p.add_argument("--batch", type=int, default=1,
                   help="samples per optimization loop for neural-field methods; the results "
                        "are those of single fits (1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda, for every fit (cpu)")
    p.add_argument("--precision", default="fp32",
                   help="fp32, or bf16 for the neural field's MLP (fp32)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int,
                       help="start a local Dask cluster of N worker processes")
    where.add_argument("--scheduler", help="run on an existing Dask cluster, tcp://HOST:PORT")
    p.add_argument("--out", type=Path, help="benchmark folder (default runs/<command>-...)")
    p.add_argument("--report-only", action="store_true",
                   help="fit nothing: write results.nc, summary.md and figures from the "
                        "cells already in --out")


def _benchmark_data(args):
    """``(dataset, description)`` from --data or --classes/--per-class."""
    from .benchmark import load_data
    from .scenes import SimulationSettings, dataset_plan, expand_classes, simulate_dataset

    if args.data is not None:
        if (args.per_class is not None or args.data_operator.upper() != "F3"
                or args.noise != NOISE or args.readout != "wide"):
            raise NvbayesError("--per-class, --data-operator, --noise and --readout describe "
                               "simulated data",
                               "drop them with --data (the file says how it was made)")
        return load_data(args.data), str(args.data)
    if args.per_class is None:
        raise NvbayesError("--classes needs the number of samples", "add --per-class K")
    classes = expand_classes(args.classes)
    settings = SimulationSettings(grid=Grid(args.grid), operator=args.data_operator,
                                  noise=args.noise, readout=args.readout)
    plan = dataset_plan(classes, args.per_class, seed=args.data_seed)
    from .progress import progress

    data = simulate_dataset(plan, settings,
                            progress=lambda it: progress(it, total=len(plan), desc="simulate"))
    return data, (f"simulated: {args.classes} x {args.per_class} per class, "
                  f"{settings.operator.upper()}, noise {settings.noise:g}, readout "
                  f"{settings.readout}, seeds from {args.data_seed}, {args.grid}x{args.grid}")


def _executor(args):
    from .benchmark import DaskExecutor, InProcess

    if args.workers is None and args.scheduler is None:
        return InProcess(args.threads)
    return DaskExecutor(args.threads, scheduler=args.scheduler, workers=args.workers)


def _execute(args, methods: dict, kind: str, title: str, **extra) -> None:
    from .api import check_device
    from .benchmark import BenchmarkPlan, run_benchmark
    from .benchmark.plan import interleaved_order, parse_operators, parse_seeds
    from .benchmark.runner import with_sample_axis
    from .inference.map import check_precision

    operators, seeds = parse_operators(args.operators), parse_seeds(args.seeds)
    device, precision = check_device(args.device), check_precision(args.precision)
    executor = _executor(args)
    data, description = _benchmark_data(args)
    data = with_sample_axis(data)
    order = (interleaved_order(data["scene_class"].values.tolist())
             if "scene_class" in data.coords else ())
    plan = BenchmarkPlan(methods, operators, seeds, data.sizes["sample"], args.threads, order,
                         batch=args.batch, device=device, precision=precision)
    tag = (args.data.stem if args.data is not None
           else f"{args.classes.replace('/', '-').replace(',', '+')}-{args.per_class}"
                f"-{args.data_operator.upper()}")
    out = args.out or RUNS / f"{kind}-{tag}"
    settings = {"data": description, "preset": args.preset,
                "protocol": args.protocol or "per model file"} | extra
    report = run_benchmark(plan, data, out, executor, kind=kind, title=title,
                           settings=settings, compute=not args.report_only,
                           **({} if kind in ("benchmark", "deviations") else
                                                 {"summary_metrics": TABLE3_METRICS,
                                                  "figure_metrics": TABLE3_METRICS}))
    total = len(plan.cells())
    print(f"{kind}: {report.folder} ({report.computed} of {total} cells computed now, "
          f"{report.failed} failed; executor {executor.name})")
    print(f"summary: {report.folder / 'summary.md'}")


def _benchmark(args) -> None:
    from .benchmark import resolve_methods

    _execute(args, resolve_methods(args.methods, args.preset, args.protocol), "benchmark",
             "Benchmark (cross-fidelity)" if args.data is None and
             args.data_operator.upper() == "F3" else "Benchmark")


def _ablate(args) -> None:
    from .benchmark import cumulative_variants, resolve_methods, sweep_variants
    from .benchmark.ablation import deviation_variants

    if args.deviations:
        if args.values is not None or args.protocol is not None:
            raise NvbayesError("--deviations compares the protocols of one model file",
                               "drop --values and --protocol")
        model = args.model or PRESETS[args.preset]
        _execute(args, deviation_variants(model), "deviations",
                 "Robust protocol, one deviation at a time", base_model=str(model))
        return

    base = (resolve_methods("netmy", args.preset, args.protocol)["netmy"] if args.model is None
            else next(iter(resolve_methods([args.model], protocol=args.protocol).values())))
    if args.sweep is None:
        if args.values is not None:
            raise NvbayesError("--values belongs to --sweep", "add --sweep lr|width|octaves")
        methods, title, kind = cumulative_variants(base), "Cumulative ablation (Table 3)", \
            "ablate"
    else:
        values = None
        if args.values is not None:
            try:
                values = [float(v) for v in args.values.split(",") if v.strip()]
            except ValueError:
                raise NvbayesError(f"--values must be numbers, got {args.values!r}",
                                   "pass e.g. --values 128,256") from None
        methods = sweep_variants(base, args.sweep, values)
        title, kind = f"Sweep of {args.sweep} (Table 10)", f"sweep-{args.sweep}"
    _execute(args, methods, kind, title, base_model=base.name)


def _rucl3_arguments(p: argparse.ArgumentParser, operators: bool = False) -> None:
    p.add_argument("data", type=Path, nargs="?",
                   help="per-NV .csv or .nc (default: the shipped SYNTHETIC set)")
    if operators:
        p.add_argument("--operators", default="F2,F1", help="operators (F2,F1)")
    p.add_argument("--spec", default="rucl3", help="ansatz file (models/rucl3.toml)")
    p.add_argument("--out", type=Path, help="output folder (default under runs/)")


def _rucl3_inputs(args):
    """``(spec, data, tag)`` of a rucl3 step, announcing synthetic data."""
    from .rucl3.data import describe, load_nv_data
    from .rucl3.spec import load_ansatz

    spec = load_ansatz(args.spec)
    data = load_nv_data(args.data)
    print(f"data: {describe(data)}")
    tag = args.data.stem if args.data is not None else "synthetic"
    return spec, data, tag


def _operators(text: str) -> tuple:
    from .physics.operators import check_inversion_operator

    ops = tuple(check_inversion_operator(o.strip()) for o in text.split(",") if o.strip())
    if not ops or len(set(ops)) != len(ops):
        raise NvbayesError(f"--operators {text!r} names no operator or repeats one",
                           "pass e.g. --operators F2,F1")
    return ops


def _replaceable(out: Path, marker: str) -> Path:
    """``out`` if it is absent or an earlier output folder (holding ``marker``)."""
    if out.exists() and not (out / marker).is_file():
        raise NvbayesError(f"{out} exists and is not an earlier output folder (no {marker})",
                           "choose another --out (only an earlier output folder is replaced)")
    return out


def _rucl3_outputs(out: Path, name: str, dataset, figure) -> None:
    """Write ``NAME.nc`` and the figure ``NAME.png`` into the folder ``out`` atomically."""
    from .io import write_folder
    from .plots import save_figure

    def fill(tmp: Path) -> None:
        dataset.to_netcdf(tmp / f"{name}.nc", engine="netcdf4")
        save_figure(figure(), tmp / f"{name}.png")

    write_folder(out, fill)
    print(f"folder: {out}")


def _rucl3_fit(args) -> None:
    from .rucl3.fit import fit_ansatz

    spec, data, tag = _rucl3_inputs(args)
    op = args.operator.upper()
    out = _replaceable(args.out or RUNS / f"rucl3-{tag}-{op}-{args.method.lower()}-seed"
                                         f"{args.seed}", "posterior.nc")
    run = fit_ansatz(spec, data, op, args.method, seed=args.seed, chains=args.chains,
                     warmup=args.warmup, draws=args.draws)
    for message in run.messages:
        print(f"nvbayes: warning: {message}", file=sys.stderr)
    folder = run.save(out)
    cols = [c for c in ("mean", "sd", "hdi_5%", "hdi_95%", "ess_bulk", "r_hat")
            if c in run.summary.columns]
    print(run.summary[cols].to_string())
    if run.method == "nuts":
        div = int(run.idata.sample_stats["diverging"].sum())
        print(f"divergences: {div}; max R-hat {float(run.summary['r_hat'].max()):.3f}; "
              f"min ESS (bulk) {float(run.summary['ess_bulk'].min()):.0f}")
    else:
        print(f"Laplace: Hessian condition number {run.laplace.attrs['condition_number']:.4g} "
              "(unconstrained coordinates)")
    print(f"wall time: {run.config['run']['wall_time_s']:.1f} s")
    print(f"run: {folder}")


def _rucl3_landscape(args) -> None:
    import xarray as xr

    from .rucl3.analysis import landscape
    from .rucl3.data import is_synthetic
    from .rucl3.figures import plot_landscape

    spec, data, tag = _rucl3_inputs(args)
    ops = _operators(args.operators)
    out = _replaceable(args.out or RUNS / f"rucl3-landscape-{tag}", "landscape.nc")
    land = xr.concat([landscape(spec, data, op, args.grid, args.depths) for op in ops],
                     dim="operator",
                     combine_attrs="drop_conflicts")
    print(f"depths: {land['depth'].attrs['source']}")
    for op in ops:
        one = land.sel(operator=op)
        a, s = one["minimum"].values
        where = "" if int(one["minimum_interior"]) else " (on the prior box's edge)"
        print(f"{op}: minimum log10 A = {a:.3f}, sigma_g = {s:.2f} nm{where}, L = "
              f"{float(one['minimum_loss']):.4g}, condition number "
              f"{float(one['condition_number']):,.0f} (log10 A, sigma_g/nm) and "
              f"{float(one['condition_number_log']):,.0f} (log10 A, log10 sigma_g)")
    _rucl3_outputs(out, "landscape", land, lambda: plot_landscape(land, is_synthetic(data)))


def _rucl3_depth(args) -> None:
    from .rucl3.analysis import depth_table
    from .rucl3.data import is_synthetic
    from .rucl3.figures import plot_depths

    spec, data, tag = _rucl3_inputs(args)
    ops = _operators(args.operators)
    out = _replaceable(args.out or RUNS / f"rucl3-depth-{tag}", "depth.nc")
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
    _rucl3_outputs(out, "depth", table, lambda: plot_depths(spec, table, is_synthetic(data)))


def _rucl3_slope(args) -> None:
    from .rucl3.analysis import slope_analysis
    from .rucl3.data import is_synthetic
    from .rucl3.figures import plot_slope

    spec, data, tag = _rucl3_inputs(args)
    ops = _operators(args.operators)
    out = _replaceable(args.out or RUNS / f"rucl3-slope-{tag}", "slope.nc")
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
    _rucl3_outputs(out, "slope", slopes, lambda: plot_slope(data, slopes, is_synthetic(data)))


def _rucl3_simulate(args) -> None:
    from .rucl3.data import describe, synthetic_data, write_nv_data
    from .rucl3.spec import load_ansatz

    if args.out.suffix.lower() not in (".csv", ".nc"):
        raise NvbayesError(f"--out {args.out} is neither .csv nor .nc", "name a .csv or .nc")
    data = synthetic_data(load_ansatz(args.spec), args.operator, args.seed)
    write_nv_data(data, args.out)
    print(f"data: {describe(data)}")
    print(args.out)


def _simulate(args) -> None:
    from .io import write_netcdf
    from .progress import progress
    from .scenes import (
        SimulationSettings,
        dataset_plan,
        expand_classes,
        parse_scene_class,
        simulate,
        simulate_dataset,
    )

    settings = SimulationSettings(
        grid=Grid(args.grid, args.spacing, args.standoff), operator=args.operator,
        noise=args.noise, linewidth=args.linewidth, band=tuple(args.band), n_freq=args.freqs,
        units=args.units, readout=args.readout)
    if args.scene is not None:
        if args.per_class is not None or args.samples is not None:
            raise NvbayesError("--per-class and --samples belong to --classes",
                               "use --classes with them, or drop them for one --scene")
        parse_scene_class(args.scene)
        out = args.out or RUNS / f"{args.scene.replace('/', '-')}-seed{args.seed}.nc"
        dataset = simulate(args.scene, args.seed, settings)
    else:
        classes = expand_classes(args.classes)
        if args.per_class is None and args.samples is None:
            raise NvbayesError("--classes needs the data set size",
                               "add --per-class K or --samples N")
        plan = dataset_plan(classes, args.per_class, args.samples, args.seed)
        tag = "all" if args.classes.strip().lower() == "all" else f"{len(classes)}classes"
        out = args.out or RUNS / f"dataset-{tag}-{len(plan)}-seed{args.seed}.nc"
        dataset = simulate_dataset(
            plan, settings,
            progress=lambda it: progress(it, total=len(plan), desc="simulate"))
    write_netcdf(dataset, out)
    print(out)


def _parse_samples(text: str, flag: str = "--samples") -> list[int]:
    """``"0-7"``, ``"1,4,9"`` or a mix (``"0-3,8"``) → sample indices."""
    out = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            out += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    except ValueError:
        raise NvbayesError(f"{flag} {text!r} is not a list of sample indices",
                           f"pass e.g. {flag} 0-7 or {flag} 1,4,9") from None
    if not out:
        raise NvbayesError(f"{flag} names no sample", f"pass e.g. {flag} 0-7")
    return out


def _fit(args) -> None:
    from .io import n_samples, read_measurement

    if args.seed < 0:
        raise NvbayesError(f"seed must be >= 0, got {args.seed}", "pass --seed 0 or more")
    if args.sample is not None and args.samples is not None:
        raise NvbayesError("--sample and --samples both given", "use one of them")
    data = read_measurement(args.data)
    if args.sample is None and (args.samples is not None or n_samples(data) > 1):
        _fit_many(args, data)
        return
    from .api import fit

    suffix = f"-sample{args.sample}" if args.sample is not None else ""
    out = _fit_folder(args, suffix, "config.toml")
    run = fit(data, model=args.model, method=args.method, operator=args.operator,
              sample=args.sample, seed=args.seed, device=args.device,
              precision=args.precision, draws=args.draws, chains=args.chains,
              warmup=args.warmup, protocol=args.protocol)
    run.config["run"]["measurement"] = str(args.data)
    for message in run.messages:
        print(f"nvbayes: warning: {message}", file=sys.stderr)
    folder = run.save(out)
    print(f"run: {folder}")
    print(f"figure: {folder / 'reconstruction.png'}")
    if run.hessian is not None:
        h = run.hessian.attrs
        print(f"hessian: condition number {h['condition_number']:.4g}, eigenvalues fall as "
              f"exp(-{h['decay_per_standoff']:.2f} k z0) ({folder / 'hessian_spectrum.png'})")
    if run.metrics is not None:
        print(f"metrics: {_metrics_line(run)} ({run.config['run']['wall_time_s']:.1f} s)")


def _fit_folder(args, suffix: str, marker: str) -> Path:
    model_tag = Path(args.model).stem
    out = args.out or RUNS / (f"{args.data.stem}{suffix}-{model_tag}-{args.method}-"
                              f"{args.operator.upper()}-seed{args.seed}")
    if out.exists() and not (out / marker).is_file():
        raise NvbayesError(f"{out} exists and is not a run folder",
                           "choose another --out (a run folder is replaced, nothing else is)")
    return out


def _metrics_line(run) -> str:
    m = run.metrics
    return (f"Hungarian F1 {float(m['hungarian_f1']):.3f}, SWD {float(m['swd']):.4f}, "
            f"GMSD {float(m['gmsd']):.4f}, Larmor MAE {float(m['larmor_mae']):.3f} GHz")


#: The table of a folder of several runs (one row per sample).
FITS_TABLE = "fits.csv"


def _fit_many(args, data) -> None:
    """Several samples of a data set, in batches, into one folder of run folders."""
    from .api import fit_samples
    from .io import write_folder

    samples = _parse_samples(args.samples) if args.samples is not None else None
    out = _fit_folder(args, "", FITS_TABLE)
    runs = fit_samples(data, model=args.model, method=args.method, operator=args.operator,
                       samples=samples, seed=args.seed, device=args.device, batch=args.batch,
                       precision=args.precision, draws=args.draws, chains=args.chains,
                       warmup=args.warmup, protocol=args.protocol)
    columns = ("sample", "wall_time_s", "diverged", "hungarian_f1", "swd", "gmsd",
               "larmor_mae")

    def fill(tmp: Path) -> None:
        rows = [",".join(columns)]
        for run in runs:
            run.config["run"]["measurement"] = str(args.data)
            sample = int(run.config["run"]["sample"])
            run.save(tmp / f"sample{sample:04d}")
            m = run.metrics
            values = [sample, run.config["run"]["wall_time_s"],
                      int(run.diverged)]
            values += [float(m[k]) if m is not None and k in m else float("nan")
                       for k in columns[3:]]
            rows.append(",".join(str(v) for v in values))
        (tmp / FITS_TABLE).write_text("\n".join(rows) + "\n")

    folder = write_folder(out, fill)
    for run in runs:
        for message in run.messages:
            print(f"nvbayes: warning: sample {run.config['run']['sample']}: {message}",
                  file=sys.stderr)
    total = sum(run.config["run"]["wall_time_s"] for run in runs)
    print(f"runs: {folder} ({len(runs)} samples, batch {args.batch}, {total:.1f} s in all)")
    print(f"table: {folder / FITS_TABLE}")


def _calibrate(args) -> None:
    from .calibration import DATASET, FIGURE, TABLE, CalibrationPlan, run_calibration
    from .model.problem import check_inversion_operator
    from .spec import load_spec

    load_spec(args.model)
    plan = CalibrationPlan(methods=tuple(m.strip() for m in args.methods.split(",") if m),
                           scenes=args.scenes, simulator=args.simulator.upper(),
                           classes=tuple(c.strip() for c in args.classes.split(",") if c),
                           grid=args.grid, model=args.model,
                           operator=check_inversion_operator(args.operator), noise=args.noise,
                           seed=args.seed, level=args.level, radius=args.radius,
                           draws=args.draws, chains=args.chains, warmup=args.warmup)
    if plan.draws < 2:
        raise NvbayesError(f"--draws {plan.draws}", "use 2 or more draws")
    out = args.out or RUNS / (f"calibration-{'-'.join(plan.methods)}-{plan.grid}px-"
                              f"{plan.scenes}scenes")
    run_calibration(plan, out)
    print((out / TABLE).read_text().rstrip())
    print(f"files: {out / DATASET}, {out / TABLE}, {out / FIGURE}")


#: How many samples the ADMM sweep takes by default (the paper's 4).
SWEEP_SAMPLES = 4


def _diagnose(args) -> None:
    from .benchmark import resolve_methods
    from .diagnostics import write_diagnostics
    from .diagnostics.report import DATASET, TABLE, diagnose
    from .inference.objective import stage_log_eps
    from .io import n_samples, read_measurement, select_sample
    from .model.problem import InverseProblem
    from .spec import load_spec

    if args.seed < 0:
        raise NvbayesError(f"seed must be >= 0, got {args.seed}", "pass --seed 0 or more")
    if args.log_eps is not None and not args.log_eps > 0:
        raise NvbayesError(f"--log-eps {args.log_eps}", "use a positive epsilon, e.g. 1e-10")
    methods = resolve_methods(args.methods, args.preset, args.protocol)
    stages = max(len(spec.stages) for spec in methods.values())
    if args.budget < stages:
        raise NvbayesError(f"--budget {args.budget} is shorter than the {stages} stages of "
                           "a method", f"use --budget {stages} or more")
    data = read_measurement(args.data)
    count = n_samples(data)
    sample = args.sample if args.sample is not None else (0 if count > 1 else None)
    select_sample(data, sample)
    if args.sweep_samples is None:
        sweep = list(range(min(SWEEP_SAMPLES, count)))
    elif args.sweep_samples.strip().lower() == "none":
        sweep = []
    else:
        sweep = _parse_samples(args.sweep_samples, "--sweep-samples")
    for index in sweep:
        if not 0 <= index < count:
            raise NvbayesError(f"sweep sample {index} is out of range",
                               f"choose --sweep-samples between 0 and {count - 1}")
    suffix = f"-sample{sample}" if sample is not None else ""
    out = args.out or RUNS / f"diagnose-{args.data.stem}{suffix}"
    if out.exists() and not (out / DATASET).is_file():
        raise NvbayesError(f"{out} exists and is not a diagnostics folder",
                           "choose another --out (a diagnostics folder is replaced, nothing "
                           "else is)")
    admm = methods["admm"] if "admm" in methods else load_spec("admm", args.protocol)
    log_eps = args.log_eps
    if log_eps is None:
        log_eps = stage_log_eps(admm, InverseProblem.from_measurement(select_sample(data, sample)))
    ds = diagnose(data, methods, sample=sample, admm=admm, budget=args.budget,
                  sweep_samples=tuple(sweep), seed=args.seed, log_eps=float(log_eps),
                  source=str(args.data), protocol=admm.protocol)
    folder = write_diagnostics(ds, out)
    print((folder / TABLE).read_text().rstrip())
    print(f"folder: {folder}")


def _plot(args) -> None:
    from .io import read_measurement, select_sample
    from .plots import plot_measurement, save_figure

    if args.data.is_dir():
        from .run import Run

        if args.sample is not None or args.pixel is not None:
            raise NvbayesError("--sample and --pixel apply to measurement files",
                               "drop them when redrawing a run folder")
        run = Run.load(args.data)
        print(run.save_figure(args.out))
        return

    data = read_measurement(args.data)
    one = select_sample(data, args.sample)
    suffix = f"-sample{args.sample}" if args.sample is not None else ""
    out = args.out or RUNS / f"{args.data.stem}{suffix}.png"
    fig = plot_measurement(one, tuple(args.pixel) if args.pixel else None)
    save_figure(fig, out)
    print(out)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except NvbayesError as exc:
        print(f"nvbayes: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command in ("benchmark", "ablate"):
            print("nvbayes: interrupted; the finished fits are kept, rerun the same command "
                  "to resume", file=sys.stderr)
        else:
            print("nvbayes: interrupted; no output was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
