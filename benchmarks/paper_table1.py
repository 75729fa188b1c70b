"""Benchmark folders beside the paper's Table 1 (cross-fidelity: F3 data, inversion under F1
and F2), one block per folder, e.g. one folder per noise level under the paper protocol:

    .venv/bin/python benchmarks/paper_table1.py runs/table1-paper-32-noise* \\
        [--by-metric] --out runs/table1-paper-32.md

Every cell is the mean ± 95 % t-interval over samples (each the mean over its seeds); the
paper's row follows ours ("paper"), with its own interval (3 seeds of 512 samples).  The
centre-mass ratio (section 5.3) is ours alone: Table 1 does not report it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import xarray as xr
from compare_methods import interval, per_sample

#: Table 1 of the paper: (GMSD, F1, SWD) per method and inversion operator, mean and 95 % CI.
PAPER = {
    ("tikhonov", "F1"): ((0.178, 0.041), (0.465, 0.436), (0.119, 0.043)),
    ("admm", "F1"): ((0.235, 0.088), (0.267, 0.389), (0.052, 0.028)),
    ("gsplat", "F1"): ((0.144, 0.082), (0.816, 0.213), (0.044, 0.037)),
    ("netmy", "F1"): ((0.189, 0.116), (0.733, 0.334), (0.051, 0.048)),
    ("tikhonov", "F2"): ((0.202, 0.043), (0.762, 0.318), (0.100, 0.041)),
    ("admm", "F2"): ((0.197, 0.061), (0.084, 0.208), (0.134, 0.048)),
    ("gsplat", "F2"): ((0.140, 0.070), (0.740, 0.241), (0.061, 0.039)),
    ("netmy", "F2"): ((0.125, 0.058), (0.882, 0.102), (0.036, 0.023)),
}
METRICS = ("gmsd", "hungarian_f1", "swd")


def cell(mean: float, half: float) -> str:
    return f"{mean:.3f} ± {half:.3f}"


def block(folder: Path) -> list[str]:
    results = xr.open_dataset(folder / "results.nc")
    data = xr.open_dataset(folder / "data.nc")
    title = (f"**{folder.name}**: {results.sizes['sample']} samples, noise "
             f"{data.attrs.get('noise')}, {data.sizes['x']}², readout "
             f"{float(data['freq'].min()):.2f}–{float(data['freq'].max()):.2f} GHz")
    lines = [title, "", "| method | operator | GMSD | Hungarian F1 | SWD | centre-mass ratio |",
             "| --- | --- | --- | --- | --- | --- |"]
    for method in results["method"].values.tolist():
        for operator in results["operator"].values.tolist():
            values = [interval(per_sample(results, method, operator, m))[:2]
                      for m in (*METRICS, "centre_mass_ratio")]
            lines.append(f"| {method} | {operator} | "
                         + " | ".join(cell(*v) for v in values) + " |")
            paper = PAPER.get((method, operator))
            if paper is not None:
                lines.append(f"| paper | {operator} | "
                             + " | ".join(cell(*v) for v in paper) + " | — |")
    return lines + [""]


def sweep(folders: list[Path], metric: str) -> list[str]:
    """One table of ``metric`` with a column per folder (e.g. per noise level) and the
    paper's value last."""
    opened = [(xr.open_dataset(f / "results.nc"), xr.open_dataset(f / "data.nc"))
              for f in folders]
    index = METRICS.index(metric) if metric in METRICS else None
    heads = [f"noise {d.attrs.get('noise')}" for _, d in opened]
    lines = [f"{metric} (mean ± 95 % interval over samples)", "",
             "| method | operator | " + " | ".join(heads) + " | paper |",
             "| --- | --- | " + " | ".join("---" for _ in heads) + " | --- |"]
    first = opened[0][0]
    for method in first["method"].values.tolist():
        for operator in first["operator"].values.tolist():
            cells = [cell(*interval(per_sample(r, method, operator, metric))[:2])
                     for r, _ in opened]
            paper = PAPER.get((method, operator))
            ref = cell(*paper[index]) if paper is not None and index is not None else "—"
            lines.append(f"| {method} | {operator} | " + " | ".join(cells) + f" | {ref} |")
    return lines + [""]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+", help="benchmark folders")
    parser.add_argument("--out", type=Path, help="also write the tables here")
    parser.add_argument("--by-metric", action="store_true",
                        help="one table per metric, a column per folder, instead of a block "
                             "per folder")
    args = parser.parse_args(argv)
    if args.by_metric:
        text = "\n".join(line for metric in (*METRICS, "centre_mass_ratio")
                         for line in sweep(args.folders, metric))
    else:
        text = "\n".join(line for folder in args.folders for line in block(folder))
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
