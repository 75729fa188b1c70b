"""Time and peak memory of one ``nvbayes fit`` against the grid size, n = 32 … 256.

For each side n, ``--repeats`` measurements of ``--scene`` (seeds 0, 1, …) on an n × n grid
(20 nm pixels, z0 = 20 nm, F3 with 1 % noise) are fitted by the command line, one at a time
and nothing else running, each in a fresh process.  Reported per n: the median of the fit's
own ``wall_time_s`` (the solver, from ``config.toml``), the median of the whole command, and
the largest peak resident memory of the fitting process (``ru_maxrss``); then the slope of
log(time) against log(n²) by least squares over the medians.

    OMP_NUM_THREADS=2 python benchmarks/fit_scaling.py --sizes 32,64,128,256 --repeats 3

``--batch B`` measures the benchmark command instead: ``nvbayes benchmark`` of B
``--scene``-class samples per n, fitted in one batched optimization loop (``--batch B``,
one operator, one seed), its whole time and peak memory, once per n.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nvbayes.data.io import write_netcdf
from nvbayes.data.scenes import SimulationSettings, simulate
from nvbayes.physics.geometry import Grid
from nvbayes.results.run import Run

#: Runs the command line in this process and prints its peak resident memory (kB) last.
RUNNER = ("import resource, sys\n"
          "from nvbayes.cli import main\n"
          "code = main(sys.argv[1:])\n"
          "print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
          " file=sys.stderr)\n"
          "sys.exit(code)\n")


def one_fit(data_path: Path, out: Path, model: str, method: str, precision: str = "fp32"
            ) -> tuple[float, float, float]:
    """``(fit seconds, command seconds, peak MB)`` of one fit in a fresh process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUNNER, "fit", str(data_path), "--model",
                           model, "--method", method, "--precision", precision,
                           "--out", str(out)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    rss = int(done.stderr.strip().splitlines()[-1].split()[-1])
    fit = float(Run.load(out).config["run"]["wall_time_s"])
    return fit, wall, rss / 1024.0


def one_benchmark(n: int, batch: int, model: str, scene: str, out: Path,
                  precision: str = "fp32") -> tuple[float, float]:
    """``(command seconds, peak MB)`` of a batched benchmark of ``batch`` n² samples."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUNNER, "benchmark", "--classes", scene,
                           "--per-class", str(batch), "--grid", str(n), "--models", model,
                           "--operators", "F2", "--seeds", "0", "--batch", str(batch),
                           "--precision", precision, "--out", str(out)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return wall, int(done.stderr.strip().splitlines()[-1].split()[-1]) / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32,64,128,256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="netmy-fast")
    parser.add_argument("--method", default="map")
    parser.add_argument("--scene", default="medium/medium")
    parser.add_argument("--batch", type=int, help="measure a batched benchmark of B samples")
    parser.add_argument("--precision", default="fp32", help="fp32 or bf16 (the field's MLP)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.batch:
        print(f"| n | benchmark of {args.batch} batched {args.model} fits, s | per fit, s "
              "| peak MB |\n|---|---|---|---|")
        with tempfile.TemporaryDirectory() as folder:
            for n in sizes:
                wall, peak = one_benchmark(n, args.batch, args.model, args.scene,
                                           Path(folder) / f"bench{n}", args.precision)
                print(f"| {n} | {wall:.0f} | {wall / args.batch:.0f} | {peak:.0f} |", flush=True)
        return
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for n in sizes:
            fits, walls, peaks = [], [], []
            for seed in range(args.repeats):
                data = simulate(args.scene, seed, SimulationSettings(grid=Grid(n)))
                path, out = Path(folder) / f"n{n}-{seed}.nc", Path(folder) / f"n{n}-{seed}"
                write_netcdf(data, path)
                fit, wall, peak = one_fit(path, out, args.model, args.method, args.precision)
                fits.append(fit)
                walls.append(wall)
                peaks.append(peak)
                print(f"n={n} seed={seed}: fit {fit:.1f} s, command {wall:.1f} s, "
                      f"peak {peak:.0f} MB", flush=True)
            rows.append((n, statistics.median(fits), statistics.median(walls), max(peaks)))
    print(f"\n{args.model} --method {args.method} --precision {args.precision}, {args.scene}, "
          f"{args.repeats} fits per size")
    print("| n | pixels | fit s (median) | command s (median) | peak MB (max) |")
    print("|---|---|---|---|---|")
    for n, fit, wall, peak in rows:
        print(f"| {n} | {n * n} | {fit:.1f} | {wall:.1f} | {peak:.0f} |")
    if len(rows) > 1:
        x = np.log([n * n for n, *_ in rows])
        y = np.log([fit for _, fit, *_ in rows])
        slope = float(np.polyfit(x, y, 1)[0])
        print(f"\nslope of log(fit time) against log(n²): {slope:.2f}"
              f" (time ∝ pixels^{slope:.2f}; {math.exp(slope * math.log(4)):.1f}x per doubling"
              " of n)")


if __name__ == "__main__":
    main()
