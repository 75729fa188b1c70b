"""Wall time per fit of the posterior methods (svi, laplace, nuts): medians of several runs.

Usage::

    python benchmarks/uncertainty_fits.py --grid 64 --methods svi,laplace --repeats 3
    python benchmarks/uncertainty_fits.py --grid 16 --methods svi,laplace,nuts

Each repeat simulates a new seeded scene of ``--scene`` (seed = repeat index) and fits it; the
table gives the median, minimum and maximum wall time and, for Laplace, the median time of the
Hessian and of its MAP.  Writes ``runs/uncertainty-fits-<grid>px.md``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from nvbayes.data.scenes import SimulationSettings, simulate
from nvbayes.data.spec import load_spec
from nvbayes.model.problem import InverseProblem
from nvbayes.physics.geometry import Grid
from nvbayes.workflows.fit import infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=32)
    parser.add_argument("--methods", default="svi,laplace")
    parser.add_argument("--model", default="netmy-fast")
    parser.add_argument("--scene", default="few/far")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=1000)
    args = parser.parse_args()
    spec = load_spec(args.model)
    rows = ["| method | grid | median s | min s | max s | notes |",
            "| --- | --- | --- | --- | --- | --- |"]
    for method in args.methods.split(","):
        times, notes = [], []
        for seed in range(args.repeats):
            data = simulate(args.scene, seed, SimulationSettings(grid=Grid(args.grid)))
            problem = InverseProblem.from_measurement(data)
            start = time.perf_counter()
            result = infer(problem, spec, method=method, operator="F2", seed=0, device="cpu",
                            show=False, precision="fp32", draws=args.draws, chains=2,
                            warmup=args.warmup)
            times.append(time.perf_counter() - start)
            if method == "laplace":
                notes.append((result.stats["map_time_s"], result.stats["hessian_time_s"]))
            print(f"{method} {args.grid}px seed {seed}: {times[-1]:.1f} s", flush=True)
        note = ""
        if notes:
            med = np.median(np.asarray(notes), axis=0)
            note = f"MAP {med[0]:.1f} s, Hessian + eigh {med[1]:.1f} s"
        if method == "nuts":
            note = f"2 chains x ({args.warmup} warm-up + {args.draws} draws)"
        rows.append(f"| {method} | {args.grid}² | {np.median(times):.1f} | {min(times):.1f} | "
                    f"{max(times):.1f} | {note} |")
    header = (f"# Wall time per posterior fit ({args.model}, {args.scene}, {args.repeats} "
              f"scenes)\n\n{platform.processor() or platform.machine()}, torch "
              f"{torch.__version__}, {torch.get_num_threads()} threads\n\n")
    text = header + "\n".join(rows) + "\n"
    print(text)
    out = Path("runs") / f"uncertainty-fits-{args.grid}px.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
