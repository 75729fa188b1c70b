"""What the field draws after stage 1 and at the end, with the paper's two-axis Fourier
encoding and with four directions, on one four-source 32² scene (F3, 1 % noise, F2
inversion, `netmy-fast` under the robust protocol).

    .venv/bin/python benchmarks/separable_ghosts.py --seeds 0,1 --out runs/separable-ghosts.png

With the axes alone the first layer's pre-activation is a sum of a function of y and one of x,
so the stage-1 field is close to separable: it writes the sources as rows × columns and
puts ghosts at every crossing; a source whose row and column are both claimed by brighter
sources may never be drawn.  Prints Hungarian F1 and the relative amplitude at each true
source for every fit; the figure shows the maps of the first seed.
"""

from __future__ import annotations

import argparse
import dataclasses

import matplotlib

matplotlib.use("Agg")  # a script, not the library: write the PNG without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nvbayes import metrics  # noqa: E402
from nvbayes.data.io import measurement_dataset  # noqa: E402
from nvbayes.data.scenes import (  # noqa: E402
    Scene,
    SimulationSettings,
    add_sensor_noise,
    sensor_sigma,
    simulate_spectrum,
)
from nvbayes.data.spec import load_spec  # noqa: E402
from nvbayes.inference.map import fit_map  # noqa: E402
from nvbayes.model.problem import InverseProblem  # noqa: E402
from nvbayes.physics.geometry import Grid  # noqa: E402

POSITIONS = np.array([[8, 9], [9, 22], [21, 13], [23, 24]])
AMPLITUDES = np.array([1.0, 0.5, 0.75, 0.55])
LARMOR = np.array([1.7, 2.3, 2.0, 2.4])


def scene(seed: int = 11):
    settings = SimulationSettings(grid=Grid(32), noise=0.01)
    truth = Scene(settings.grid, "medium/far", POSITIONS, AMPLITUDES, LARMOR)
    clean = simulate_spectrum(truth, "F3", settings.linewidth, settings.freqs())
    noisy = add_sensor_noise(clean, 0.01, np.random.default_rng(seed))
    return measurement_dataset(
        noisy, settings.freqs().numpy(), settings.grid.coords,
        standoff_nm=settings.grid.standoff, linewidth_ghz=settings.linewidth,
        larmor_band_ghz=settings.band, operator="F3", noise=0.01, units="normalized",
        rho_true=truth.density(), larmor_true=truth.larmor_field(), scene_class="medium/far",
        seed=seed, noise_sigma=sensor_sigma(clean, 0.01))


def variant(directions: int, stage_one_only: bool):
    spec = load_spec("netmy-fast", "robust")
    spec = dataclasses.replace(spec, field=dataclasses.replace(spec.field,
                                                               directions=directions))
    return dataclasses.replace(spec, stages=spec.stages[:1]) if stage_one_only else spec


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0", help="comma list of fit seeds")
    parser.add_argument("--out", default="runs/separable-ghosts.png")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    data = scene()
    problem = InverseProblem.from_measurement(data)
    truth = data["rho_true"].values
    rows = [(d, one) for d in (2, 4) for one in (True, False)]
    fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 4), constrained_layout=True)
    print("| directions | fit | seed | Hungarian F1 | amplitude at each source / max | s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for ax, (directions, one) in zip(axes, rows, strict=True):
        for seed in seeds:
            result = fit_map(problem, variant(directions, one), "F2", seed=seed, show=False)
            f1 = metrics.hungarian_f1(result.rho, truth)
            found = result.rho[tuple(POSITIONS.T)] / result.rho.max()
            stage = "stage 1 only" if one else "both stages"
            print(f"| {directions} | {stage} | {seed} | {f1:.3f} | "
                  f"{', '.join(f'{a:.2f}' for a in found)} | {result.wall_time_s:.0f} |")
            if seed == seeds[0]:
                ax.imshow(result.rho, origin="lower", cmap="magma")
                ax.plot(POSITIONS[:, 1], POSITIONS[:, 0], "c+", ms=10)
                ax.set_title(f"{directions} directions, {stage}\nF1 {f1:.2f} (seed {seed})")
    fig.savefig(args.out, dpi=80)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
