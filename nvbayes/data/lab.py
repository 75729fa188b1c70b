"""Lab files in, measurements out: the arrays an acquisition program writes, checked and
turned into an ``nvbayes.measurement/1`` dataset.

Formats (``FORMATS``), each read by name:

========  ===================================================================================
``npz``   NumPy ``.npz`` (``numpy.savez``): arrays by their keys
``h5``    HDF5 (h5py): datasets by path, ``group/spectrum``
``mat``   MATLAB ``.mat``: v4–v7 through ``scipy.io.loadmat``, v7.3 (HDF5) through h5py;
          MATLAB stores arrays column-major, so a v7.3 array reads with its axes reversed
``csv``   a long table with a header line, one row per readout ``(freq, y, x, value)``; the
          mask and σ columns are per pixel and must not vary along freq
========  ===================================================================================

:func:`from_arrays` does the checking, whatever the source::

    spectrum (3-D, any axis order) ── dims given, or the one axis whose length is len(freq)
                                      is freq and the other two are (y, x) in their order
              ── sorted to increasing freq, y, x (descending camera axes are flipped)
              ── mask (true: use the pixel) and σ (a number or a (y, x) map) on the same grid

and every failure is one :class:`~nvbayes.errors.MeasurementError` naming the array and the
fix.  Duplicated coordinates, a frequency axis that cannot be told apart, NaN outside the mask
and arrays of the wrong shape or dtype are refused; nothing is guessed silently.
"""

from __future__ import annotations

import csv
import math
import zipfile
from pathlib import Path

import h5py
import numpy as np
import scipy.io
import xarray as xr

from nvbayes.errors import MeasurementError

from .io import MEASURED, SPATIAL, check_nv_axis, measurement_dataset

FORMATS = ("npz", "h5", "mat", "csv")
DIMS = ("freq", "y", "x")


# --------------------------------------------------------------------------------------------
# Readers: a file and the names wanted → {name: array}
# --------------------------------------------------------------------------------------------


def read_arrays(path: "str | Path", fmt: str, names: dict[str, "str | None"]
                ) -> dict[str, np.ndarray]:
    """The arrays ``names`` (role → name in the file; ``None`` skips the role) of a lab file.

    For ``csv`` the roles ``spectrum``, ``freq``, ``x``, ``y``, ``mask``, ``sigma`` are
    columns and come back already pivoted to ``(freq, y, x)`` cubes and ``(y, x)`` maps.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise MeasurementError(f"unknown format {fmt!r}", f"use --format {'|'.join(FORMATS)}")
    if not path.is_file():
        raise MeasurementError(f"no such file: {path}", "check the path to the lab file")
    wanted = {role: name for role, name in names.items() if name is not None}
    reader = {"npz": _read_npz, "h5": _read_h5, "mat": _read_mat, "csv": _read_csv}[fmt]
    try:
        return reader(path, wanted)
    except MeasurementError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile,
            NotImplementedError, IndexError, UnicodeDecodeError) as exc:
        raise MeasurementError(f"cannot read {path} as {fmt} ({type(exc).__name__})",
                               f"check that the file is a complete {fmt} file") from None


def _pick(arrays, wanted: dict[str, str], path: Path, kind: str) -> dict[str, np.ndarray]:
    out = {}
    for role, name in wanted.items():
        if name not in arrays:
            available = ", ".join(sorted(arrays)[:12]) or "none"
            raise MeasurementError(f"{path} has no {kind} {name!r} (for the {role})",
                                   f"name one of: {available}")
        value = arrays[name]
        out[role] = value if isinstance(value, int) else np.asarray(value[()])
    return out


def _read_npz(path: Path, wanted: dict[str, str]) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return _pick(data, wanted, path, "array")


def _h5_names(handle) -> dict:
    found = {}

    def visit(name, obj):                 # a non-None return would stop the walk
        if isinstance(obj, h5py.Dataset):
            found[name] = obj

    handle.visititems(visit)
    return found


def _read_h5(path: Path, wanted: dict[str, str], reverse: bool = False
             ) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        arrays = _pick(_h5_names(handle), {r: n.strip("/") for r, n in wanted.items()},
                       path, "dataset")
    if reverse:                          # MATLAB v7.3 writes column-major
        arrays = {role: a.transpose() for role, a in arrays.items()}
    return arrays


def _read_mat(path: Path, wanted: dict[str, str]) -> dict[str, np.ndarray]:
    with open(path, "rb") as handle:
        head = handle.read(128)
    if b"MATLAB 7.3" in head or head[:8] == b"\x89HDF\r\n\x1a\n":
        return _read_h5(path, wanted, reverse=True)
    data = scipy.io.loadmat(path, squeeze_me=False)
    arrays = _pick({k: v for k, v in data.items() if not k.startswith("__")}, wanted, path,
                   "variable")
    # loadmat gives every vector as a (1, n) or (n, 1) matrix and a number as (1, 1)
    for role in ("freq", "x", "y"):
        if role in arrays:
            arrays[role] = arrays[role].reshape(-1)
    if "sigma" in arrays and arrays["sigma"].size == 1:
        arrays["sigma"] = arrays["sigma"].reshape(())
    return arrays


def _read_csv(path: Path, wanted: dict[str, str]) -> dict[str, np.ndarray]:
    for role in ("spectrum", "freq", "x", "y"):
        if role not in wanted:
            raise MeasurementError(f"a csv table needs a {role} column",
                                   f"name it with --{role} (columns freq, y, x and the value)")
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise MeasurementError(f"{path} is empty", "write a header line and one row per readout")
    header = [h.strip() for h in rows[0]]
    columns = _pick({h: i for i, h in enumerate(header)}, wanted, path, "column")
    body = [r for r in rows[1:] if r]
    if not body:
        raise MeasurementError(f"{path} has a header but no rows", "write one row per readout")
    if any(len(r) != len(header) for r in body):
        raise MeasurementError(f"{path}: rows differ in length from the header",
                               "write every row with one value per column")
    table = {}
    for role, index in columns.items():
        try:
            table[role] = np.array([float(r[int(index)]) for r in body], dtype=np.float64)
        except ValueError:
            raise MeasurementError(f"{path}: column {wanted[role]!r} holds a value that is not "
                                   "a number",
                                   "write numbers only (nan for a dead pixel)") from None
    axes = {}
    index = {}
    for role in ("freq", "y", "x"):
        values, where = np.unique(table[role], return_inverse=True)
        if not np.isfinite(values).all():
            raise MeasurementError(f"{path}: column {wanted[role]!r} is not finite",
                                   "write finite coordinates")
        axes[role], index[role] = values, where
    shape = tuple(axes[r].size for r in ("freq", "y", "x"))
    flat = np.ravel_multi_index((index["freq"], index["y"], index["x"]), shape)
    if flat.size != math.prod(shape) or np.unique(flat).size != flat.size:
        raise MeasurementError(f"{path}: the rows do not fill the freq x y x grid once each "
                               f"({flat.size} rows for {shape[0]} x {shape[1]} x {shape[2]})",
                               "write exactly one row per (freq, y, x)")
    out = {"freq": axes["freq"], "y": axes["y"], "x": axes["x"]}
    cube = np.empty(math.prod(shape))
    cube[flat] = table["spectrum"]
    out["spectrum"] = cube.reshape(shape)
    for role in ("mask", "sigma"):
        if role in table:
            per_row = np.empty(math.prod(shape))
            per_row[flat] = table[role]
            per_row = per_row.reshape(shape)
            if not np.array_equal(per_row, np.broadcast_to(per_row[:1], shape), equal_nan=True):
                raise MeasurementError(f"{path}: column {wanted[role]!r} varies along freq",
                                       f"write one {role} value per pixel")
            out[role] = per_row[0]
    return out


# --------------------------------------------------------------------------------------------
# Arrays → a measurement
# --------------------------------------------------------------------------------------------


def _real(name: str, value, ndim: "tuple[int, ...]") -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise MeasurementError(f"the {name} has dtype {array.dtype}, not real numbers",
                               f"store the {name} as numbers")
    if array.ndim not in ndim:
        raise MeasurementError(f"the {name} has {array.ndim} dimension(s), expected "
                               f"{' or '.join(str(d) for d in ndim)}",
                               f"store the {name} with shape as documented (nvbayes import -h)")
    return array.astype(np.float64)


def _order(freq: np.ndarray, name: str) -> np.ndarray:
    """The permutation sorting an axis; duplicates and non-finite values refused."""
    if freq.size == 0 or not np.isfinite(freq).all():
        raise MeasurementError(f"the {name} coordinate is empty or not finite",
                               f"give finite {name} values")
    order = np.argsort(freq, kind="stable")
    if (np.diff(freq[order]) == 0).any():
        raise MeasurementError(f"the {name} coordinate has duplicated values",
                               f"give each {name} once (average repeated readouts first)")
    return order


def _spectrum_dims(shape: tuple, n_freq: int, dims, sizes: dict) -> tuple[str, ...]:
    if dims is not None:
        dims = tuple(str(d).strip() for d in dims)
        if sorted(dims) != sorted(DIMS):
            raise MeasurementError(f"dims {','.join(dims)} is not an order of freq, y, x",
                                   "pass --dims as a permutation of freq,y,x")
        return dims
    matches = [i for i, n in enumerate(shape) if n == n_freq]
    if len(matches) != 1:
        raise MeasurementError(
            f"cannot tell the frequency axis of a {'x'.join(map(str, shape))} spectrum from "
            f"{n_freq} frequencies ({len(matches)} axes have that length)",
            "pass --dims, e.g. --dims y,x,freq")
    rest = [i for i in range(3) if i != matches[0]]
    order = ["y", "x"]
    ny, nx = sizes.get("y"), sizes.get("x")
    if ny is not None and nx is not None and ny != nx and (shape[rest[0]], shape[rest[1]]) \
            == (nx, ny):
        order = ["x", "y"]
    names = [""] * 3
    names[matches[0]] = "freq"
    names[rest[0]], names[rest[1]] = order
    return tuple(names)


def from_arrays(spectrum, freq, *, standoff_nm: float, linewidth_ghz: float,
                x=None, y=None, spacing_nm: "float | None" = None,
                band: "tuple[float, float] | None" = None, units: str = "normalized",
                mask=None, sigma=None, dims=None, nv_axis=None,
                spectrum_scale: "str | None" = None) -> xr.Dataset:
    """A validated measurement from the arrays of a lab program.

    Parameters
    ----------
    spectrum : 3-D array with axes ``dims`` (a permutation of ``freq, y, x``), or inferred:
        the one axis of length ``len(freq)`` is freq, the other two are ``(y, x)`` in their
        order (swapped only where ``x`` and ``y`` coordinates of different lengths say so).
    freq : readout frequencies, GHz, any order and spacing (sorted here).
    x, y : pixel positions, nm (sorted here: a descending axis is flipped); or
    spacing_nm : the pixel spacing, positions ``0, dx, 2 dx, …``.
    standoff_nm, linewidth_ghz : the NV standoff and the Lorentzian linewidth.
    band : the Larmor band, GHz (default: the readout span less a linewidth each side where
        that leaves an interval, else the readout span).
    units : ``normalized`` or ``si``.
    mask : ``(y, x)``, nonzero on the pixels to use (dead or saturated pixels 0; their
        spectrum may be NaN).
    sigma : σ of one readout, a number or a ``(y, x)`` map, in spectrum units.
    nv_axis : the NV axis, a 3-vector (default z).
    spectrum_scale : ``absolute`` or ``arbitrary`` (default: absolute where σ is given).
    """
    cube = _real("spectrum", spectrum, (3,))
    freq = _real("frequency axis", freq, (1,)).reshape(-1)
    coords = {}
    if (x is None) != (y is None):
        raise MeasurementError("give both x and y coordinates, or neither",
                               "pass --x NAME --y NAME, or --spacing-nm DX")
    if x is not None:
        if spacing_nm is not None:
            raise MeasurementError("both coordinates and a spacing were given",
                                   "pass --x/--y or --spacing-nm, not both")
        coords = {"y": _real("y coordinate", y, (1,)).reshape(-1),
                  "x": _real("x coordinate", x, (1,)).reshape(-1)}
    elif spacing_nm is None:
        raise MeasurementError("the pixel positions are not given",
                               "pass --x NAME --y NAME or --spacing-nm DX")
    elif not (math.isfinite(spacing_nm) and spacing_nm > 0):
        raise MeasurementError(f"--spacing-nm {spacing_nm} is not a positive length",
                               "give the pixel spacing in nm (> 0)")
    dims = _spectrum_dims(cube.shape, freq.size, dims,
                          {k: v.size for k, v in coords.items()})
    cube = cube.transpose([dims.index(d) for d in DIMS])
    if cube.shape[0] != freq.size:
        raise MeasurementError(f"the spectrum has {cube.shape[0]} frequencies along freq, the "
                               f"frequency axis {freq.size}", "check --dims and --freq")
    ny, nx = cube.shape[1:]
    if not coords:
        coords = {"y": np.arange(ny) * float(spacing_nm), "x": np.arange(nx) * float(spacing_nm)}
    for name, size in (("y", ny), ("x", nx)):
        if coords[name].size != size:
            raise MeasurementError(f"the {name} coordinate has {coords[name].size} values, the "
                                   f"spectrum {size} pixels along {name}",
                                   "check --x, --y and --dims")
    maps = {}
    for name, value in (("mask", mask), ("sigma", sigma)):
        if value is None:
            continue
        array = _real(name, value, (0, 2) if name == "sigma" else (2,))
        if array.ndim == 2 and array.shape != (ny, nx):
            raise MeasurementError(f"the {name} is {array.shape[0]} x {array.shape[1]}, the "
                                   f"grid {ny} x {nx}", f"give the {name} on the (y, x) grid "
                                   "of the spectrum")
        maps[name] = array
    f_order = _order(freq, "freq")
    y_order, x_order = _order(coords["y"], "y"), _order(coords["x"], "x")
    cube = cube[f_order][:, y_order][:, :, x_order]
    freq, y_nm, x_nm = freq[f_order], coords["y"][y_order], coords["x"][x_order]
    for name, array in maps.items():
        if array.ndim == 2:
            maps[name] = array[y_order][:, x_order]
    used = None
    if "mask" in maps:
        if not np.isfinite(maps["mask"]).all():
            raise MeasurementError("the mask holds NaN or infinite values",
                                   "store the mask as 0 (skip the pixel) and 1 (use it)")
        used = maps["mask"] != 0
    if "sigma" in maps:
        check = maps["sigma"] if used is None or maps["sigma"].ndim == 0 else \
            maps["sigma"][used]
        if not (np.isfinite(check).all() and (check > 0).all()):
            raise MeasurementError("the noise sigma must be positive and finite",
                                   "give the standard deviation of one readout (> 0)")
    if band is None:
        band = _default_band(freq, linewidth_ghz)
    if nv_axis is not None:
        nv_axis = check_nv_axis(nv_axis, "the NV axis")
    if spectrum_scale is None:
        spectrum_scale = "absolute" if "sigma" in maps else "arbitrary"
    return measurement_dataset(
        cube, freq, (y_nm, x_nm), standoff_nm=standoff_nm, linewidth_ghz=linewidth_ghz,
        larmor_band_ghz=tuple(band), operator=MEASURED, noise=math.nan, units=units,
        noise_sigma=maps.get("sigma"), mask=used, nv_axis=nv_axis,
        spectrum_scale=spectrum_scale)


def _default_band(freq: np.ndarray, linewidth: float) -> tuple[float, float]:
    lo, hi = float(freq[0]), float(freq[-1])
    if math.isfinite(linewidth) and lo + linewidth < hi - linewidth:
        return lo + linewidth, hi - linewidth
    return lo, hi


def lab_measurement(path: "str | Path", fmt: str, *, spectrum: str, freq: str,
                    x: "str | None" = None, y: "str | None" = None,
                    mask: "str | None" = None, sigma: "str | None" = None,
                    **options) -> xr.Dataset:
    """:func:`from_arrays` of the arrays named in a lab file (:func:`read_arrays`); for a csv
    table with ``spacing_nm`` the x and y columns are pixel indices."""
    arrays = read_arrays(path, fmt, {"spectrum": spectrum, "freq": freq, "x": x, "y": y,
                                     "mask": mask, "sigma": sigma})
    if fmt == "csv" and options.get("spacing_nm") is not None:
        dx = options["spacing_nm"]
        if not (math.isfinite(dx) and dx > 0):
            raise MeasurementError(f"--spacing-nm {dx} is not a positive length",
                                   "give the pixel spacing in nm (> 0)")
        arrays["x"], arrays["y"] = arrays["x"] * dx, arrays["y"] * dx
        options = {k: v for k, v in options.items() if k != "spacing_nm"}
    sigma_value = arrays.get("sigma")
    if sigma_value is not None and sigma_value.size == 1:
        sigma_value = sigma_value.reshape(())
    return from_arrays(arrays["spectrum"], arrays["freq"], x=arrays.get("x"),
                       y=arrays.get("y"), mask=arrays.get("mask"), sigma=sigma_value,
                       **options)


__all__ = ["DIMS", "FORMATS", "SPATIAL", "from_arrays", "lab_measurement", "read_arrays"]
