"""``nvbayes train``: a supervised baseline trained on simulated pairs (paper appendix E.7).

The training set is simulated from ``(train_set, data_seed)``: ``dense`` is the paper's
generator (30–60 sources a scene, :data:`nvbayes.data.scenes.DENSE_CLASS`), ``sparse`` the
control, cycling through the paper's eight sparse classes.  Pair ``i`` is scene seed
``data_seed + i``; the validation pairs follow the training pairs (seeds ``data_seed + pairs``
onwards), so neither overlaps the other, nor the benchmark sets of ``docs/results.md`` (seeds
below 10 000) with the default ``data_seed``.

The output folder::

    settings.toml   what was asked (a rerun with other settings is refused)
    checkpoint.pt   the state after the last finished epoch, while training runs
    model.pt        the trained model: weights (float16), spec, input geometry, provenance
    history.nc      train_loss, val_loss, val_pixel, val_physics, wall_s per epoch
    loss.png        the loss curves

An interrupted training resumes from ``checkpoint.pt`` when the same command is run again, and
ends with the weights an uninterrupted one gives.  The epoch count is the one setting a resumed
training may change: nothing in an epoch depends on it (the order of epoch ``e`` is drawn from
``(seed, e)``, the learning rate is constant), so an unfinished training can be lengthened or
ended early, down to the epoch its checkpoint holds, and gives the weights of a training run
with that count from the start.
"""

from __future__ import annotations

import os
import platform
import time
import tomllib
from pathlib import Path

import numpy as np
import torch
import xarray as xr

import nvbayes
from nvbayes.data.io import atomic_path, toml_dumps, write_netcdf
from nvbayes.data.scenes import (
    DENSE_CLASS,
    PAPER_CLASSES,
    SimulationSettings,
    dataset_plan,
    simulate_dataset,
)
from nvbayes.data.trained import (
    TRAIN_SETS,
    SupervisedSpec,
    geometry,
    half_state,
    input_scale,
    write_model_file,
)
from nvbayes.errors import NvbayesError, ParameterError
from nvbayes.figures import save_figure
from nvbayes.figures.training import plot_history
from nvbayes.inference.training import HISTORY, Pairs, build_networks, evaluate_pairs, train
from nvbayes.physics.geometry import Grid
from nvbayes.physics.operators import make_operator
from nvbayes.progress import progress_bar
from nvbayes.results.store import stored_settings

SETTINGS, CHECKPOINT, MODEL, HISTORY_FILE, FIGURE = ("settings.toml", "checkpoint.pt",
                                                       "model.pt", "history.nc", "loss.png")
#: The default seed of the first training scene (far from the benchmark sets' seeds).
DATA_SEED = 10_000
VAL_PAIRS = 30


def train_classes(train_set: str) -> list[str]:
    """The scene classes of a training set."""
    if train_set not in TRAIN_SETS:
        raise ParameterError(f"unknown training set {train_set!r}",
                             f"use --train-set {' or '.join(TRAIN_SETS)}")
    return [DENSE_CLASS] if train_set == "dense" else list(PAPER_CLASSES)


def simulate_pairs(train_set: str, count: int, seed: int, settings: SimulationSettings,
                   desc: str = "simulate", show=None) -> Pairs:
    """``count`` pairs of ``train_set`` from scene seed ``seed`` on: the network's inputs and
    targets (:class:`~nvbayes.inference.training.Pairs`)."""
    plan = dataset_plan(train_classes(train_set), samples=count, seed=seed)
    bar = progress_bar(len(plan), desc, "scene", show)

    def tick(items):
        for item in items:
            yield item
            if bar is not None:
                bar.update(1)

    data = simulate_dataset(plan, settings, progress=tick)
    if bar is not None:
        bar.close()
    return pairs_of(data)


def pairs_of(data: xr.Dataset) -> Pairs:
    """The inputs ``S / c`` and targets ``ρ / c``, ω_L of a data set with truth."""
    spectrum = torch.as_tensor(data["spectrum"].values, dtype=torch.float32)
    c = input_scale(spectrum)
    return Pairs(x=spectrum / c,
                 rho=torch.as_tensor(data["rho_true"].values, dtype=torch.float32) / c[:, 0],
                 larmor=torch.as_tensor(data["larmor_true"].values, dtype=torch.float32))


def physics_operator(settings: SimulationSettings):
    """F2 on the training grid, the operator of L_phys."""
    return make_operator("F2", settings.freqs(), settings.linewidth, settings.grid.spacing,
                         settings.grid.standoff, units=settings.units,
                         nv_axis=settings.nv_axis)


def run_settings(spec: SupervisedSpec, train_set: str, seed: int, data_seed: int,
                 val_pairs: int, settings: SimulationSettings) -> dict:
    """The settings table of a training (``settings.toml`` and the model's provenance)."""
    return {"model": spec.to_dict(), "train_set": train_set, "seed": int(seed),
            "data_seed": int(data_seed), "val_pairs": int(val_pairs),
            "simulator": settings.operator, "noise": float(settings.noise),
            "grid": list(settings.grid.shape), "spacing_nm": float(settings.grid.spacing),
            "standoff_nm": float(settings.grid.standoff),
            "linewidth_ghz": float(settings.linewidth),
            "larmor_band_ghz": list(settings.band), "n_freq": int(settings.n_freq),
            "readout": settings.readout, "units": settings.units,
            "nv_axis": list(settings.nv_axis)}


def settings_from(table: dict) -> SimulationSettings:
    """The simulation settings of a settings table (or a model file's provenance)."""
    ny, nx = table["grid"]
    return SimulationSettings(
        grid=Grid(int(ny), table["spacing_nm"], table["standoff_nm"], nx=int(nx)),
        operator=table["simulator"], noise=table["noise"], linewidth=table["linewidth_ghz"],
        band=tuple(table["larmor_band_ghz"]), n_freq=int(table["n_freq"]),
        units=table["units"], readout=table["readout"], nv_axis=tuple(table["nv_axis"]))


def history_dataset(history: dict, table: dict) -> xr.Dataset:
    """The per-epoch losses as a dataset with ``epoch`` 1, 2, …."""
    count = len(history["val_loss"])
    units = {"wall_s": "s"}
    ds = xr.Dataset({k: ("epoch", np.asarray(history[k], dtype=np.float64),
                         {"units": units.get(k, "1")}) for k in HISTORY},
                    coords={"epoch": np.arange(1, count + 1)})
    return ds.assign_attrs(model=table["model"]["name"], train_set=table["train_set"],
                           pairs=table["model"]["pairs"], val_pairs=table["val_pairs"],
                           schema="nvbayes.training-history/1")


def validation_loss(net, table: dict, val: Pairs) -> float:
    """The validation loss of ``net`` as the history records it."""
    settings = settings_from(table)
    physics = float(table["model"]["physics"])
    return evaluate_pairs(net, val, physics_operator(settings), settings.band, physics,
                          int(table["model"]["batch_size"]))["total"]


def validation_pairs(table: dict, show=None) -> Pairs:
    """The validation pairs of a training, regenerated from its settings (or provenance)."""
    pairs = int(table["model"]["pairs"])
    return simulate_pairs(table["train_set"], int(table["val_pairs"]),
                          int(table["data_seed"]) + pairs, settings_from(table),
                          "simulate validation", show)


def _but_epochs(table: dict) -> dict:
    """A settings table without the epoch count (the one setting a resumed training may
    change)."""
    return table | {"model": {k: v for k, v in table["model"].items() if k != "epochs"}}


def _save_checkpoint(state: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train_model(spec: SupervisedSpec, out: "str | os.PathLike", train_set: str = "dense",
                seed: int = 0, data_seed: int = DATA_SEED, val_pairs: int = VAL_PAIRS,
                settings: SimulationSettings = SimulationSettings(),
                show: "bool | None" = None, stop_after: "int | None" = None) -> Path:
    """Train ``spec`` on ``train_set`` into the folder ``out`` (see the module docstring) and
    return the model file's path.  ``stop_after`` ends the call after that many epochs (the
    checkpoint stays), as an interruption would."""
    out = Path(out)
    if val_pairs < 1:
        raise ParameterError(f"val_pairs must be >= 1, got {val_pairs}",
                             "pass --val-pairs 1 or more")
    table = run_settings(spec, train_set, seed, data_seed, val_pairs, settings)
    shape = settings.grid.shape
    if any(s % 8 for s in shape):
        raise ParameterError(f"the U-Net needs grid sides divisible by 8, got "
                             f"{shape[0]} x {shape[1]}", "pass --grid 32, 64, 128, …")
    asked = tomllib.loads(toml_dumps(table))
    stored = stored_settings(out, SETTINGS, "training")
    if stored is not None and _but_epochs(stored) != _but_epochs(asked):
        raise NvbayesError(f"{out} holds a training with other settings",
                           "rerun with the same options to resume, or choose another --out")
    stored_epochs = stored["model"]["epochs"] if stored is not None else None
    if (out / MODEL).is_file():
        if stored_epochs != spec.epochs:
            raise NvbayesError(f"{out} holds a finished training of {stored_epochs} epochs",
                               f"rerun with --epochs {stored_epochs}, or choose another --out")
        return out / MODEL
    state = None
    if (out / CHECKPOINT).is_file():
        state = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)
        if state["epoch"] > spec.epochs:
            raise NvbayesError(f"{out} holds a checkpoint after epoch {state['epoch']}, past "
                               f"--epochs {spec.epochs}",
                               f"pass --epochs {state['epoch']} or more, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    if stored != asked:
        with atomic_path(out / SETTINGS) as tmp:
            Path(tmp).write_text(toml_dumps(table))
    train_pairs = simulate_pairs(train_set, spec.pairs, data_seed, settings,
                                 "simulate training", show)
    val = simulate_pairs(train_set, val_pairs, data_seed + spec.pairs, settings,
                         "simulate validation", show)
    operator = physics_operator(settings)
    bar = progress_bar(spec.epochs, f"train {spec.name}", "epoch", show)
    start = time.perf_counter()
    earlier = sum(state["history"]["wall_s"]) if state is not None else 0.0

    def on_epoch(current: dict) -> None:
        _save_checkpoint(current, out / CHECKPOINT)
        if stop_after is not None and current["epoch"] >= stop_after:
            raise _Stop

    try:
        final = train(spec, train_pairs, val, operator, settings.band, seed, state, on_epoch,
                      bar)
    except _Stop:
        return out / CHECKPOINT
    finally:
        if bar is not None:
            bar.close()
    wall = earlier + time.perf_counter() - start
    history = history_dataset(final["history"], table)
    net = final["net"]
    stored_net, _ = build_networks(spec, train_pairs.x.shape[1], shape, settings.band, seed)
    stored_net.load_state_dict({k: v.float() if v.is_floating_point() else v
                                for k, v in half_state(net).items()})
    record = {
        "spec": spec.to_dict(),
        "input": geometry(settings.freqs().numpy(), shape, settings.grid.spacing,
                          settings.grid.standoff, settings.linewidth, settings.band,
                          settings.nv_axis),
        "provenance": table | {
            "generator": ("dense: 30-60 sources per scene, no separation rule"
                          if train_set == "dense" else "sparse: " + ",".join(PAPER_CLASSES)),
            "epochs": int(spec.epochs), "wall_time_s": float(wall),
            "val_loss": validation_loss(stored_net, table, val),
            "val_loss_fp32": float(final["history"]["val_loss"][-1]),
            "weights": "float16", "torch": str(torch.__version__), "nvbayes": nvbayes.__version__,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "threads": torch.get_num_threads()},
        "state": half_state(net),
    }
    write_netcdf(history, out / HISTORY_FILE)
    save_figure(plot_history(history).figure, out / FIGURE)
    path = write_model_file(record, out / MODEL)
    (out / CHECKPOINT).unlink(missing_ok=True)
    return path


class _Stop(Exception):
    """Ends a training early on request (``stop_after``)."""


__all__ = ["CHECKPOINT", "DATA_SEED", "MODEL", "VAL_PAIRS", "pairs_of", "run_settings",
           "settings_from", "simulate_pairs", "train_classes", "train_model",
           "validation_loss", "validation_pairs"]
