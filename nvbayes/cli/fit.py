"""``nvbayes fit``: one measurement into a run folder, or the samples of a data set into a
folder of run folders with ``fits.csv``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nvbayes.data.io import n_samples, read_measurement, write_folder
from nvbayes.errors import NvbayesError
from nvbayes.inference.generative import GAIN_MODES, RHO_PRIORS
from nvbayes.inference.methods import DEFAULT_LIKELIHOOD, LIKELIHOODS, METHODS
from nvbayes.results.run import CONFIG
from nvbayes.results.store import replaceable_folder
from nvbayes.workflows.fit import (
    CATALOGUE_FIGURE,
    FIGURE,
    HESSIAN_FIGURE,
    fit,
    fit_samples,
    precision_note,
    save_run,
)

from .common import (
    RUNS,
    check_seed,
    device_arguments,
    note,
    nuisance_arguments,
    nuisance_from,
    operator_argument,
    parse_samples,
    protocol_argument,
    warn,
)

DESCRIPTION = ("Fit one measurement with a model of nvbayes/models and write the run folder "
               "(posterior.nc, history.nc, metrics.nc, config.toml, reconstruction.png).  On a "
               "data set without --sample, fit every sample (or --samples), --batch at a time "
               "in one optimization loop, into one folder holding a run folder per sample and "
               "fits.csv.")
#: The table of a folder of several runs (one row per sample).
FITS_TABLE = "fits.csv"
FITS_COLUMNS = ("hungarian_f1", "swd", "gmsd", "larmor_mae")


def _defaults(name: str) -> str:
    values = [f"{m.name} {getattr(m, name)}" for m in METHODS.values()
              if getattr(m, name) is not None]
    return ", ".join(values)


def add_arguments(p) -> None:
    p.add_argument("data", type=Path, help="measurement .nc file")
    p.add_argument("--model", default="netmy",
                   help="model name in nvbayes/models (netmy, netmy-fast, tikhonov, admm, lbfgs, "
                        "gsplat, deepdecoder) or a .toml path (netmy)")
    p.add_argument("--method", default="map", choices=tuple(METHODS),
                   help="; ".join(f"{m.name}: {m.summary}" for m in METHODS.values())
                   + " (map)")
    p.add_argument("--draws", type=int, help=f"posterior draws ({_defaults('draws')}; "
                                             "per chain for nuts)")
    p.add_argument("--chains", type=int, help=f"chains ({_defaults('chains')})")
    p.add_argument("--warmup", type=int, help=f"warm-up per chain ({_defaults('warmup')})")
    p.add_argument("--likelihood", default=DEFAULT_LIKELIHOOD, choices=LIKELIHOODS,
                   help="svi/laplace/nuts: generative (every readout value with its Gaussian "
                        "noise; the Larmor field latent) or noise-map (the max-normalized "
                        f"noise map and total power, Larmor plugged in) ({DEFAULT_LIKELIHOOD})")
    p.add_argument("--gain", default="auto", choices=GAIN_MODES,
                   help="generative fits: the gain between model and spectrum, fixed at 1 or "
                        "latent; auto: fixed where the file's spectrum_scale is absolute "
                        "(auto)")
    p.add_argument("--rho-mean", type=float,
                   help="generative fits: prior mean of rho per pixel (default: the data's "
                        "energy-matched uniform level)")
    p.add_argument("--sources", type=int,
                   help="catalogue: the number of sources K to start from (default: the peaks "
                        "of its MAP); K - 1, K and K + 1 are compared by PSIS-LOO")
    operator_argument(p)
    p.add_argument("--rho-prior", default="exponential", choices=RHO_PRIORS,
                   help="generative laplace/svi/nuts: rho's prior, exponential (default) or "
                        "sparse (a few sources on a dark background)")
    p.add_argument("--jobs", type=int,
                   help="catalogue: processes for its NUTS chains (default: the CPU cores; "
                        "the draws do not depend on it)")
    nuisance_arguments(p)
    p.add_argument("--sample", type=int, help="sample index in a data set")
    p.add_argument("--samples", help="samples of a data set to fit, e.g. 0-7 or 1,4,9 "
                                     "(default: all)")
    p.add_argument("--batch", type=int, default=8,
                   help="measurements per optimization loop when fitting several (8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fit (0)")
    device_arguments(p)
    protocol_argument(p)
    p.add_argument("--out", type=Path, help="run folder (default runs/<data>-<model>-...)")


def run(args) -> None:
    check_seed(args.seed)
    if args.sample is not None and args.samples is not None:
        raise NvbayesError("--sample and --samples both given", "use one of them")
    data = read_measurement(args.data)
    line = precision_note(args.device, args.precision)
    if line:
        note(line)
    if args.sample is None and (args.samples is not None or n_samples(data) > 1):
        _fit_many(args, data)
        return
    suffix = f"-sample{args.sample}" if args.sample is not None else ""
    out = replaceable_folder(_default_out(args, suffix), CONFIG, "run")
    one = fit(data, model=args.model, method=args.method, operator=args.operator,
              sample=args.sample, seed=args.seed, device=args.device,
              precision=args.precision, draws=args.draws, chains=args.chains,
              warmup=args.warmup, protocol=args.protocol, **_posterior_options(args))
    one.config["run"]["measurement"] = str(args.data)
    for message in one.messages:
        warn(message)
    for line in one.notes:
        note(line)
    folder = save_run(one, out)
    print(f"run: {folder}")
    print(f"figure: {folder / FIGURE}")
    if "catalogue" in one.tables:
        c = one.tables["catalogue"]
        print(f"catalogue: {c.attrs['sources']} sources (PSIS-LOO over "
              f"{', '.join(map(str, c['candidate'].values))}), {c.attrs['divergences']} "
              f"divergences ({folder / 'catalogue.csv'}, {folder / CATALOGUE_FIGURE})")
    if one.hessian is not None:
        h = one.hessian.attrs
        print(f"hessian: condition number {h['condition_number']:.4g}, eigenvalues fall as "
              f"exp(-{h['decay_per_standoff']:.2f} k z0) ({folder / HESSIAN_FIGURE})")
    if one.metrics is not None:
        m = one.metrics
        print(f"metrics: Hungarian F1 {float(m['hungarian_f1']):.3f}, SWD {float(m['swd']):.4f}"
              f", GMSD {float(m['gmsd']):.4f}, Larmor MAE {float(m['larmor_mae']):.3f} GHz "
              f"({one.config['run']['wall_time_s']:.1f} s)")


def _posterior_options(args) -> dict:
    return {"likelihood": args.likelihood, "gain": args.gain, "rho_mean": args.rho_mean,
            "sources": args.sources, "jobs": args.jobs, "rho_prior": args.rho_prior,
            "nuisance": nuisance_from(args)}


def _default_out(args, suffix: str) -> Path:
    return args.out or RUNS / (f"{args.data.stem}{suffix}-{Path(args.model).stem}-"
                               f"{args.method}-{args.operator}-seed{args.seed}")


def _fit_many(args, data) -> None:
    """Several samples of a data set, in batches, into one folder of run folders."""
    samples = parse_samples(args.samples) if args.samples is not None else None
    out = replaceable_folder(_default_out(args, ""), FITS_TABLE, "fits")
    runs = fit_samples(data, model=args.model, method=args.method, operator=args.operator,
                       samples=samples, seed=args.seed, device=args.device, batch=args.batch,
                       precision=args.precision, draws=args.draws, chains=args.chains,
                       warmup=args.warmup, protocol=args.protocol,
                       **_posterior_options(args))
    rows = []
    for one in runs:
        one.config["run"]["measurement"] = str(args.data)
        m = one.metrics
        rows.append({"sample": int(one.config["run"]["sample"]),
                     "wall_time_s": one.config["run"]["wall_time_s"],
                     "diverged": int(one.diverged)}
                    | {k: float(m[k]) if m is not None and k in m else float("nan")
                       for k in FITS_COLUMNS})

    def fill(tmp: Path) -> None:
        for one, row in zip(runs, rows, strict=True):
            save_run(one, tmp / f"sample{row['sample']:04d}")
        pd.DataFrame(rows).to_csv(tmp / FITS_TABLE, index=False)

    folder = write_folder(out, fill)
    for one in runs:
        for message in one.messages:
            warn(f"sample {one.config['run']['sample']}: {message}")
        for line in one.notes:
            note(f"sample {one.config['run']['sample']}: {line}")
    total = sum(one.config["run"]["wall_time_s"] for one in runs)
    print(f"runs: {folder} ({len(runs)} samples, batch {args.batch}, {total:.1f} s in all)")
    print(f"table: {folder / FITS_TABLE}")
