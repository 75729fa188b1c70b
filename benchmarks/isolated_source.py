"""One isolated source under an inversion operator: what a baseline's objective does with it.

Fits the first ``--samples`` measurements of a data set of isolated sources (default
``runs/iso4.nc``: ``nvbayes simulate --classes few/far --samples 4 --data-seed 200``, four
few/far draws that hold one source each; F3, 1 % noise, 64²) with one model under one
operator, once per value of one setting, and prints
Hungarian F1, the number of supra-threshold peaks of ρ̂ (3×3 local maxima above 5 % of the
maximum, :func:`nvbayes.metrics.find_peaks`) and the wall time of each fit.

    python benchmarks/isolated_source.py --model lbfgs --operator F1 --vary log_eps=1e-2,1e-1
    python benchmarks/isolated_source.py --model lbfgs --operator F1 --vary l1=1e-2,1e-1,1
    python benchmarks/isolated_source.py --model lbfgs --operator F1 --vary start=1,0.1,0.01

``--vary`` takes ``log_eps`` (a number in the working problem's unit-free units, where the
noise floor is printed for reference), a loss weight of every stage (``l1``, ``tv``, ``l2``,
...), or ``start``: the free pixel map's starting value as a fraction of the energy-matched
level (1 is nvbayes's start).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses

import torch
import xarray as xr

from nvbayes.data.spec import load_spec
from nvbayes.fields import PixelDensity
from nvbayes.inference.map import fit_map, working_problem
from nvbayes.inference.objective import stage_log_eps
from nvbayes.metrics import find_peaks, hungarian_f1
from nvbayes.model.problem import InverseProblem


def varied(spec, key: str, value: float):
    """``spec`` with ``key`` set to ``value`` (``log_eps`` or a loss weight of every stage)."""
    if key == "log_eps":
        return dataclasses.replace(spec, log_eps=value)
    return dataclasses.replace(spec, stages=tuple(
        dataclasses.replace(s, weights=dataclasses.replace(s.weights, **{key: value}))
        for s in spec.stages))


class StartedAt:
    """Within the ``with`` block every :class:`PixelDensity` starts at ``value`` (not 1)."""

    def __init__(self, value: float):
        self.value = value

    def __enter__(self):
        init = PixelDensity.__init__
        value = self.value

        def started(module, size, level=1.0):
            init(module, size, level)
            with torch.no_grad():
                module.values.fill_(value)

        self.init, PixelDensity.__init__ = init, started
        return self

    def __exit__(self, *exc):
        PixelDensity.__init__ = self.init


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/iso4.nc")
    parser.add_argument("--model", default="lbfgs")
    parser.add_argument("--operator", default="F1")
    parser.add_argument("--protocol", default="robust")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--vary", default="", help="KEY=V1,V2,... (see the module docstring)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = xr.open_dataset(args.data)
    base = load_spec(args.model, args.protocol)
    key, _, values = args.vary.partition("=")
    settings = [None] if not key else [float(v) for v in values.split(",")]
    first = InverseProblem.from_measurement(data.isel(sample=0))
    print(f"{args.model} under {args.operator}, {args.protocol} protocol; noise-floor ε of "
          f"sample 0: {float(stage_log_eps(base, working_problem(first, base), 1)):.3g}")
    print(f"| {key or 'setting'} | sample | Hungarian F1 | peaks | s |")
    print("| --- | --- | --- | --- | --- |")
    for value in settings:
        spec = base if value is None or key == "start" else varied(base, key, value)
        for i in range(args.samples):
            problem = InverseProblem.from_measurement(data.isel(sample=i))
            with StartedAt(value) if key == "start" else contextlib.nullcontext():
                result = fit_map(problem, spec, args.operator, show=False)
            truth = data["rho_true"].isel(sample=i).values
            print(f"| {value if value is not None else 'file'} | {i} | "
                  f"{hungarian_f1(result.rho, truth):.3f} | {len(find_peaks(result.rho))} | "
                  f"{result.wall_time_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
