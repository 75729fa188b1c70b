"""``nvbayes ablate``: the NeTMY ablations of Table 3, the sweeps of Table 10 and the robust
protocol's deviations, through the benchmark machinery."""

from __future__ import annotations

from nvbayes.errors import NvbayesError
from nvbayes.workflows.benchmark import (
    PRESETS,
    SWEEPS,
    cumulative_variants,
    resolve_methods,
    sweep_variants,
)
from nvbayes.workflows.benchmark.ablation import deviation_variants

from .benchmark import data_arguments, execute, run_arguments
from .common import parse_numbers

DESCRIPTION = ("Cumulative ablation of the NeTMY preset (full, -tv, -annealed-pe, -pe, "
               "-multiscale, -l1, -gate, -rds; density MSE and masked SSIM as in the paper's "
               "Table 3), or with --sweep one axis of Table 10 (lr, width, octaves), through the "
               "benchmark machinery (resumable, Dask).")


def add_arguments(p) -> None:
    data_arguments(p)
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--sweep", choices=sorted(SWEEPS),
                      help="sweep one axis instead of the cumulative ablation")
    kind.add_argument("--deviations", action="store_true",
                      help="the robust protocol against the paper's, one deviation at a time "
                           "(paper, robust, and robust less each setting)")
    p.add_argument("--values", help="comma list of values for --sweep (default: the paper's "
                                    "grid)")
    p.add_argument("--operators", default="F2", help="inversion operators (F2)")
    p.add_argument("--model", help="NeTMY model to ablate, a name or .toml path (default: the "
                                   "--preset's netmy)")
    run_arguments(p)


def run(args) -> None:
    if args.deviations:
        if args.values is not None or args.protocol is not None:
            raise NvbayesError("--deviations compares the protocols of one model file",
                               "drop --values and --protocol")
        model = args.model or PRESETS[args.preset]
        execute(args, deviation_variants(model), "deviations",
                "Robust protocol, one deviation at a time", base_model=str(model))
        return
    base = (resolve_methods("netmy", args.preset, args.protocol)["netmy"] if args.model is None
            else next(iter(resolve_methods([args.model], protocol=args.protocol).values())))
    if args.sweep is None:
        if args.values is not None:
            raise NvbayesError("--values belongs to --sweep", "add --sweep lr|width|octaves")
        execute(args, cumulative_variants(base), "ablate", "Cumulative ablation (Table 3)",
                base_model=base.name)
        return
    values = None
    if args.values is not None:
        values = list(parse_numbers(args.values, "--values", "128,256"))
    execute(args, sweep_variants(base, args.sweep, values), f"sweep-{args.sweep}",
            f"Sweep of {args.sweep} (Table 10)", base_model=base.name)
