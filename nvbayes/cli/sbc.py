"""``nvbayes sbc``: simulation-based calibration of the generative posterior."""

from __future__ import annotations

from pathlib import Path

from nvbayes.workflows.sbc import DATASET, FIGURE, TABLE, SbcPlan, run_sbc

from .common import RUNS, executor_arguments, make_executor

DESCRIPTION = ("Simulation-based calibration (Talts et al. 2018): draw the density, Larmor "
               "field and gain from the generative model's prior, simulate a spectrum, fit it "
               "and rank each truth among the posterior draws; uniform ranks (chi-square "
               "p > 0.01) mean calibrated intervals.  Writes sbc.nc, sbc.md and sbc.png; "
               "finished fits are kept in cells/, so rerunning the same command resumes.")
DEFAULTS = SbcPlan()


def add_arguments(p) -> None:
    p.add_argument("--method", default=",".join(DEFAULTS.methods),
                   help=f"comma list of nuts, laplace, svi ({','.join(DEFAULTS.methods)})")
    p.add_argument("--replications", type=int, default=DEFAULTS.replications,
                   help=f"prior draws, each simulated and fitted ({DEFAULTS.replications})")
    p.add_argument("--grid", type=int, default=DEFAULTS.grid,
                   help=f"pixels per side ({DEFAULTS.grid}; NUTS up to 16)")
    p.add_argument("--operator", default=DEFAULTS.operator, type=str.upper,
                   choices=("F1", "F2"), help=f"likelihood operator ({DEFAULTS.operator})")
    p.add_argument("--sigma", type=float, default=DEFAULTS.sigma,
                   help=f"noise sd per readout; a unit source peaks at 1 ({DEFAULTS.sigma})")
    p.add_argument("--rho-mean", type=float, default=DEFAULTS.rho_mean,
                   help=f"prior mean of rho per pixel ({DEFAULTS.rho_mean})")
    p.add_argument("--gain-sd", type=float, default=DEFAULTS.gain_sd,
                   help=f"prior sd of log gain; 0 fixes the gain at 1 ({DEFAULTS.gain_sd})")
    p.add_argument("--draws", type=int, default=DEFAULTS.draws,
                   help=f"posterior draws per fit, L ({DEFAULTS.draws})")
    p.add_argument("--thin", type=int, default=DEFAULTS.thin,
                   help=f"NUTS keeps every THIN-th draw ({DEFAULTS.thin})")
    p.add_argument("--warmup", type=int, default=DEFAULTS.warmup,
                   help=f"NUTS warm-up iterations ({DEFAULTS.warmup})")
    p.add_argument("--bins", type=int, default=DEFAULTS.bins,
                   help=f"rank histogram bins; draws + 1 must be a multiple ({DEFAULTS.bins})")
    p.add_argument("--data-seed", type=int, default=DEFAULTS.seed,
                   help=f"seed of the first replication ({DEFAULTS.seed})")
    executor_arguments(p)
    p.add_argument("--out", help="output folder (default runs/sbc-...)")


def run(args) -> None:
    plan = SbcPlan(methods=tuple(m.strip().lower() for m in args.method.split(",") if m),
                   replications=args.replications, grid=args.grid, operator=args.operator,
                   sigma=args.sigma, rho_mean=args.rho_mean, gain_sd=args.gain_sd,
                   draws=args.draws, thin=args.thin, warmup=args.warmup, bins=args.bins,
                   seed=args.data_seed)
    executor = make_executor(args)
    out = args.out or RUNS / (f"sbc-{'-'.join(plan.methods)}-{plan.grid}px-"
                              f"{plan.replications}")
    out = Path(out)
    result = run_sbc(plan, out, executor)
    print((out / TABLE).read_text().rstrip())
    if result.attrs["failed"]:
        print(f"{result.attrs['failed']} replications failed; rerun the same command to "
              "retry them")
    print(f"files: {out / DATASET}, {out / TABLE}, {out / FIGURE}")
