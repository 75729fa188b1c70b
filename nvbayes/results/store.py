"""The one resumable cell store of every sweep (benchmark, ablation, calibration), and the
guards every workflow puts on its output folder.

A sweep folder holds its settings file and ``cells/KEY.nc``, one netCDF file per finished
cell, each written atomically as soon as its fit ends: a sweep killed at any point keeps every
finished cell, and rerunning it computes only the cells without a file.  A cell whose ``error``
attribute is not empty failed, and is retried.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import xarray as xr

from nvbayes.data.io import write_netcdf
from nvbayes.errors import NvbayesError

CELLS = "cells"


class CellStore:
    """The ``cells/`` folder of a sweep: datasets by key.

    >>> store = CellStore("runs/bench")                     # doctest: +SKIP
    >>> store.write("netmy-F2-s0003-seed1", ds)             # doctest: +SKIP
    >>> store.done("netmy-F2-s0003-seed1")                  # doctest: +SKIP
    True
    """

    def __init__(self, folder: "str | Path"):
        self.folder = Path(folder) / CELLS

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.nc"

    def has(self, key: str) -> bool:
        """True when the cell has a file (finished, or failed with its error)."""
        return self.path(key).is_file()

    def done(self, key: str) -> bool:
        """True when the cell has a file without an error (only its attributes are read)."""
        if not self.has(key):
            return False
        with xr.open_dataset(self.path(key), engine="netcdf4") as handle:
            return not handle.attrs.get("error", "")

    def write(self, key: str, ds: xr.Dataset) -> Path:
        return write_netcdf(ds, self.path(key))

    def read(self, key: str) -> "xr.Dataset | None":
        """The cell's dataset, loaded, or ``None`` when it has no file."""
        path = self.path(key)
        if not path.is_file():
            return None
        with xr.open_dataset(path, engine="netcdf4") as handle:
            return handle.load()


def replaceable_folder(out: "str | Path", marker: str, kind: str = "output") -> Path:
    """``out`` if it is absent or an earlier ``kind`` folder (one holding ``marker``), which a
    new result replaces; anything else is refused."""
    out = Path(out)
    if out.exists() and not (out / marker).is_file():
        raise NvbayesError(f"{out} exists and is not {_article(kind)} {kind} folder "
                           f"(no {marker})",
                           f"choose another --out (only {_article(kind)} {kind} folder is "
                           "replaced)")
    return out


def stored_settings(folder: "str | Path", settings_file: str, kind: str) -> "dict | None":
    """The settings a resumable ``kind`` folder was started with (``None`` for a new or empty
    folder); a folder that exists with other content is refused."""
    folder = Path(folder)
    if (folder / settings_file).is_file():
        return tomllib.loads((folder / settings_file).read_text())
    if folder.exists() and any(folder.iterdir()):
        raise NvbayesError(f"{folder} exists and is not {_article(kind)} {kind} folder",
                           "choose another --out")
    return None


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


__all__ = ["CELLS", "CellStore", "replaceable_folder", "stored_settings"]
