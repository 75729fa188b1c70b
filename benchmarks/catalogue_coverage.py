"""Coverage of the source catalogue on F3 scenes of the paper's eight classes.

For each (scene, seed): simulate the scene (F3, 64², 1 % noise, data seed = scene index),
fit ``nvbayes fit --method catalogue`` with that NUTS seed, match catalogue sources to true
ones (Hungarian assignment on distance; a true source is detected when its match lies within
one standoff), and record, per detected source, whether each 90 % interval (x, y, amplitude,
ω_L) holds the truth, the position error (pixels) and the ω_L error (GHz).

Fits run on a Dask LocalCluster (``--workers``), one cell file per (scene, seed) in
``runs/catalogue-coverage/cells`` (rerunning resumes).  Writes
``runs/catalogue-coverage/coverage.md``.

Usage: ``python benchmarks/catalogue_coverage.py [--scenes 32] [--seeds 2] [--workers 2]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from scipy.optimize import linear_sum_assignment

from nvbayes.data.scenes import PAPER_CLASSES, simulate
from nvbayes.metrics import wilson
from nvbayes.results.store import CellStore
from nvbayes.workflows.benchmark.executors import DaskExecutor, InProcess
from nvbayes.workflows.fit import fit

OUT = Path("runs/catalogue-coverage")
NAMES = ("x_nm", "y_nm", "amplitude", "larmor_ghz")


def cell(item: tuple[int, int]) -> xr.Dataset:
    scene, seed = item
    data = simulate(PAPER_CLASSES[scene % len(PAPER_CLASSES)], scene)
    run = fit(data, method="catalogue", model="netmy-fast", seed=seed, show_progress=False)
    table = run.frames["catalogue"]
    iy, ix = np.nonzero(data["rho_true"].values)
    truth = np.stack([data["x"].values[ix], data["y"].values[iy],
                      data["rho_true"].values[iy, ix], data["larmor_true"].values[iy, ix]], 1)
    cost = np.hypot(table.x_nm.values[:, None] - truth[None, :, 0],
                    table.y_nm.values[:, None] - truth[None, :, 1])
    rows, cols = linear_sum_assignment(cost)
    standoff = float(data.attrs["standoff_nm"])
    keep = cost[rows, cols] <= standoff
    rows, cols = rows[keep], cols[keep]
    inside = np.stack([(table[f"{n}_lo"].values[rows] <= truth[cols, i])
                       & (truth[cols, i] <= table[f"{n}_hi"].values[rows])
                       for i, n in enumerate(NAMES)], 1)
    spacing = float(data["x"].values[1] - data["x"].values[0])
    return xr.Dataset(
        {"inside": (("match", "parameter"), inside.astype(int)),
         "position_error_px": ("match", cost[rows, cols] / spacing),
         "larmor_error_ghz": ("match", np.abs(table.larmor_ghz.values[rows] - truth[cols, 3])),
         "amplitude_error": ("match", np.abs(table.amplitude.values[rows] - truth[cols, 2]))},
        coords={"parameter": list(NAMES)},
        attrs={"scene": scene, "seed": seed, "scene_class": str(data.scene_class.values),
               "true_sources": len(truth), "catalogue_sources": len(table),
               "wall_time_s": float(run.config["run"]["wall_time_s"]),
               "divergences": int(run.idata.sample_stats.attrs.get("divergences", 0))})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    store = CellStore(OUT)
    items = [(s, k) for s in range(args.scenes) for k in range(args.seeds)
             if not store.done(f"scene{s:03d}-seed{k}")]
    executor = InProcess() if args.workers < 2 else DaskExecutor(1, workers=args.workers)
    with executor:
        for (s, k), ds, error in executor.map(cell, items):
            if error is None:
                store.write(f"scene{s:03d}-seed{k}", ds)
            else:
                print(f"scene {s} seed {k}: {error}")
    cells = [store.read(f"scene{s:03d}-seed{k}") for s in range(args.scenes)
             for k in range(args.seeds)]
    cells = [c for c in cells if c is not None]
    inside = np.concatenate([c["inside"].values for c in cells])
    position = np.concatenate([c["position_error_px"].values for c in cells])
    larmor = np.concatenate([c["larmor_error_ghz"].values for c in cells])
    attrs = pd.DataFrame([c.attrs for c in cells])
    detected, true = len(position), int(attrs.true_sources.sum())
    lines = ["# Catalogue coverage on F3 scenes", "",
             f"{attrs.scene.nunique()} scenes (the paper's 8 classes, 64², 1 % noise) × "
             f"{attrs.seed.nunique()} NUTS seeds = {len(cells)} fits; {detected} of {true} "
             f"true sources detected within one standoff; catalogue size = truth in "
             f"{(attrs.catalogue_sources == attrs.true_sources).mean():.0%} of fits.", "",
             "| parameter | 90 % coverage | Wilson 95 % |", "| --- | --- | --- |"]
    for i, name in enumerate(NAMES):
        p = inside[:, i].mean()
        lo, hi = wilson(p, len(inside))
        lines.append(f"| {name} | {p:.3f} | {lo:.3f}–{hi:.3f} |")
    lines += ["", f"Median position error {np.median(position):.3f} px (90th percentile "
              f"{np.quantile(position, 0.9):.3f}); median ω_L error {np.median(larmor):.4f} GHz "
              f"(90th percentile {np.quantile(larmor, 0.9):.4f}).  Wall time per fit: median "
              f"{attrs.wall_time_s.median():.1f} s, max {attrs.wall_time_s.max():.1f} s "
              f"(sources ≤ 8: median {attrs.wall_time_s[attrs.true_sources <= 8].median():.1f}"
              f" s).  Divergent transitions: {int(attrs.divergences.sum())}.", "",
             "| class | fits | detected / true | K right |", "| --- | --- | --- | --- |"]
    for name, group in attrs.groupby("scene_class"):
        found = sum(len(c["position_error_px"]) for c in cells
                    if c.attrs["scene_class"] == name)
        lines.append(f"| {name} | {len(group)} | {found} / {int(group.true_sources.sum())} | "
                     f"{(group.catalogue_sources == group.true_sources).mean():.0%} |")
    text = "\n".join(lines) + "\n"
    (OUT / "coverage.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
