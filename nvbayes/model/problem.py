"""One measured spectrum (or a stack of them on one grid) and the geometry to invert it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from nvbayes.data.io import SPECTRUM_SCALES, check_nv_axis
from nvbayes.errors import MeasurementError
from nvbayes.physics.geometry import coarsen
from nvbayes.physics.noise_map import masked_max, noise_map, sensor_noise_sigma
from nvbayes.physics.operators import check_inversion_operator, make_operator


@dataclass(frozen=True)
class InverseProblem:
    """A spectrum ``(n_freq, ny, nx)`` with its readout frequencies and geometry.

    ``spacing`` and ``standoff`` in nm, ``freqs``, ``linewidth`` and ``band`` in GHz.  A
    spectrum ``(B, n_freq, ny, nx)`` holds B measurements taken with the same geometry
    (:meth:`from_measurement` of a data set with a ``sample`` axis); :meth:`instance` picks
    one.

    ``noise_sigma``, when known (the measurement's ``noise_sigma`` variable), is the sensor
    noise σ of one readout in spectrum units: a number, ``(B,)`` for a stack, or a map
    ``(ny, nx)`` for one measurement whose noise varies across the field of view.

    ``mask``, when given, is bool ``(ny, nx)``: true on the pixels whose data are used.  The
    spectrum of the other (dead or saturated) pixels is set to 0 here, at the boundary, so
    nothing downstream can read it; every likelihood and loss then leaves those pixels out.
    ``nv_axis`` is the NV quantization axis, a unit 3-vector (default z, the paper's).

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
    mask: "np.ndarray | None" = None
    nv_axis: tuple[float, float, float] = (0.0, 0.0, 1.0)

    def __post_init__(self):
        if self.mask is not None:
            mask = np.asarray(self.mask, dtype=bool)
            if mask.shape != self.shape:
                raise MeasurementError(f"mask of shape {mask.shape} does not match the "
                                       f"{self.shape[0]} x {self.shape[1]} grid",
                                       "give one mask value per pixel (y, x)")
            if not mask.any():
                raise MeasurementError("the mask leaves no pixel to fit",
                                       "mark the usable pixels true in the mask")
            if mask.all():
                mask = None
            else:
                self._set("spectrum", np.where(mask, self.spectrum, 0.0))
            self._set("mask", mask)
        self._set("nv_axis", tuple(float(v) for v in self.nv_axis))

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)

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
        spectrum = np.asarray(ds["spectrum"].values, dtype=np.float64)
        mask = np.asarray(ds["mask"].values) != 0 if "mask" in ds.data_vars else None
        axis = check_nv_axis(ds.attrs.get("nv_axis", (0.0, 0.0, 1.0)))
        return cls(spectrum=spectrum,
                   freqs=np.asarray(ds["freq"].values, dtype=np.float64),
                   spacing=float(x[1] - x[0]), standoff=float(ds.attrs["standoff_nm"]),
                   linewidth=float(ds.attrs["linewidth_ghz"]),
                   band=(float(band[0]), float(band[1])), units=str(ds.attrs["units"]),
                   noise_sigma=sigma, absolute=scale == "absolute", mask=mask,
                   nv_axis=tuple(axis))

    @property
    def shape(self) -> tuple[int, int]:
        """The grid ``(ny, nx)``."""
        return (int(self.spectrum.shape[-2]), int(self.spectrum.shape[-1]))

    @property
    def n(self) -> int:
        """The side of a square grid (the centre-collapse studies work on square windows)."""
        ny, nx = self.shape
        if ny != nx:
            raise MeasurementError(f"this step needs a square grid, the measurement is "
                                   f"{ny} x {nx}", "crop the measurement to a square window")
        return ny

    @property
    def sigma_map(self) -> bool:
        """Whether the recorded σ is a per-pixel map."""
        return self.noise_sigma is not None and np.ndim(self.noise_sigma) >= 2

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
        if sigma is not None and np.ndim(sigma) == 1:
            sigma = np.asarray(sigma)[index]
        return dataclasses.replace(self, spectrum=self.spectrum[index], noise_sigma=sigma)

    def sigma(self, dtype=torch.float64, device=None, downsample: int = 1) -> torch.Tensor:
        """σ of one readout on the grid block-averaged by ``downsample``: the measurement's
        own ``noise_sigma``, else estimated from the used pixels of the spectrum
        (:func:`~nvbayes.physics.noise_map.sensor_noise_sigma`).

        ``()`` or ``(B,)``, divided by ``downsample`` (a block mean of d² readouts); a map
        ``(ny/d, nx/d)`` where the σ is a map or a mask leaves blocks partly empty:
        ``√(Σ_block m σ²) / Σ_block m``, the σ of a masked block mean.
        """
        if self.noise_sigma is not None:
            sigma = torch.as_tensor(np.asarray(self.noise_sigma, dtype=np.float64))
        else:
            sigma = sensor_noise_sigma(self.observed(dtype=torch.float64),
                                       self.pixel_mask(), torch.tensor(self.freqs))
        if not self.sigma_map and (self.mask is None or downsample == 1):
            return (sigma / downsample).to(dtype=dtype, device=device)
        used = self.pixel_mask() if self.mask is not None else torch.ones(self.shape,
                                                                          dtype=torch.bool)
        variance = (sigma * sigma if self.sigma_map
                    else (sigma * sigma)[..., None, None].expand(*sigma.shape, *self.shape))
        count = coarsen(used.to(torch.float64), downsample) * downsample ** 2
        total = coarsen(variance * used, downsample) * downsample ** 2
        fallback = total.sum((-2, -1), keepdim=True) / count.sum((-2, -1), keepdim=True)
        coarse = torch.where(count > 0, total.sqrt() / count.clamp(min=1.0),
                             fallback.sqrt() / downsample)
        return coarse.to(dtype=dtype, device=device)

    def pixel_mask(self, downsample: int = 1, device=None) -> "torch.Tensor | None":
        """The used pixels ``(ny/d, nx/d)`` as bool (a block counts if any of its pixels is
        used); ``None`` where every pixel is."""
        if self.mask is None:
            return None
        used = coarsen(torch.as_tensor(self.mask, dtype=torch.float64), downsample) > 0
        return used.to(device=device)

    def unit_scale(self) -> np.ndarray:
        """``c = max_r N_obs(r) / max_r N_unit(r)``, ``()`` or ``(B,)``: the observed noise-map
        peak in units of the peak of one unit source at the window centre (F2, band-centre
        ω_L).  ``S / c`` is the spectrum in units where a point source of weight 1 peaks at
        about 1, whatever unit ``S`` was written in (c scales with S)."""
        ny, nx = self.shape
        unit = np.zeros((ny, nx))
        unit[ny // 2, nx // 2] = 1.0
        with torch.no_grad():
            rho = torch.from_numpy(unit)
            centre = torch.full_like(rho, 0.5 * (self.band[0] + self.band[1]))
            unit_peak = float(noise_map(self.operator("F2")(rho, centre)).max())
            peak = masked_max(noise_map(self.observed(dtype=torch.float64)),
                              self.pixel_mask())
        if not bool((peak > 0).all()):
            raise MeasurementError("the spectrum's noise map has no positive pixel",
                                   "check the measurement's baseline (noise spectra are >= 0)")
        return (peak / unit_peak).numpy()

    def rescaled(self, scale) -> "InverseProblem":
        """The same problem with the spectrum (and σ) divided by ``scale`` (one per
        measurement)."""
        scale = np.asarray(scale, dtype=np.float64)
        factor = scale.reshape(scale.shape + (1, 1, 1))
        sigma = None
        if self.noise_sigma is not None:
            sigma = np.asarray(self.noise_sigma) / (scale if not self.sigma_map
                                                    else scale.reshape(scale.shape + (1, 1)))
        return dataclasses.replace(self, spectrum=self.spectrum / factor, noise_sigma=sigma)

    def observed(self, downsample: int = 1, dtype=torch.float32, device=None) -> torch.Tensor:
        """The spectrum, block-averaged by ``downsample``: ``(..., n_freq, ny/d, nx/d)``; a
        block's mean runs over its used pixels, and a block with none reads 0."""
        spectrum = torch.as_tensor(self.spectrum, dtype=dtype, device=device)
        if self.mask is None or downsample == 1:
            return coarsen(spectrum, downsample)
        used = torch.as_tensor(self.mask, dtype=dtype, device=device)
        count = coarsen(used, downsample).clamp(min=1.0 / downsample ** 2)
        return coarsen(spectrum, downsample) / count

    def operator(self, name: str, downsample: int = 1):
        """The operator ``name`` on the grid coarsened by ``downsample`` (spacing × d)."""
        name = check_inversion_operator(name)
        return make_operator(name, self.freqs, self.linewidth, self.spacing * downsample,
                             self.standoff, units=self.units, nv_axis=self.nv_axis)
