"""Arguments and parsing shared by several commands."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from nvbayes.data.realism import NUISANCES, Realism, parse_realism
from nvbayes.data.scenes import NOISE, SimulationSettings
from nvbayes.data.spec import (
    DEFAULT_PROTOCOL,
    NUISANCE_FITS,
    NUISANCE_NAMES,
    PROTOCOLS,
    NuisanceSpec,
    parse_nuisance,
)
from nvbayes.errors import NvbayesError
from nvbayes.inference.map import PRECISIONS
from nvbayes.inference.methods import DEVICES
from nvbayes.physics.geometry import GRID, SPACING_NM, STANDOFF_NM, Grid
from nvbayes.physics.kernels import NV_ORIENTATIONS, nv_axis_named
from nvbayes.physics.lorentzian import LARMOR_BAND_GHZ, LINEWIDTH_GHZ, N_FREQ, READOUTS
from nvbayes.physics.operators import INVERSION_OPERATORS, OPERATORS
from nvbayes.workflows.benchmark.executors import DaskExecutor, InProcess

#: Where outputs go without --out.
RUNS = Path("runs")


def grid_size(text: str) -> tuple[int, int]:
    """``--grid`` as ``N`` (square) or ``NYxNX`` → ``(ny, nx)``."""
    parts = str(text).lower().split("x")
    try:
        sides = [int(v) for v in parts]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2):
        raise argparse.ArgumentTypeError(f"{text!r} is not N or NYxNX (e.g. 64 or 48x96)")
    return (sides[0], sides[-1])


def grid_argument(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument("--grid", type=grid_size, default=(default, default),
                   help=f"pixels per side, N or NYxNX for a rectangular window ({default})")


def nv_axis_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nv-axis", default="z", type=nv_axis_named,
                   help=f"the NV axis: {', '.join(NV_ORIENTATIONS)} (the (100)-diamond "
                        "orientations, 54.7 degrees from z) or nx,ny,nz (z)")


def protocol_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", choices=PROTOCOLS,
                   help="paper: the paper's objective verbatim (eps 1e-10, sums, its "
                        "settings); robust: nvbayes's measured choices (noise-floor eps, "
                        "unit-free spectrum, the model file's [robust] table).  Default: "
                        f"{DEFAULT_PROTOCOL}, or the protocol a model file names")


def readout_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--readout", default="wide", choices=READOUTS,
                   help="readout frequencies over the band widened by one linewidth each "
                        "side (wide, default) or over the Larmor band itself (band: the "
                        "paper's appendix E.1)")


def operator_argument(p: argparse.ArgumentParser, help: str = "likelihood operator") -> None:
    p.add_argument("--operator", default="F2", type=str.upper, choices=INVERSION_OPERATORS,
                   help=f"{help}, F1 or F2 (F2)")


def simulator_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--simulator", default="F3", type=str.upper, choices=tuple(OPERATORS),
                   help="operator that simulates the data: F3 (the direct sum, "
                        "cross-fidelity; default), or F2/F1 for a matched-model control")


def simulation_arguments(p: argparse.ArgumentParser) -> None:
    """The settings of simulated measurements (:class:`~nvbayes.data.scenes.SimulationSettings`),
    read back by :func:`simulation_settings`."""
    simulator_argument(p)
    p.add_argument("--noise", type=float, default=NOISE,
                   help=f"noise std as a fraction of the dynamic range (default {NOISE})")
    grid_argument(p, GRID)
    nv_axis_argument(p)
    p.add_argument("--spacing", type=float, default=SPACING_NM,
                   help=f"pixel spacing, nm ({SPACING_NM:g})")
    p.add_argument("--standoff", type=float, default=STANDOFF_NM,
                   help=f"standoff z0, nm ({STANDOFF_NM:g})")
    p.add_argument("--linewidth", type=float, default=LINEWIDTH_GHZ,
                   help=f"Lorentzian linewidth, GHz ({LINEWIDTH_GHZ:g})")
    p.add_argument("--band", type=float, nargs=2, default=LARMOR_BAND_GHZ,
                   metavar=("LOW", "HIGH"), help="Larmor band, GHz (1.5 2.5)")
    p.add_argument("--freqs", type=int, default=N_FREQ,
                   help=f"number of readout frequencies ({N_FREQ})")
    p.add_argument("--units", default="normalized", choices=("normalized", "si"))
    readout_argument(p)
    realism_arguments(p)


#: The flags that set one nuisance of :class:`~nvbayes.data.realism.Realism` over a preset.
_REALISM_FLAGS = {
    "amplitude_min": ("--amplitude-min", float, "lower end of the amplitude range, relative "
                      "to the brightest source (0.5; lab 0.3)"),
    "cloud_nm": ("--cloud-nm", float, "each source a cloud of spins of this width, nm "
                 "(0; lab 4)"),
    "standoff_error": ("--standoff-error", float, "true standoff = recorded x (1 + this) "
                       "(0; lab 0.2)"),
    "depth_spread_nm": ("--depth-spread-nm", float, "per-pixel NV depth spread, nm "
                        "(0; lab 1)"),
    "background": ("--background", float, "intrinsic background, flat in frequency and "
                   "smooth in space, its maximum relative to the sample's peak (0; lab 0.3)"),
    "gain_spread": ("--gain-spread", float, "per-pixel gain spread (0; lab 0.03)"),
    "shot_noise": ("--shot-noise", float, "photon shot noise at the peak, relative to the "
                   "peak (0; lab 0.01)"),
}


def realism_arguments(p: argparse.ArgumentParser) -> None:
    """``--realism`` (a preset or nuisance names) and one flag per nuisance over it."""
    p.add_argument("--realism", default="off",
                   help="a lab's nuisances in the simulated data: off (the paper's generator, "
                        "default), lab (all at typical lab levels), or a comma list of "
                        f"{', '.join(NUISANCES)} (each at its lab level); the flags below "
                        "override one level")
    for name, (flag, kind, help) in _REALISM_FLAGS.items():
        p.add_argument(flag, dest=name, type=kind, help=help)
    p.add_argument("--continuous", action="store_true", default=None,
                   help="source positions anywhere in a pixel, not on its centre (lab: on)")
    p.add_argument("--no-sigma", dest="record_sigma", action="store_false", default=None,
                   help="the file does not record the noise sigma (lab: not recorded)")


def nuisance_arguments(p: argparse.ArgumentParser) -> None:
    """``--nuisance`` and its priors (:class:`~nvbayes.data.spec.NuisanceSpec`)."""
    p.add_argument("--nuisance", default="none",
                   help="map (and catalogue) fits, robust protocol: the lab's nuisances the model "
                        "carries, none (default), all, or a comma list of "
                        f"{', '.join(NUISANCE_NAMES)}")
    p.add_argument("--standoff-sd-nm", type=float,
                   help="the standoff prior's sd, nm (a quarter of the recorded standoff)")
    p.add_argument("--standoff-fit", choices=NUISANCE_FITS,
                   help="profile: the standoff from the sources' point spread, held fixed "
                        "(default); joint: optimized with the field from there")
    p.add_argument("--background-fit", choices=NUISANCE_FITS,
                   help="profile: the background from the spectral shape, held fixed "
                        "(default); joint: optimized with the field from there")


def nuisance_from(args) -> NuisanceSpec:
    """The :class:`~nvbayes.data.spec.NuisanceSpec` of :func:`nuisance_arguments`."""
    return parse_nuisance(args.nuisance, standoff_sd_nm=args.standoff_sd_nm,
                          standoff_fit=args.standoff_fit, background_fit=args.background_fit)


def realism_from(args) -> Realism:
    """The :class:`~nvbayes.data.realism.Realism` of :func:`realism_arguments`."""
    realism = parse_realism(args.realism)
    overrides = {name: getattr(args, name) for name in (*_REALISM_FLAGS, "continuous",
                                                         "record_sigma")
                 if getattr(args, name, None) is not None}
    return dataclasses.replace(realism, **overrides)


def simulation_settings(args) -> SimulationSettings:
    """The :class:`~nvbayes.data.scenes.SimulationSettings` of :func:`simulation_arguments`."""
    return SimulationSettings(
        grid=Grid(args.grid[0], args.spacing, args.standoff, nx=args.grid[1]),
        operator=args.simulator, noise=args.noise, linewidth=args.linewidth,
        band=tuple(args.band), n_freq=args.freqs, units=args.units, readout=args.readout,
        nv_axis=args.nv_axis, realism=realism_from(args))


def device_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", type=str.lower, choices=DEVICES,
                   help="cpu or cuda (cpu)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp32, or bf16: the neural field's MLP in mixed precision (fp32)")


def executor_arguments(p: argparse.ArgumentParser) -> None:
    """``--threads``, and where the fits run: ``--workers N`` or ``--scheduler ADDRESS``."""
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per fit, on every executor (1)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int,
                       help="start a local Dask cluster of N worker processes (needs the "
                            "[dask] extra)")
    where.add_argument("--scheduler", help="run on an existing Dask cluster, tcp://HOST:PORT")


def make_executor(args):
    """The executor :func:`executor_arguments` asked for (not yet entered)."""
    if args.workers is None and args.scheduler is None:
        return InProcess(args.threads)
    return DaskExecutor(args.threads, scheduler=args.scheduler, workers=args.workers)


def parse_samples(text: str, flag: str = "--samples") -> list[int]:
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


def parse_numbers(text: str, flag: str, example: str) -> tuple[float, ...]:
    """``"128,256"`` → ``(128.0, 256.0)``; one line naming ``flag`` when it is not that."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise NvbayesError(f"{flag} {text!r} is not a list of numbers",
                           f"pass e.g. {flag} {example}") from None
    if not values:
        raise NvbayesError(f"{flag} names no value", f"pass e.g. {flag} {example}")
    return values


def check_seed(seed: int) -> int:
    if seed < 0:
        raise NvbayesError(f"seed must be >= 0, got {seed}", "pass --seed 0 or more")
    return seed


def warn(message: str) -> None:
    print(f"nvbayes: warning: {message}", file=sys.stderr)


def note(message: str) -> None:
    """A finding worth a look, not a fault (e.g. a run's residual findings, ``Run.notes``)."""
    print(f"nvbayes: note: {message}", file=sys.stderr)


__all__ = ["RUNS", "check_seed", "device_arguments", "executor_arguments", "make_executor",
           "note",
           "nuisance_arguments", "nuisance_from", "realism_arguments", "realism_from",
           "operator_argument", "parse_samples",
           "protocol_argument", "readout_argument", "simulator_argument", "warn"]
