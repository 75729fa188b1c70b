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

from nvbayes.data.io import SPATIAL, write_netcdf
from nvbayes.metrics import MAP_METRICS, METRICS
from nvbayes.results.store import CellStore

from .cell import CellRecord
from .plan import BenchmarkPlan, Cell

RESULTS, SUMMARY, DATA, PLAN = "results.nc", "summary.md", "data.nc", "benchmark.toml"
RESULT_SCHEMA = "nvbayes.benchmark/1"
#: Cell attributes kept besides the scores.
INFO = ("diverged", "steps", "threads", "copied_from_seed", "executor", "device", "batch_size")


class BenchmarkCells:
    """The benchmark's cells in the :class:`~nvbayes.results.store.CellStore` of its folder,
    as :class:`~nvbayes.workflows.benchmark.cell.CellRecord`."""

    def __init__(self, folder: "str | Path"):
        self.store = CellStore(folder)

    def done(self, cell: Cell) -> bool:
        return self.store.done(cell.key)

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
        return self.store.write(c.key, xr.Dataset(data, coords=spatial if data else None,
                                                  attrs=attrs))

    def copy(self, source: Cell, cell: Cell, spatial: dict) -> Path:
        """Record ``source``'s finished fit as ``cell``'s (a seed-independent method)."""
        record = self.read(source)
        record = CellRecord(cell=cell, values=record.values, rho=record.rho,
                            larmor=record.larmor, error=record.error,
                            info=record.info | {"copied_from_seed": source.seed})
        return self.write(record, spatial)

    def read(self, cell: Cell) -> "CellRecord | None":
        ds = self.store.read(cell.key)
        if ds is None:
            return None
        values = {k: float(ds.attrs.get(k, math.nan)) for k in MAP_METRICS + ("runtime_s",)}
        info = {k: ds.attrs[k] for k in INFO if k in ds.attrs}
        rho = ds["rho"].values if "rho" in ds else None
        larmor = ds["larmor"].values if "larmor" in ds else None
        return CellRecord(cell=cell, values=values, rho=rho, larmor=larmor,
                          error=str(ds.attrs.get("error", "")), info=info)


def assemble_results(plan: BenchmarkPlan, store: BenchmarkCells, data: xr.Dataset,
                     attrs: dict) -> xr.Dataset:
    """``results.nc``: every metric on ``(method, operator, sample, seed)``.

    A cell without a file is NaN with error ``"not run"``.
    """
    methods, ops, seeds = list(plan.methods), list(plan.operators), list(plan.seeds)
    shape = (len(methods), len(ops), plan.samples, len(seeds))
    names = MAP_METRICS + ("runtime_s",)
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
    variables = {k: (dims, arrays[k], METRICS[k].attrs) for k in names}
    variables["diverged"] = (dims, diverged, {"long_name": "fit ended by the NaN guard"})
    variables["error"] = (dims, errors.astype(str),
                          {"long_name": "error of a failed cell ('' when it succeeded)"})
    attrs = {"schema": RESULT_SCHEMA, "executor": "; ".join(sorted(executors)) or "none"} | attrs
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def write_results(results: xr.Dataset, folder: "str | Path") -> Path:
    return write_netcdf(results, Path(folder) / RESULTS)
