"""Nothing breaks it: generated corrupted and odd inputs end in success or in one
:class:`~nvbayes.errors.NvbayesError` (one line and exit status 2 on the command line), never
another exception, a traceback or a partial output file.

Three generators (hypothesis, derandomized so CI sees the same cases every run):

* lab files for ``nvbayes import`` (npz, h5, mat, csv) with a corruption each, through the
  command line in-process: 600 cases;
* measurement netCDF files with a corruption each, through what every fit does before it
  solves (read, validate, build the inverse problem, its σ and unit scale): 400 cases;
* model files (TOML) with a corruption each, through the loader the command line uses: 200.
"""

from __future__ import annotations

import csv
import io
import math
from contextlib import redirect_stderr
from importlib.resources import files
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvbayes.cli import main
from nvbayes.data.io import measurement_dataset, read_measurement
from nvbayes.data.spec import load_spec
from nvbayes.errors import NvbayesError
from nvbayes.model.problem import InverseProblem

#: Cases per generator; their sum is the count the closing note reports.
LAB_CASES, MEASUREMENT_CASES, MODEL_CASES = 600, 400, 200
FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture,
                                   HealthCheck.too_slow])

ODD_NUMBERS = st.sampled_from([0.0, -1.0, math.nan, math.inf, -math.inf, 1e308, 1e-308,
                               1e120, 7.0, 2.5])


def _one_line_or_success(code: int, err: str, out: Path) -> None:
    assert "Traceback" not in err, err
    if code == 0:
        assert out.is_file()
        read_measurement(out)                       # what import writes is a measurement
    else:
        assert code == 2, (code, err)
        assert err.count("\n") == 1 and err.startswith("nvbayes: error: "), err
        assert not out.exists()
    leftovers = [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    assert not leftovers


# ---- lab files --------------------------------------------------------------------------------


LAB_CORRUPTIONS = ["none", "nan", "inf", "huge", "strings", "complex", "wrong-ndim", "empty",
                   "one-pixel", "duplicate-freq", "descending-x", "duplicate-x", "uneven-x",
                   "freq-length", "mask-shape", "mask-nan", "mask-empty", "sigma-negative",
                   "sigma-shape", "missing-name", "truncate", "garbage", "ambiguous"]


@st.composite
def lab_cases(draw):
    nf = draw(st.sampled_from([1, 2, 6, 7, 9]))          # told apart from the grid's sides
    ny, nx = draw(st.integers(2, 5)), draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    arrays = {"spectrum": rng.random((ny, nx, nf)) + 0.1,
              "freq": np.sort(rng.uniform(1.0, 3.0, nf)) + np.arange(nf) * 1e-3,
              "x": np.arange(nx) * 20.0, "y": np.arange(ny) * 20.0,
              "mask": (rng.random((ny, nx)) > 0.2).astype(np.uint8),
              "sigma": rng.uniform(0.01, 0.1, (ny, nx))}
    corruption = draw(st.sampled_from(LAB_CORRUPTIONS))
    fmt = draw(st.sampled_from(["npz", "h5", "mat", "csv"]))
    value = draw(ODD_NUMBERS)
    a = arrays
    if corruption == "nan":
        a["spectrum"].flat[draw(st.integers(0, a["spectrum"].size - 1))] = math.nan
    elif corruption == "inf":
        a["spectrum"].flat[0] = math.inf
    elif corruption == "huge":
        a["spectrum"] = a["spectrum"] * value
    elif corruption == "strings":
        a["spectrum"] = a["spectrum"].astype(str)
    elif corruption == "complex":
        a["spectrum"] = a["spectrum"] * (1 + 1j)
    elif corruption == "wrong-ndim":
        a["spectrum"] = a["spectrum"].reshape(-1)
    elif corruption == "empty":
        a["spectrum"], a["freq"] = a["spectrum"][..., :0], a["freq"][:0]
    elif corruption == "one-pixel":
        a["spectrum"], a["x"], a["y"] = a["spectrum"][:1, :1], a["x"][:1], a["y"][:1]
        a["mask"], a["sigma"] = a["mask"][:1, :1], a["sigma"][:1, :1]
    elif corruption == "duplicate-freq" and nf > 1:
        a["freq"][1] = a["freq"][0]
    elif corruption == "descending-x":
        a["x"], a["spectrum"] = a["x"][::-1].copy(), a["spectrum"][:, ::-1].copy()
    elif corruption == "duplicate-x" and nx > 1:
        a["x"][1] = a["x"][0]
    elif corruption == "uneven-x" and nx > 2:
        a["x"][-1] += 7.0
    elif corruption == "freq-length":
        a["freq"] = np.append(a["freq"], 9.0)
    elif corruption == "mask-shape":
        a["mask"] = np.ones((ny + 1, nx), np.uint8)
    elif corruption == "mask-nan":
        a["mask"] = a["mask"].astype(float)
        a["mask"].flat[0] = math.nan
    elif corruption == "mask-empty":
        a["mask"][:] = 0
    elif corruption == "sigma-negative":
        a["sigma"].flat[0] = -abs(value) if value == value else math.nan
    elif corruption == "sigma-shape":
        a["sigma"] = a["sigma"][:, :1]
    elif corruption == "ambiguous":
        a["spectrum"] = rng.random((nf, nf, nf))
        a["x"], a["y"] = np.arange(nf) * 20.0, np.arange(nf) * 20.0
        a["mask"], a["sigma"] = np.ones((nf, nf)), np.full((nf, nf), 0.1)
    return fmt, corruption, a, draw(st.booleans())


def _write_lab(path: Path, fmt: str, arrays: dict) -> None:
    if fmt == "npz":
        np.savez(path, **arrays)
    elif fmt == "h5":
        with h5py.File(path, "w") as f:
            for k, v in arrays.items():
                f[k] = v if v.dtype.kind != "U" else v.astype("S")
    elif fmt == "mat":
        scipy.io.savemat(path, arrays)
    else:
        spectrum = np.asarray(arrays["spectrum"])
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["freq", "y", "x", "spectrum", "mask", "sigma"])
            if spectrum.ndim != 3:
                w.writerow(["1.0", "0", "0", str(spectrum.reshape(-1)[:1])])
                return
            ny, nx, nf = spectrum.shape
            mask, sigma = np.asarray(arrays["mask"]), np.asarray(arrays["sigma"])
            for k in range(min(nf, len(arrays["freq"]))):
                for i in range(min(ny, len(arrays["y"]))):
                    for j in range(min(nx, len(arrays["x"]))):
                        w.writerow([arrays["freq"][k], arrays["y"][i], arrays["x"][j],
                                    spectrum[i, j, k],
                                    mask[i, j] if mask.shape == (ny, nx) else 1,
                                    sigma[i, j] if sigma.shape == (ny, nx) else 0.1])


@settings(max_examples=LAB_CASES, **FUZZ)
@given(case=lab_cases())
def test_import_never_escapes(case, tmp_path_factory):
    fmt, corruption, arrays, use_mask = case
    folder = tmp_path_factory.mktemp("lab")
    path, out = folder / f"lab.{fmt}", folder / "m.nc"
    _write_lab(path, fmt, arrays)
    if corruption == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif corruption == "garbage":
        path.write_bytes(np.random.default_rng(len(arrays)).bytes(300))
    args = ["import", str(path), "--format", fmt, "--spectrum",
            "nope" if corruption == "missing-name" else "spectrum", "--freq", "freq",
            "--x", "x", "--y", "y", "--standoff-nm", "20", "--linewidth-ghz", "0.5",
            "--out", str(out)]
    if use_mask:
        args += ["--mask", "mask", "--sigma", "sigma"]
    err = io.StringIO()
    with redirect_stderr(err):
        code = main(args)
    _one_line_or_success(code, err.getvalue(), out)


# ---- measurement files --------------------------------------------------------------------------


MEASUREMENT_CORRUPTIONS = [
    "none", "nan", "nan-masked", "inf", "huge", "int-spectrum", "str-attr", "list-attr",
    "odd-attr", "missing-attr", "band", "operator", "units", "nv-axis", "drop-spectrum",
    "drop-coord", "transpose", "rename-dim", "descending-y", "duplicate-freq", "one-pixel",
    "empty-freq", "mask-values", "mask-dims", "mask-empty", "sigma-negative", "sigma-dims",
    "truth-nan", "schema", "truncate", "garbage", "spectrum-scale", "sample-axis",
]


@st.composite
def measurement_cases(draw):
    nf, ny, nx = draw(st.integers(1, 5)), draw(st.integers(2, 5)), draw(st.integers(2, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    mask = rng.random((ny, nx)) > 0.2
    mask[0, 0] = True
    ds = measurement_dataset(
        rng.random((nf, ny, nx)) + 0.05, np.linspace(1.0, 3.0, nf) if nf > 1 else [2.0],
        (np.arange(ny) * 20.0, np.arange(nx) * 20.0), standoff_nm=20.0, linewidth_ghz=0.5,
        larmor_band_ghz=(1.5, 2.5), operator="measured", noise=math.nan,
        noise_sigma=draw(st.sampled_from([None, 0.01])), mask=mask if draw(st.booleans())
        else None, rho_true=rng.random((ny, nx)))
    return ds, draw(st.sampled_from(MEASUREMENT_CORRUPTIONS)), draw(ODD_NUMBERS)


def _corrupt(ds, how: str, value: float):
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    if how == "nan":
        ds["spectrum"].values.flat[0] = math.nan
    elif how == "nan-masked" and "mask" in ds:
        iy, ix = np.argwhere(ds["mask"].values == 0)[0] if (ds["mask"].values == 0).any() \
            else (0, 0)
        ds["spectrum"].values[:, iy, ix] = math.nan
    elif how == "inf":
        ds["spectrum"].values.flat[-1] = math.inf
    elif how == "huge":
        ds["spectrum"] = ds["spectrum"] * value
    elif how == "int-spectrum":
        ds["spectrum"] = ds["spectrum"].astype(np.int64)
    elif how == "str-attr":
        ds.attrs["standoff_nm"] = "twenty"
    elif how == "list-attr":
        ds.attrs["linewidth_ghz"] = np.array([0.5, 0.6])
    elif how == "odd-attr":
        ds.attrs[["standoff_nm", "linewidth_ghz"][int(abs(value)) % 2 if value == value
                                                  and abs(value) < 1e9 else 0]] = value
    elif how == "missing-attr":
        del ds.attrs["units"]
    elif how == "band":
        ds.attrs["larmor_band_ghz"] = np.array([value, 1.0])
    elif how == "operator":
        ds.attrs["operator"] = "F9"
    elif how == "units":
        ds.attrs["units"] = "furlongs"
    elif how == "nv-axis":
        ds.attrs["nv_axis"] = np.array([0.0, 0.0, value])
    elif how == "drop-spectrum":
        ds = ds.drop_vars("spectrum")
    elif how == "drop-coord":
        ds = ds.drop_vars("x")
    elif how == "transpose":
        ds["spectrum"] = ds["spectrum"].transpose("y", "freq", "x")
    elif how == "rename-dim":
        ds = ds.rename({"x": "col"})
    elif how == "descending-y":
        ds = ds.assign_coords(y=ds["y"].values[::-1])
    elif how == "duplicate-freq" and ds.sizes["freq"] > 1:
        freq = ds["freq"].values.copy()
        freq[1] = freq[0]
        ds = ds.assign_coords(freq=freq)
    elif how == "one-pixel":
        ds = ds.isel(y=slice(0, 1))
    elif how == "empty-freq":
        ds = ds.isel(freq=slice(0, 0))
    elif how == "mask-values":
        ds["mask"] = (("y", "x"), np.full((ny, nx), 3, np.uint8))
    elif how == "mask-dims":
        ds["mask"] = (("x", "y"), np.ones((nx, ny), np.uint8))
    elif how == "mask-empty":
        ds["mask"] = (("y", "x"), np.zeros((ny, nx), np.uint8))
    elif how == "sigma-negative":
        ds["noise_sigma"] = ((), -1.0)
    elif how == "sigma-dims":
        ds["noise_sigma"] = (("x",), np.ones(nx))
    elif how == "truth-nan":
        ds["rho_true"].values.flat[0] = math.nan
    elif how == "schema":
        ds.attrs["schema"] = "nvbayes.measurement/0"
    elif how == "spectrum-scale":
        ds.attrs["spectrum_scale"] = "loud"
    elif how == "sample-axis":
        ds = ds.expand_dims(sample=2)
    return ds


def _prepare_fit(path: Path) -> None:
    """What a fit does with a measurement before the solver starts."""
    data = read_measurement(path)
    if "sample" in data.dims:
        data = data.isel(sample=0)
    problem = InverseProblem.from_measurement(data)
    sigma = problem.sigma()
    assert bool(np.isfinite(sigma.numpy()).all())
    problem.unit_scale()


@settings(max_examples=MEASUREMENT_CASES, **FUZZ)
@given(case=measurement_cases())
def test_measurement_files_never_escape(case, tmp_path_factory):
    ds, how, value = case
    path = tmp_path_factory.mktemp("m") / "m.nc"
    try:
        _corrupt(ds, how, value).to_netcdf(path)
    except (ValueError, TypeError, OverflowError):
        return                                   # xarray itself cannot write this one
    if how == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif how == "garbage":
        path.write_bytes(b"CDF\x01" + bytes(range(256)))
    try:
        _prepare_fit(path)
    except NvbayesError as exc:
        assert "\n" not in str(exc)


# ---- model files ------------------------------------------------------------------------------


MODEL_TEXT = (files("nvbayes") / "models" / "netmy-fast.toml").read_text()
MODEL_LINES = [line for line in MODEL_TEXT.splitlines() if "=" in line and not
               line.lstrip().startswith("#")]


@st.composite
def model_cases(draw):
    lines = MODEL_TEXT.splitlines()
    how = draw(st.sampled_from(["value", "drop", "type", "garbage", "duplicate", "unknown"]))
    target = draw(st.sampled_from(MODEL_LINES))
    index = lines.index(target)
    key = target.split("=")[0].strip()
    if how == "value":
        value = draw(st.sampled_from(["-1", "0", "nan", "inf", "1e400", "3"]))
        lines[index] = f"{key} = {value}"
    elif how == "drop":
        del lines[index]
    elif how == "type":
        value = draw(st.sampled_from(['"x"', "[1, 2]", "true", "{a = 1}"]))
        lines[index] = f"{key} = {value}"
    elif how == "garbage":
        lines.insert(index, draw(st.sampled_from(["[[[", "= 3", "key", "a = ", "\x00"])))
    elif how == "duplicate":
        lines.insert(index, target)
    else:
        lines.insert(index, "unknown_setting = 1")
    return "\n".join(lines)


@settings(max_examples=MODEL_CASES, **FUZZ)
@given(text=model_cases())
def test_model_files_never_escape(text, tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "model.toml"
    path.write_text(text)
    try:
        load_spec(path)
    except NvbayesError as exc:
        assert "\n" not in str(exc)


def test_a_refused_measurement_is_one_line_from_the_fit_command(tmp_path, capsys):
    """The command line's side of the measurement fuzzing: a corrupt file, a real fit."""
    path, out = tmp_path / "bad.nc", tmp_path / "run"
    path.write_bytes(b"CDF\x01 not really")
    assert main(["fit", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and not out.exists()
