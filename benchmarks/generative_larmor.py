"""Larmor error on the true support under the generative likelihood against the noise-map one.

For each scene (few/far, 16², F3-simulated, 1 % noise, data seeds 0 … N−1): fit with
``--method laplace`` under both likelihoods and record the Larmor MAE on the true support
(``metrics.larmor_mae``) and the wall time.  Prints the medians with a bootstrap 95 % interval.

Usage: ``python benchmarks/generative_larmor.py [--scenes 16]``.
"""

from __future__ import annotations

import argparse

import numpy as np

from nvbayes.data.scenes import SimulationSettings, simulate
from nvbayes.physics.geometry import Grid
from nvbayes.workflows.fit import fit


def median_interval(values: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    boot = np.median(rng.choice(values, size=(2000, len(values))), axis=1)
    return float(np.median(values)), *np.quantile(boot, [0.025, 0.975])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=16)
    args = parser.parse_args()
    rows = {"generative": [], "noise-map": []}
    times = {"generative": [], "noise-map": []}
    for seed in range(args.scenes):
        data = simulate("few/far", seed, SimulationSettings(grid=Grid(16)))
        for likelihood in rows:
            run = fit(data, model="netmy-fast", method="laplace", likelihood=likelihood,
                      show_progress=False)
            rows[likelihood].append(float(run.metrics["larmor_mae"]))
            times[likelihood].append(run.config["run"]["wall_time_s"])
    print(f"Larmor MAE on the true support, laplace, {args.scenes} few/far scenes at 16²:")
    for likelihood, values in rows.items():
        med, lo, hi = median_interval(np.asarray(values))
        print(f"  {likelihood}: median {med:.4f} GHz [{lo:.4f}, {hi:.4f}], mean "
              f"{np.mean(values):.4f}; median wall time {np.median(times[likelihood]):.1f} s")


if __name__ == "__main__":
    main()
