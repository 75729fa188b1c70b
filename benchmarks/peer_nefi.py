"""The peer NEFI 0.1.2 (``nefi``, MIT) beside nvbayes on the same scenes, scored by nvbayes.

NEFI is a second implementation of NeTMY.  It is never a dependency of nvbayes: it lives in a
virtual environment of its own, and this script talks to it through plain ``.npz`` files, in
three steps that run in two environments::

    # 1. nvbayes's environment: one .npz per sample (spectrum, readout grid, geometry, sigma)
    .venv/bin/python benchmarks/peer_nefi.py export runs/held32.nc --samples 0-7 --out runs/peer
    # 2. NEFI's environment (python3 -m venv /work/nefi-venv; pip install torch==2.13.0
    #    nefi==0.1.2): fit each sample with NEFI's NeTMY, write rho and omega_L
    /work/nefi-venv/bin/python benchmarks/peer_nefi.py fit runs/peer --preset paper --seed 0
    # 3. nvbayes's environment: score with nvbayes's metrics, mean and 95 % interval
    .venv/bin/python benchmarks/peer_nefi.py score runs/peer --preset paper

The ``fit`` step imports numpy and nefi only.  Presets: ``paper`` is NEFI's default
configuration (its reading of the paper: width 320, 3000 + 7000 steps); ``moderate`` is width
128, depth 4, 600 + 1200 steps.  Both invert under F2 with NEFI's own noise-floor ε from the
measurement's σ (the ``noise_sigma`` nvbayes stores).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

PRESETS = {
    "paper": {},
    "moderate": {"hidden": 128, "depth": 4, "steps": (600, 1200)},
}


def _samples(text: str, count: int) -> list[int]:
    if text is None:
        return list(range(count))
    out = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        out += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    return out


def export(args) -> None:
    """nvbayes side: the samples of a measurement file as ``sampleNNNN.npz``."""
    from nvbayes.data.io import n_samples, read_measurement, select_sample
    from nvbayes.model.problem import InverseProblem

    data = read_measurement(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    for i in _samples(args.samples, n_samples(data)):
        one = select_sample(data, i)
        problem = InverseProblem.from_measurement(one)
        np.savez(args.out / f"sample{i:04d}.npz", spectrum=problem.spectrum,
                 freqs=problem.freqs, spacing=problem.spacing, standoff=problem.standoff,
                 linewidth=problem.linewidth, band=np.asarray(problem.band),
                 sigma=float(problem.sigma()), rho_true=one["rho_true"].values,
                 larmor_true=one["larmor_true"].values,
                 scene_class=str(one["scene_class"].values), seed=int(one["seed"].values))
    print(f"exported to {args.out}")


def fit(args) -> None:
    """NEFI side (its own environment): NeTMY fits of every exported sample."""
    import torch
    from nefi import Measurement, invert
    from nefi.instances.nv_relaxometry import NVRelaxometry

    torch.set_num_threads(args.threads)
    for path in sorted(args.folder.glob("sample????.npz")):      # the exports, not the fits
        out = args.folder / f"{path.stem}-nefi-{args.preset}-seed{args.seed}.npz"
        if out.exists():
            continue
        s = np.load(path)
        freqs = s["freqs"]
        n = s["spectrum"].shape[-1]
        instance = NVRelaxometry(
            n=n, spacing=float(s["spacing"]), z0=float(s["standoff"]),
            gamma=float(s["linewidth"]), larmor_band=tuple(float(b) for b in s["band"]),
            freq_range=(float(freqs[0]), float(freqs[-1])), n_freq=len(freqs),
            init_seed=args.seed, **PRESETS[args.preset])
        measurement = Measurement(torch.as_tensor(s["spectrum"], dtype=torch.float32),
                                  noise_std=float(s["sigma"]))
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        result = invert(instance.build_problem(measurement, "F2", seed=args.seed))
        wall = time.perf_counter() - start
        np.savez(out, rho=result.fields["rho"].double().numpy(),
                 larmor=result.fields["omega_L"].double().numpy(), wall_time_s=wall)
        print(f"{path.stem}: {wall:.1f} s", flush=True)


def score(args) -> None:
    """nvbayes side: nvbayes's metrics of every NEFI fit, mean and 95 % interval."""
    from scipy import stats

    from nvbayes.metrics import evaluate

    rows = []
    for path in sorted(args.folder.glob(f"sample*-nefi-{args.preset}-seed*.npz")):
        fitted = np.load(path)
        truth = np.load(args.folder / (path.name.split("-nefi-")[0] + ".npz"))
        metrics = evaluate(fitted["rho"], truth["rho_true"], fitted["larmor"],
                           truth["larmor_true"])
        rows.append({"fit": path.stem, "scene_class": str(truth["scene_class"]),
                     "wall_time_s": float(fitted["wall_time_s"])} | metrics)
    if not rows:
        sys.exit(f"no NEFI fits with preset {args.preset} in {args.folder}")
    (args.folder / f"scores-{args.preset}.json").write_text(json.dumps(rows, indent=1))
    for name in ("hungarian_f1", "swd", "gmsd", "larmor_mae", "wall_time_s"):
        values = np.array([r[name] for r in rows])
        half = (stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / len(values) ** 0.5
                if len(values) > 1 else float("nan"))
        print(f"{name:>14}: {values.mean():.4g} ± {half:.2g}  ({len(rows)} fits)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    e = steps.add_parser("export", help="nvbayes side: samples to .npz")
    e.add_argument("data", type=Path)
    e.add_argument("--samples", help="e.g. 0-7 (default all)")
    e.add_argument("--out", type=Path, required=True)
    e.set_defaults(handler=export)
    f = steps.add_parser("fit", help="NEFI side: fit every exported sample")
    f.add_argument("folder", type=Path)
    f.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int, default=2)
    f.set_defaults(handler=fit)
    s = steps.add_parser("score", help="nvbayes side: metrics of the NEFI fits")
    s.add_argument("folder", type=Path)
    s.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    s.set_defaults(handler=score)
    args = parser.parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
