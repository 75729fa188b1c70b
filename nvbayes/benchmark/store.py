"""The benchmark folder: one netCDF file per finished cell, and the assembled results.

Layout of ``--out``::

    benchmark.toml      the plan: methods with their resolved specifications, operators,
                        seeds, threads per fit, the data set's fingerprint
    data.nc             the measurements (simulated, or a copy of ``--data``), with truth
    cells/KEY.nc        one finished cell: rho and larmor (y, x) and its scores as attributes
    results.nc          dims (method, operator, sample, seed): one variable per metric,
                        runtime_s, diverged and error
    summary.md, *.png   tables and figures

Each cell file is written atomically as soon as its fit ends, so a benchmark killed at any
point keeps every finished cell; rerunning it computes only the cells without a file (a
failed cell has a file with its error and is retried on the next run).  A method whose fit
does not depend on the seed is fitted at the first seed only; its other seeds get a copy of
that cell (attribute ``copied_from_seed``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import xarray as xr

from ..io import SPATIAL, write_netcdf
from .cell import CELL_METRICS, CellRecord
from .plan import BenchmarkPlan, Cell

RESULTS, SUMMARY, DATA, PLAN, CELLS = "results.nc", "summary.md", "data.nc", "benchmark.toml", \
    "cells"
RESULT_SCHEMA = "nvbayes.benchmark/1"
UNITS = {"density_mse": "(fluctuators per pixel)^2", "larmor_mae": "GHz", "runtime_s": "s"}
LONG_NAMES = {
    "gmsd": "gradient magnitude similarity deviation",
    "hungarian_f1": "peak F1 after Hungarian matching within 2 px",
    "swd": "sliced Wasserstein-2 distance of the mass-normalized maps",
    "density_mse": "mean squared density error",
    "masked_ssim": "SSIM averaged over the true support",
    "centre_mass_ratio": "share of reconstructed mass within n/8 px of the grid centre",
    "larmor_mae": "mean absolute Larmor error on the true support",
    "runtime_s": "wall time of the fit",
}


class CellStore:
    """The ``cells/`` folder of a benchmark."""

    def __init__(self, folder: "str | Path"):
        self.folder = Path(folder) / CELLS

    def path(self, cell: Cell) -> Path:
        return self.folder / f"{cell.key}.nc"

    def done(self, cell: Cell) -> bool:
        """True when the cell has a file without an error."""
        path = self.path(cell)
        if not path.is_file():
            return False
        with xr.open_dataset(path, engine="netcdf4") as ds:
            return not ds.attrs.get("error", "")

    def write(self, record: CellRecord, spatial: dict) -> Path:
        c = record.cell
        attrs = {"method": c.method, "operator": c.operator, "sample": c.sample,
                 "seed": c.seed, "error": record.error}
        attrs |= {k: float(v) for k, v in record.values.items()}
        attrs |= {k: v for k, v in record.info.items()}
        data = {}
        if record.rho is not None:
            data["rho"] = (SPATIAL, record.rho, {"units": "fluctuators per pixel"})
            data["larmor"] = (SPATIAL, record.larmor, {"units": "GHz"})
        ds = xr.Dataset(data, coords=spatial if data else None, attrs=attrs)
        return write_netcdf(ds, self.path(c))

    def copy(self, source: Cell, cell: Cell, spatial: dict) -> Path:
        """Record ``source``'s finished fit as ``cell``'s (a seed-independent method)."""
        record = self.read(source)
        record = CellRecord(cell=cell, values=record.values, rho=record.rho,
                            larmor=record.larmor, error=record.error,
                            info=record.info | {"copied_from_seed": source.seed})
        return self.write(record, spatial)

    def read(self, cell: Cell) -> "CellRecord | None":
        path = self.path(cell)
        if not path.is_file():
            return None
        with xr.open_dataset(path, engine="netcdf4") as handle:
            ds = handle.load()
        values = {k: float(ds.attrs.get(k, math.nan)) for k in CELL_METRICS + ("runtime_s",)}
        info = {k: ds.attrs[k] for k in ("diverged", "steps", "threads", "copied_from_seed",
                                         "executor", "device", "batch_size") if k in ds.attrs}
        rho = ds["rho"].values if "rho" in ds else None
        larmor = ds["larmor"].values if "larmor" in ds else None
        return CellRecord(cell=cell, values=values, rho=rho, larmor=larmor,
                          error=str(ds.attrs.get("error", "")), info=info)


def assemble_results(plan: BenchmarkPlan, store: CellStore, data: xr.Dataset,
                     attrs: dict) -> xr.Dataset:
    """``results.nc``: every metric on ``(method, operator, sample, seed)``.

    A cell without a file is NaN with error ``"not run"``.
    """
    methods, ops, seeds = list(plan.methods), list(plan.operators), list(plan.seeds)
    shape = (len(methods), len(ops), plan.samples, len(seeds))
    names = CELL_METRICS + ("runtime_s",)
    arrays = {k: np.full(shape, np.nan) for k in names}
    diverged = np.zeros(shape, dtype=np.int8)
    errors = np.full(shape, "not run", dtype=object)
    executors = set()
    for cell in plan.cells():
        record = store.read(cell)
        if record is None:
            continue
        idx = (methods.index(cell.method), ops.index(cell.operator), cell.sample,
               seeds.index(cell.seed))
        for k in names:
            arrays[k][idx] = record.values.get(k, math.nan)
        diverged[idx] = int(record.info.get("diverged", 0))
        executors.add(str(record.info.get("executor", "not recorded")))
        errors[idx] = record.error
    dims = ("method", "operator", "sample", "seed")
    coords = {"method": methods, "operator": ops, "sample": np.arange(plan.samples),
              "seed": list(seeds)}
    for name in ("scene_class", "data_seed"):
        source = "seed" if name == "data_seed" else name
        if source in data.coords and "sample" in data[source].dims:
            coords[name] = ("sample", data[source].values)
    variables = {k: (dims, arrays[k], {"long_name": LONG_NAMES[k], "units": UNITS.get(k, "1")})
                 for k in names}
    variables["diverged"] = (dims, diverged, {"long_name": "fit ended by the NaN guard"})
    variables["error"] = (dims, errors.astype(str),
                          {"long_name": "error of a failed cell ('' when it succeeded)"})
    attrs = {"schema": RESULT_SCHEMA, "executor": "; ".join(sorted(executors)) or "none"} | attrs
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def complete_pairs(results: xr.Dataset) -> xr.DataArray:
    """``(sample, seed)`` mask: True where every method × operator cell has run."""
    return (results["error"] != "not run").all(("method", "operator"))


def write_results(results: xr.Dataset, folder: "str | Path") -> Path:
    return write_netcdf(results, Path(folder) / RESULTS)
