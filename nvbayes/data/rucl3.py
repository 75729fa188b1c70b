"""Per-NV relaxometry data (``nvbayes.rucl3/1``): CSV or netCDF, validation, synthetic sets.

One row (or one ``nv`` entry) per NV centre:

========================  =====  ==========================================================
column / variable         unit   meaning
========================  =====  ==========================================================
``nv``                           label, e.g. ``NV4`` (unique)
``field_gauss``           G      axial field of the measurement (sets the NV frequency)
``gamma_flake``, ``_err`` s⁻¹    relaxation rate with the flake, and its 1σ uncertainty
``gamma_bare``, ``_err``  s⁻¹    rate without the flake (the internal rate Γ_int)
``gamma_ru``, ``_err``    s⁻¹    the flake's added rate Γ_Ru = Γ_flake − Γ_bare
``depth_nm``              nm     optional independent depth estimate (used by the landscape)
``depth_true_nm``         nm     optional true depth (synthetic sets only)
========================  =====  ==========================================================

Give either ``gamma_ru`` or both ``gamma_flake`` and ``gamma_bare`` (each with its ``_err``);
``gamma_ru`` is then derived with ``σ_Ru² = σ_flake² + σ_bare²``.

The field-dependent set of step 3 (``nvbayes.rucl3-spectral/1``) has the same columns, one row
per *measurement* of a single NV (label column ``measurement``, at least three rows at two or
more fields); its optional attribute ``nv`` names the NV.  In a CSV file, lines that
start with ``#`` carry the attributes as ``# key: value``; ``# synthetic: true`` marks a set
generated from the model, which every command then labels as synthetic.
"""

from __future__ import annotations

import csv
import io as _io
import math
import os
from pathlib import Path

import numpy as np
import xarray as xr

from nvbayes.errors import NvbayesError

from .io import atomic_path, load_netcdf, write_netcdf
from .spec import models_dir

SCHEMA = "nvbayes.rucl3/1"
SPECTRAL_SCHEMA = "nvbayes.rucl3-spectral/1"
#: The two layouts: label column -> (schema, fewest rows, what a row is).
LAYOUTS = {"nv": (SCHEMA, 2, "NV"), "measurement": (SPECTRAL_SCHEMA, 3, "measurement")}
RATES = ("gamma_flake", "gamma_bare", "gamma_ru")
COLUMNS = ("nv", "field_gauss", "gamma_flake", "gamma_flake_err", "gamma_bare",
           "gamma_bare_err", "gamma_ru", "gamma_ru_err", "depth_nm", "depth_true_nm")
UNITS = {"field_gauss": "G", "depth_nm": "nm", "depth_true_nm": "nm"} | {
    f"{r}{s}": "s-1" for r in RATES for s in ("", "_err")}
LONG_NAMES = {
    "field_gauss": "axial magnetic field", "gamma_flake": "relaxation rate with flake",
    "gamma_bare": "relaxation rate without flake (internal rate)",
    "gamma_ru": "rate added by the flake, Gamma_Ru", "depth_nm": "independent depth estimate",
    "depth_true_nm": "true NV depth (synthetic)"}
SYNTHETIC_NOTE = "SYNTHETIC: generated from the nvbayes model, not a measurement"


class NVDataError(NvbayesError):
    """A per-NV data file that does not follow ``nvbayes.rucl3/1``."""


def is_synthetic(data: xr.Dataset) -> bool:
    return bool(int(data.attrs.get("synthetic", 0)))


def describe(data: xr.Dataset) -> str:
    """One line naming the data set, with the synthetic label where it applies."""
    name = data.attrs.get("source", "per-NV data")
    tag = f" [{SYNTHETIC_NOTE}]" if is_synthetic(data) else ""
    if "measurement" in data.dims:
        fields = ", ".join(f"{b:g}" for b in data["field_gauss"].values)
        return f"{name}: {data.sizes['measurement']} rates at {fields} G{tag}"
    return f"{name}: {data.sizes['nv']} NVs{tag}"


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _fail(source: str, problem: str, hint: str):
    raise NVDataError(f"{source}: {problem}", hint)


def validate_nv_data(data: xr.Dataset, source: str = "per-NV data",
                     label: str = "nv") -> xr.Dataset:
    """Check a per-NV (``label="nv"``) or step-3 (``label="measurement"``) dataset and
    complete ``gamma_ru`` from the flake and bare rates."""
    schema, fewest, row = LAYOUTS[label]
    if label not in data.dims:
        _fail(source, f"has no '{label}' dimension",
              f"give one row per {row} with a '{label}' label")
    labels = [str(v) for v in data[label].values]
    if len(labels) < fewest:
        _fail(source, f"has {len(labels)} {row}(s)", f"give at least {fewest}")
    if len(set(labels)) != len(labels) or any(not v.strip() for v in labels):
        _fail(source, f"{row} labels are empty or repeated", f"give each {row} a unique label")
    if label == "measurement" and "field_gauss" in data and len(
            set(np.asarray(data["field_gauss"].values, dtype=float).tolist())) < 2:
        _fail(source, "all measurements are at one field",
              "step 3 needs rates at two or more fields")
    unknown = sorted(set(data.data_vars) - set(COLUMNS))
    if unknown:
        _fail(source, f"unknown column(s) {', '.join(unknown)}",
              f"use only {', '.join(COLUMNS)}")
    if "field_gauss" not in data:
        _fail(source, "has no field_gauss", "give the axial field of each NV in gauss")
    for name in data.data_vars:
        values = np.asarray(data[name].values, dtype=float)
        bad = [labels[i] for i in np.flatnonzero(~np.isfinite(values))]
        if bad:
            _fail(source, f"{name} is missing or not finite for {', '.join(bad)}",
                  "give a number for every NV")
        positive = name != "field_gauss"
        bad = [labels[i] for i in np.flatnonzero(values <= 0 if positive else values < 0)]
        if bad:
            _fail(source, f"{name} must be {'positive' if positive else '>= 0'} "
                          f"(NV {', '.join(bad)})", "check the units and signs")
    if float(data["field_gauss"].max()) >= 1000:
        _fail(source, "field_gauss must stay below 1000 G", "give the axial field in gauss")
    for rate in RATES:
        if (rate in data) != (f"{rate}_err" in data):
            _fail(source, f"{rate} needs {rate}_err (and the reverse)",
                  "give each rate with its 1-sigma uncertainty")
    pair = "gamma_flake" in data and "gamma_bare" in data
    if "gamma_flake" in data and "gamma_bare" not in data:
        _fail(source, "gamma_flake without gamma_bare", "add gamma_bare, or give gamma_ru")
    data = data.copy()
    if pair:
        difference = data["gamma_flake"] - data["gamma_bare"]
        bad = [labels[i] for i in np.flatnonzero(difference.values <= 0)]
        if bad:
            _fail(source, f"gamma_flake <= gamma_bare for {', '.join(bad)}",
                  "the flake must add a positive rate; check the columns")
        err = np.hypot(data["gamma_flake_err"], data["gamma_bare_err"])
        if "gamma_ru" in data:
            if not np.allclose(data["gamma_ru"], difference, rtol=1e-6, atol=0):
                _fail(source, "gamma_ru differs from gamma_flake - gamma_bare",
                      "give gamma_ru or the two rates, not inconsistent both")
        else:
            data["gamma_ru"] = difference
            data["gamma_ru_err"] = err
    elif "gamma_ru" not in data:
        _fail(source, "has no gamma_ru and no gamma_flake/gamma_bare pair",
              "give the flake's rate Γ_Ru, or the rates with and without the flake")
    for name in data.data_vars:
        data[name].attrs.update(units=UNITS[name], long_name=LONG_NAMES.get(name, name))
    data.attrs["schema"] = schema
    data.attrs["synthetic"] = int(is_synthetic(data))
    return data


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _parse_bool(text: str) -> int:
    return int(str(text).strip().lower() in ("1", "true", "yes"))


def _read_csv(path: Path, label: str) -> xr.Dataset:
    attrs, rows = {}, []
    lines = path.read_text().splitlines()
    body = []
    for line in lines:
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if sep:
                attrs[key.strip()] = value.strip()
        elif line.strip():
            body.append(line)
    reader = csv.DictReader(_io.StringIO("\n".join(body)))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if label not in header:
        _fail(str(path), f"has no '{label}' column",
              f"start the header with {label}, {', '.join(COLUMNS[1:3])}")
    for row in reader:
        rows.append({k.strip(): (v or "").strip() for k, v in row.items() if k is not None})
    data_vars = {}
    for name in header:
        if name == label:
            continue
        values = []
        for row in rows:
            try:
                values.append(float(row[name]) if row[name] != "" else math.nan)
            except ValueError:
                _fail(str(path), f"{name} = {row[name]!r} for {row[label]} is not a number",
                      "give plain numbers")
        data_vars[name] = (label, np.asarray(values, dtype=float))
    attrs["synthetic"] = _parse_bool(attrs.get("synthetic", "0"))
    for key in ("true_log10_amplitude", "true_sigma_g_nm", "true_tau_c_ns"):
        if key in attrs:
            try:
                attrs[key] = float(attrs[key])
            except ValueError:
                _fail(str(path), f"# {key}: {attrs[key]!r} is not a number", "fix the header")
    return xr.Dataset(data_vars, coords={label: [r[label] for r in rows]}, attrs=attrs)


def read_nv_data(path: "str | os.PathLike", label: str = "nv") -> xr.Dataset:
    """Read and validate a ``.csv`` or ``.nc`` per-NV (or, ``label="measurement"``, step-3)
    file."""
    path = Path(path)
    schema = LAYOUTS[label][0]
    if not path.is_file():
        raise NVDataError(f"no such file: {path}", "check the path to the data")
    if path.suffix.lower() == ".csv":
        data = _read_csv(path, label)
    elif path.suffix.lower() == ".nc":
        data = load_netcdf(path, NVDataError, "per-NV data", "'nvbayes rucl3 simulate'")
        if data.attrs.get("schema") != schema:
            _fail(str(path), f"schema is {data.attrs.get('schema')!r}, not {schema!r}",
                  "pass a file of that schema (see 'nvbayes rucl3 --help')")
        if label in data.coords:
            data[label] = [str(v) for v in data[label].values]
    else:
        raise NVDataError(f"{path}: unknown file type {path.suffix!r}", "use .csv or .nc")
    data.attrs.setdefault("source", path.name)
    return validate_nv_data(data, str(path), label)


def _csv_text(data: xr.Dataset) -> str:
    out = _io.StringIO()
    label = "measurement" if "measurement" in data.dims else "nv"
    for key in ("schema", "synthetic", "source", "nv", "convention", "true_operator",
                "true_log10_amplitude", "true_sigma_g_nm", "true_tau_c_ns", "description"):
        if key in data.attrs:
            value = data.attrs[key]
            if key == "synthetic":
                value = "true" if is_synthetic(data) else "false"
            out.write(f"# {key}: {value}\n")
    out.write("# units: rates in s-1, field in gauss, depths in nm\n")
    names = [c for c in COLUMNS[1:] if c in data]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([label, *names])
    for i, value in enumerate(data[label].values):
        writer.writerow([str(value), *(repr(float(data[n].values[i])) for n in names)])
    return out.getvalue()


def write_nv_data(data: xr.Dataset, path: "str | os.PathLike") -> Path:
    """Write a per-NV set to ``.csv`` or ``.nc`` atomically."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        text = _csv_text(data)
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        return path
    if path.suffix.lower() == ".nc":
        return write_netcdf(data, path)
    raise NVDataError(f"{path}: unknown file type {path.suffix!r}", "use .csv or .nc")


def shipped_synthetic_path(label: str = "nv") -> Path:
    name = "rucl3-synthetic.csv" if label == "nv" else "rucl3-spectral-synthetic.csv"
    return models_dir() / name


def load_nv_data(path: "str | os.PathLike | None", label: str = "nv") -> xr.Dataset:
    """The file at ``path``, or the shipped synthetic set of ``label``'s layout when None."""
    return read_nv_data(shipped_synthetic_path(label) if path is None else path, label)


__all__ = ["LAYOUTS", "SCHEMA", "SPECTRAL_SCHEMA", "SYNTHETIC_NOTE", "NVDataError", "describe",
           "is_synthetic", "load_nv_data", "read_nv_data", "shipped_synthetic_path",
           "validate_nv_data", "write_nv_data"]
