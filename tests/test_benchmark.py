"""The benchmark machinery: executors agree, an interrupted run resumes to the same results,
the summary holds every cell, and the ablation variants remove what they name.

Everything runs on a 24 × 24 data set of two samples (few/far and medium/far, F3, seeds 0 and
1) with two short model files: a small NeTMY field (2 × 15 steps) and Tikhonov (40 steps).
"""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from scipy import stats

from nvbayes.cli import main
from nvbayes.data.io import select_sample
from nvbayes.data.scenes import SimulationSettings, dataset_plan, simulate_dataset
from nvbayes.errors import NvbayesError
from nvbayes.fields import NeuralField, pixel_coordinates
from nvbayes.metrics import MAP_METRICS
from nvbayes.model.problem import InverseProblem
from nvbayes.physics import Grid
from nvbayes.results.store import CELLS
from nvbayes.workflows.benchmark import (
    CUMULATIVE,
    BenchmarkPlan,
    Cell,
    DaskExecutor,
    InProcess,
    cumulative_variants,
    resolve_methods,
    run_benchmark,
    sweep_variants,
)
from nvbayes.workflows.benchmark.cell import run_cell
from nvbayes.workflows.benchmark.plan import interleaved_order
from nvbayes.workflows.benchmark.store import RESULTS, SUMMARY, BenchmarkCells
from nvbayes.workflows.benchmark.summary import mean_ci

GRID = 24
CLASSES = "few/far,medium/far"
SCORES = MAP_METRICS  # every metric except the wall time

TINY_NETMY = """
name = "tiny-netmy"
log_eps = 1e-3
[field]
kind = "neural"
octaves = 4
width = 16
depth = 3
skip_layer = 2
off_support = "centre"
[[stages]]
downsample = 2
steps = 15
lr = 1e-3
[stages.weights]
log_mse = 2.0
noise_map = 0.5
direct_density = 0.1
sparsity = 1e-2
l1 = 1e-3
tv = 1e-3
[[stages]]
steps = 15
lr = 5e-4
[stages.weights]
log_mse = 0.5
noise_map = 2.0
direct_density = 0.1
sparsity = 1e-2
l1 = 1e-3
tv = 1e-3
"""

TINY_TIKHONOV = """
name = "tiny-tikhonov"
log_eps = 1e-3
[field]
kind = "pixels"
[optimizer]
name = "adam"
weight_decay = 0.0
grad_clip = 0.0
[[stages]]
steps = 40
lr = 5e-3
[stages.weights]
log_mse = 1.0
l2 = 1e-3
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, text in (("tiny-netmy", TINY_NETMY), ("tiny-tikhonov", TINY_TIKHONOV)):
        paths[name] = folder / f"{name}.toml"
        paths[name].write_text(text)
    return paths


@pytest.fixture(scope="module")
def data() -> xr.Dataset:
    return simulate_dataset(dataset_plan(CLASSES.split(","), per_class=1),
                            SimulationSettings(grid=Grid(GRID)))


def _plan(models, seeds=(0,)) -> BenchmarkPlan:
    methods = resolve_methods([str(models["tiny-netmy"]), str(models["tiny-tikhonov"])])
    return BenchmarkPlan(methods, ("F1", "F2"), tuple(seeds), samples=2, threads=1)


@pytest.fixture(scope="module")
def reference(models, data, tmp_path_factory):
    """The uninterrupted in-process benchmark: 2 methods × 2 operators × 2 samples × 1 seed."""
    folder = tmp_path_factory.mktemp("bench") / "in-process"
    report = run_benchmark(_plan(models), data, folder, InProcess(1), show=False)
    return report


def _cli_args(models, out: Path) -> list[str]:
    return ["benchmark", "--classes", CLASSES, "--per-class", "1", "--grid", str(GRID),
            "--models", f"{models['tiny-netmy']},{models['tiny-tikhonov']}",
            "--operators", "F1,F2", "--seeds", "0", "--out", str(out)]


def _same_results(a: xr.Dataset, b: xr.Dataset) -> None:
    """Every score identical (bit for bit, NaN where NaN) and no cell failed."""
    assert list(a["method"].values) == list(b["method"].values)
    for name in SCORES:
        assert np.array_equal(a[name].values, b[name].values, equal_nan=True), name
    assert (a["error"].values == "").all() and (b["error"].values == "").all()


def _same_maps(folder_a: Path, folder_b: Path) -> None:
    files = sorted(p.name for p in (folder_a / CELLS).glob("*.nc"))
    assert files == sorted(p.name for p in (folder_b / CELLS).glob("*.nc"))
    for name in files:
        with xr.open_dataset(folder_a / CELLS / name) as x, \
                xr.open_dataset(folder_b / CELLS / name) as y:
            assert np.array_equal(x["rho"].values, y["rho"].values), name


# ---- executors ------------------------------------------------------------------------------


def test_reference_benchmark_has_every_cell(reference):
    results = reference.results
    assert dict(results.sizes) == {"method": 2, "operator": 2, "sample": 2, "seed": 1}
    assert reference.computed == 8 and reference.failed == 0
    for name in SCORES + ("runtime_s",):
        assert np.isfinite(results[name].values).all() or name == "larmor_mae"
    assert (results["runtime_s"].values > 0).all()
    assert list(results["scene_class"].values) == CLASSES.split(",")
    # the file on disk is the dataset returned, and describes itself
    with xr.open_dataset(reference.folder / RESULTS) as disk:
        _same_results(disk.load(), results)
        assert disk["density_mse"].attrs["units"] == "(fluctuators per pixel)^2"
        assert disk.attrs["schema"] == "nvbayes.benchmark/1"


def test_local_two_worker_cluster_gives_the_in_process_results(reference, models, tmp_path):
    out = tmp_path / "dask"
    result = subprocess.run([sys.executable, "-m", "nvbayes.cli"] + _cli_args(models, out)
                            + ["--workers", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "LocalCluster (2 workers" in result.stdout
    with xr.open_dataset(out / RESULTS) as dask_results:
        _same_results(reference.results, dask_results.load())
        assert "LocalCluster" in dask_results.attrs["executor"]
    _same_maps(reference.folder, out)


def test_existing_scheduler_gives_the_in_process_results(reference, models, data, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:
        executor = DaskExecutor(1, scheduler=cluster.scheduler_address)
        report = run_benchmark(_plan(models), data, tmp_path / "sched", executor, show=False)
    _same_results(reference.results, report.results)
    assert cluster.scheduler_address in report.results.attrs["executor"]


# ---- resume ---------------------------------------------------------------------------------


def test_killed_benchmark_resumes_to_the_uninterrupted_results(reference, models, tmp_path):
    out = tmp_path / "killed"
    cells = out / CELLS
    proc = subprocess.Popen([sys.executable, "-m", "nvbayes.cli"] + _cli_args(models, out),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if cells.is_dir() and len(list(cells.glob("*.nc"))) >= 2:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list(cells.glob("*.nc")))
    assert 2 <= finished < 8, f"the kill came too late ({finished} cells finished)"
    assert not (out / RESULTS).exists()

    resumed = subprocess.run([sys.executable, "-m", "nvbayes.cli"] + _cli_args(models, out),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"({8 - finished} of 8 cells computed now" in resumed.stdout
    with xr.open_dataset(out / RESULTS) as results:
        _same_results(reference.results, results.load())
    _same_maps(reference.folder, out)


def test_rerunning_a_finished_benchmark_computes_nothing(reference, models, data):
    report = run_benchmark(_plan(models), data, reference.folder, InProcess(1), show=False)
    assert report.computed == 0
    _same_results(reference.results, report.results)


def test_report_only_fits_nothing_and_compares_complete_pairs_only(reference, models, data,
                                                                  tmp_path):
    import shutil

    folder = tmp_path / "partial"
    shutil.copytree(reference.folder, folder)
    (folder / CELLS / "tiny-netmy_F2_s0001_seed0.nc").unlink()
    report = run_benchmark(_plan(models), data, folder, InProcess(1), show=False, compute=False)
    assert report.computed == 0
    results = report.results
    cell = results.sel({"method": "tiny-netmy", "operator": "F2", "sample": 1, "seed": 0})
    assert str(cell["error"].values) == "not run" and np.isnan(cell["swd"])
    text = (folder / SUMMARY).read_text()
    assert "Only the 1 of 2 (sample, seed) pairs" in text
    # the F1 table now holds sample 0 alone, although sample 1's F1 cells exist
    section = text.split("## Inversion under F1")[1].split("##")[0]
    row = next(line for line in section.splitlines() if line.startswith("| tiny-tikhonov |"))
    swd0 = float(results["swd"].sel({"method": "tiny-tikhonov", "operator": "F1"})[0, 0])
    assert float(row.split("|")[4].strip().strip("*")) == pytest.approx(swd0, rel=5e-3)


def test_report_only_needs_an_existing_benchmark(models, data, tmp_path):
    with pytest.raises(Exception, match="holds no benchmark"):
        run_benchmark(_plan(models), data, tmp_path / "none", InProcess(1), compute=False)
    assert not (tmp_path / "none").exists()


def test_a_changed_method_is_refused_on_resume(reference, models, data, tmp_path):
    changed = tmp_path / "tiny-tikhonov.toml"
    changed.write_text(TINY_TIKHONOV.replace("steps = 40", "steps = 41"))
    methods = resolve_methods([str(models["tiny-netmy"]), str(changed)])
    plan = BenchmarkPlan(methods, ("F1", "F2"), (0,), samples=2)
    with pytest.raises(Exception, match="has changed"):
        run_benchmark(plan, data, reference.folder, InProcess(1), show=False)


def test_failed_cell_is_recorded_and_the_sweep_goes_on(models, data, tmp_path):
    broken = tmp_path / "coarse.toml"   # a 24-pixel grid cannot be coarsened by 5
    broken.write_text(TINY_TIKHONOV.replace('name = "tiny-tikhonov"', 'name = "coarse"')
                      .replace('kind = "pixels"', 'kind = "neural"\nwidth = 8\ndepth = 3')
                      .replace("steps = 40", "steps = 5\ndownsample = 5"))
    methods = resolve_methods([str(broken), str(models["tiny-tikhonov"])])
    plan = BenchmarkPlan(methods, ("F2",), (0,), samples=2)
    report = run_benchmark(plan, data, tmp_path / "fail", InProcess(1), show=False)
    errors = report.results["error"].sel(operator="F2", seed=0)
    assert report.failed == 2 and report.computed == 4
    assert all("cannot be coarsened by 5" in e for e in errors.sel({"method": "coarse"}).values)
    assert (errors.sel({"method": "tiny-tikhonov"}).values == "").all()
    assert np.isnan(report.results["swd"].sel({"method": "coarse"})).all()
    summary = (report.folder / SUMMARY).read_text()
    assert "2 failed" in summary and "## Failed cells" in summary


# ---- seeds ----------------------------------------------------------------------------------


def test_free_density_fit_does_not_depend_on_the_seed(models, data):
    spec = resolve_methods([str(models["tiny-tikhonov"])])["tiny-tikhonov"]
    one = select_sample(data, 1)
    a = run_cell(Cell("t", "F2", 1, 0), one, spec)
    b = run_cell(Cell("t", "F2", 1, 7), one, spec)
    assert not spec.seeded
    assert np.array_equal(a.rho, b.rho)


def test_neural_field_fit_depends_on_the_seed(models, data):
    spec = resolve_methods([str(models["tiny-netmy"])])["tiny-netmy"]
    one = select_sample(data, 1)
    a = run_cell(Cell("n", "F2", 1, 0), one, spec)
    b = run_cell(Cell("n", "F2", 1, 1), one, spec)
    assert spec.seeded
    assert not np.array_equal(a.rho, b.rho)


def test_seed_independent_method_is_fitted_once_and_copied(models, data, tmp_path):
    report = run_benchmark(_plan(models, seeds=(0, 1)), data, tmp_path / "seeds", InProcess(1),
                           show=False)
    assert report.computed == 8 + 4     # netmy at both seeds, Tikhonov at seed 0 only
    tik = report.results["swd"].sel({"method": "tiny-tikhonov"})
    assert np.array_equal(tik.sel(seed=0).values, tik.sel(seed=1).values)
    record = BenchmarkCells(tmp_path / "seeds").read(Cell("tiny-tikhonov", "F1", 0, 1))
    assert record.info["copied_from_seed"] == 0


def test_plan_visits_seeds_then_interleaved_samples(models):
    plan = BenchmarkPlan(resolve_methods([str(models["tiny-netmy"])]), ("F2",), (0, 1),
                         samples=4, sample_order=interleaved_order(["a", "a", "b", "b"]))
    assert [(c.seed, c.sample) for c in plan.cells()] == \
        [(0, 0), (0, 2), (0, 1), (0, 3), (1, 0), (1, 2), (1, 1), (1, 3)]


# ---- noise sigma ----------------------------------------------------------------------------


class _Spy(InProcess):
    """An executor that keeps the data set the fits would get, and fits nothing."""

    def __init__(self):
        super().__init__(1)
        self.seen = []

    def run(self, groups, data, plan):
        self.seen.append(data)
        yield from ()


def test_fits_estimate_sigma_unless_the_oracle_is_asked(models, data, tmp_path):
    one = data.isel(sample=[0])
    plan = BenchmarkPlan(resolve_methods([str(models["tiny-tikhonov"])]), ("F2",), (0,),
                         samples=1)
    quick = {"show": False, "figure_metrics": ()}
    spy = _Spy()
    report = run_benchmark(plan, one, tmp_path / "est", spy, **quick)
    given = spy.seen[-1]
    assert "noise_sigma" in one and "noise_sigma" not in given
    problem = InverseProblem.from_measurement(select_sample(given, 0))
    assert problem.noise_sigma is None and problem.absolute      # estimated, scale kept
    assert report.results.attrs["sigma"] == "estimated"
    assert 'sigma = "estimated"' in (tmp_path / "est" / "benchmark.toml").read_text()
    assert "noise sigma estimated from each spectrum" in \
        (tmp_path / "est" / SUMMARY).read_text()
    # a rerun keeps the choice, and says how to
    with pytest.raises(NvbayesError, match="estimated noise sigma.*without --oracle-sigma"):
        run_benchmark(plan, one, tmp_path / "est", InProcess(1), oracle_sigma=True, **quick)
    spy = _Spy()
    report = run_benchmark(plan, one, tmp_path / "oracle", spy, oracle_sigma=True, **quick)
    np.testing.assert_array_equal(spy.seen[-1]["noise_sigma"], one["noise_sigma"])
    assert report.results.attrs["sigma"] == "oracle"
    # without a recorded sigma there is no oracle
    with pytest.raises(NvbayesError, match="records no noise_sigma"):
        run_benchmark(plan, one.drop_vars("noise_sigma"), tmp_path / "none", InProcess(1),
                      oracle_sigma=True, **quick)
    assert not (tmp_path / "none").exists()


def test_oracle_sigma_flag_reaches_the_benchmark(models, tmp_path, capsys):
    """--oracle-sigma on lab-like data, whose files state no sigma: refused in one line."""
    out = tmp_path / "cli"
    assert main(["benchmark", "--classes", "few/far", "--per-class", "1", "--grid", str(GRID),
                 "--realism", "noise", "--models", str(models["tiny-tikhonov"]),
                 "--operators", "F2", "--seeds", "0", "--oracle-sigma", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "records no noise_sigma" in err
    assert "drop --oracle-sigma" in err and not out.exists()


# ---- summary and figures --------------------------------------------------------------------


def test_summary_holds_every_method_and_operator(reference):
    text = (reference.folder / SUMMARY).read_text()
    for op in ("F1", "F2"):
        section = text.split(f"## Inversion under {op}")[1].split("##")[0]
        for method in ("tiny-netmy", "tiny-tikhonov"):
            assert f"| {method} |" in section
    for cls in CLASSES.split(","):
        for op in ("F1", "F2"):
            assert f"### {cls}, inversion under {op}" in text
    assert "Cells: 8 planned, 0 failed, 0 not run." in text


def test_best_mean_is_bold(reference):
    results = reference.results
    text = (reference.folder / SUMMARY).read_text()
    section = text.split("## Inversion under F2")[1].split("##")[0]
    swd = results["swd"].sel(operator="F2").mean(("sample", "seed"))
    best = str(swd["method"].values[int(np.argmin(swd.values))])
    row = next(line for line in section.splitlines() if line.startswith(f"| {best} |"))
    assert row.split("|")[4].strip().startswith("**")   # column 3: swd


def test_ci_over_seeds_is_the_t_interval_of_the_seed_means():
    values = xr.DataArray(np.array([[1.0, 2.0, 6.0], [3.0, 2.0, 0.0]]), dims=("sample", "seed"))
    mean, half, over = mean_ci(values)       # seed means 2, 2, 3
    assert over == "seeds"
    assert mean == pytest.approx(7 / 3)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * np.std([2, 2, 3], ddof=1) / math.sqrt(3))


def test_ci_with_one_seed_is_over_samples_and_ignores_nan():
    values = xr.DataArray(np.array([[1.0], [3.0], [np.nan]]), dims=("sample", "seed"))
    mean, half, over = mean_ci(values)
    assert over == "samples" and mean == 2.0
    assert half == pytest.approx(stats.t.ppf(0.975, 1) * np.std([1, 3], ddof=1) / math.sqrt(2))


def test_figures_are_written(reference):
    names = {p.name for p in reference.figures}
    assert {"boxplot-swd.png", "grid-few-far.png", "grid-medium-far.png"} <= names
    for path in reference.figures:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- ablation -------------------------------------------------------------------------------


def test_cumulative_ablation_removes_one_more_component_per_row(models):
    base = resolve_methods([str(models["tiny-netmy"])])["tiny-netmy"]
    rows = cumulative_variants(base)
    assert tuple(rows) == CUMULATIVE
    full, last = rows["full"], rows["-rds"]
    assert full.field == base.field and full.stages == base.stages
    assert all(s.weights.tv == 0 for s in rows["-tv"].stages)
    assert rows["-tv"].field.annealed and not rows["-annealed-pe"].field.annealed
    assert rows["-pe"].field.octaves == 0 and rows["-annealed-pe"].field.octaves == 4
    assert len(rows["-multiscale"].stages) == 1 and len(rows["-pe"].stages) == 2
    assert rows["-multiscale"].total_steps == base.total_steps
    assert rows["-multiscale"].stages[0].downsample == 1
    assert rows["-l1"].field.gate and not rows["-gate"].field.gate
    w = last.stages[0].weights
    assert (w.tv, w.l1, w.direct_density) == (0, 0, 0)
    assert w.log_mse == base.stages[-1].weights.log_mse
    assert not last.field.annealed and last.field.octaves == 0 and not last.field.gate


def test_sweeps_change_one_setting(models):
    base = resolve_methods([str(models["tiny-netmy"])])["tiny-netmy"]
    lr = sweep_variants(base, "lr", [1e-4, 1e-2])
    assert [s.lr for s in lr["lr=0.0001"].stages] == pytest.approx([1e-4, 5e-5])
    assert [s.lr for s in lr["lr=0.01"].stages] == pytest.approx([1e-2, 5e-3])
    widths = sweep_variants(base, "width")
    assert [v.field.width for v in widths.values()] == [128, 256, 320, 384, 512]
    assert sweep_variants(base, "octaves", [8])["octaves=8"].field.octaves == 8


def test_unannealed_field_ignores_beta():
    torch.manual_seed(0)
    field = NeuralField((1.5, 2.5), octaves=4, width=8, depth=3, annealed=False).double()
    coords = pixel_coordinates(8, dtype=torch.float64)
    assert torch.equal(field.raw(coords, 0.0), field.raw(coords, 4.0))
    field.annealed = True
    assert not torch.equal(field.raw(coords, 0.0), field.raw(coords, 4.0))


def test_ungated_density_is_the_softplus_of_the_logit():
    torch.manual_seed(0)
    field = NeuralField((1.5, 2.5), octaves=2, width=8, depth=3, gate=False).double()
    coords = pixel_coordinates(8, dtype=torch.float64)
    rho, _ = field(coords, 2.0)
    h = field.raw(coords, 2.0)[..., 0]
    assert torch.allclose(rho, torch.nn.functional.softplus(h), rtol=0, atol=0)


def test_ablate_command_runs_the_cumulative_table(models, tmp_path, capsys):
    out = tmp_path / "ablate"
    code = main(["ablate", "--classes", "few/far", "--per-class", "1", "--grid", str(GRID),
                 "--model", str(models["tiny-netmy"]), "--seeds", "0", "--out", str(out)])
    assert code == 0
    with xr.open_dataset(out / RESULTS) as results:
        assert list(results["method"].values) == list(CUMULATIVE)
        assert list(results["operator"].values) == ["F2"]
        assert np.isfinite(results["density_mse"].values).all()
    text = (out / SUMMARY).read_text()
    assert "density_mse" in text and "masked_ssim" in text and "hungarian_f1" not in text
    assert "| -gate |" in text


def test_matched_operator_benchmark_of_a_data_file(models, tmp_path, capsys):
    from nvbayes.data.io import write_netcdf

    path = write_netcdf(simulate_dataset(dataset_plan(["few/far"], per_class=1),
                                         SimulationSettings(grid=Grid(GRID), operator="F2")),
                        tmp_path / "f2.nc")
    out = tmp_path / "matched"
    code = main(["benchmark", "--data", str(path), "--models", str(models["tiny-tikhonov"]),
                 "--operators", "F2", "--seeds", "0", "--out", str(out)])
    assert code == 0
    with xr.open_dataset(out / RESULTS) as results:
        assert results.attrs["data_operator"] == "F2"
        assert results.attrs["data"] == str(path)
    with xr.open_dataset(out / "data.nc") as copy, xr.open_dataset(path) as original:
        assert np.array_equal(copy["spectrum"].values, original["spectrum"].values[None]) or \
            np.array_equal(copy["spectrum"].values, original["spectrum"].values)
    assert (out / SUMMARY).read_text().startswith("# Benchmark\n")


# ---- command-line errors --------------------------------------------------------------------


@pytest.mark.parametrize("args, problem", [
    (["--classes", "few/far", "--per-class", "1", "--models", "nope"], "unknown method"),
    (["--classes", "few/far"], "needs the number of samples"),
    (["--classes", "few/far", "--per-class", "1", "--operators", "F3"], "F3"),
    (["--classes", "few/far", "--per-class", "1", "--seeds", "0,x"], "seeds must be integers"),
    (["--classes", "few/far", "--per-class", "1", "--workers", "0"], "--workers must be >= 1"),
    (["--classes", "few/far", "--per-class", "1", "--preset", "huge"], "invalid choice"),
])
def test_bad_benchmark_arguments_give_one_line_and_no_folder(args, problem, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["benchmark", "--grid", str(GRID)] + args + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and problem in err and "Traceback" not in err
    assert not out.exists()


def test_foreign_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "occupied"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code = main(["benchmark", "--classes", "few/far", "--per-class", "1", "--grid", str(GRID),
                 "--models", "lbfgs", "--seeds", "0", "--out", str(out)])
    assert code == 2
    assert "is not a benchmark folder" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_method_named_with_plus_nuisance_is_fitted_with_the_nuisances_alone():
    """``--models lbfgs+nuisance,tikhonov --nuisance background``: L-BFGS only with the
    nuisance model, Tikhonov plain and with it; without --nuisance the name is refused."""
    from nvbayes.data.spec import parse_nuisance
    from nvbayes.workflows.benchmark.plan import nuisance_variants, resolve_methods

    methods = resolve_methods("lbfgs+nuisance,tikhonov", protocol="robust")
    out = nuisance_variants(methods, parse_nuisance("background"))
    assert set(out) == {"lbfgs+nuisance", "tikhonov", "tikhonov+nuisance"}
    assert out["lbfgs+nuisance"].nuisance.background
    assert out["lbfgs+nuisance"].solver == resolve_methods("lbfgs")["lbfgs"].solver
    assert not out["tikhonov"].nuisance.any
    with pytest.raises(NvbayesError, match="needs the nuisances"):
        nuisance_variants(methods, parse_nuisance("none"))
