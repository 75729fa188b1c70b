"""``nvbayes import`` and ``from_arrays``: lab files written by NumPy, h5py and scipy.io
round-trip exactly; odd axis orders, descending axes and masks are handled or refused."""

from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest
import scipy.io

from nvbayes.cli import main
from nvbayes.data.io import read_measurement
from nvbayes.data.lab import from_arrays
from nvbayes.errors import MeasurementError

NY, NX, NF = 5, 7, 11


@pytest.fixture
def lab():
    """Arrays as an acquisition program might hold them: spectrum (y, x, freq), uneven
    frequencies, a dead pixel (NaN, masked) and a σ map."""
    rng = np.random.default_rng(4)
    freq = np.sort(rng.uniform(1.0, 3.0, NF))
    spectrum = rng.random((NY, NX, NF)) + 0.1
    mask = np.ones((NY, NX), dtype=np.uint8)
    mask[2, 3] = 0
    spectrum[2, 3, :] = np.nan
    sigma = rng.uniform(0.01, 0.02, (NY, NX))
    return {"spectrum": spectrum, "freq": freq, "x": np.arange(NX) * 25.0,
            "y": np.arange(NY) * 25.0, "mask": mask, "sigma": sigma}


def _check_exact(path, lab):
    ds = read_measurement(path)
    cube = ds["spectrum"].values                       # (freq, y, x)
    source = lab["spectrum"].transpose(2, 0, 1)
    used = lab["mask"] != 0
    assert cube.shape == (NF, NY, NX)
    np.testing.assert_array_equal(cube[:, used], source[:, used])
    assert np.isnan(cube[:, ~used]).all()
    np.testing.assert_array_equal(ds["freq"].values, lab["freq"])
    np.testing.assert_array_equal(ds["x"].values, lab["x"])
    np.testing.assert_array_equal(ds["y"].values, lab["y"])
    np.testing.assert_array_equal(ds["mask"].values != 0, used)
    np.testing.assert_array_equal(ds["noise_sigma"].values, lab["sigma"])
    assert ds.attrs["operator"] == "measured"
    assert ds.attrs["spectrum_scale"] == "absolute"


def _import(path, fmt, out, *extra):
    return main(["import", str(path), "--format", fmt, "--spectrum", "spectrum",
                 "--freq", "freq", "--x", "x", "--y", "y", "--mask", "mask",
                 "--sigma", "sigma", "--standoff-nm", "20", "--linewidth-ghz", "0.5",
                 "--out", str(out), *extra])


def test_npz_round_trip(lab, tmp_path):
    np.savez(tmp_path / "lab.npz", **lab)
    assert _import(tmp_path / "lab.npz", "npz", tmp_path / "m.nc") == 0
    _check_exact(tmp_path / "m.nc", lab)


def test_h5_round_trip_with_groups(lab, tmp_path):
    with h5py.File(tmp_path / "lab.h5", "w") as f:
        group = f.create_group("scan")
        for name, value in lab.items():
            group[name] = value
    code = main(["import", str(tmp_path / "lab.h5"), "--format", "h5",
                 "--spectrum", "scan/spectrum", "--freq", "scan/freq", "--x", "scan/x",
                 "--y", "/scan/y", "--mask", "scan/mask", "--sigma", "scan/sigma",
                 "--standoff-nm", "20", "--linewidth-ghz", "0.5",
                 "--out", str(tmp_path / "m.nc")])
    assert code == 0
    _check_exact(tmp_path / "m.nc", lab)


def test_mat_round_trip(lab, tmp_path):
    scipy.io.savemat(tmp_path / "lab.mat", lab)
    assert _import(tmp_path / "lab.mat", "mat", tmp_path / "m.nc") == 0
    _check_exact(tmp_path / "m.nc", lab)


def test_mat_v73_is_read_column_major(lab, tmp_path):
    """A v7.3 file is HDF5 behind a 512-byte MATLAB header, with every array's axes
    reversed (MATLAB is column-major)."""
    path = tmp_path / "lab73.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in lab.items():
            f[name] = np.asarray(value).T
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, written by a test".ljust(128, b" "))
    assert _import(path, "mat", tmp_path / "m.nc") == 0
    _check_exact(tmp_path / "m.nc", lab)


def test_csv_round_trip(lab, tmp_path):
    path = tmp_path / "lab.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["freq", "y", "x", "spectrum", "mask", "sigma"])
        rows = []
        for k, fr in enumerate(lab["freq"]):
            for i in range(NY):
                for j in range(NX):
                    rows.append([repr(float(fr)), repr(float(lab["y"][i])),
                                 repr(float(lab["x"][j])),
                                 repr(float(lab["spectrum"][i, j, k])), int(lab["mask"][i, j]),
                                 repr(float(lab["sigma"][i, j]))])
        np.random.default_rng(0).shuffle(rows)             # row order does not matter
        writer.writerows(rows)
    assert _import(path, "csv", tmp_path / "m.nc") == 0
    _check_exact(tmp_path / "m.nc", lab)


def test_descending_axes_and_shuffled_frequencies_are_sorted(lab):
    order = np.random.default_rng(1).permutation(NF)
    flipped = lab["spectrum"][::-1, ::-1][:, :, order]
    ds = from_arrays(flipped, lab["freq"][order], x=lab["x"][::-1], y=lab["y"][::-1],
                     mask=lab["mask"][::-1, ::-1], sigma=lab["sigma"][::-1, ::-1],
                     standoff_nm=20, linewidth_ghz=0.5)
    used = lab["mask"] != 0
    np.testing.assert_array_equal(ds["spectrum"].values[:, used],
                                  lab["spectrum"].transpose(2, 0, 1)[:, used])
    np.testing.assert_array_equal(ds["noise_sigma"].values, lab["sigma"])


def test_axis_order_from_the_frequency_length_and_the_coordinates(lab):
    """(x, freq, y): freq found by its length, x and y told apart by theirs."""
    cube = lab["spectrum"].transpose(1, 2, 0)               # (x, freq, y)
    ds = from_arrays(cube, lab["freq"], x=lab["x"], y=lab["y"], standoff_nm=20,
                     linewidth_ghz=0.5, mask=lab["mask"])
    used = lab["mask"] != 0
    np.testing.assert_array_equal(ds["spectrum"].values[:, used],
                                  lab["spectrum"].transpose(2, 0, 1)[:, used])


def test_ambiguous_frequency_axis_is_refused_until_dims_are_given():
    cube = np.ones((4, 4, 4))
    with pytest.raises(MeasurementError, match="--dims"):
        from_arrays(cube, np.linspace(1, 3, 4), spacing_nm=20, standoff_nm=20,
                    linewidth_ghz=0.5)
    ds = from_arrays(cube, np.linspace(1, 3, 4), spacing_nm=20, standoff_nm=20,
                     linewidth_ghz=0.5, dims=("y", "x", "freq"))
    assert ds["spectrum"].dims == ("freq", "y", "x")


@pytest.mark.parametrize("change, message", [
    (dict(freq=np.array([1.0, 1.0, 2.0])), "duplicated"),
    (dict(x=np.array([0.0, 0.0])), "duplicated"),
    (dict(spectrum=np.full((3, 2, 2), np.nan)), "NaN"),
    (dict(mask=np.zeros((2, 2))), "no pixel"),
    (dict(sigma=-1.0), "positive"),
    (dict(spectrum=np.ones((3, 2, 2)).astype(str)), "dtype"),
    (dict(x=np.array([0.0, 20.0]), y=np.array([0.0, 30.0])), "spacing"),
])
def test_bad_arrays_are_refused_with_the_reason(change, message):
    arrays = dict(spectrum=np.ones((3, 2, 2)), freq=np.array([1.0, 2.0, 3.0]),
                  x=np.array([0.0, 20.0]), y=np.array([0.0, 20.0]))
    arrays.update(change)
    with pytest.raises(MeasurementError, match=message):
        from_arrays(arrays.pop("spectrum"), arrays.pop("freq"), standoff_nm=20,
                    linewidth_ghz=0.5, **arrays)


def test_import_errors_are_one_line_and_leave_no_file(lab, tmp_path, capsys):
    np.savez(tmp_path / "lab.npz", **lab)
    out = tmp_path / "m.nc"
    code = main(["import", str(tmp_path / "lab.npz"), "--format", "npz", "--spectrum",
                 "missing", "--freq", "freq", "--spacing-nm", "20", "--standoff-nm", "20",
                 "--linewidth-ghz", "0.5", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.count("\n") == 1 and "no array 'missing'" in err and "Traceback" not in err
