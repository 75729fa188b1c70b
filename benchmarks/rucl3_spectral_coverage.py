"""Coverage of step 3 (the spectral calibration) over synthetic sets.

For each seed, simulate one NV's rates (the physical flake at 14 nm, τc = 0.41 ns, 2 %
scatter) at a set of fields, fit τc with NUTS and record whether the truth lies in the 90 %
equal-tailed interval, and the interval's width.  Two field sets: the paper's (2, 313 and
383.5 G) and the same with 700, 900 and 980 G added.

Usage: ``python benchmarks/rucl3_spectral_coverage.py [--seeds 20] [--chains 2]
[--warmup 200] [--draws 200]``.  Writes ``runs/rucl3-spectral-coverage.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from nvbayes.data.rucl3_spec import load_ansatz
from nvbayes.metrics import wilson
from nvbayes.model.rucl3 import synthetic_spectral
from nvbayes.workflows.rucl3 import fit_spectral

FIELD_SETS = {"paper (2, 313, 383.5 G)": (2.0, 313.0, 383.5),
              "paper + 700, 900, 980 G": (2.0, 313.0, 383.5, 700.0, 900.0, 980.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--draws", type=int, default=200)
    args = parser.parse_args()
    spec = load_ansatz()
    truth = spec.constants.tau_c_ns
    lines = ["# Step 3 coverage: 90 % intervals of tau_c over synthetic sets", "",
             f"tau_c = {truth:g} ns, {spec.spectral.synthetic_relative_error:.0%} scatter, "
             f"NUTS {args.chains} x ({args.warmup} + {args.draws}), seeds 0-{args.seeds - 1}.",
             "", "| fields | covered | 95 % interval of coverage | median interval (ns) | "
             "median hi/lo | s per fit |", "| --- | --- | --- | --- | --- | --- |"]
    for label, fields in FIELD_SETS.items():
        hits, widths, bounds, times = 0, [], [], []
        for seed in range(args.seeds):
            data = synthetic_spectral(spec, seed=1000 + seed, fields_gauss=fields)
            t0 = time.perf_counter()
            run = fit_spectral(spec, data, seed=seed, chains=args.chains, warmup=args.warmup,
                               draws=args.draws)
            times.append(time.perf_counter() - t0)
            lo, hi = np.quantile(run.idata.posterior["tau_c_ns"].values, [0.05, 0.95])
            hits += int(lo <= truth <= hi)
            widths.append(hi / lo)
            bounds.append((lo, hi))
        low, high = wilson(hits / args.seeds, args.seeds)
        lo_med, hi_med = np.median(np.asarray(bounds), axis=0)
        lines.append(f"| {label} | {hits}/{args.seeds} | {low:.2f}-{high:.2f} | "
                     f"{lo_med:.3g} to {hi_med:.3g} | {np.median(widths):.3g} | "
                     f"{np.median(times):.1f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    out = Path("runs") / "rucl3-spectral-coverage.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
