"""Run a benchmark plan into a folder: resume, execute the missing cells, assemble, report.

``run_benchmark`` is resumable by construction: the folder's ``benchmark.toml`` fixes the data
set (by fingerprint) and each method's specification; a rerun with the same folder checks that
they agree, then computes only the cells without a successful cell file (see :mod:`.store`).
Methods, operators or seeds may be added on a rerun; a method whose specification changed is
refused (its finished cells would mix two models).

Every fit estimates the noise σ from its own spectrum, as it must on a lab's file: the data
set's ``noise_sigma`` is dropped before fitting (:func:`without_noise_sigma`) unless
``oracle_sigma`` asks for it (``--oracle-sigma``).  The choice is recorded (``sigma`` in
``benchmark.toml`` and ``results.nc``: ``estimated`` or ``oracle``) and kept on a rerun.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from nvbayes.data.io import read_measurement, select_sample, toml_dumps, write_netcdf, write_with
from nvbayes.data.spec import spec_from_dict
from nvbayes.errors import NvbayesError
from nvbayes.figures import save_figure
from nvbayes.figures.benchmark import BOX_METRICS, box_plot, qualitative_grid, scene_classes
from nvbayes.inference.amortized import check_trained
from nvbayes.model.problem import InverseProblem
from nvbayes.progress import progress_bar
from nvbayes.results.run import versions
from nvbayes.results.store import stored_settings

from .plan import BenchmarkPlan, Cell
from .store import DATA, PLAN, SUMMARY, BenchmarkCells, assemble_results, write_results
from .summary import write_summary

PLAN_SCHEMA = "nvbayes.workflows.benchmark-plan/1"
#: Where the fits get the noise σ: estimated from each spectrum, or the file's noise_sigma.
SIGMA_ESTIMATED, SIGMA_ORACLE = "estimated", "oracle"


@dataclass
class BenchmarkReport:
    """What a finished (or partly failed) benchmark wrote."""

    folder: Path
    results: xr.Dataset
    computed: int          # cells fitted in this call
    failed: int            # cells of this call that failed
    figures: list


def with_sample_axis(data: xr.Dataset) -> xr.Dataset:
    """``data`` with a ``sample`` dimension (a single measurement becomes sample 0)."""
    if "sample" in data["spectrum"].dims:
        return data
    expanded = data.expand_dims("sample")
    for name in ("scene_class", "seed"):
        if name in data.coords and data[name].ndim == 0:
            expanded = expanded.assign_coords({name: ("sample", [data[name].values.item()])})
    return expanded


def without_noise_sigma(data: xr.Dataset) -> xr.Dataset:
    """``data`` without its ``noise_sigma``, so that every fit estimates σ from its spectrum.
    The spectrum's scale stays what the recorded σ made it (``spectrum_scale = absolute``
    unless the file says otherwise; :class:`~nvbayes.model.problem.InverseProblem`)."""
    if "noise_sigma" not in data.variables:
        return data
    out = data.drop_vars("noise_sigma")
    out.attrs = dict(data.attrs)
    out.attrs.setdefault("spectrum_scale", "absolute")
    return out


def sigma_source(data: xr.Dataset, oracle_sigma: bool) -> str:
    """``"oracle"`` or ``"estimated"``: the fits' σ; an oracle needs a recorded σ."""
    if not oracle_sigma:
        return SIGMA_ESTIMATED
    if "noise_sigma" not in data.variables:
        raise NvbayesError("the data set records no noise_sigma, so there is no oracle sigma",
                           "drop --oracle-sigma (every fit then estimates sigma from its "
                           "spectrum)")
    return SIGMA_ORACLE


def fingerprint(data: xr.Dataset) -> str:
    """SHA-256 of the spectra, the truth and the grid: equal data sets, equal prints."""
    digest = hashlib.sha256()
    for name in ("spectrum", "rho_true", "larmor_true", "freq", "x", "y"):
        if name in data.variables:
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(data[name].values, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _check_truth(data: xr.Dataset) -> None:
    if "rho_true" not in data:
        raise NvbayesError("the data set holds no rho_true, so nothing can be scored",
                           "benchmark simulated data (--classes) or a file with its truth")


def prepare_folder(folder: Path, plan: BenchmarkPlan, data: xr.Dataset, kind: str,
                   settings: dict, sigma: str = SIGMA_ESTIMATED) -> None:
    """Create the folder, or check that an existing one holds the same benchmark (``sigma``:
    where its fits get the noise σ; a folder from before the choice was recorded used the
    file's σ where there was one)."""
    _check_truth(data)
    print_ = fingerprint(data)
    plan_file = folder / PLAN
    methods = {m: spec.to_dict() for m, spec in plan.methods.items()}
    old = stored_settings(folder, PLAN, "benchmark")
    if old is not None:
        if old["benchmark"].get("data_fingerprint") != print_:
            raise NvbayesError(f"{folder} holds a benchmark of another data set",
                               "choose another --out, or rerun with the same data")
        if old["benchmark"].get("precision", "fp32") != plan.precision:
            raise NvbayesError(f"{folder} was run in {old['benchmark'].get('precision', 'fp32')}"
                               f" precision, not {plan.precision}",
                               f"rerun with --precision {old['benchmark'].get('precision')}")
        legacy = SIGMA_ORACLE if "noise_sigma" in data.variables else SIGMA_ESTIMATED
        was = old["benchmark"].get("sigma", legacy)
        if was != sigma:
            flag = "with --oracle-sigma" if was == SIGMA_ORACLE else "without --oracle-sigma"
            raise NvbayesError(f"{folder} was fitted with the {was} noise sigma, not the "
                               f"{sigma} one", f"rerun {flag}, or choose another --out")
        if old["benchmark"].get("threads") != plan.threads:
            raise NvbayesError(f"{folder} was run with {old['benchmark'].get('threads')} "
                               f"thread(s) per fit, not {plan.threads}",
                               f"rerun with --threads {old['benchmark'].get('threads')}")
        for name, spec in plan.methods.items():
            if name in old.get("methods", {}) and \
                    spec_from_dict(old["methods"][name], name) != spec:
                raise NvbayesError(f"method {name!r} has changed since {folder} was started",
                                   "choose another --out, or restore its model file")
        methods = old.get("methods", {}) | methods
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / DATA).is_file():
        write_netcdf(data, folder / DATA)
    header = {"schema": PLAN_SCHEMA, "kind": kind, "data_fingerprint": print_,
              "threads": plan.threads, "precision": plan.precision, "device": plan.device,
              "batch": plan.batch, "sigma": sigma,
              "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    text = toml_dumps({"benchmark": header | settings, "versions": versions(),
                       "methods": methods})
    write_with(plan_file, lambda tmp: tmp.write_text(text))


def run_benchmark(plan: BenchmarkPlan, data: xr.Dataset, folder: "str | Path", executor,
                  *, kind: str = "benchmark", title: str = "Benchmark",
                  settings: "dict | None" = None, summary_metrics: "tuple | None" = None,
                  figure_metrics: tuple = BOX_METRICS, show: "bool | None" = None,
                  compute: bool = True, oracle_sigma: bool = False) -> BenchmarkReport:
    """Compute the missing cells of ``plan`` on ``data`` with ``executor`` and write the report.

    ``settings`` (strings and numbers) go to ``benchmark.toml`` and the attributes of
    ``results.nc``; ``executor`` is an :mod:`.executors` instance, not yet entered.  With
    ``compute=False`` nothing is fitted: the report is written from the cells already in an
    existing folder (e.g. to look at a sweep that is still running or was stopped).  The fits
    estimate σ from their spectra, or read the data set's ``noise_sigma`` with
    ``oracle_sigma`` (module docstring).

    >>> methods = resolve_methods("netmy,tikhonov", preset="fast")          # doctest: +SKIP
    >>> plan = BenchmarkPlan(methods, ("F2",), (0, 1), data.sizes["sample"])  # doctest: +SKIP
    >>> report = run_benchmark(plan, data, "runs/bench", InProcess())      # doctest: +SKIP
    >>> report.results["hungarian_f1"].mean(("sample", "seed"))            # doctest: +SKIP
    """
    folder = Path(folder)
    data = with_sample_axis(data)
    settings = dict(settings or {})
    if not compute and not (folder / PLAN).is_file():
        raise NvbayesError(f"{folder} holds no benchmark to report on",
                           "run it first, or drop --report-only")
    for spec in plan.methods.values():
        if spec.field.kind == "trained":     # a trained network takes one geometry only
            check_trained(spec, InverseProblem.from_measurement(select_sample(data, 0)))
    sigma = sigma_source(data, oracle_sigma)
    prepare_folder(folder, plan, data, kind, settings, sigma)
    fit_data = data if sigma == SIGMA_ORACLE else without_noise_sigma(data)
    store = BenchmarkCells(folder)
    cells = plan.cells()
    finished = {c for c in cells if store.done(c)}     # read each cell file once
    missing = [c for c in cells if c not in finished]
    to_fit = list(dict.fromkeys(plan.source(c) for c in missing
                                if plan.source(c) not in finished))
    spatial = {"y": data["y"], "x": data["x"]}
    computed = failed = 0
    if to_fit and compute:
        bar = progress_bar(len(to_fit), kind, "fit", show)
        with executor:
            for record in executor.run(plan.groups(to_fit), fit_data, plan):
                record.info["executor"] = executor.name
                store.write(record, spatial)
                if not record.failed:
                    finished.add(record.cell)
                computed += 1
                failed += record.failed
                if bar is not None:
                    bar.set_postfix_str(f"{record.cell.method} {record.cell.operator} "
                                        f"s{record.cell.sample}", refresh=False)
                    bar.update()
        if bar is not None:
            bar.close()
    for cell in missing:
        source = plan.source(cell)
        if source != cell and source in finished:
            store.copy(source, cell, spatial)
    attrs = {"data": settings.get("data", "?"),
             "data_operator": str(data.attrs.get("operator", "?")),
             "threads": plan.threads, "precision": plan.precision, "device": plan.device,
             "batch": plan.batch, "sigma": sigma,
             "kind": kind} | {k: v for k, v in settings.items() if k != "data"}
    results = assemble_results(plan, store, data, attrs)
    write_results(results, folder)
    metrics = summary_metrics or tuple(k for k in results.data_vars
                                       if k not in ("diverged", "error"))
    text = write_summary(results, metrics, title)
    write_with(folder / SUMMARY, lambda tmp: tmp.write_text(text))
    figures = write_figures(results, store, data, folder, figure_metrics)
    return BenchmarkReport(folder, results, computed, failed, figures)


def write_figures(results: xr.Dataset, store: BenchmarkCells, data: xr.Dataset,
                  folder: Path, metrics: tuple[str, ...] = BOX_METRICS) -> list[Path]:
    """``boxplot-METRIC.png`` per metric and ``grid-CLASS.png`` per scene class."""
    written = []
    for metric in metrics:
        written.append(folder / f"boxplot-{metric}.png")
        save_figure(box_plot(results, metric), written[-1])
    seed = int(results["seed"].values[0])
    for name, index in scene_classes(results):
        sample = int(index[0])
        maps = {}
        for method in results["method"].values:
            for op in results["operator"].values:
                record = store.read(Cell(str(method), str(op), sample, seed))
                maps[str(method), str(op)] = None if record is None else record.rho
        stem = "grid" if name == "all samples" else "grid-" + name.replace("/", "-")
        written.append(folder / f"{stem}.png")
        save_figure(qualitative_grid(results, maps, data["rho_true"].isel(sample=sample).values,
                                     sample), written[-1])
    return written


def load_data(path: "str | Path") -> xr.Dataset:
    """A measurement file to benchmark: validated, with a sample axis and its truth."""
    data = with_sample_axis(read_measurement(path))
    _check_truth(data)
    return data
