"""Wall time of ``nvbayes fit DATA --method catalogue`` on 64² F3 measurements, by source count.

For each requested count, the first ``--scenes`` seeds of the medium classes (close, medium,
far in turn) whose scene has exactly that many sources are written to a measurement file and
fitted by the command line, one fit at a time and nothing else running; the time is the whole
command (start-up, fit, files and figures), from a fresh process each time.  Prints the
median and the maximum per count, with the fit's own ``wall_time_s`` beside it.

    python benchmarks/catalogue_time.py --counts 3,8 --scenes 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nvbayes.data.io import write_netcdf
from nvbayes.data.scenes import simulate
from nvbayes.results.run import Run

CLASSES = ("medium/close", "medium/medium", "medium/far")


def scenes_with(count: int, wanted: int) -> list:
    """``wanted`` 64² measurements with exactly ``count`` sources (medium classes in turn)."""
    found, seed = [], 0
    while len(found) < wanted and seed < 2000:
        name = CLASSES[seed % len(CLASSES)] if count > 3 else "few/far"
        data = simulate(name, seed)
        if int(np.count_nonzero(data["rho_true"].values)) == count:
            found.append(data)
        seed += 1
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="3,8")
    parser.add_argument("--scenes", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for count in (int(c) for c in args.counts.split(",")):
            wall, fit_time, chosen = [], [], []
            for i, data in enumerate(scenes_with(count, args.scenes)):
                path, out = Path(folder) / f"k{count}-{i}.nc", Path(folder) / f"k{count}-{i}"
                write_netcdf(data, path)
                t0 = time.perf_counter()
                subprocess.run([str(Path(sys.executable).with_name("nvbayes")), "fit",
                                str(path), "--method", "catalogue", "--out", str(out)],
                               check=True, capture_output=True)
                wall.append(time.perf_counter() - t0)
                run = Run.load(out)
                fit_time.append(float(run.config["run"]["wall_time_s"]))
                chosen.append(len(run.frames["catalogue"]))
                print(f"{count} sources, {data['scene_class'].item()} seed "
                      f"{int(data['seed'])}: {wall[-1]:.1f} s (fit "
                      f"{fit_time[-1]:.1f} s), K = {chosen[-1]}", flush=True)
            rows.append((count, len(wall), statistics.median(wall), max(wall),
                         statistics.median(fit_time), chosen))
    print("\n| sources | fits | median command s | max s | median fit s | K chosen |")
    print("| --- | --- | --- | --- | --- | --- |")
    for count, n, med, top, fit_med, chosen in rows:
        print(f"| {count} | {n} | {med:.1f} | {top:.1f} | {fit_med:.1f} | "
              f"{', '.join(map(str, chosen))} |")


if __name__ == "__main__":
    main()
