"""The ``nvbayes`` command line.

Every user mistake ends in one line on standard error, ``nvbayes: error: <problem>; <fix>``,
exit status 2, and no output file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import NvbayesError
from .physics.geometry import GRID, SPACING_NM, STANDOFF_NM, Grid
from .physics.lorentzian import LARMOR_BAND_GHZ, LINEWIDTH_GHZ, N_FREQ
from .scenes import NOISE

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
    sim.add_argument("--out", type=Path, help="output .nc (default under runs/)")
    sim.set_defaults(handler=_simulate)

    fit = sub.add_parser("fit", help="fit a measurement and write a run folder",
                         description="Fit one measurement with a model of models/ and write "
                                     "the run folder (posterior.nc, history.nc, metrics.nc, "
                                     "config.toml, reconstruction.png).")
    fit.add_argument("data", type=Path, help="measurement .nc file")
    fit.add_argument("--model", default="netmy",
                     help="model name in models/ (netmy, netmy-fast, tikhonov, admm, lbfgs, "
                          "gsplat, deepdecoder) or a .toml path")
    fit.add_argument("--method", default="map", help="inference method (map)")
    fit.add_argument("--operator", default="F2", help="likelihood operator, F1 or F2 (F2)")
    fit.add_argument("--sample", type=int, help="sample index in a data set")
    fit.add_argument("--seed", type=int, default=0, help="seed of the fit (0)")
    fit.add_argument("--device", default="cpu", help="cpu or cuda (cpu)")
    fit.add_argument("--out", type=Path, help="run folder (default runs/<data>-<model>-...)")
    fit.set_defaults(handler=_fit)

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
        units=args.units)
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


def _fit(args) -> None:
    from .api import fit

    if args.seed < 0:
        raise NvbayesError(f"seed must be >= 0, got {args.seed}", "pass --seed 0 or more")
    suffix = f"-sample{args.sample}" if args.sample is not None else ""
    model_tag = Path(args.model).stem
    out = args.out or RUNS / (f"{args.data.stem}{suffix}-{model_tag}-{args.method}-"
                              f"{args.operator.upper()}-seed{args.seed}")
    if out.exists() and not (out / "config.toml").is_file():
        raise NvbayesError(f"{out} exists and is not a run folder",
                           "choose another --out (a run folder is replaced, nothing else is)")
    run = fit(args.data, model=args.model, method=args.method, operator=args.operator,
              sample=args.sample, seed=args.seed, device=args.device)
    for message in run.messages:
        print(f"nvbayes: warning: {message}", file=sys.stderr)
    folder = run.save(out)
    print(f"run: {folder}")
    print(f"figure: {folder / 'reconstruction.png'}")
    if run.metrics is not None:
        m = run.metrics
        print(f"metrics: Hungarian F1 {float(m['hungarian_f1']):.3f}, "
              f"SWD {float(m['swd']):.4f}, GMSD {float(m['gmsd']):.4f}, "
              f"Larmor MAE {float(m['larmor_mae']):.3f} GHz "
              f"({run.config['run']['wall_time_s']:.1f} s)")


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
        print("nvbayes: interrupted; no output was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
