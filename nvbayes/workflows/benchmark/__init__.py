"""Benchmarks: methods × inversion operators × samples × seeds, resumable, local or on Dask.

- :mod:`.plan`: the cells of a benchmark and the methods behind their names;
- :mod:`.cell`: one fit and its scores;
- :mod:`.executors`: in-process or Dask execution;
- :mod:`.store`: the folder (one file per cell) and ``results.nc``;
- :mod:`.summary`, :mod:`.figures`: ``summary.md`` and the PNG figures;
- :mod:`.ablation`: the NeTMY ablations of Tables 3 and 10 as methods;
- :mod:`.runner`: all of it, end to end.
"""

from .ablation import CUMULATIVE, SWEEPS, cumulative_variants, sweep_variants
from .executors import DaskExecutor, InProcess
from .plan import DEFAULT_METHODS, PRESETS, BenchmarkPlan, Cell, resolve_methods
from .runner import BenchmarkReport, load_data, run_benchmark

__all__ = ["BenchmarkPlan", "BenchmarkReport", "CUMULATIVE", "Cell", "DEFAULT_METHODS",
           "DaskExecutor", "InProcess", "PRESETS", "SWEEPS", "cumulative_variants",
           "load_data", "resolve_methods", "run_benchmark", "sweep_variants"]
