"""``nvbayes plot``: draw a measurement, or redraw a run folder's figure."""

from __future__ import annotations

from pathlib import Path

from nvbayes.data.io import read_measurement, select_sample
from nvbayes.errors import NvbayesError
from nvbayes.figures import save_figure
from nvbayes.figures.imaging import plot_measurement, plot_run
from nvbayes.results.run import Run
from nvbayes.workflows.fit import FIGURE

from .common import RUNS

DESCRIPTION = ("Draw the noise map, the spectrum at a pixel and the truth of a measurement "
               "file, or redraw the figure of a run folder.")


def add_arguments(p) -> None:
    p.add_argument("data", type=Path, help="measurement .nc file or run folder")
    p.add_argument("--sample", type=int, help="sample index in a data set")
    p.add_argument("--pixel", type=int, nargs=2, metavar=("Y", "X"),
                   help="pixel for the spectrum panel (default: brightest)")
    p.add_argument("--out", type=Path, help="output .png (default runs/<name>.png, or the "
                                            "run folder's reconstruction.png)")


def run(args) -> None:
    if args.data.is_dir():
        if args.sample is not None or args.pixel is not None:
            raise NvbayesError("--sample and --pixel apply to measurement files",
                               "drop them when redrawing a run folder")
        run = Run.load(args.data)
        out = args.out or args.data / FIGURE
        save_figure(plot_run(run), out)
        print(out)
        return
    data = read_measurement(args.data)
    one = select_sample(data, args.sample)
    suffix = f"-sample{args.sample}" if args.sample is not None else ""
    out = args.out or RUNS / f"{args.data.stem}{suffix}.png"
    save_figure(plot_measurement(one, tuple(args.pixel) if args.pixel else None), out)
    print(out)
