"""The paper's three failure patterns of supervised models on sparse scenes (appendix E.7),
measured one by one on a benchmark folder's reconstructions.

    .venv/bin/python benchmarks/failure_patterns.py runs/held32-supervised [--operator F2]

Per method, mean ± 95 % interval over samples (the first fit seed) of:

- ``recall`` and ``precision`` of the Hungarian peak matching (2 px, 5 % threshold): pattern
  (i), an incomplete support on a few dominant responses, is low recall at high precision;
- ``peaks / true``: predicted peak count over true source count (> 1: spurious activations);
- ``peak ratio``: max ρ̂ / max ρ after the scale correction (≫ 1: exaggerated amplitudes,
  pattern iii; ≪ 1 with mass spread out: the diffuse failure, pattern ii);
- ``background``: the share of reconstructed mass farther than 2 px from every true source
  (high: residual background activation, patterns ii and iii).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import xarray as xr
from scipy import ndimage, stats

from nvbayes.metrics import MATCH_RADIUS_PX, find_peaks, match_peaks

COLUMNS = ("recall", "precision", "peaks / true", "peak ratio", "background")


def patterns(rho_hat: np.ndarray, rho: np.ndarray) -> dict:
    pred, true = find_peaks(rho_hat), find_peaks(rho)
    tp, fp, fn = match_peaks(pred, true)
    far = ndimage.distance_transform_edt(rho <= 0) > MATCH_RADIUS_PX
    mass = np.clip(rho_hat, 0, None)
    return {"recall": tp / max(tp + fn, 1), "precision": tp / max(tp + fp, 1),
            "peaks / true": len(pred) / max(len(true), 1),
            "peak ratio": float(rho_hat.max() / rho.max()),
            "background": float(mass[far].sum() / max(mass.sum(), 1e-300))}


def interval(values) -> str:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return f"{v.mean():.3g}" if v.size else "—"
    half = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return f"{v.mean():.3g} ± {half:.2g}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--operator", default="F2")
    args = parser.parse_args(argv)
    truth = xr.open_dataset(args.folder / "data.nc")["rho_true"].load()
    rows: dict[str, dict[str, list]] = {}
    for path in sorted((args.folder / "cells").glob("*.nc")):
        with xr.open_dataset(path) as cell:
            attrs = cell.attrs
            if attrs.get("error") or attrs["operator"] != args.operator:
                continue
            method = attrs["method"]
            seen = rows.setdefault(method, {c: [] for c in COLUMNS} | {"_samples": []})
            if int(attrs["sample"]) in seen["_samples"]:
                continue                      # the first seed of each sample
            seen["_samples"].append(int(attrs["sample"]))
            values = patterns(cell["rho"].values.astype(float),
                              truth.isel(sample=int(attrs["sample"])).values)
            for c in COLUMNS:
                seen[c].append(values[c])
    print("| method | samples | " + " | ".join(COLUMNS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in COLUMNS) + " |")
    for method, seen in rows.items():
        print(f"| {method} | {len(seen['_samples'])} | "
              + " | ".join(interval(seen[c]) for c in COLUMNS) + " |")


if __name__ == "__main__":
    main()
