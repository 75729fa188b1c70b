"""Methods of one or more benchmark folders side by side, with paired differences.

    .venv/bin/python benchmarks/compare_methods.py runs/deviations-held32 [more folders] \\
        --operator F2 --reference robust [--out runs/table.md]

A method name that appears in more than one folder is labelled with its folder after the
first, e.g. ``netmy (held32-dir4)``, for ``--reference`` as well.

Folders joined by ``+`` (``runs/held32-dir4+runs/held32b-robust``) are pooled: benchmarks of
different data sets, their samples stacked.  A method enters the pool only if every folder has
it with the same specification (its ``[methods.NAME]`` table of ``benchmark.toml``), so two
models that share a name are never mixed; the others are listed as left out.

Each metric is first averaged over the fit seeds of a sample; the table gives the mean over
samples with a 95 % t-interval over samples (the scene-to-scene spread, which dominates), and,
for every method, the mean paired difference to ``--reference`` on the samples both finished,
with its own 95 % interval (a difference whose interval excludes 0 is a measured one).
"""

from __future__ import annotations

import argparse
import math
import tomllib
from pathlib import Path

import numpy as np
import xarray as xr
from scipy import stats

METRICS = ("hungarian_f1", "swd", "gmsd", "larmor_mae", "runtime_s")


def interval(values: np.ndarray) -> tuple[float, float, int]:
    """``(mean, half width of the 95 % t-interval, count)`` of the finite values."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan, 0
    half = (float(stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1)
                  / math.sqrt(values.size)) if values.size > 1 else math.nan)
    return float(values.mean()), half, int(values.size)


def per_sample(results: xr.Dataset, method: str, operator: str, metric: str) -> np.ndarray:
    """``(sample,)``: the metric averaged over the seeds each sample finished."""
    values = results[metric].sel({"method": method, "operator": operator})
    return values.mean("seed", skipna=True).values


def plan(folder: Path) -> dict:
    """A benchmark folder's ``benchmark.toml``."""
    with open(folder / "benchmark.toml", "rb") as f:
        return tomllib.load(f)


def pooled(group: str, operator: str, metrics: tuple = METRICS
           ) -> tuple[str, dict, dict, list[str]]:
    """One folder, or ``+``-joined folders pooled over their samples (module docstring):
    ``(name, {method: {metric: (sample,)}}, {method: seed count, "1–2" where folders differ},
    notes on the methods left out)``."""
    folders = [Path(part) for part in group.split("+")]
    parts = [xr.open_dataset(folder / "results.nc") for folder in folders]
    if any(operator not in r["operator"].values for r in parts):
        return folders[0].name, {}, {}, []
    plans = [plan(folder) for folder in folders]
    prints = [p["benchmark"].get("data_fingerprint") for p in plans]
    if len(set(prints)) < len(prints):
        raise SystemExit(f"{group}: two of these folders benchmark the same data set; "
                         "pool folders of different data sets only")
    specs = [p.get("methods", {}) for p in plans]
    names = [set(r["method"].values.tolist()) for r in parts]
    notes, columns, seeds = [], {}, {}
    for method in parts[0]["method"].values.tolist():
        if not all(method in n for n in names):
            notes.append(f"{method}: not in every folder of {group}")
            continue
        if any(spec.get(method) != specs[0].get(method) for spec in specs[1:]):
            notes.append(f"{method}: its specification differs across {group}")
            continue
        where = {"method": method, "operator": operator}
        counts = sorted({int(np.isfinite(r["hungarian_f1"].sel(where)).any("sample").sum())
                         for r in parts})
        seeds[method] = (str(counts[0]) if len(counts) == 1
                         else f"{counts[0]}–{counts[-1]}")
        columns[method] = {m: np.concatenate([per_sample(r, method, operator, m) for r in parts])
                           for m in metrics if all(m in r for r in parts)}
    name = "+".join(folder.name for folder in folders)
    return name, columns, seeds, notes


def table(folders: "list[str | Path]", operator: str, reference: "str | None",
          metrics: tuple = METRICS) -> str:
    columns: dict[str, dict[str, np.ndarray]] = {}
    seeds: dict[str, str] = {}
    left_out: list[str] = []
    for group in folders:
        name, found, counts, notes = pooled(str(group), operator, metrics)
        left_out += notes
        for method, values in found.items():
            # a name met in an earlier folder is labelled with its folder
            label = f"{method} ({name})" if method in columns else method
            seeds[label] = counts[method]
            columns[label] = values
    lines = [f"Inversion under {operator}; mean ± 95 % interval over samples (each the mean "
             "over its seeds)" + (f"; Δ = paired difference to `{reference}`" if reference
                                  else "") + ".", "",
             "| method | samples × seeds | " + " | ".join(metrics) +
             (" | Δ hungarian_f1 | Δ swd |" if reference else " |"),
             "| --- | --- | " + " | ".join("---" for _ in metrics) +
             (" | --- | --- |" if reference else " |")]
    for method, values in columns.items():
        cells = []
        count = 0
        for metric in metrics:
            mean, half, n = interval(values.get(metric, np.array([])))
            count = max(count, n)
            cells.append(f"{mean:.3g} ± {half:.2g}")
        row = f"| {method} | {count} × {seeds[method]} | " + " | ".join(cells)
        if reference:
            for metric in ("hungarian_f1", "swd"):
                diff = values[metric] - columns[reference][metric]
                mean, half, _ = interval(diff)
                row += f" | {mean:+.3f} ± {half:.3f}"
        lines.append(row + " |")
    if left_out:
        lines += ["", "Left out of a pool: " + "; ".join(left_out) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+",
                        help="benchmark folders; A+B pools folders of different data sets")
    parser.add_argument("--operator", default="F2")
    parser.add_argument("--reference", help="method the paired differences are taken to")
    parser.add_argument("--out", type=Path, help="also write the table here")
    parser.add_argument("--metrics", default=",".join(METRICS),
                        help=f"comma list of columns ({','.join(METRICS)}; also density_mse, "
                             "noise_mse, masked_ssim, ...)")
    args = parser.parse_args(argv)
    text = table(args.folders, args.operator, args.reference,
                 tuple(m.strip() for m in args.metrics.split(",") if m.strip()))
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
