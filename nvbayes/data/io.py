"""Measurement files: the ``nvbayes.measurement/1`` schema, validation and atomic I/O.

A measurement is an :class:`xarray.Dataset`:

========================  =============================================================
``spectrum``              ``([sample,] freq, y, x)`` measured noise spectrum (required)
``rho_true``              ``([sample,] y, x)`` true source weight per pixel (optional)
``larmor_true``           ``([sample,] y, x)`` true Larmor field, GHz (optional)
``noise_sigma``           ``([sample])`` σ of the sensor noise of one readout, in spectrum
                          units, or ``(y, x)`` a σ per pixel for a single measurement
                          (optional; estimated from the spectrum where absent)
``mask``                  ``(y, x)`` uint8, 1 on the pixels to use, 0 on dead or saturated
                          ones (optional; their spectrum may be NaN)
coords ``freq``           readout frequencies, GHz, strictly increasing (any spacing)
coords ``y``, ``x``       pixel positions, nm, increasing with one common spacing; the grid
                          may be rectangular (``ny ≠ nx``)
coords ``scene_class``,   per sample (a scalar coordinate for a single measurement)
``seed``
attrs                     ``schema``, ``standoff_nm``, ``linewidth_ghz``,
                          ``larmor_band_ghz``, ``operator``, ``noise``, ``units``,
                          ``nvbayes_version``; optional ``spectrum_scale``
                          (``absolute`` or ``arbitrary``, :class:`InverseProblem`) and
                          ``nv_axis`` (the NV axis, a 3-vector; default z).  ``operator``
                          is the simulator (F1, F2, F3) or ``measured``
========================  =============================================================

Files are written to a temporary name beside the target and renamed into place, so an
interrupted write leaves either the complete file or none.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import xarray as xr

from nvbayes import __version__
from nvbayes.errors import MeasurementError
from nvbayes.physics.operators import OPERATORS
from nvbayes.physics.units import UNIT_KINDS, Units

SCHEMA = "nvbayes.measurement/1"
REQUIRED_ATTRS = ("standoff_nm", "linewidth_ghz", "larmor_band_ghz", "operator", "units")
SPATIAL = ("y", "x")


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: "str | os.PathLike") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    On any exception (or interrupt) the temporary file is removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_netcdf(dataset: xr.Dataset, path: "str | os.PathLike") -> Path:
    """Write any dataset to netCDF-4 atomically."""
    with atomic_path(path) as tmp:
        dataset.to_netcdf(tmp, engine="netcdf4")
    return Path(path)


def write_folder(folder: "str | os.PathLike", fill: Callable[[Path], object]) -> Path:
    """Let ``fill(tmp_folder)`` write a folder's files, then put it at ``folder`` atomically.

    An existing ``folder`` is replaced only once the new one is complete; on any exception
    (or interrupt) the temporary folder is removed and ``folder`` is untouched.
    """
    target = Path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        fill(tmp)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def write_with(path: "str | os.PathLike", writer: Callable[[Path], object]) -> Path:
    """Run ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


# --------------------------------------------------------------------------------------------
# Building and validating measurements
# --------------------------------------------------------------------------------------------


def measurement_dataset(
    spectrum: np.ndarray,
    freqs: np.ndarray,
    coords_nm,
    *,
    standoff_nm: float,
    linewidth_ghz: float,
    larmor_band_ghz: tuple[float, float],
    operator: str,
    noise: float,
    units: str = "normalized",
    rho_true: "np.ndarray | None" = None,
    larmor_true: "np.ndarray | None" = None,
    scene_class=None,
    seed=None,
    noise_sigma=None,
    mask: "np.ndarray | None" = None,
    nv_axis: "tuple[float, float, float] | None" = None,
    spectrum_scale: "str | None" = None,
) -> xr.Dataset:
    """Assemble a measurement from arrays; a leading axis of ``spectrum`` becomes ``sample``.

    ``coords_nm`` is one axis for a square grid or a pair ``(y, x)``.  ``scene_class`` and
    ``seed`` are scalars for one measurement, sequences for a data set.  ``noise_sigma`` is a
    number, one per sample, or a map ``(y, x)``; ``mask`` bool ``(y, x)`` (true: use the
    pixel); ``nv_axis`` a 3-vector (default z).
    """
    spectrum = np.asarray(spectrum, dtype=np.float64)
    batched = spectrum.ndim == 4
    lead = ("sample",) if batched else ()
    y_nm, x_nm = ((coords_nm, coords_nm) if np.ndim(coords_nm[0]) == 0 else coords_nm)
    data_vars = {
        "spectrum": (lead + ("freq",) + SPATIAL, spectrum, {
            "long_name": "magnetic noise spectrum S(freq, y, x)", "units": _spectrum_units(units),
        }),
    }
    if rho_true is not None:
        data_vars["rho_true"] = (lead + SPATIAL, np.asarray(rho_true, dtype=np.float64), {
            "long_name": "true source weight per pixel", "units": "fluctuators per pixel",
        })
    if larmor_true is not None:
        data_vars["larmor_true"] = (lead + SPATIAL, np.asarray(larmor_true, dtype=np.float64), {
            "long_name": "true Larmor frequency", "units": "GHz",
        })
    coords = {
        "freq": ("freq", np.asarray(freqs, dtype=np.float64),
                 {"long_name": "readout frequency", "units": "GHz"}),
        "y": ("y", np.asarray(y_nm, dtype=np.float64), {"long_name": "y", "units": "nm"}),
        "x": ("x", np.asarray(x_nm, dtype=np.float64), {"long_name": "x", "units": "nm"}),
    }
    if noise_sigma is not None:
        sigma = np.asarray(noise_sigma, dtype=np.float64)
        data_vars["noise_sigma"] = (SPATIAL if sigma.ndim == 2 else lead, sigma, {
            "long_name": "standard deviation of the sensor noise of one readout",
            "units": _spectrum_units(units),
        })
    if mask is not None:
        data_vars["mask"] = (SPATIAL, np.asarray(mask, dtype=bool).astype(np.uint8), {
            "long_name": "pixels used in the fit", "flag_values": np.array([0, 1], np.uint8),
            "flag_meanings": "masked used",
        })
    if scene_class is not None:
        coords["scene_class"] = (lead, np.asarray(scene_class, dtype=str))
    if seed is not None:
        coords["seed"] = (lead, np.asarray(seed, dtype=np.int64))
    attrs = {
        "schema": SCHEMA,
        "standoff_nm": float(standoff_nm),
        "linewidth_ghz": float(linewidth_ghz),
        "larmor_band_ghz": np.asarray(larmor_band_ghz, dtype=np.float64),
        "operator": str(operator),
        "noise": float(noise),
        "units": str(units),
        "nvbayes_version": __version__,
    }
    if nv_axis is not None:
        attrs["nv_axis"] = np.asarray(nv_axis, dtype=np.float64)
    if spectrum_scale is not None:
        attrs["spectrum_scale"] = str(spectrum_scale)
    dataset = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    validate_measurement(dataset)
    return dataset


def _spectrum_units(units: str) -> str:
    return Units(units).spectrum_units


#: The ``operator`` attribute of a measurement no simulator wrote.
MEASURED = "measured"
#: Values of a measurement's ``spectrum_scale`` attribute.
SPECTRUM_SCALES = ("absolute", "arbitrary")


def validate_measurement(ds: xr.Dataset, source: str = "measurement") -> xr.Dataset:
    """Check ``ds`` against ``nvbayes.measurement/1``; raise :class:`MeasurementError` if not.

    Returns ``ds`` unchanged so calls can be chained.
    """
    if "spectrum" not in ds.data_vars:
        raise MeasurementError(f"{source} has no 'spectrum' variable",
                               "write the measured spectrum as a variable named 'spectrum'")
    schema = ds.attrs.get("schema")
    if schema != SCHEMA:
        raise MeasurementError(f"{source} has schema {schema!r}, expected {SCHEMA!r}",
                               "create it with 'nvbayes simulate' or 'nvbayes import'")
    spec = ds["spectrum"]
    expected = ("freq",) + SPATIAL
    if spec.dims not in (expected, ("sample",) + expected):
        raise MeasurementError(
            f"{source}: spectrum has dims {spec.dims}, expected ([sample,] freq, y, x)",
            "transpose the spectrum to (sample, freq, y, x) or (freq, y, x)")
    if not np.issubdtype(spec.dtype, np.number) or np.issubdtype(spec.dtype, np.complexfloating):
        raise MeasurementError(f"{source}: spectrum has dtype {spec.dtype}, not real numbers",
                               "store the spectrum as floating-point numbers")
    if spec.size == 0:
        raise MeasurementError(f"{source}: spectrum is empty (shape {spec.shape})",
                               "store at least one frequency on a 2 x 2 grid")
    for name in ("freq",) + SPATIAL:
        if name not in ds.coords:
            raise MeasurementError(f"{source} has no '{name}' coordinate",
                                   f"add the {name} coordinate ({_unit_of(name)})")
    missing = [a for a in REQUIRED_ATTRS if a not in ds.attrs]
    if missing:
        raise MeasurementError(f"{source} lacks the attribute(s) {', '.join(missing)}",
                               "set them as in nvbayes.measurement/1 (see nvbayes.data.io)")
    _check_attrs(ds, source)
    _check_coords(ds, source)
    used = _check_mask(ds, source)
    values = np.asarray(spec.values, dtype=np.float64)
    bad = ~np.isfinite(values)
    if used is not None:
        bad &= used
    if bad.any():
        raise MeasurementError(
            f"{source}: spectrum has {int(bad.sum())} NaN or infinite value(s)"
            + (" on used pixels" if used is not None else ""),
            "mask the bad pixels (nvbayes import --mask) or remove them before fitting")
    finite = values[np.isfinite(values)]
    if finite.size and np.abs(finite).max() > _HUGE:
        raise MeasurementError(f"{source}: spectrum reaches {np.abs(finite).max():.3g}, beyond "
                               "what float64 arithmetic on it survives",
                               "rescale the spectrum (its unit does not change the result)")
    if "noise_sigma" in ds.data_vars:
        _check_sigma(ds, source, used)
    for name in ("rho_true", "larmor_true"):
        if name in ds.data_vars:
            _check_truth(ds, name, source)
    return ds


#: Largest |S| accepted: squares and sums over a 512² cube of 10³ readouts stay finite.
_HUGE = 1e100


def _unit_of(name: str) -> str:
    return "GHz" if name == "freq" else "nm"


def _number(ds: xr.Dataset, name: str, source: str) -> float:
    try:
        values = np.asarray(ds.attrs[name], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise MeasurementError(f"{source}: {name} = {ds.attrs[name]!r} is not a number",
                               f"set {name} to a number") from None
    if values.size != 1:
        raise MeasurementError(f"{source}: {name} holds {values.size} values, not one",
                               f"set {name} to a single number")
    return float(values[0])


def _check_attrs(ds: xr.Dataset, source: str) -> None:
    for name in ("standoff_nm", "linewidth_ghz"):
        value = _number(ds, name, source)
        if not (math.isfinite(value) and value > 0):
            raise MeasurementError(f"{source}: {name} = {value} is not positive",
                                   f"set {name} to the physical value (> 0)")
    try:
        band = np.asarray(ds.attrs["larmor_band_ghz"], dtype=float).reshape(-1)
    except (TypeError, ValueError):
        band = np.array([math.nan])
    if band.size != 2 or not np.isfinite(band).all() or not 0 < band[0] <= band[1]:
        raise MeasurementError(f"{source}: larmor_band_ghz = {band.tolist()} is not an interval",
                               "set larmor_band_ghz to [low, high] GHz with 0 < low <= high")
    operator = str(ds.attrs["operator"])
    if operator.upper() not in OPERATORS and operator != MEASURED:
        raise MeasurementError(f"{source}: unknown operator {ds.attrs['operator']!r}",
                               f"set operator to F1, F2, F3 or {MEASURED}")
    if ds.attrs["units"] not in UNIT_KINDS:
        raise MeasurementError(f"{source}: unknown units {ds.attrs['units']!r}",
                               f"set units to one of {', '.join(UNIT_KINDS)}")
    scale = ds.attrs.get("spectrum_scale")
    if scale is not None and scale not in SPECTRUM_SCALES:
        raise MeasurementError(f"{source}: unknown spectrum_scale {scale!r}",
                               f"set it to {' or '.join(SPECTRUM_SCALES)}")
    if "nv_axis" in ds.attrs:
        check_nv_axis(ds.attrs["nv_axis"], source)


def check_nv_axis(value, source: str = "measurement") -> np.ndarray:
    """The NV axis ``value`` as a unit 3-vector; anything else is a :class:`MeasurementError`."""
    try:
        axis = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        axis = np.array([math.nan])
    norm = float(np.linalg.norm(axis)) if axis.size == 3 and np.isfinite(axis).all() else 0.0
    if not norm > 0:
        raise MeasurementError(f"{source}: nv_axis = {np.asarray(value).tolist()} is not a "
                               "nonzero 3-vector", "give the NV axis as three numbers (x, y, z)")
    return axis / norm


def _axis_values(ds: xr.Dataset, name: str, source: str) -> np.ndarray:
    try:
        return np.asarray(ds[name].values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise MeasurementError(f"{source}: the {name} coordinate is not numeric",
                               f"store {name} as numbers ({_unit_of(name)})") from None


def _check_coords(ds: xr.Dataset, source: str) -> None:
    freq = _axis_values(ds, "freq", source)
    if not np.isfinite(freq).all() or (freq <= 0).any() or (np.diff(freq) <= 0).any():
        raise MeasurementError(f"{source}: freq must be positive and strictly increasing",
                               "sort the spectrum by frequency (GHz); nvbayes import does")
    y, x = (_axis_values(ds, c, source) for c in SPATIAL)
    if y.size < 2 or x.size < 2:
        raise MeasurementError(f"{source}: grid is {y.size} x {x.size}, fewer than 2 pixels "
                               "per side", "provide at least a 2 x 2 window")
    steps = np.concatenate([np.diff(y), np.diff(x)])
    spacing = steps[0]
    if not (np.isfinite(steps).all() and spacing > 0
            and np.allclose(steps, spacing, rtol=1e-6, atol=0)):
        raise MeasurementError(
            f"{source}: y and x coordinates are not increasing and evenly spaced with one "
            "common spacing",
            "resample onto a grid with equal steps along y and x (nm); nvbayes import sorts")


def _check_mask(ds: xr.Dataset, source: str) -> "np.ndarray | None":
    if "mask" not in ds.data_vars:
        return None
    var = ds["mask"]
    if var.dims != SPATIAL:
        raise MeasurementError(f"{source}: mask has dims {var.dims}, expected (y, x)",
                               "store one mask value per pixel on the (y, x) grid")
    values = np.asarray(var.values)
    if values.dtype.kind not in "biuf" or not np.isin(values, (0, 1)).all():
        raise MeasurementError(f"{source}: mask holds values other than 0 and 1",
                               "store the mask as booleans (1: use the pixel)")
    used = values != 0
    if not used.any():
        raise MeasurementError(f"{source}: the mask leaves no pixel to fit",
                               "mark the usable pixels 1 in the mask")
    return used


def _check_sigma(ds: xr.Dataset, source: str, used: "np.ndarray | None") -> None:
    var = ds["noise_sigma"]
    lead = ("sample",) if "sample" in ds["spectrum"].dims else ()
    if var.dims not in (lead, SPATIAL if not lead else lead):
        raise MeasurementError(f"{source}: noise_sigma has dims {var.dims}, expected {lead} "
                               "or (y, x)", "store one sigma per measurement or per pixel")
    values = np.asarray(var.values, dtype=np.float64)
    if var.dims == SPATIAL and used is not None:
        values = values[used]
    if not (np.isfinite(values).all() and (values >= 0).all()):
        raise MeasurementError(f"{source}: noise_sigma must be finite and not negative",
                               "store the standard deviation of one readout (0: noiseless)")


def _check_truth(ds: xr.Dataset, name: str, source: str) -> None:
    var = ds[name]
    lead = ("sample",) if "sample" in ds["spectrum"].dims else ()
    if var.dims != lead + SPATIAL:
        raise MeasurementError(f"{source}: {name} has dims {var.dims}, expected {lead + SPATIAL}",
                               f"store {name} on the same (sample,) y, x grid as the spectrum")
    if not np.isfinite(np.asarray(var.values, dtype=np.float64)).all():
        raise MeasurementError(f"{source}: {name} has NaN or infinite values",
                               f"store finite values in {name}")


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def load_netcdf(path: "str | os.PathLike", error=MeasurementError, what: str = "measurement",
                writer: str = "'nvbayes simulate' or xarray") -> xr.Dataset:
    """A netCDF file fully in memory; a missing or unreadable file raises ``error``."""
    path = Path(path)
    if not path.is_file():
        raise error(f"no such file: {path}", f"check the path to the {what}")
    try:
        with xr.open_dataset(path, engine="netcdf4") as handle:
            return handle.load()
    except (OSError, ValueError) as exc:
        raise error(f"cannot read {path} as netCDF ({type(exc).__name__})",
                    f"pass a .nc file written by {writer}") from None


def read_measurement(path: "str | os.PathLike") -> xr.Dataset:
    """Load a measurement file fully into memory and validate it.

    >>> data = read_measurement("runs/demo.nc")       # doctest: +SKIP
    >>> data["spectrum"].dims                          # doctest: +SKIP
    ('freq', 'y', 'x')
    """
    return validate_measurement(load_netcdf(path), source=str(path))


def n_samples(ds: xr.Dataset) -> int:
    """Number of measurements in ``ds`` (1 when there is no ``sample`` dimension)."""
    return int(ds.sizes["sample"]) if "sample" in ds["spectrum"].dims else 1


def select_sample(ds: xr.Dataset, index: "int | None") -> xr.Dataset:
    """One measurement of ``ds`` (no ``sample`` dimension); ``None`` means the only one."""
    count = n_samples(ds)
    if "sample" not in ds["spectrum"].dims:
        if index not in (None, 0):
            raise MeasurementError(f"sample {index} requested but the file holds one measurement",
                                   "drop --sample or pass --sample 0")
        return ds
    if index is None:
        if count != 1:
            raise MeasurementError(f"the file holds {count} samples",
                                   f"choose one with --sample 0..{count - 1}")
        index = 0
    if not 0 <= index < count:
        raise MeasurementError(f"sample {index} is out of range",
                               f"choose --sample between 0 and {count - 1}")
    return ds.isel(sample=index)


def spacing_nm(ds: xr.Dataset) -> float:
    """Pixel spacing of a validated measurement, nm."""
    x = np.asarray(ds["x"].values, dtype=float)
    return float(x[1] - x[0])


# --------------------------------------------------------------------------------------------
# TOML (config.toml of a run)
# --------------------------------------------------------------------------------------------


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_key(key: str) -> str:
    """A bare key where TOML allows one, else a quoted key."""
    key = str(key)
    return key if key and all(c.isalnum() or c in "_-" for c in key) else _toml_value(key)


def _is_table_list(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(v, dict) for v in value)


def toml_dumps(data: dict, _prefix: str = "") -> str:
    """TOML text of a nested dict of numbers, strings, booleans, lists and dicts.

    Dicts become tables and lists of dicts arrays of tables; ``tomllib.loads`` inverts it.
    ``None`` values are left out.
    """
    lines = []
    for key, value in data.items():
        if value is None or isinstance(value, dict) or _is_table_list(value):
            continue
        lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in data.items():
        name = f"{_prefix}{_toml_key(key)}"
        if isinstance(value, dict):
            lines += ["", f"[{name}]", toml_dumps(value, name + ".")]
        elif _is_table_list(value):
            for item in value:
                lines += ["", f"[[{name}]]", toml_dumps(item, name + ".")]
    return "\n".join(line for line in lines).strip("\n") + ("\n" if not _prefix else "")
