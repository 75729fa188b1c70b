"""One measured spectrum (or a stack of them on one grid) and the geometry to invert it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from nvbayes.errors import MeasurementError
from nvbayes.physics.geometry import coarsen
from nvbayes.physics.noise_map import noise_map, sensor_noise_sigma
from nvbayes.physics.operators import check_inversion_operator, make_operator

#: Values of a measurement's ``spectrum_scale`` attribute.
SPECTRUM_SCALES = ("absolute", "arbitrary")


@dataclass(frozen=True)
class InverseProblem:
    """A spectrum ``(n_freq, n, n)`` with its readout frequencies and geometry.

    ``spacing`` and ``standoff`` in nm, ``freqs``, ``linewidth`` and ``band`` in GHz.  A
    spectrum ``(B, n_freq, n, n)`` holds B measurements taken with the same geometry
    (:meth:`from_measurement` of a data set with a ``sample`` axis); :meth:`instance` picks
    one.

    ``noise_sigma``, when known (the measurement's ``noise_sigma`` variable), is the sensor
    noise σ of one readout in spectrum units: a number, or ``(B,)`` for a stack.

    ``absolute``: whether the spectrum is in the operator's units (its scale means something,
    so a generative fit may fix the gain at 1) or in arbitrary units.  A measurement says so in
    its ``spectrum_scale`` attribute (``absolute`` or ``arbitrary``); without one, a file that
    records its ``noise_sigma`` (as ``nvbayes simulate`` writes) is absolute and any other is
    arbitrary.
    """

    spectrum: np.ndarray
    freqs: np.ndarray
    spacing: float
    standoff: float
    linewidth: float
    band: tuple[float, float]
    units: str = "normalized"
    noise_sigma: "np.ndarray | float | None" = None
    absolute: bool = True

    @classmethod
    def from_measurement(cls, ds: xr.Dataset) -> "InverseProblem":
        """From a validated measurement; a ``sample`` dimension becomes the batch axis."""
        x = np.asarray(ds["x"].values, dtype=float)
        band = np.asarray(ds.attrs["larmor_band_ghz"], dtype=float).reshape(-1)
        sigma = (np.asarray(ds["noise_sigma"].values, dtype=np.float64)
                 if "noise_sigma" in ds.data_vars else None)
        scale = str(ds.attrs.get("spectrum_scale", "absolute" if sigma is not None
                                 else "arbitrary"))
        if scale not in SPECTRUM_SCALES:
            raise MeasurementError(f"unknown spectrum_scale {scale!r}",
                                   f"set it to {' or '.join(SPECTRUM_SCALES)}")
        return cls(spectrum=np.asarray(ds["spectrum"].values, dtype=np.float64),
                   freqs=np.asarray(ds["freq"].values, dtype=np.float64),
                   spacing=float(x[1] - x[0]), standoff=float(ds.attrs["standoff_nm"]),
                   linewidth=float(ds.attrs["linewidth_ghz"]),
                   band=(float(band[0]), float(band[1])), units=str(ds.attrs["units"]),
                   noise_sigma=sigma, absolute=scale == "absolute")

    @property
    def n(self) -> int:
        return int(self.spectrum.shape[-1])

    @property
    def batch(self) -> "int | None":
        """The number of measurements stacked, ``None`` for a single spectrum."""
        return int(self.spectrum.shape[0]) if self.spectrum.ndim == 4 else None

    def instance(self, index: "int | slice") -> "InverseProblem":
        """Measurement ``index`` of a stack as a single problem, or a slice of the stack as a
        smaller stack (the spectrum and a per-measurement ``noise_sigma`` alike)."""
        if self.batch is None:
            raise ValueError("this problem holds a single spectrum")
        sigma = self.noise_sigma
        if sigma is not None and np.ndim(sigma):
            sigma = np.asarray(sigma)[index]
        return dataclasses.replace(self, spectrum=self.spectrum[index], noise_sigma=sigma)

    def sigma(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """σ of one readout, ``()`` or ``(B,)``: the measurement's own ``noise_sigma``, else
        estimated from the spectrum (:func:`~nvbayes.physics.noise_map.sensor_noise_sigma`)."""
        if self.noise_sigma is not None:
            return torch.as_tensor(np.asarray(self.noise_sigma, dtype=np.float64), dtype=dtype,
                                   device=device)
        return sensor_noise_sigma(self.observed(dtype=torch.float64)).to(dtype=dtype,
                                                                        device=device)

    def unit_scale(self) -> np.ndarray:
        """``c = max_r N_obs(r) / max_r N_unit(r)``, ``()`` or ``(B,)``: the observed noise-map
        peak in units of the peak of one unit source at the window centre (F2, band-centre
        ω_L).  ``S / c`` is the spectrum in units where a point source of weight 1 peaks at
        about 1, whatever unit ``S`` was written in (c scales with S)."""
        n = self.n
        unit = np.zeros((n, n))
        unit[n // 2, n // 2] = 1.0
        with torch.no_grad():
            rho = torch.from_numpy(unit)
            centre = torch.full_like(rho, 0.5 * (self.band[0] + self.band[1]))
            unit_peak = float(noise_map(self.operator("F2")(rho, centre)).max())
            peak = noise_map(self.observed(dtype=torch.float64)).amax(dim=(-2, -1))
        if not bool((peak > 0).all()):
            raise MeasurementError("the spectrum's noise map has no positive pixel",
                                   "check the measurement's baseline (noise spectra are >= 0)")
        return (peak / unit_peak).numpy()

    def rescaled(self, scale) -> "InverseProblem":
        """The same problem with the spectrum (and σ) divided by ``scale`` (one per
        measurement)."""
        scale = np.asarray(scale, dtype=np.float64)
        factor = scale.reshape(scale.shape + (1, 1, 1))
        sigma = None if self.noise_sigma is None else np.asarray(self.noise_sigma) / scale
        return dataclasses.replace(self, spectrum=self.spectrum / factor, noise_sigma=sigma)

    def observed(self, downsample: int = 1, dtype=torch.float32, device=None) -> torch.Tensor:
        """The spectrum, block-averaged by ``downsample``: ``(..., n_freq, n/d, n/d)``."""
        spectrum = torch.as_tensor(self.spectrum, dtype=dtype, device=device)
        return coarsen(spectrum, downsample)

    def operator(self, name: str, downsample: int = 1):
        """The operator ``name`` on the grid coarsened by ``downsample`` (spacing × d)."""
        name = check_inversion_operator(name)
        return make_operator(name, self.freqs, self.linewidth, self.spacing * downsample,
                             self.standoff, units=self.units)
