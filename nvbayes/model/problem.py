"""One measured spectrum (or a stack of them on one grid) and the geometry to invert it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from ..physics.geometry import coarsen
from ..physics.operators import check_inversion_operator, make_operator


@dataclass(frozen=True)
class InverseProblem:
    """A spectrum ``(n_freq, n, n)`` with its readout frequencies and geometry.

    ``spacing`` and ``standoff`` in nm, ``freqs``, ``linewidth`` and ``band`` in GHz.  A
    spectrum ``(B, n_freq, n, n)`` holds B measurements taken with the same geometry
    (:meth:`from_measurement` of a data set with a ``sample`` axis); :meth:`instance` picks
    one.
    """

    spectrum: np.ndarray
    freqs: np.ndarray
    spacing: float
    standoff: float
    linewidth: float
    band: tuple[float, float]
    units: str = "normalized"

    @classmethod
    def from_measurement(cls, ds: xr.Dataset) -> "InverseProblem":
        """From a validated measurement; a ``sample`` dimension becomes the batch axis."""
        x = np.asarray(ds["x"].values, dtype=float)
        band = np.asarray(ds.attrs["larmor_band_ghz"], dtype=float).reshape(-1)
        return cls(spectrum=np.asarray(ds["spectrum"].values, dtype=np.float64),
                   freqs=np.asarray(ds["freq"].values, dtype=np.float64),
                   spacing=float(x[1] - x[0]), standoff=float(ds.attrs["standoff_nm"]),
                   linewidth=float(ds.attrs["linewidth_ghz"]),
                   band=(float(band[0]), float(band[1])), units=str(ds.attrs["units"]))

    @property
    def n(self) -> int:
        return int(self.spectrum.shape[-1])

    @property
    def batch(self) -> "int | None":
        """The number of measurements stacked, ``None`` for a single spectrum."""
        return int(self.spectrum.shape[0]) if self.spectrum.ndim == 4 else None

    def instance(self, index: int) -> "InverseProblem":
        """Measurement ``index`` of a stack, as a single problem."""
        if self.batch is None:
            raise ValueError("this problem holds a single spectrum")
        return dataclasses.replace(self, spectrum=self.spectrum[index])

    def observed(self, downsample: int = 1, dtype=torch.float32, device=None) -> torch.Tensor:
        """The spectrum, block-averaged by ``downsample``: ``(..., n_freq, n/d, n/d)``."""
        spectrum = torch.as_tensor(self.spectrum, dtype=dtype, device=device)
        return coarsen(spectrum, downsample)

    def operator(self, name: str, downsample: int = 1):
        """The operator ``name`` on the grid coarsened by ``downsample`` (spacing × d)."""
        name = check_inversion_operator(name)
        return make_operator(name, self.freqs, self.linewidth, self.spacing * downsample,
                             self.standoff, units=self.units)
