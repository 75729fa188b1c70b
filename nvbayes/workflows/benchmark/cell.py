"""One benchmark cell: fit one measurement and score it against its truth.

:func:`fit_group` (one cell, or a batch of samples) is what an executor runs, in this process
or on a Dask worker.  It never raises for a failing fit: the error is returned in the record,
so that one bad cell is kept with its message and does not stop the sweep.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr

from nvbayes import metrics
from nvbayes.data.io import select_sample
from nvbayes.data.spec import ModelSpec
from nvbayes.inference.map import fit_batch, fit_map
from nvbayes.model.problem import InverseProblem

from .plan import Cell


@dataclass
class CellRecord:
    """The outcome of one cell.

    ``values``: metric name → float (NaN where the fit failed), plus ``runtime_s`` (seconds of
    the fit itself, set-up and scoring excluded).  ``rho`` and ``larmor`` ``(ny, nx)`` are the
    scale-corrected MAP maps (``None`` after a failure); ``error`` is ``""`` on success.
    """

    cell: Cell
    values: dict
    rho: "np.ndarray | None" = None
    larmor: "np.ndarray | None" = None
    error: str = ""
    info: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return bool(self.error)


def failed_record(cell: Cell, error: str, runtime_s: float = math.nan) -> CellRecord:
    values = {name: math.nan for name in metrics.MAP_METRICS} | {"runtime_s": runtime_s}
    return CellRecord(cell=cell, values=values, error=error)


def _error(exc: Exception) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1]
    where = f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}"
    return f"{type(exc).__name__}: {exc} ({where})"


def _record(cell: Cell, measurement: xr.Dataset, result, info: dict) -> CellRecord:
    mask = measurement["mask"].values.astype(bool) if "mask" in measurement else None
    scores = metrics.evaluate(result.rho, measurement["rho_true"].values, result.larmor,
                              measurement["larmor_true"].values
                              if "larmor_true" in measurement else None,
                              np.asarray(result.predicted).sum(0),
                              measurement["spectrum"].sum("freq").values, mask)
    values = {name: float(scores.get(name, math.nan)) for name in metrics.MAP_METRICS}
    values["runtime_s"] = float(result.wall_time_s)
    info = info | {"diverged": int(result.diverged), "steps": int(result.stats["steps"]),
                   "batch_size": int(result.stats.get("batch_size", 1))}
    return CellRecord(cell=cell, values=values, rho=np.asarray(result.rho, np.float32),
                      larmor=np.asarray(result.larmor, np.float32), info=info)


def run_cell(cell: Cell, measurement: xr.Dataset, spec: ModelSpec, threads: int = 1,
             device: str = "cpu", precision: str = "fp32") -> CellRecord:
    """Fit ``measurement`` (one sample with ``rho_true``) under ``cell.operator``; never raises
    for an error inside the fit."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        problem = InverseProblem.from_measurement(measurement)
        result = fit_map(problem, spec, cell.operator, seed=cell.seed, show=False,
                         device=device, precision=precision)
        return _record(cell, measurement, result, {"threads": threads, "device": device})
    except Exception as exc:   # noqa: BLE001 - recorded, the sweep goes on
        return failed_record(cell, _error(exc), time.perf_counter() - start)


def fit_group(cells: list[Cell], data: xr.Dataset, spec: ModelSpec, threads: int = 1,
              device: str = "cpu", precision: str = "fp32") -> list[CellRecord]:
    """The cells of one group of :meth:`~.plan.BenchmarkPlan.groups` on a data set with a
    ``sample`` axis: one cell alone, or several samples (same method, operator and seed) in one
    batched fit, whose ``runtime_s`` is the batch's wall time divided by its size.  Never
    raises for an error inside the fit (every cell of a failed batch records it)."""
    if len(cells) == 1:
        cell = cells[0]
        return [run_cell(cell, select_sample(data, cell.sample), spec, threads, device,
                         precision)]
    torch.set_num_threads(threads)
    start = time.perf_counter()
    ones = [select_sample(data, c.sample) for c in cells]
    try:
        stacked = InverseProblem.from_measurement(xr.concat(ones, "sample"))
        results = fit_batch(stacked, spec, cells[0].operator, seeds=[c.seed for c in cells],
                            show=False, device=device, precision=precision)
        info = {"threads": threads, "device": device}
        return [_record(c, one, r, info) for c, one, r in zip(cells, ones, results, strict=True)]
    except Exception as exc:   # noqa: BLE001 - recorded, the sweep goes on
        share = (time.perf_counter() - start) / len(cells)
        return [failed_record(c, _error(exc), share) for c in cells]
