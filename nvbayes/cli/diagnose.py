"""``nvbayes diagnose``: the centre-collapse mechanism of section 5.3 on one measurement."""

from __future__ import annotations

from pathlib import Path

from nvbayes.data.io import n_samples, read_measurement, select_sample
from nvbayes.data.spec import load_spec
from nvbayes.errors import NvbayesError
from nvbayes.inference.objective import stage_log_eps
from nvbayes.model.problem import InverseProblem
from nvbayes.physics.noise_map import LOG_EPS
from nvbayes.results.store import replaceable_folder
from nvbayes.workflows.benchmark import PRESETS, resolve_methods
from nvbayes.workflows.diagnose import write_diagnostics
from nvbayes.workflows.diagnose.budget import BUDGET_METHODS
from nvbayes.workflows.diagnose.report import DATASET, TABLE, diagnose

from .common import RUNS, check_seed, parse_samples, protocol_argument

DESCRIPTION = ("The optimization-geometry diagnostics of the paper's section 5.3 and appendix "
               "E.5 on one measurement, under F1 and F2: the iter-0 gradient of the data "
               "fidelity at a uniform density, the first solver step of the parameterized "
               "models and its filtered gradient J J^T dL/drho, the energy barrier from a "
               "centre-collapsed iterate to the truth, the centre-mass ratio of every model "
               "after --budget steps, and the ADMM sweep (samples x 8 loss settings).  Writes "
               "diagnostics.nc, diagnostics.md and figures to a folder.")
#: How many samples the ADMM sweep takes by default (the paper's 4).
SWEEP_SAMPLES = 4


def add_arguments(p) -> None:
    p.add_argument("data", type=Path, help="measurement .nc file (rho_true for the barrier)")
    p.add_argument("--sample", type=int, help="sample of a data set to diagnose (default 0)")
    p.add_argument("--models", default=",".join(BUDGET_METHODS),
                   help="models of the fixed-budget comparison: netmy (follows --preset), "
                        "tikhonov, admm, lbfgs, gsplat, deepdecoder or .toml paths "
                        f"(default {','.join(BUDGET_METHODS)})")
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                   help="NeTMY preset: paper = models/netmy.toml (default), fast = "
                        "models/netmy-fast.toml")
    p.add_argument("--budget", type=int, default=200,
                   help="solver steps of every model in the comparison (200)")
    p.add_argument("--sweep-samples",
                   help="samples for the ADMM sweep, e.g. 0-3, or 'none' (default: the first "
                        f"{SWEEP_SAMPLES} of the file)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fits (0)")
    p.add_argument("--log-eps", type=float,
                   help=f"epsilon of the data fidelity's log map (default: {LOG_EPS:g}, the "
                        "paper's, under --protocol paper; the noise floor under robust)")
    protocol_argument(p)
    p.add_argument("--out", type=Path, help="folder (default runs/diagnose-<data>[-sampleK])")


def run(args) -> None:
    check_seed(args.seed)
    if args.log_eps is not None and not args.log_eps > 0:
        raise NvbayesError(f"--log-eps {args.log_eps}", "use a positive epsilon, e.g. 1e-10")
    methods = resolve_methods(args.models, args.preset, args.protocol)
    stages = max(len(spec.stages) for spec in methods.values())
    if args.budget < stages:
        raise NvbayesError(f"--budget {args.budget} is shorter than the {stages} stages of "
                           "a model", f"use --budget {stages} or more")
    data = read_measurement(args.data)
    count = n_samples(data)
    sample = args.sample if args.sample is not None else (0 if count > 1 else None)
    select_sample(data, sample)
    if args.sweep_samples is None:
        sweep = list(range(min(SWEEP_SAMPLES, count)))
    elif args.sweep_samples.strip().lower() == "none":
        sweep = []
    else:
        sweep = parse_samples(args.sweep_samples, "--sweep-samples")
    for index in sweep:
        if not 0 <= index < count:
            raise NvbayesError(f"sweep sample {index} is out of range",
                               f"choose --sweep-samples between 0 and {count - 1}")
    suffix = f"-sample{sample}" if sample is not None else ""
    out = replaceable_folder(args.out or RUNS / f"diagnose-{args.data.stem}{suffix}",
                             DATASET, "diagnostics")
    admm = methods["admm"] if "admm" in methods else load_spec("admm", args.protocol)
    log_eps = args.log_eps
    if log_eps is None:
        log_eps = stage_log_eps(admm, InverseProblem.from_measurement(select_sample(data,
                                                                                   sample)))
    ds = diagnose(data, methods, sample=sample, admm=admm, budget=args.budget,
                  sweep_samples=tuple(sweep), seed=args.seed, log_eps=float(log_eps),
                  source=str(args.data), protocol=admm.protocol)
    folder = write_diagnostics(ds, out)
    print((folder / TABLE).read_text().rstrip())
    print(f"folder: {folder}")
