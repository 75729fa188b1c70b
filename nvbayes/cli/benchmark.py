"""``nvbayes benchmark``: models × inversion operators × samples × seeds, resumable, in this
process or on a Dask cluster.  The data and executor arguments are shared with ``ablate``."""

from __future__ import annotations

from pathlib import Path

from nvbayes.data.scenes import (
    NOISE,
    SimulationSettings,
    dataset_plan,
    expand_classes,
    simulate_dataset,
)
from nvbayes.errors import NvbayesError
from nvbayes.inference.map import check_precision
from nvbayes.inference.methods import check_device
from nvbayes.physics.geometry import GRID, Grid
from nvbayes.progress import progress
from nvbayes.workflows.benchmark import (
    DEFAULT_METHODS,
    PRESETS,
    BenchmarkPlan,
    load_data,
    resolve_methods,
    run_benchmark,
)
from nvbayes.workflows.benchmark.ablation import TABLE3_METRICS
from nvbayes.workflows.benchmark.plan import (
    interleaved_order,
    nuisance_variants,
    parse_operators,
    parse_seeds,
)
from nvbayes.workflows.benchmark.runner import with_sample_axis
from nvbayes.workflows.fit import precision_note

from .common import (
    RUNS,
    device_arguments,
    executor_arguments,
    grid_argument,
    make_executor,
    note,
    nuisance_arguments,
    nuisance_from,
    protocol_argument,
    readout_argument,
    realism_arguments,
    realism_from,
    simulator_argument,
)

DESCRIPTION = ("The paper's benchmark protocol (Tables 1 and 2): fit every sample of a data set "
               "with each model under each inversion operator and seed; write results.nc, "
               "summary.md and figures to --out.  Cross-fidelity by default (data simulated by "
               "F3); --simulator F1|F2 gives the matched-operator table.  Rerunning with the "
               "same --out computes only the missing cells.")


def add_arguments(p) -> None:
    data_arguments(p)
    p.add_argument("--models", default=",".join(DEFAULT_METHODS),
                   help="comma list: netmy (follows --preset), tikhonov, admm, lbfgs, gsplat, "
                        "deepdecoder, a trained model (unet-sl, …), or .toml / .pt paths; "
                        "NAME+nuisance fits NAME with the --nuisance model alone, without "
                        f"its plain twin (default {','.join(DEFAULT_METHODS)})")
    p.add_argument("--operators", default="F1,F2", help="inversion operators (F1,F2)")
    nuisance_arguments(p)
    run_arguments(p)


def run(args) -> None:
    title = ("Benchmark (cross-fidelity)" if args.data is None and args.simulator == "F3"
             else "Benchmark")
    methods = nuisance_variants(resolve_methods(args.models, args.preset, args.protocol),
                                nuisance_from(args))
    execute(args, methods, "benchmark", title)


def data_arguments(p) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--data", type=Path, help="measurement file with truth (rho_true)")
    which.add_argument("--classes", help="simulate: 'all' (the paper's eight) or a comma list")
    p.add_argument("--per-class", type=int, help="samples per class (with --classes)")
    p.add_argument("--data-seed", type=int, default=0,
                   help="seed of the first simulated sample (0)")
    simulator_argument(p)
    grid_argument(p, GRID)
    p.add_argument("--noise", type=float, default=NOISE,
                   help=f"simulate: sensor noise as a fraction of the dynamic range ({NOISE})")
    readout_argument(p)
    realism_arguments(p)


def run_arguments(p) -> None:
    p.add_argument("--seeds", default="0,1,2", help="fit seeds (0,1,2)")
    protocol_argument(p)
    p.add_argument("--preset", default="fast", choices=sorted(PRESETS),
                   help="NeTMY preset: fast = models/netmy-fast.toml (default), paper = "
                        "models/netmy.toml")
    executor_arguments(p)
    p.add_argument("--batch", type=int, default=1,
                   help="samples per optimization loop for neural-field models; the results "
                        "are those of single fits (1)")
    device_arguments(p)
    p.add_argument("--oracle-sigma", action="store_true",
                   help="give every fit the data set's recorded noise_sigma; by default it is "
                        "dropped and each fit estimates sigma from its spectrum, as on a lab's "
                        "file (the choice is recorded in benchmark.toml)")
    p.add_argument("--out", type=Path, help="benchmark folder (default runs/<command>-...)")
    p.add_argument("--report-only", action="store_true",
                   help="fit nothing: write results.nc, summary.md and figures from the "
                        "cells already in --out")


def _data(args):
    """``(dataset, description)`` from --data or --classes/--per-class."""
    realism = realism_from(args)
    if args.data is not None:
        if (args.per_class is not None or args.simulator != "F3" or args.noise != NOISE
                or args.readout != "wide" or not realism.off):
            raise NvbayesError("--per-class, --simulator, --noise, --readout and --realism "
                               "describe simulated data",
                               "drop them with --data (the file says how it was made)")
        return load_data(args.data), str(args.data)
    if args.per_class is None:
        raise NvbayesError("--classes needs the number of samples", "add --per-class K")
    classes = expand_classes(args.classes)
    settings = SimulationSettings(grid=Grid(args.grid[0], nx=args.grid[1]),
                                  operator=args.simulator,
                                  noise=args.noise, readout=args.readout, realism=realism)
    plan = dataset_plan(classes, args.per_class, seed=args.data_seed)
    data = simulate_dataset(plan, settings,
                            progress=lambda it: progress(it, total=len(plan), desc="simulate"))
    return data, (f"simulated: {args.classes} x {args.per_class} per class, "
                  f"{settings.operator.upper()}, noise {settings.noise:g}, readout "
                  f"{settings.readout}, realism {realism.describe()}, seeds from "
                  f"{args.data_seed}, "
                  f"{args.grid[0]}x{args.grid[1]}")


def execute(args, methods: dict, kind: str, title: str, **extra) -> None:
    """Run the benchmark machinery on ``methods`` and print where the results are."""
    operators, seeds = parse_operators(args.operators), parse_seeds(args.seeds)
    device, precision = check_device(args.device), check_precision(args.precision)
    line = precision_note(device, precision)
    if line:
        note(line)
    executor = make_executor(args)
    data, description = _data(args)
    data = with_sample_axis(data)
    order = (interleaved_order(data["scene_class"].values.tolist())
             if "scene_class" in data.coords else ())
    plan = BenchmarkPlan(methods, operators, seeds, data.sizes["sample"], args.threads, order,
                         batch=args.batch, device=device, precision=precision)
    tag = (args.data.stem if args.data is not None
           else f"{args.classes.replace('/', '-').replace(',', '+')}-{args.per_class}"
                f"-{args.simulator}"
                + ("" if realism_from(args).off else f"-{args.realism.replace(',', '+')}"))
    out = args.out or RUNS / f"{kind}-{tag}"
    settings = {"data": description, "preset": args.preset,
                "protocol": args.protocol or "per model file"} | extra
    table = {} if kind in ("benchmark", "deviations") else {
        "summary_metrics": TABLE3_METRICS, "figure_metrics": TABLE3_METRICS}
    report = run_benchmark(plan, data, out, executor, kind=kind, title=title,
                           settings=settings, compute=not args.report_only,
                           oracle_sigma=args.oracle_sigma, **table)
    print(f"{kind}: {report.folder} ({report.computed} of {len(plan.cells())} cells computed "
          f"now, {report.failed} failed; executor {executor.name})")
    print(f"summary: {report.folder / 'summary.md'}")
