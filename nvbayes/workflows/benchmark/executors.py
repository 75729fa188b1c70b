"""Where cells run: in this process, or on a Dask cluster.

An executor takes the groups of cells to fit (:meth:`~.plan.BenchmarkPlan.groups`), the data
set (with a ``sample`` axis) and the plan, and yields a
:class:`~nvbayes.workflows.benchmark.cell.CellRecord` for each cell as its group finishes (in
completion order).  Every group goes through the same
:func:`~nvbayes.workflows.benchmark.cell.fit_group` with the plan's thread count, device and
precision, so a cell's result does not depend on the executor that ran it.

- :class:`InProcess`: one cell after the other (the default).
- :class:`DaskExecutor`: ``scheduler="tcp://HOST:PORT"`` submits to an existing cluster;
  ``workers=N`` starts a ``distributed.LocalCluster`` of N worker processes (one task at a
  time each, ``threads`` torch threads) for the duration of the benchmark.  The data set is
  sent to every worker once; tasks carry only the cells and their specification, and at most
  two per worker slot are in flight, so the scheduler never holds the whole sweep (nor moves
  measurement data between workers).  A worker that dies (e.g. out of memory) fails only its
  cell, which is recorded with the error.
"""

from __future__ import annotations

import importlib
import logging
from typing import Iterator

import torch
import xarray as xr

from nvbayes.errors import NvbayesError, ParameterError

from .cell import CellRecord, failed_record, fit_group
from .plan import Cell


class InProcess:
    """Run the cells here, sequentially."""

    name = "in-process"

    def __init__(self, threads: int = 1):
        self.threads = threads

    def __enter__(self):
        self._saved = torch.get_num_threads()
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self._saved)
        return False

    def map(self, fn, items: list) -> Iterator[tuple]:
        """``(item, fn(item), None)`` for each item, or ``(item, None, error)`` where ``fn``
        raised an :class:`~nvbayes.errors.NvbayesError`; in order."""
        torch.set_num_threads(self.threads)
        for item in items:
            try:
                yield item, fn(item), None
            except NvbayesError as exc:
                yield item, None, str(exc)

    def run(self, groups: list[list[Cell]], data: xr.Dataset, plan) -> Iterator[CellRecord]:
        for cells in groups:
            yield from fit_group(cells, data, plan.methods[cells[0].method], self.threads,
                                 plan.device, plan.precision)


class DaskExecutor:
    """Run the cells on a Dask cluster (an existing one, or a local one started here)."""

    def __init__(self, threads: int = 1, scheduler: "str | None" = None,
                 workers: "int | None" = None):
        if (scheduler is None) == (workers is None):
            raise ParameterError("give either a scheduler address or a worker count",
                                 "pass --scheduler tcp://HOST:PORT or --workers N")
        if workers is not None and workers < 1:
            raise ParameterError(f"--workers must be >= 1, got {workers}",
                                 "pass --workers 2 or more")
        self.threads, self.scheduler, self.workers = threads, scheduler, workers
        self.cluster = self.client = None

    @property
    def name(self) -> str:
        if self.scheduler is not None:
            return f"dask ({self.scheduler})"
        return f"dask LocalCluster ({self.workers} workers x {self.threads} threads)"

    def __enter__(self):
        dask, distributed = _dask()
        Client = distributed.Client
        if self.scheduler is not None:
            try:
                self.client = Client(self.scheduler, timeout="10s")
            except (OSError, TimeoutError) as exc:
                raise ParameterError(f"cannot reach the Dask scheduler {self.scheduler} "
                                     f"({type(exc).__name__})",
                                     "check the address, or use --workers N for a local "
                                     "cluster") from None
        else:
            # Two defaults of Dask's workers slow a fit down badly here: the statistical
            # profiler walks every thread's stack each 10 ms, and MALLOC_TRIM_THRESHOLD_
            # (set for every worker) turns off glibc's dynamic mmap threshold, so each
            # spectrum-sized tensor is mmapped and unmapped again (measured: a Tikhonov fit of
            # 1000 steps took 8.8 s with it, 3.4 s without).  Local workers run without both.
            environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
            environ.pop("MALLOC_TRIM_THRESHOLD_", None)
            with dask.config.set({"distributed.worker.profile.enabled": False,
                                  "distributed.nanny.pre-spawn-environ": environ}):
                self.cluster = self._local_cluster()
            self.client = Client(self.cluster)
        return self

    def _local_cluster(self):
        return _dask()[1].LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                            dashboard_address=":0", silence_logs=logging.ERROR)

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        return False

    def map(self, fn, items: list) -> Iterator[tuple]:
        """``(item, fn(item), None)`` for each item in completion order, or ``(item, None,
        error)`` where the task failed (a lost worker fails only its item).  Each worker runs
        torch with ``threads`` threads."""
        return self._stream(items, lambda item: self.client.submit(
            _threaded, fn, item, self.threads, pure=False))

    def run(self, groups: list[list[Cell]], data: xr.Dataset, plan) -> Iterator[CellRecord]:
        shared = self.client.scatter(data, broadcast=True)

        def submit(cells):
            return self.client.submit(fit_group, cells, shared, plan.methods[cells[0].method],
                                      self.threads, plan.device, plan.precision,
                                      key=f"nvbayes-{cells[0].key}-x{len(cells)}", pure=False)

        for cells, records, error in self._stream(groups, submit):
            yield from (records if error is None
                        else [failed_record(c, error) for c in cells])

    def _stream(self, items: list, submit_one) -> Iterator[tuple]:
        """``(item, result, error)`` in completion order for the futures ``submit_one(item)``
        returns, with at most two tasks per worker slot in flight, so the scheduler never
        holds the whole sweep."""
        as_completed = _dask()[1].as_completed
        window = 2 * max(1, sum(self.client.nthreads().values()))
        pending = iter(items)
        futures: dict = {}
        queue = as_completed()

        def submit() -> bool:
            item = next(pending, None)
            if item is None:
                return False
            future = submit_one(item)
            futures[future] = item
            queue.add(future)
            return True

        for _ in range(window):
            if not submit():
                break
        for future in queue:
            item = futures.pop(future)
            try:
                yield item, future.result(), None
            except Exception as exc:   # noqa: BLE001 - a failed task fails its item only
                yield item, None, f"{type(exc).__name__}: {exc} (on the cluster)"
            submit()


def _threaded(fn, item, threads: int):
    """``fn(item)`` with ``threads`` torch threads (a Dask task)."""
    torch.set_num_threads(threads)
    return fn(item)


def _dask():
    """``(dask, distributed)``, the optional dependency of ``--workers``/``--scheduler``,
    imported when a Dask executor starts."""
    try:
        return importlib.import_module("dask"), importlib.import_module("distributed")
    except ImportError:
        raise ParameterError("Dask's distributed scheduler is not installed",
                             "pip install 'nvbayes[dask]', or drop --workers/--scheduler"
                             ) from None
