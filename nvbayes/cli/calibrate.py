"""``nvbayes calibrate``: coverage of credible intervals on seeded synthetic scenes."""

from __future__ import annotations

from pathlib import Path

from nvbayes.data.realism import NUISANCES
from nvbayes.data.scenes import NOISE
from nvbayes.data.spec import load_spec
from nvbayes.errors import NvbayesError
from nvbayes.inference.generative import RHO_PRIORS
from nvbayes.inference.methods import METHODS
from nvbayes.workflows.calibrate import (
    DATASET,
    FIGURE,
    SAMPLING_METHODS,
    TABLE,
    CalibrationPlan,
    run_calibration,
)

from .common import RUNS, operator_argument, simulator_argument

DESCRIPTION = ("Simulate seeded scenes, fit each with the sampling methods and measure how "
               "often the central credible intervals of each source's position and amplitude "
               "hold the truth.  Writes coverage.nc, coverage.md and coverage.png; finished "
               "fits are kept in cells/, so rerunning the same command resumes.")
DEFAULTS = CalibrationPlan()


def add_arguments(p) -> None:
    p.add_argument("--method", default=",".join(DEFAULTS.methods),
                   help=f"inference methods, a comma list of {', '.join(SAMPLING_METHODS)} "
                        f"({','.join(DEFAULTS.methods)}; nuts needs --grid 16 or less)")
    p.add_argument("--scenes", type=int, default=DEFAULTS.scenes,
                   help=f"number of scenes ({DEFAULTS.scenes})")
    p.add_argument("--classes", default=",".join(DEFAULTS.classes),
                   help=f"scene classes, cycled ({','.join(DEFAULTS.classes)})")
    p.add_argument("--grid", type=int, default=DEFAULTS.grid,
                   help=f"pixels per side ({DEFAULTS.grid})")
    p.add_argument("--model", default=DEFAULTS.model,
                   help=f"model of nvbayes/models ({DEFAULTS.model})")
    operator_argument(p, "inversion operator")
    simulator_argument(p)
    p.add_argument("--noise", type=float, default=NOISE, help=f"sensor noise ({NOISE})")
    p.add_argument("--data-seed", type=int, default=DEFAULTS.seed,
                   help=f"seed of the first scene ({DEFAULTS.seed})")
    p.add_argument("--level", type=float, default=DEFAULTS.level,
                   help=f"nominal credible level ({DEFAULTS.level})")
    p.add_argument("--radius", type=float, default=DEFAULTS.radius,
                   help=f"disc radius around each source, in standoffs ({DEFAULTS.radius:g})")
    p.add_argument("--draws", type=int,
                   help="draws per fit, per chain for nuts (each method's default: "
                        + ", ".join(f"{m} {METHODS[m].draws}" for m in SAMPLING_METHODS) + ")")
    p.add_argument("--chains", type=int, help=f"NUTS chains ({METHODS['nuts'].chains})")
    p.add_argument("--warmup", type=int,
                   help=f"NUTS warm-up per chain ({METHODS['nuts'].warmup})")
    p.add_argument("--rho-prior", default=DEFAULTS.rho_prior, choices=RHO_PRIORS,
                   help=f"rho's generative prior ({DEFAULTS.rho_prior}; sparse: a few sources "
                        "on a dark background)")
    p.add_argument("--realism", default=DEFAULTS.realism,
                   help="a lab's nuisances in the simulated scenes: off (default), lab, or a "
                        "comma list of " + ", ".join(NUISANCES))
    p.add_argument("--nuisance", default=DEFAULTS.nuisance,
                   help="the catalogue's nuisances, held at their estimates from the data: "
                        "none (default), all, or a comma list of background, standoff")
    p.add_argument("--out", type=Path, help="output folder (default runs/calibration-...)")


def run(args) -> None:
    load_spec(args.model)
    plan = CalibrationPlan(methods=tuple(m.strip() for m in args.method.split(",") if m),
                           scenes=args.scenes, simulator=args.simulator,
                           classes=tuple(c.strip() for c in args.classes.split(",") if c),
                           grid=args.grid, model=args.model, operator=args.operator,
                           noise=args.noise, seed=args.data_seed, level=args.level,
                           radius=args.radius, draws=args.draws, chains=args.chains,
                           warmup=args.warmup, rho_prior=args.rho_prior,
                           realism=args.realism, nuisance=args.nuisance)
    if plan.draws is not None and plan.draws < 2:
        raise NvbayesError(f"--draws {plan.draws}", "use 2 or more draws")
    prior = "" if plan.rho_prior == "exponential" else f"-{plan.rho_prior}"
    prior += "" if plan.realism == "off" else f"-{plan.realism.replace(',', '+')}"
    prior += "" if plan.nuisance == "none" else f"-held-{plan.nuisance.replace(',', '+')}"
    out = args.out or RUNS / (f"calibration-{'-'.join(plan.methods)}-{plan.grid}px-"
                              f"{plan.scenes}scenes{prior}")
    run_calibration(plan, out)
    print((out / TABLE).read_text().rstrip())
    print(f"files: {out / DATASET}, {out / TABLE}, {out / FIGURE}")
