"""Throughput of NeTMY fits on whatever machine runs it: single-fit time per preset, batched
throughput (fits per minute) against the batch size B, and the F3 simulation time.

    python benchmarks/throughput.py                          # this CPU, fp32 and bf16
    python benchmarks/throughput.py --device cuda --batches 1,8,32,128

Method.  A fit's time is a fixed part (set-up, final maps) plus, per stage, its step count
times the time of one step, which depends on the stage's grid and on B but not on the
schedule.  For each stage k the script times real fits (``fit_batch``, the solver of
``nvbayes fit``) of that stage alone, truncated to S and to 2S steps, ``--repeats`` times each;
the median difference over S is the step time, and the rest of the S-step fit is the fixed
part.  The implied time of a full fit is ``fixed + Σ_k steps_k · step_k``; with B measurements
per loop, throughput is ``60 · B / time`` fits per minute.  ``--full`` also runs one complete
fit per preset and precision, as a check of the implied time.  On a GPU use a larger S
(``--steps 200``): with S = 20 the difference of two short timings is dominated by noise
there (on an H200, S = 20 implied 131 s for a batch of 128 paper-preset fits that took 214 s
in the benchmark).  F3: median wall time of
``simulate`` (scene, noise, F3 in float64) over several scenes.  The table is printed and
written to ``--out`` (default ``runs/throughput-<device>.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time
from pathlib import Path

import torch
import xarray as xr

from nvbayes.data.scenes import simulate
from nvbayes.data.spec import load_spec
from nvbayes.inference.map import fit_batch, fit_map
from nvbayes.model.problem import InverseProblem

SCENES = ("few/far", "medium/medium", "many/close", "medium/far", "many/medium",
          "few/close", "medium/close", "many/far")


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def stacked_problem(batch: int) -> InverseProblem:
    """``batch`` simulated measurements (cycling through the scene classes), stacked."""
    data = [simulate(SCENES[i % len(SCENES)], i) for i in range(batch)]
    return InverseProblem.from_measurement(xr.concat(data, "sample"))


def timed_fit(spec, problem, device, precision, batch) -> float:
    synchronize(device)
    start = time.perf_counter()
    if batch == 1:
        fit_map(problem.instance(0), spec, "F2", device=device, show=False, precision=precision)
    else:
        fit_batch(problem, spec, "F2", seeds=0, device=device, show=False, precision=precision)
    synchronize(device)
    return time.perf_counter() - start


def stage_times(spec, problem, device, precision, batch, steps, repeats
                ) -> tuple[list, float, float]:
    """``([step time per stage], fixed time, implied time of the full fit)`` in seconds,
    medians over ``repeats``."""
    step_times, fixed = [], []
    for stage in spec.stages:
        short = dataclasses.replace(spec, stages=(dataclasses.replace(stage, steps=steps),))
        long = dataclasses.replace(spec, stages=(dataclasses.replace(stage, steps=2 * steps),))
        timed_fit(short, problem, device, precision, batch)            # warm-up
        t1 = [timed_fit(short, problem, device, precision, batch) for _ in range(repeats)]
        t2 = [timed_fit(long, problem, device, precision, batch) for _ in range(repeats)]
        step = max(statistics.median(t2) - statistics.median(t1), 0.0) / steps
        step_times.append(step)
        fixed.append(statistics.median(t1) - steps * step)
    fixed = max(statistics.median(fixed), 0.0)
    total = fixed + sum(s.steps * t for s, t in zip(spec.stages, step_times, strict=True))
    return step_times, fixed, total


def ms(step_times) -> str:
    return " / ".join(f"{1e3 * t:.2f}" for t in step_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--presets", default="netmy,netmy-fast")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--batches", default="1,2,4,8",
                        help="batch sizes for the throughput table (netmy-fast and netmy)")
    parser.add_argument("--batch-presets", default="netmy-fast",
                        help="presets of the batched-throughput table")
    parser.add_argument("--steps", type=int, default=20, help="S, steps of a timed fit")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--f3-samples", type=int, default=8)
    parser.add_argument("--full", action="store_true",
                        help="also run one complete single fit per preset and precision")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = args.device
    precisions = args.precisions.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    name = (torch.cuda.get_device_name() if device == "cuda"
            else f"{platform.processor() or platform.machine()}, "
                 f"{torch.get_num_threads()} torch threads")
    lines = [f"# Throughput on {device} ({name})", "",
             f"torch {torch.__version__}; S = {args.steps} steps, medians of {args.repeats}; "
             "F2 inversion, 64 x 64 measurements, seed 0.", ""]

    def emit(text=""):
        print(text, flush=True)
        lines.append(text)

    for line in lines:
        print(line)
    problem = stacked_problem(max(batches))

    emit("## Single fit per preset")
    emit("")
    emit("| preset | precision | stage steps | ms per step (per stage) | fixed s | implied s "
         "per fit | measured s (--full) |")
    emit("| --- | --- | --- | --- | --- | --- | --- |")
    for preset in args.presets.split(","):
        spec = load_spec(preset)
        for precision in precisions:
            steps, fixed, implied = stage_times(spec, problem, device, precision, 1,
                                                args.steps, args.repeats)
            measured = (f"{timed_fit(spec, problem, device, precision, 1):.1f}" if args.full
                        else "")
            emit(f"| {preset} | {precision} | {' + '.join(str(s.steps) for s in spec.stages)} | "
                 f"{ms(steps)} | {fixed:.2f} | {implied:.1f} | {measured} |")

    emit("")
    emit("## Batched throughput")
    emit("")
    emit("| preset | precision | B | ms per step (per stage) | implied s per batch | "
         "fits per minute | x sequential |")
    emit("| --- | --- | --- | --- | --- | --- | --- |")
    for preset in args.batch_presets.split(","):
        spec = load_spec(preset)
        for precision in precisions:
            base = None
            for b in batches:
                sub = problem if b == problem.batch else problem.instance(slice(0, b))
                steps, _, total = stage_times(spec, sub, device, precision, b, args.steps,
                                              args.repeats)
                rate = 60.0 * b / total
                base = base or rate
                emit(f"| {preset} | {precision} | {b} | {ms(steps)} | {total:.1f} | "
                     f"{rate:.2f} | {rate / base:.2f} |")

    emit("")
    emit("## F3 simulation (scene + F3 in float64 + noise, on the CPU)")
    emit("")
    times = []
    for i in range(args.f3_samples):
        start = time.perf_counter()
        simulate(SCENES[i % len(SCENES)], 1000 + i)
        times.append(time.perf_counter() - start)
    emit(f"median {1e3 * statistics.median(times):.1f} ms per 64 x 64 x 50 measurement over "
         f"{len(times)} scenes (min {1e3 * min(times):.1f}, max {1e3 * max(times):.1f})")
    out = args.out or Path("runs") / f"throughput-{device}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
