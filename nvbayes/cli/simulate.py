"""``nvbayes simulate``: one measurement (--scene) or a data set (--classes)."""

from __future__ import annotations

from pathlib import Path

from nvbayes.data.io import write_netcdf
from nvbayes.data.scenes import (
    dataset_plan,
    expand_classes,
    parse_scene_class,
    simulate,
    simulate_dataset,
)
from nvbayes.errors import NvbayesError
from nvbayes.progress import progress

from .common import RUNS, simulation_arguments, simulation_settings

DESCRIPTION = ("Simulate one measurement (--scene) or a data set (--classes with --per-class "
               "or --samples).")


def add_arguments(p) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--scene", help="one scene class, e.g. medium/far")
    which.add_argument("--classes", help="'all' (the paper's eight) or a comma list")
    count = p.add_mutually_exclusive_group()
    count.add_argument("--per-class", type=int, help="samples per class (with --classes)")
    count.add_argument("--samples", type=int, help="samples in total, cycling the classes")
    p.add_argument("--data-seed", type=int, default=0,
                   help="seed of the scene (sample i uses data-seed + i) (0)")
    simulation_arguments(p)
    p.add_argument("--out", type=Path, help="output .nc (default under runs/)")


def run(args) -> None:
    settings = simulation_settings(args)
    if args.scene is not None:
        if args.per_class is not None or args.samples is not None:
            raise NvbayesError("--per-class and --samples belong to --classes",
                               "use --classes with them, or drop them for one --scene")
        parse_scene_class(args.scene)
        out = args.out or RUNS / f"{args.scene.replace('/', '-')}-seed{args.data_seed}.nc"
        dataset = simulate(args.scene, args.data_seed, settings)
    else:
        classes = expand_classes(args.classes)
        if args.per_class is None and args.samples is None:
            raise NvbayesError("--classes needs the data set size",
                               "add --per-class K or --samples N")
        plan = dataset_plan(classes, args.per_class, args.samples, args.data_seed)
        tag = "all" if args.classes.strip().lower() == "all" else f"{len(classes)}classes"
        out = args.out or RUNS / f"dataset-{tag}-{len(plan)}-seed{args.data_seed}.nc"
        dataset = simulate_dataset(
            plan, settings,
            progress=lambda it: progress(it, total=len(plan), desc="simulate"))
    write_netcdf(dataset, out)
    print(out)
