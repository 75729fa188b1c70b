"""Median time of one NeTMY optimization step (field + F2 + the Pyro objective + AdamW) per
preset and stage resolution, and the per-fit time it implies.

    python benchmarks/netmy_step_time.py --models netmy,netmy-fast --repeats 5 [--grid 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from nvbayes.data.scenes import SimulationSettings, simulate
from nvbayes.data.spec import load_spec
from nvbayes.fields import pixel_coordinates
from nvbayes.inference.map import FieldGuide, build_field, traced_objective
from nvbayes.inference.objective import stage_log_eps
from nvbayes.model.netmy import NoiseSpectrumModel
from nvbayes.model.problem import InverseProblem
from nvbayes.physics.geometry import Grid


def step_times(spec, problem, stage, steps: int, repeats: int) -> list[float]:
    """``repeats`` means of ``steps`` steps (after 5 warm-up steps), seconds per step."""
    torch.manual_seed(0)
    net = build_field(spec, problem)
    model = NoiseSpectrumModel(problem.operator("F2", stage.downsample),
                               problem.observed(stage.downsample), stage.weights,
                               stage_log_eps(spec, problem, stage.downsample),
                               reduction=spec.reduction)
    ny, nx = problem.shape
    guide = FieldGuide(net, pixel_coordinates((ny // stage.downsample, nx // stage.downsample)))
    opt = torch.optim.AdamW(net.parameters(), lr=stage.lr, weight_decay=1e-4)

    def step():
        loss, _ = traced_objective(model, guide, spec.field.octaves / 2)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    for _ in range(5):
        step()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        out.append((time.perf_counter() - t0) / steps)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="netmy,netmy-fast")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--grid", type=int, default=64, help="pixels per side (64)")
    args = parser.parse_args()
    problem = InverseProblem.from_measurement(
        simulate("medium/medium", 0, SimulationSettings(grid=Grid(args.grid))))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models.split(","):
        spec = load_spec(name)
        total = 0.0
        for stage in spec.stages:
            times = step_times(spec, problem, stage, args.steps, args.repeats)
            med = statistics.median(times)
            total += med * stage.steps
            n = problem.n // stage.downsample
            print(f"{name:12s} {n}x{n}: {1e3 * med:7.2f} ms/step (median of {args.repeats}: "
                  + ", ".join(f"{1e3 * t:.2f}" for t in times) + f") x {stage.steps} steps")
        print(f"{name:12s} implied fit time {total:.0f} s")


if __name__ == "__main__":
    main()
