"""Measurement files and the command line: round trips, validation, one-line errors."""

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from nvbayes.cli import main
from nvbayes.data.io import (
    SCHEMA,
    read_measurement,
    select_sample,
    validate_measurement,
    write_netcdf,
    write_with,
)
from nvbayes.data.scenes import SimulationSettings, simulate
from nvbayes.errors import MeasurementError
from nvbayes.physics import Grid

SMALL = ["--grid", "24", "--freqs", "10"]


@pytest.fixture(scope="module")
def measurement():
    return simulate("few/far", 3, SimulationSettings(grid=Grid(24), n_freq=10))


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_netcdf_round_trip_is_exact(measurement, tmp_path):
    path = write_netcdf(measurement, tmp_path / "m.nc")
    back = read_measurement(path)
    xr.testing.assert_identical(back, measurement)
    assert back.attrs["schema"] == SCHEMA
    assert back.spectrum.attrs["units"] and back.freq.attrs["units"] == "GHz"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.png"

    def failing(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_with(target, failing)
    assert list(tmp_path.iterdir()) == []


def _broken(measurement, how):
    ds = measurement.copy(deep=True)
    if how == "nan":
        ds["spectrum"].values[0, 1, 1] = np.nan
    elif how == "no-spectrum":
        ds = ds.drop_vars("spectrum")
    elif how == "uneven-x":
        ds = ds.assign_coords(x=ds.x.values ** 1.01)
    elif how == "truth-on-other-grid":
        ds["rho_true"] = (("y2", "x2"), ds.rho_true.values)
    elif how == "transposed":
        ds["spectrum"] = ds.spectrum.transpose("y", "x", "freq")
    elif how == "schema":
        ds.attrs["schema"] = "something/else"
    elif how == "negative-standoff":
        ds.attrs["standoff_nm"] = -20.0
    elif how == "freq-unsorted":
        ds = ds.assign_coords(freq=ds.freq.values[::-1])
    return ds


BROKEN = {
    "nan": "NaN",
    "no-spectrum": "no 'spectrum'",
    "uneven-x": "evenly spaced",
    "truth-on-other-grid": "rho_true has dims",
    "transposed": "expected",
    "schema": "schema",
    "negative-standoff": "standoff_nm",
    "freq-unsorted": "increasing",
}


@pytest.mark.parametrize("how", BROKEN)
def test_validation_names_the_problem(measurement, how):
    with pytest.raises(MeasurementError, match=BROKEN[how]):
        validate_measurement(_broken(measurement, how))


@pytest.mark.parametrize("how", ["nan", "no-spectrum", "uneven-x", "truth-on-other-grid"])
def test_cli_refuses_bad_files_in_one_line(measurement, how, tmp_path, capsys):
    bad = tmp_path / "bad.nc"
    _broken(measurement, how).to_netcdf(bad)
    out_png = tmp_path / "fig.png"
    code, out, err = run_cli(["plot", bad, "--out", out_png], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("nvbayes: error: ") and ";" in err
    assert BROKEN[how] in err
    assert not out_png.exists() and out == ""


@pytest.mark.parametrize("args, message", [
    (["--scene", "few/nowhere"], "unknown scene class"),
    (["--scene", "few/far", "--standoff", "-20"], "standoff must be a positive"),
    (["--scene", "few/far", "--noise", "-1"], "noise level"),
    (["--scene", "few/far", "--simulator", "F7"], "invalid choice: 'F7'"),
    (["--classes", "all"], "needs the data set size"),
    (["--scene", "few/far", "--per-class", "3"], "belong to --classes"),
    (["--scene", "many/far", "--grid", "16"], "cannot place"),
])
def test_cli_refuses_bad_simulation_requests(args, message, tmp_path, capsys):
    out_nc = tmp_path / "x.nc"
    code, out, err = run_cli(["simulate", *args, "--out", out_nc], capsys)
    assert code == 2
    assert err.count("\n") == 1 and message in err
    assert not out_nc.exists()
    assert list(tmp_path.iterdir()) == []


def test_cli_usage_error_is_one_line(capsys):
    assert main(["simulate", "--scene", "few/far", "--grid", "many"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--grid" in err and "not N or NYxNX" in err


def test_console_script_prints_no_traceback(tmp_path):
    bad = tmp_path / "missing.nc"
    proc = subprocess.run([sys.executable, "-m", "nvbayes.cli", "plot", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"nvbayes: error: no such file: {bad}; check the path to the " \
                                  "measurement"


def test_cli_simulate_is_reproducible_to_the_byte(tmp_path, capsys):
    a, b = tmp_path / "a.nc", tmp_path / "b.nc"
    for path in (a, b):
        code, out, _ = run_cli(["simulate", "--scene", "medium/far", "--data-seed", "3", *SMALL,
                                "--out", path], capsys)
        assert code == 0 and out.strip() == str(path)
    assert a.read_bytes() == b.read_bytes()
    xr.testing.assert_identical(read_measurement(a), read_measurement(b))


def test_cli_dataset_and_plot(tmp_path, capsys):
    data = tmp_path / "bench.nc"
    code, _, _ = run_cli(["simulate", "--classes", "few/far,medium/close", "--per-class", "2",
                          "--data-seed", "5", *SMALL, "--simulator", "F2", "--out", data],
                         capsys)
    assert code == 0
    ds = read_measurement(data)
    assert ds.sizes["sample"] == 4 and ds.attrs["operator"] == "F2"
    assert list(ds.scene_class.values) == ["few/far", "few/far", "medium/close", "medium/close"]
    assert list(ds.seed.values) == [5, 6, 7, 8]
    with pytest.raises(MeasurementError, match="choose one with --sample"):
        select_sample(ds, None)
    fig = tmp_path / "fig.png"
    code, out, _ = run_cli(["plot", data, "--sample", "2", "--pixel", "12", "12", "--out", fig],
                           capsys)
    assert code == 0 and fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run_cli(["plot", data, "--sample", "9", "--out", tmp_path / "g.png"], capsys)
    assert code == 2 and "out of range" in err
    code, _, err = run_cli(["plot", data, "--sample", "0", "--pixel", "30", "1",
                            "--out", tmp_path / "g.png"], capsys)
    assert code == 2 and "outside the 24 x 24 grid" in err
    assert not (tmp_path / "g.png").exists()
