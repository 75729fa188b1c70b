"""``nvbayes fit`` / ``nvbayes.fit``: a real MAP fit, the run folder, determinism, refusals."""

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
import xarray as xr

import nvbayes
from nvbayes.cli import main
from nvbayes.data.io import write_netcdf
from nvbayes.data.scenes import SimulationSettings, simulate
from nvbayes.data.spec import LOSS_TERMS, LossWeights, Stage, load_spec
from nvbayes.physics.geometry import Grid
from nvbayes.results.run import Run

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

GRID32 = SimulationSettings(grid=Grid(32))


def spec_file(tmp_path, name="tiny", steps=(30, 30), log_eps=None, protocol=None,
              guard_every=25, **field):
    """netmy-fast (under ``protocol``, default robust) with a changed field, stage lengths
    and NaN-guard interval, written as a model file."""
    from nvbayes.data.io import toml_dumps

    spec = load_spec("netmy-fast", protocol)
    stages = tuple(dataclasses.replace(s, steps=n)
                   for s, n in zip(spec.stages, steps, strict=True))
    spec = dataclasses.replace(spec, name=name, field=dataclasses.replace(spec.field, **field),
                               stages=stages, log_eps=log_eps or spec.log_eps,
                               optimizer=dataclasses.replace(spec.optimizer,
                                                             guard_every=guard_every))
    path = tmp_path / f"{name}.toml"
    path.write_text(toml_dumps(spec.to_dict()))
    return path


def tiny_spec(tmp_path, steps=(30, 30)):
    return spec_file(tmp_path, steps=steps, width=16, octaves=4)


@pytest.fixture(scope="module")
def measurement_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "few-far.nc"
    write_netcdf(simulate("few/far", 3, GRID32), path)
    return path


@pytest.fixture(scope="module")
def saved_run(measurement_file, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs") / "run"
    model = tiny_spec(tmp_path_factory.mktemp("spec"))
    assert main([ "fit", str(measurement_file), "--model", str(model), "--seed", "4",
                  "--out", str(folder)]) == 0
    return folder


def test_run_folder_holds_the_files_and_groups_of_the_design(saved_run):
    names = {p.name for p in saved_run.iterdir()}
    assert names == {"posterior.nc", "history.nc", "metrics.nc", "config.toml",
                     "reconstruction.png", "residuals.nc"}
    idata = az.from_netcdf(saved_run / "posterior.nc")
    assert {"posterior", "sample_stats", "observed_data", "constant_data",
            "posterior_predictive"} <= set(idata.groups())
    post = idata.posterior
    assert post["rho"].dims == ("chain", "draw", "y", "x")
    assert post["larmor"].dims == ("chain", "draw", "y", "x")
    assert post.sizes["chain"] == 1 and post.sizes["draw"] == 1
    assert post.attrs["scale_corrected"] == 1 and "energy" in post.attrs["scale_note"]
    assert post["larmor"].attrs["units"] == "GHz"
    tree = xr.open_datatree(saved_run / "posterior.nc")
    assert {"posterior", "sample_stats", "observed_data", "constant_data"} <= set(tree.children)
    np.testing.assert_array_equal(tree["posterior"]["rho"].values, post["rho"].values)
    history = xr.open_dataset(saved_run / "history.nc")
    assert history.sizes["step"] == 60
    for term in ("loss", "log_mse", "noise_map", "direct_density", "sparsity", "l1", "tv"):
        assert term in history
    # each step's loss is the sum of its named terms
    terms = sum(history[t] for t in LOSS_TERMS if t in history)
    np.testing.assert_allclose(terms, history["loss"], rtol=1e-5)
    np.testing.assert_array_equal(np.unique(history["stage"]), [1, 2])
    metrics = xr.open_dataset(saved_run / "metrics.nc")
    assert {"hungarian_f1", "swd", "gmsd", "larmor_mae"} <= set(metrics)


def test_the_run_records_its_residuals(saved_run):
    """residuals.nc: the residual statistics under the noise estimated from the spectrum, and
    its findings, which ``Run.notes`` gives back one line each."""
    run = Run.load(saved_run)
    table = run.tables["residuals"]
    assert table.attrs["compared"] == "spectrum" and table.attrs["read_variance"] > 0
    assert table.attrs["chi2_dof"] > 0 and table["pixel_mean"].dims == ("y", "x")
    assert run.notes == table.attrs["findings"].splitlines()


def test_observed_data_and_truth_round_trip_exactly(saved_run, measurement_file):
    data = xr.open_dataset(measurement_file)
    idata = az.from_netcdf(saved_run / "posterior.nc")
    np.testing.assert_array_equal(idata.observed_data["spectrum"].values, data.spectrum.values)
    np.testing.assert_array_equal(idata.constant_data["rho_true"].values, data.rho_true.values)


def test_scale_correction_matches_the_observed_energy(saved_run, measurement_file):
    run = Run.load(saved_run)
    stats = run.idata.sample_stats
    e_obs = float(xr.open_dataset(measurement_file).spectrum.sum())
    assert math.isclose(stats["energy_obs"].item(), e_obs, rel_tol=1e-12)
    # the stored prediction is the scale-corrected one: it carries the observed energy
    assert math.isclose(float(run.predicted.sum()), e_obs, rel_tol=1e-9)


def test_plot_redraws_a_run(saved_run, tmp_path):
    out = tmp_path / "again.png"
    assert main(["plot", str(saved_run), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_run_and_another_seed_differs(measurement_file, tmp_path):
    model = tiny_spec(tmp_path, steps=(15, 15))
    a = nvbayes.fit(measurement_file, model=str(model), seed=1, show_progress=False)
    b = nvbayes.fit(measurement_file, model=str(model), seed=1, show_progress=False)
    c = nvbayes.fit(measurement_file, model=str(model), seed=2, show_progress=False)
    np.testing.assert_array_equal(a.rho.values, b.rho.values)
    np.testing.assert_array_equal(a.history["loss"].values, b.history["loss"].values)
    assert not np.array_equal(a.rho.values, c.rho.values)


def test_api_accepts_a_dataset_and_fits_under_f1(tmp_path):
    data = simulate("few/far", 3, GRID32)
    run = nvbayes.fit(data, model=str(tiny_spec(tmp_path, steps=(10, 10))), operator="F1",
                      show_progress=False)
    assert run.config["run"]["operator"] == "F1"
    # F1 is quadratic in ρ: the square-root correction makes the energies agree
    assert math.isclose(float(run.predicted.sum()), float(data.spectrum.sum()), rel_tol=1e-9)


@pytest.mark.parametrize("guard_every, kept", [(1, 10), (4, 8)])
def test_nan_guard_restores_the_last_finite_state(measurement_file, tmp_path, monkeypatch,
                                                  guard_every, kept):
    """The 11th step's loss is NaN: the fit ends at the guard's last check before it (every
    step: after step 10; every 4 steps: after step 8), flagged diverged, its maps finite."""
    import nvbayes.model.problem as problem

    real = problem.make_operator
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        op = real(*args, **kwargs)

        class Poisoned(type(op)):
            def __call__(self, rho, larmor):
                calls["n"] += 1
                out = super().__call__(rho, larmor)
                return out * float("nan") if calls["n"] == 12 else out

            def noise_map(self, rho, larmor):      # what the objective reads
                calls["n"] += 1
                out = super().noise_map(rho, larmor)
                return out * float("nan") if calls["n"] == 12 else out

        op.__class__ = Poisoned
        return op

    monkeypatch.setattr(problem, "make_operator", poisoned)
    model = spec_file(tmp_path, width=16, octaves=4, guard_every=guard_every)
    run = nvbayes.fit(measurement_file, model=str(model), show_progress=False)
    # call 1 is the unit scale of the robust protocol, call 2 the first step's loss
    assert run.history.sizes["step"] == kept
    assert run.idata.sample_stats["diverged"].item() == 1
    assert any("diverged" in m for m in run.messages)
    assert np.isfinite(run.rho.values).all() and np.isfinite(run.larmor.values).all()


# ---- refusals -------------------------------------------------------------------------------


def test_nan_measurement_is_refused_without_a_run_folder(measurement_file, tmp_path, capsys):
    data = xr.open_dataset(measurement_file).load()
    data["spectrum"][3, 4, 5] = np.nan
    bad = tmp_path / "bad.nc"
    data.to_netcdf(bad)
    out = tmp_path / "runs" / "never"
    assert main(["fit", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NaN" in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args,needle", [
    (["--model", "nosuch"], "unknown model"),
    (["--operator", "F3"], "invalid choice: 'F3'"),
    (["--method", "vi"], "invalid choice: 'vi'"),
    (["--device", "tpu"], "invalid choice: 'tpu'"),
    (["--sample", "3"], "one measurement"),
    (["--seed", "-1"], "seed"),
])
def test_bad_fit_arguments_give_one_line_and_status_2(measurement_file, tmp_path, capsys,
                                                     args, needle):
    out = tmp_path / "run"
    assert main(["fit", str(measurement_file), "--out", str(out)] + args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_request_without_cuda_is_refused(measurement_file, tmp_path, capsys):
    assert main(["fit", str(measurement_file), "--device", "cuda",
                 "--out", str(tmp_path / "r")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_fit_never_overwrites_what_is_not_a_run_folder(measurement_file, tmp_path, capsys):
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    assert main(["fit", str(measurement_file), "--out", str(precious)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert (precious / "keep.txt").read_text() == "mine"


def test_a_bad_model_file_is_refused(measurement_file, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[[stages]]\nsteps = 10\nlr = 1e-3\nmomentum = 3\n')
    assert main(["fit", str(measurement_file), "--model", str(bad),
                 "--out", str(tmp_path / "r")]) == 2
    assert "unknown key(s) momentum" in capsys.readouterr().err


def test_spec_weights_must_be_non_negative():
    with pytest.raises(ValueError, match="loss weight tv"):
        LossWeights(tv=-1.0)
    with pytest.raises(ValueError, match="steps"):
        Stage(steps=0, lr=1e-3)


def test_a_short_fit_finds_every_source_of_a_few_far_scene(tmp_path):
    """A seeded few/far 32 × 32 measurement (F3 + 1 % noise, three sources) inverted under F2:
    the paper's objective and curriculum (with ε = 1e-3) with a small field and 3000 steps
    find all three."""
    model = spec_file(tmp_path, "short", (1000, 2000), log_eps=1e-3, protocol="paper",
                      width=48, octaves=6, depth=4, skip_layer=2, off_support="centre")
    data = simulate("few/far", 3, GRID32)
    assert int((data.rho_true.values > 0).sum()) == 3
    run = nvbayes.fit(data, model=str(model), seed=0, show_progress=False)
    assert run.metrics["hungarian_f1"].item() == 1.0
    # the Larmor map is in the band wherever the truth has a source and the fit found it
    support = data.rho_true.values > 0
    assert ((run.larmor.values[support] >= 1.5) & (run.larmor.values[support] <= 2.5)).all()


def test_progress_bar_shows_the_loss_on_a_terminal_and_stays_quiet_in_ci(
        measurement_file, tmp_path, capsys, monkeypatch):
    import sys

    model = str(tiny_spec(tmp_path, steps=(30, 30)))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setenv("CI", "")
    nvbayes.fit(measurement_file, model=model)
    err = capsys.readouterr().err
    assert "fit" in err and "loss=" in err and "60/60" in err
    monkeypatch.setenv("CI", "true")
    nvbayes.fit(measurement_file, model=model)
    assert capsys.readouterr().err == ""
