"""Wall time and accuracy of model files on F3-simulated measurements (cross-fidelity).

For every model × inversion operator × scene class × sample this simulates the measurement
(F3, seed = sample index), fits it with ``fit_map`` and evaluates the metrics against the
truth.  Each fit appends one JSON line to ``--out`` as soon as it ends, so a long sweep can be
followed (and resumed: finished fits are skipped).  ``--summary`` prints the per-model and
per-operator medians/means from that file.

    python benchmarks/model_fits.py --models netmy-fast --per-class 2
    python benchmarks/model_fits.py --models tikhonov,admm,lbfgs,gsplat,deepdecoder,netmy-fast \
        --operators F1,F2 --per-class 1 --out runs/baselines.jsonl
    python benchmarks/model_fits.py --models netmy-fast --spectrum-shape 1.0 --tag shape
    python benchmarks/model_fits.py --summary runs/netmy-presets.jsonl --by-class --common
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import torch

from nvbayes.data.scenes import PAPER_CLASSES, simulate
from nvbayes.data.spec import load_spec
from nvbayes.workflows.benchmark.cell import run_cell
from nvbayes.workflows.benchmark.plan import Cell

# larmor_mae_detected: in files written before the fits went through run_cell
METRICS = ("hungarian_f1", "swd", "gmsd", "larmor_mae", "larmor_mae_detected", "density_mse",
           "centre_mass_ratio")


def with_shape_weight(spec, weight: float):
    stages = tuple(dataclasses.replace(s, weights=dataclasses.replace(
        s.weights, spectrum_shape=weight)) for s in spec.stages)
    return dataclasses.replace(spec, stages=stages)


def run(args) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["tag"], r.get("operator", "F2"), r["scene_class"], r["sample"],
                      r.get("repeat", 0)))
    classes = PAPER_CLASSES if args.classes == "all" else args.classes.split(",")
    for name in args.models.split(","):
        spec = load_spec(name)
        if args.spectrum_shape is not None:
            spec = with_shape_weight(spec, args.spectrum_shape)
        tag = f"{name}{'+' + args.tag if args.tag else ''}"
        for sample in range(args.first, args.first + args.per_class):
            for cls in classes:
                for operator in args.operators.split(","):
                    for repeat in range(args.repeats):
                        if (tag, operator, cls, sample, repeat) in done:
                            continue
                        fit_one(out, spec, name, tag, operator, cls, sample, args.seed, repeat)


def fit_one(out: Path, spec, name: str, tag: str, operator: str, cls: str, sample: int,
            seed: int, repeat: int = 0) -> None:
    """Fit one measurement and append its row (``repeat`` numbers identical refits, for
    timing)."""
    record = run_cell(Cell(tag, operator, sample, seed), simulate(cls, sample), spec,
                      threads=torch.get_num_threads())
    if record.failed:
        raise RuntimeError(record.error)
    m = record.values
    row = {"tag": tag, "model": name, "scene_class": cls, "sample": sample,
           "operator": operator, "seed": seed, "wall_time_s": m["runtime_s"],
           "repeat": repeat} | record.info | {k: m[k] for k in METRICS if k in m}
    with out.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(f"{tag:14s} {operator} {cls:15s} #{sample} {m['runtime_s']:6.1f} s  "
          + "  ".join(f"{k}={m[k]:.3f}" for k in METRICS if k in m), flush=True)


def summary(path: str, by_class: bool = False, samples: "set[tuple] | None" = None) -> None:
    """Mean of each metric and median wall time per tag (and per scene class).

    ``samples``: keep only these ``(scene_class, sample)`` pairs, e.g. those every tag has.
    """
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    if samples is not None:
        rows = [r for r in rows if (r["scene_class"], r["sample"]) in samples]
    for r in rows:
        r.setdefault("operator", "F2")
    tags = sorted({(r["operator"], r["tag"]) for r in rows})
    groups = [(op, t, None) for op, t in tags]
    if by_class:
        groups = [(op, t, c) for op, t in tags for c in PAPER_CLASSES]
    print(f"{'op':3s} {'tag':20s} {'class':14s} {'fits':>4s} {'median s':>9s} "
          + " ".join(f"{m[:12]:>12s}" for m in METRICS))
    for op, tag, cls in groups:
        sel = [r for r in rows if r["tag"] == tag and r["operator"] == op
               and cls in (None, r["scene_class"])]
        walls = [r["wall_time_s"] for r in sel]
        sel = [r for r in sel if r.get("repeat", 0) == 0]
        if not sel:
            continue
        cells = [f"{_mean(sel, m):12.3f}" for m in METRICS]
        wall = statistics.median(walls)
        print(f"{op:3s} {tag:20s} {cls or 'all':14s} {len(sel):4d} {wall:9.1f} "
              + " ".join(cells))


def _mean(rows: list, metric: str) -> float:
    """Mean over the rows that have ``metric`` and a finite value (NaN if none)."""
    values = [r[metric] for r in rows if metric in r and r[metric] == r[metric]]
    return statistics.fmean(values) if values else float("nan")


def common_samples(path: str) -> set:
    """The (scene_class, sample) pairs that every tag in the file has fitted."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    per_tag: dict = {}
    for r in rows:
        per_tag.setdefault(r["tag"], set()).add((r["scene_class"], r["sample"]))
    return set.intersection(*per_tag.values()) if per_tag else set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="netmy-fast")
    parser.add_argument("--classes", default="all")
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--first", type=int, default=0, help="first sample seed")
    parser.add_argument("--operators", default="F2", help="comma-separated, e.g. F1,F2")
    parser.add_argument("--seed", type=int, default=0, help="fit seed")
    parser.add_argument("--repeats", type=int, default=1,
                        help="identical refits of each cell (median wall time)")
    parser.add_argument("--spectrum-shape", type=float, help="override the shape-term weight")
    parser.add_argument("--tag", default="", help="suffix naming this variant in the output")
    parser.add_argument("--out", default="runs/netmy-presets.jsonl")
    parser.add_argument("--summary", metavar="JSONL")
    parser.add_argument("--by-class", action="store_true", help="with --summary")
    parser.add_argument("--common", action="store_true",
                        help="with --summary: only the samples every tag has fitted")
    args = parser.parse_args()
    if args.summary:
        summary(args.summary, args.by_class,
                common_samples(args.summary) if args.common else None)
    else:
        run(args)


if __name__ == "__main__":
    main()
