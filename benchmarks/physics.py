"""Speed and accuracy of the physics core, measured on whatever machine runs this script.

Three numbers (medians over repeated runs), printed as a table and written to
``runs/benchmark-physics.md``:

1. wall time to simulate the paper's 8 scene classes × K samples with F3 + noise
   (``nvbayes simulate --classes all --per-class K`` without the file write);
2. F2 forward + backward of the log-MSE fidelity at n × n with 50 frequencies in float32;
3. the F2-vs-F3 relative spectrum error against the in-kernel Larmor spread χ = Δω_L/γ
   (paper appendix A.8: 2.6e-2 at χ ≈ 0.3, 1.6e-1 at χ ≈ 1.08), and the χ and F2-vs-F3
   error of the benchmark's own scene classes.

For (3) the scene is a uniform 32 × 32 sheet (every pixel a source) whose Larmor field is a
smooth Gaussian random field (correlation length one standoff) scaled to the target χ, as
measured by :func:`nvbayes.physics.in_kernel_chi`; errors are medians over 5 field seeds.

Usage: ``python benchmarks/physics.py [--per-class 64] [--repeats 3] [--device cpu]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from nvbayes.data.scenes import (
    PAPER_CLASSES,
    SimulationSettings,
    dataset_plan,
    larmor_spread_scene,
    sample_scene,
    simulate_dataset,
)
from nvbayes.physics import (
    DirectOperator,
    Grid,
    TensorOperator,
    in_kernel_chi,
    log_mse,
    readout_frequencies,
    relative_error,
)

SPACING, STANDOFF, GAMMA = 20.0, 20.0, 0.5


def time_simulation(per_class: int, repeats: int) -> list[float]:
    plan = dataset_plan(list(PAPER_CLASSES), per_class=per_class)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        simulate_dataset(plan, SimulationSettings())
        times.append(time.perf_counter() - start)
    return times


def time_f2_step(n: int, repeats: int, device: str) -> list[float]:
    """Milliseconds per forward + backward of D(F2(ρ, ω_L), S_obs) in float32."""
    freqs = readout_frequencies()
    op = TensorOperator(freqs, GAMMA, SPACING, STANDOFF)
    g = torch.Generator().manual_seed(0)
    observed = op(torch.rand(n, n, generator=g), 2.0).to(device=device, dtype=torch.float32)
    rho = torch.rand(n, n, generator=g).to(device).requires_grad_()
    larmor = (1.5 + torch.rand(n, n, generator=g)).to(device).requires_grad_()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(20):  # warm-up: kernel cache, allocator, thread pool
        log_mse(op(rho, larmor), observed).backward()
    sync()
    times = []
    for _ in range(repeats):
        inner = 50
        start = time.perf_counter()
        for _ in range(inner):
            rho.grad = larmor.grad = None
            log_mse(op(rho, larmor), observed).backward()
        sync()
        times.append((time.perf_counter() - start) / inner * 1e3)
    return times


def chi_table(chis=(0.1, 0.3, 1.0, 1.08), seeds=range(5)) -> list[tuple[float, float]]:
    freqs = readout_frequencies()
    f2 = TensorOperator(freqs, GAMMA, SPACING, STANDOFF)
    f3 = DirectOperator(freqs, GAMMA, SPACING, STANDOFF)
    rows = []
    for chi in chis:
        errors = []
        for seed in seeds:
            rho, larmor = larmor_spread_scene(chi, seed, Grid(32, SPACING, STANDOFF))
            errors.append(relative_error(f2(rho, larmor), f3(rho, larmor)).item())
        rows.append((chi, statistics.median(errors)))
    return rows


def scene_chi_table(seeds=range(8)) -> list[tuple[str, float, float]]:
    """Per paper class: median χ and median F2-vs-F3 error of noiseless simulated scenes."""
    freqs = readout_frequencies()
    f2 = TensorOperator(freqs, GAMMA, SPACING, STANDOFF)
    f3 = DirectOperator(freqs, GAMMA, SPACING, STANDOFF)
    rows = []
    for name in PAPER_CLASSES:
        chis, errors = [], []
        for seed in seeds:
            scene = sample_scene(name, seed)
            rho = torch.from_numpy(scene.density())
            larmor = torch.from_numpy(scene.larmor_field())
            chis.append(in_kernel_chi(rho, larmor, SPACING, STANDOFF, GAMMA).item())
            errors.append(relative_error(f2(rho, larmor), f3(rho, larmor)).item())
        rows.append((name, statistics.median(chis), statistics.median(errors)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark-physics.md"))
    args = parser.parse_args()

    lines = [f"# physics benchmark ({platform.node()}, {os.cpu_count()} CPUs, "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"device {args.device})", ""]
    sim = time_simulation(args.per_class, args.repeats)
    n_samples = 8 * args.per_class
    lines += ["| quantity | median | runs |", "| --- | --- | --- |",
              f"| simulate 8 classes x {args.per_class} (F3 + noise, {n_samples} samples) "
              f"| {statistics.median(sim):.2f} s | {', '.join(f'{t:.2f}' for t in sim)} |"]
    for n in (32, 64):
        step = time_f2_step(n, max(args.repeats, 5), args.device)
        lines.append(f"| F2 + log-MSE forward+backward, {n}x{n}x50, float32 "
                     f"| {statistics.median(step):.2f} ms | "
                     f"{', '.join(f'{t:.2f}' for t in step)} |")
    lines += ["", "| chi = dw_L/gamma | F2 vs F3 relative error (median of 5 fields) |",
              "| --- | --- |"]
    lines += [f"| {chi:.2f} | {err:.3e} |" for chi, err in chi_table()]
    lines += ["", "| scene class | median chi | median F2 vs F3 error (8 seeds, noiseless) |",
              "| --- | --- | --- |"]
    lines += [f"| {name} | {chi:.3f} | {err:.2e} |" for name, chi, err in scene_chi_table()]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
