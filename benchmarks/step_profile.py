"""Where one NeTMY Adam step spends its time on this host, against the host's GEMM rate.

For each stage of a preset (default ``netmy-fast``, robust protocol, a 64² measurement) the
script times the solver's own step (:func:`nvbayes.inference.gradient.solve_gradient` on a
stage of ``--steps`` steps, median of ``--repeats``), splits it with the PyTorch profiler
(matrix products, tanh, FFT, the optimizer, everything else) and counts the ATen operations it
dispatches; it compares the stage's lean potential with the traced Pyro objective (forward and
backward of each), and measures the host's GEMM rate in fp32 and bf16 on a large product and
on the field's own layer shape, with the threads the fits use.

The field's arithmetic is counted two ways, per pixel and step:

* nominal: the field as specified, every encoding column multiplied: forward ``Σ in·out``,
  the weight gradients as much again, and the input gradients of every layer but the first;
* executed: what the lean step multiplies, without the encoding columns that are constant on
  the stage's grid and without the gradient of the encoding's share of the skip layer.

    python benchmarks/step_profile.py [--model netmy-fast] [--grid 64] [--threads 2]
                                      [--precision fp32] [--compile]

``--compile`` also times ``torch.compile`` of the stage's loss (its compile time and the
compiled forward and backward).  Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time
from collections import Counter

import torch

from nvbayes.data.scenes import SimulationSettings, simulate
from nvbayes.data.spec import load_spec
from nvbayes.fields import NeuralField, pixel_coordinates
from nvbayes.inference.gradient import solve_gradient
from nvbayes.inference.map import build_field, working_problem
from nvbayes.inference.objective import StagePotential, stage_objective, traced_objective
from nvbayes.inference.recorder import Recorder
from nvbayes.model.problem import InverseProblem
from nvbayes.physics.geometry import Grid

GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmv")


def host_flags() -> dict:
    """The CPU model and the bf16 instruction sets it announces (Linux ``/proc/cpuinfo``)."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("", "unknown", "x86_64"):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"model": model, "avx512_bf16": "avx512_bf16" in flags,
            "amx_bf16": "amx_bf16" in flags}


def median_seconds(fn, repeats: int, inner: int = 1) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


def gemm_rate(m: int, k: int, n: int, dtype: torch.dtype, repeats: int) -> float:
    """GFLOP/s of ``(m × k) @ (k × n)`` in ``dtype``."""
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    inner = max(1, int(2e9 / (2 * m * k * n)))
    return 2 * m * k * n / median_seconds(lambda: a @ b, repeats, inner) / 1e9


def field_macs(field: NeuralField, grid_shape: tuple[int, int]) -> tuple[int, int]:
    """``(nominal, executed)`` multiply-adds per pixel of one step (module docstring)."""
    enc = field.encoding.out_features
    coords = pixel_coordinates(grid_shape)
    constant = field.grid_encoding(coords).constant_index.numel()
    layers = [*field.hidden, field.readout]
    nominal = executed = 0
    for i, layer in enumerate(layers, start=1):
        out, fan_in = layer.weight.shape[-2:]
        reads_encoding = i == 1 or (i == field.skip_layer and i > 1)
        kept = fan_in - (constant if reads_encoding else 0)
        input_grad = 0 if i == 1 else fan_in
        nominal += out * (2 * fan_in + input_grad)
        executed_input = 0 if i == 1 else (fan_in - enc if reads_encoding else fan_in)
        executed += out * (2 * kept + executed_input)
    return nominal, executed


def single_stage(spec, index: int, steps: int):
    """``spec`` with its stage ``index`` alone, ``steps`` long."""
    return dataclasses.replace(spec, stages=(dataclasses.replace(spec.stages[index],
                                                                 steps=steps),))


def profile_stage(spec, problem, index: int, steps: int, precision: str) -> dict:
    """The stage's step under the profiler: ms per category and ops per step."""
    one = single_stage(spec, index, steps)
    torch.manual_seed(0)
    field = build_field(one, problem, precision=precision)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        solve_gradient(field, problem, one, "F2", Recorder(one.total_steps, False))
    time_by, calls = Counter(), 0
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        name = event.key
        group = ("GEMM" if name in GEMM_OPS else "tanh" if name.startswith("aten::tanh")
                 else "FFT" if "fft" in name else "optimizer" if "adam" in name
                 else "other ATen")
        time_by[group] += event.self_cpu_time_total / 1e3 / steps
    top = [e for e in prof.events() if e.name.startswith("aten::")
           and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))]
    calls = len(top) / steps
    return {"ms": dict(time_by), "ops": calls}


def stage_time(spec, problem, index: int, steps: int, repeats: int, precision: str) -> float:
    """Median seconds per step of the solver running stage ``index`` alone."""
    one = single_stage(spec, index, steps)

    def run():
        torch.manual_seed(0)
        field = build_field(one, problem, precision=precision)
        solve_gradient(field, problem, one, "F2", Recorder(one.total_steps, False))

    return median_seconds(run, repeats) / steps


def objective_times(spec, problem, stage, repeats: int) -> dict:
    """ms of the stage's loss, forward and forward + backward, traced and lean."""
    torch.manual_seed(0)
    field = build_field(spec, problem)
    model, guide = stage_objective(problem, spec, stage, "F2", field)
    lean = StagePotential(model, guide)
    beta = float(spec.field.octaves)
    out = {}
    for name, evaluate in (("traced", lambda: traced_objective(model, guide, beta)[0]),
                           ("lean", lambda: lean(beta)[0])):
        out[name] = (1e3 * median_seconds(evaluate, repeats, 20),
                     1e3 * median_seconds(lambda e=evaluate: e().backward(), repeats, 20))
    return out


def compile_times(spec, problem, stage, repeats: int) -> tuple[float, float]:
    """``(compile s, compiled ms forward + backward)`` of the lean loss."""
    torch.manual_seed(0)
    field = build_field(spec, problem)
    lean = StagePotential(*stage_objective(problem, spec, stage, "F2", field))
    beta = torch.tensor(float(spec.field.octaves))
    compiled = torch.compile(lambda b: lean(b)[0])
    start = time.perf_counter()
    compiled(beta).backward()
    seconds = time.perf_counter() - start
    return seconds, 1e3 * median_seconds(lambda: compiled(beta).backward(), repeats, 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="netmy-fast")
    parser.add_argument("--grid", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100, help="steps per timed stage (100)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    host = host_flags()
    print(f"host: {host['model']}; avx512_bf16 {host['avx512_bf16']}, amx_bf16 "
          f"{host['amx_bf16']}; torch {torch.__version__}, {args.threads} threads")
    width = load_spec(args.model).field.width
    rates = {}
    for dtype, label in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        big = gemm_rate(2048, 2048, 2048, dtype, args.repeats)
        layer = gemm_rate(args.grid ** 2, width, width, dtype, args.repeats)
        rates[label] = big
        print(f"GEMM {label}: {big:.0f} GFLOP/s at 2048³, {layer:.0f} GFLOP/s at "
              f"{args.grid ** 2}×{width}×{width} (the field's hidden layer)")
    measurement = simulate("medium/medium", 0, SimulationSettings(grid=Grid(args.grid)))
    spec = load_spec(args.model)
    problem = working_problem(InverseProblem.from_measurement(measurement), spec)
    total = 0.0
    print("| stage | grid | ms/step | GEMM | tanh | FFT | optimizer | other ATen | ops/step "
          "| nominal GFLOP/s | executed GFLOP/s | % of GEMM rate |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for index, stage in enumerate(spec.stages):
        n = args.grid // stage.downsample
        per_step = stage_time(spec, problem, index, args.steps, args.repeats, args.precision)
        total += per_step * stage.steps
        parts = profile_stage(spec, problem, index, args.steps, args.precision)
        field = build_field(spec, problem)
        nominal, executed = field_macs(field, (n, n))
        flops = [2 * m * n * n / per_step / 1e9 for m in (nominal, executed)]
        ms = parts["ms"]
        share = 100 * flops[0] / rates[args.precision]
        print(f"| {index + 1} | {n}² | {1e3 * per_step:.2f} | " + " | ".join(
            f"{ms.get(k, 0.0):.2f}" for k in ("GEMM", "tanh", "FFT", "optimizer", "other ATen"))
            + f" | {parts['ops']:.0f} | {flops[0]:.0f} | {flops[1]:.0f} | {share:.0f} % |")
    print(f"implied fit time ({args.precision}): {total:.1f} s "
          f"({' + '.join(str(s.steps) for s in spec.stages)} steps)")
    for index, stage in enumerate(spec.stages):
        times = objective_times(spec, problem, stage, args.repeats)
        print(f"stage {index + 1} loss, ms forward / forward+backward: " + "; ".join(
            f"{k} {f:.2f} / {b:.2f}" for k, (f, b) in times.items()))
    if args.compile:
        seconds, ms = compile_times(spec, problem, spec.stages[-1], args.repeats)
        print(f"torch.compile of the last stage's loss: {seconds:.1f} s to compile, "
              f"{ms:.2f} ms forward+backward compiled")


if __name__ == "__main__":
    main()
