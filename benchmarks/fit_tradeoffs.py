"""Time against quality of NeTMY fit variants: mixed precision and convergence-based early
stopping, on the same simulated measurements.

    python benchmarks/fit_tradeoffs.py --model netmy-fast --samples 8 \
        --variants fp32,bf16,fp32+stop500:1e-3,fp32+stop250:1e-3

A variant is a precision (``fp32`` or ``bf16``) optionally followed by ``+stopW:TOL`` (the
model's ``[stopping]`` window and relative tolerance).  Every variant fits the same samples
(one per scene class, cycling; seed i for sample i) under F2 with fit seed 0, ``--batch`` at a
time.  The table gives per variant the mean steps per fit, the wall time per fit (batch wall
time / B), the mean Hungarian F1, GMSD and SWD, and the largest relative L2 difference of the
final density from the first variant's.  Written to ``--out`` (default
``runs/fit-tradeoffs-<model>-<device>.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import xarray as xr

from nvbayes import metrics
from nvbayes.data.scenes import simulate
from nvbayes.data.spec import StoppingSpec, load_spec
from nvbayes.inference.map import fit_batch
from nvbayes.model.problem import InverseProblem

SCENES = ("few/far", "medium/medium", "many/close", "medium/far", "many/medium",
          "few/close", "medium/close", "many/far")


def parse_variant(text: str) -> tuple[str, StoppingSpec]:
    precision, _, stop = text.partition("+")
    if not stop:
        return precision, StoppingSpec()
    window, _, tol = stop.removeprefix("stop").partition(":")
    return precision, StoppingSpec(window=int(window), rel_tol=float(tol))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="netmy-fast")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--variants", default="fp32,bf16,fp32+stop500:1e-3")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    base = load_spec(args.model)
    data = [simulate(SCENES[i % len(SCENES)], i) for i in range(args.samples)]
    lines = [f"# Fit variants of {args.model} on {args.device}: {args.samples} samples, F2, "
             f"batch {args.batch}", "",
             "| variant | mean steps | s per fit | Hungarian F1 | GMSD | SWD | "
             "max rel. L2 diff. of rho from the first variant |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    print("\n".join(lines), flush=True)
    reference = None
    for variant in args.variants.split(","):
        precision, stopping = parse_variant(variant)
        spec = dataclasses.replace(base, stopping=stopping)
        rhos, scores, steps = [], [], []
        start = time.perf_counter()
        for lo in range(0, args.samples, args.batch):
            chunk = data[lo: lo + args.batch]
            problem = InverseProblem.from_measurement(xr.concat(chunk, "sample"))
            for one, result in zip(chunk, fit_batch(problem, spec, "F2", seeds=0,
                                                    device=args.device, show=False,
                                                    precision=precision), strict=True):
                rhos.append(result.rho)
                steps.append(result.stats["steps"])
                scores.append(metrics.evaluate(result.rho, one["rho_true"].values,
                                               result.larmor, one["larmor_true"].values))
        per_fit = (time.perf_counter() - start) / args.samples
        reference = reference or rhos
        diff = max(float(np.linalg.norm(r - q) / np.linalg.norm(q))
                   for r, q in zip(rhos, reference, strict=True))
        mean = {k: float(np.mean([s[k] for s in scores]))
                for k in ("hungarian_f1", "gmsd", "swd")}
        line = (f"| {variant} | {np.mean(steps):.0f} | {per_fit:.1f} | "
                f"{mean['hungarian_f1']:.3f} | {mean['gmsd']:.4f} | {mean['swd']:.4f} | "
                f"{diff:.3g} |")
        print(line, flush=True)
        lines.append(line)
    out = args.out or Path("runs") / f"fit-tradeoffs-{args.model}-{args.device}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
