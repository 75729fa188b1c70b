"""``nvbayes train``: a supervised baseline (U-Net, GAN, hybrid) on simulated pairs."""

from __future__ import annotations

from pathlib import Path

from nvbayes.data.trained import SUPERVISED, TRAIN_SETS, supervised_spec
from nvbayes.workflows.train import DATA_SEED, VAL_PAIRS, train_model

from .common import RUNS, simulation_arguments, simulation_settings

DESCRIPTION = ("Train a supervised reconstructor (paper appendix E.2) on simulated pairs: "
               "dense scenes (the paper's 30-60 sources) or the sparse classes (the "
               "control).  Rerun the same command to resume an interrupted training; "
               "another --epochs lengthens or shortens it.")


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, choices=tuple(SUPERVISED),
                   help="which supervised model")
    p.add_argument("--train-set", default="dense", choices=TRAIN_SETS,
                   help="dense (the paper's generator, default) or sparse (the control)")
    p.add_argument("--epochs", type=int, help="epochs (the paper's 200)")
    p.add_argument("--pairs", type=int, help="training pairs (the paper's 300)")
    p.add_argument("--batch-size", type=int, help="pairs per Adam step (16)")
    p.add_argument("--lr", type=float, help="Adam's learning rate (the paper's 1e-3)")
    p.add_argument("--val-pairs", type=int, default=VAL_PAIRS,
                   help=f"validation pairs, simulated after the training pairs ({VAL_PAIRS})")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the order (0)")
    p.add_argument("--data-seed", type=int, default=DATA_SEED,
                   help=f"scene seed of the first training pair ({DATA_SEED})")
    simulation_arguments(p)
    p.add_argument("--out", type=Path,
                   help="output folder (default runs/train-MODEL-SET)")


def run(args) -> None:
    spec = supervised_spec(args.model, epochs=args.epochs, pairs=args.pairs,
                           batch_size=args.batch_size, lr=args.lr)
    settings = simulation_settings(args)
    out = args.out or RUNS / f"train-{args.model}-{args.train_set}"
    print(train_model(spec, out, args.train_set, args.seed, args.data_seed, args.val_pairs,
                      settings))
