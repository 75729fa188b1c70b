"""Accuracy of the nuisance estimates from the data alone (inference/nuisance.py) over many
held-out scenes: the standoff from the point spread and the background from the spectral
shape, on scenes with one nuisance and on the ``lab`` set.

    python benchmarks/nuisance_estimates.py --per-class 4 --data-seed 2000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

from nvbayes.data.realism import LAB, Realism, parse_realism
from nvbayes.data.scenes import PAPER_CLASSES, SimulationSettings, dataset_plan, simulate
from nvbayes.inference.nuisance import estimate_background, estimate_standoff
from nvbayes.model.nuisance import background_map
from nvbayes.model.problem import InverseProblem
from nvbayes.physics.geometry import Grid

SETTINGS = {"standoff +20 %": Realism(standoff_error=0.2, record_sigma=False),
            "standoff -10 %": Realism(standoff_error=-0.1, record_sigma=False),
            "background": parse_realism("background"),
            "lab": LAB}


def summary(values) -> str:
    values = np.asarray(values)
    half = stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return (f"{values.mean():+.3f} ± {half:.3f} (median |·| {np.median(np.abs(values)):.3f}, "
            f"max |·| {np.abs(values).max():.3f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=4)
    p.add_argument("--grid", type=int, default=64)
    p.add_argument("--data-seed", type=int, default=2000)
    args = p.parse_args()
    plan = dataset_plan(list(PAPER_CLASSES), per_class=args.per_class, seed=args.data_seed)
    print(f"{len(plan)} scenes ({args.per_class} per class), {args.grid}^2, data seeds from "
          f"{args.data_seed}")
    for name, realism in SETTINGS.items():
        z_err, b_err, within, seconds = [], [], 0, []
        for scene, seed in plan:
            data = simulate(scene, seed, SimulationSettings(grid=Grid(args.grid),
                                                            realism=realism))
            problem = InverseProblem.from_measurement(data)
            start = time.perf_counter()
            grid = estimate_background(problem, 8)
            z = estimate_standoff(problem, grid)
            seconds.append(time.perf_counter() - start)
            truth = float(data["standoff_true"])
            z_err.append(z - truth)
            within += abs(z - truth) <= 1.0
            flat = background_map(grid, problem.shape).numpy()
            b_err.append(np.abs(flat - data["background_true"].values).max()
                         / data["spectrum"].values.max())
        print(f"{name}: standoff error (nm) {summary(z_err)}; within 1 nm {within}/{len(plan)}; "
              f"background max error / peak {summary(b_err)}; {np.median(seconds):.2f} s")


if __name__ == "__main__":
    main()
