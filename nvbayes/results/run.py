"""The one result type of every fit, imaging or α-RuCl3: :class:`Run`, and its folder.

On disk a run is a folder (docs/architecture.md, "Files")::

    posterior.nc     InferenceData groups.  Imaging: posterior (rho, larmor with chain, draw,
                     y, x), posterior_predictive (spectrum), sample_stats, observed_data
                     (spectrum), constant_data (rho_true, larmor_true when known).  α-RuCl3:
                     posterior (log10_amplitude, sigma_g, depth, rate_ru), observed_data
                     (log_rate_ru), constant_data
    config.toml      resolved specification, method, operator, seed, versions, wall time
    history.nc       loss terms per optimization step (optimizing fits)
    metrics.nc       scalar metrics against the truth (when the measurement holds it)
    NAME.nc          further tables of the fit: residuals.nc (imaging: the residuals'
                     statistics and findings, nvbayes.results.residuals), hessian.nc (imaging
                     Laplace), laplace.nc (α-RuCl3 Laplace)
    summary.csv      ArviZ's summary of the posterior (α-RuCl3)
    *.png            the figures the workflow passes to :meth:`Run.save`

The folder is assembled under a temporary name and renamed into place, so an interrupted save
leaves the previous run (or none), never a partial one.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyro
import torch
import xarray as xr

from nvbayes import __version__
from nvbayes.data.io import SPATIAL, toml_dumps, write_folder
from nvbayes.errors import NvbayesError
from nvbayes.inference.pixel_posterior import sampled_transfer

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

RUN_SCHEMA = "nvbayes.run/1"
POSTERIOR, HISTORY, METRICS, CONFIG = "posterior.nc", "history.nc", "metrics.nc", "config.toml"
SUMMARY = "summary.csv"
#: Resolution of every PNG figure nvbayes writes.
FIGURE_DPI = 110
SCALE_NOTE = ("rho is scaled by the energy-ratio correction (sample_stats.scale_correction: "
              "E_obs/E_pred under F2, its square root under F1); the max-normalized "
              "likelihood does not determine the scale")


GENERATIVE_SCALE_NOTE = ("rho as sampled under the generative likelihood: in the "
                         "spectrum's units where the gain is fixed, with the gain "
                         "(posterior.gain) latent otherwise; no energy-ratio correction")


def versions() -> dict:
    return {"nvbayes": __version__, "torch": torch.__version__, "pyro": pyro.__version__,
            "arviz": az.__version__, "xarray": xr.__version__,
            "python": platform.python_version()}


def _off_support_note(config: dict) -> str:
    field = config["model"].get("field", {})
    fill = "the band centre" if field.get("off_support") == "centre" else "0"
    return (f"{fill} where rho <= {field.get('support_threshold', 0.3)} max rho (the predicted "
            "support mask); not a measured value there")


def _point(values: np.ndarray, dims: tuple, coords: dict, attrs: dict) -> xr.DataArray:
    """A point estimate as a ``(chain=1, draw=1, ...)`` DataArray."""
    return xr.DataArray(np.asarray(values)[None, None], dims=("chain", "draw") + dims,
                        coords={"chain": [0], "draw": [0]} | coords, attrs=attrs)


def _attr(value):
    """A netCDF attribute: numbers as float64 (inf and nan included), text as is."""
    return value if isinstance(value, str) else np.float64(value)


@dataclass
class Run:
    """Everything one fit produced; see the module docstring.

    ``tables`` holds the fit's further datasets by file stem (``residuals``: the imaging
    fit's residual statistics and findings; ``hessian``: the imaging Laplace
    eigen-spectrum; ``laplace``: the α-RuCl3 Laplace mode and Hessian); ``summary`` is
    ArviZ's posterior summary where the workflow made one.

    >>> run = Run.load("runs/scene-netmy-fast")        # doctest: +SKIP
    >>> run.rho.plot()                                  # doctest: +SKIP
    """

    idata: az.InferenceData
    config: dict
    history: "xr.Dataset | None" = None
    metrics: "xr.Dataset | None" = None
    messages: list = field(default_factory=list)
    path: "Path | None" = None
    tables: dict = field(default_factory=dict)
    summary: "pd.DataFrame | None" = None
    frames: dict = field(default_factory=dict)        # stem → DataFrame, saved as stem.csv

    @property
    def method(self) -> str:
        return self.config["run"]["method"]

    @property
    def notes(self) -> list[str]:
        """The findings on the fit's residuals (``residuals.nc``), one line each; none where
        the residuals look like noise or were not computed."""
        table = self.tables.get("residuals")
        return [] if table is None else str(table.attrs.get("findings", "")).splitlines()

    @property
    def hessian(self) -> "xr.Dataset | None":
        """The imaging Laplace fit's Hessian eigen-spectrum (``hessian.nc``)."""
        return self.tables.get("hessian")

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def from_point_estimate(cls, measurement: xr.Dataset, rho: np.ndarray, larmor: np.ndarray,
                            predicted: np.ndarray, stats: dict, history: dict,
                            config: dict, messages=()) -> "Run":
        """A MAP run: one chain, one draw.  ``measurement`` holds one sample."""
        spec_coords = {"freq": measurement["freq"]} | {c: measurement[c] for c in SPATIAL}
        operator = config["run"]["operator"]
        spectrum = _point(predicted, ("freq",) + SPATIAL, spec_coords,
                          {"long_name": f"spectrum predicted by {operator}",
                           "units": measurement["spectrum"].attrs.get("units", "")})
        return cls._assemble(measurement, np.asarray(rho)[None, None],
                             np.asarray(larmor)[None, None], {"spectrum": spectrum},
                             {k: np.full((1, 1), np.float64(v)) for k, v in stats.items()},
                             {}, history, config, messages)

    @classmethod
    def from_draws(cls, measurement: xr.Dataset, draws, config: dict) -> "Run":
        """A sampling run (SVI, Laplace, NUTS) from a
        :class:`~nvbayes.inference.draws.PosteriorDraws`: ``chain, draw`` as drawn, the
        predicted noise map of every draw as the posterior predictive."""
        space = {c: measurement[c] for c in SPATIAL}
        nmap = xr.DataArray(draws.noise_map, dims=("chain", "draw") + SPATIAL, coords=space,
                            attrs={"long_name": "noise map N = sum over readouts of the "
                                   "predicted spectrum, per draw",
                                   "units": measurement["spectrum"].attrs.get("units", "")})
        shape = draws.rho.shape[:2]
        stats = {k: np.broadcast_to(np.asarray(v), shape) for k, v in draws.draw_stats.items()}
        return cls._assemble(measurement, draws.rho, draws.larmor, {"noise_map": nmap}, stats,
                             draws.stats, draws.history, config, draws.messages)

    @classmethod
    def _assemble(cls, measurement, rho, larmor, predictive: dict, draw_stats: dict,
                  fit_stats: dict, history: dict, config: dict, messages) -> "Run":
        space = {c: measurement[c] for c in SPATIAL}
        chain_draw = {"chain": np.arange(rho.shape[0]), "draw": np.arange(rho.shape[1])}
        dims = ("chain", "draw") + SPATIAL
        operator = config["run"]["operator"]
        posterior = xr.Dataset({
            "rho": xr.DataArray(rho, dims=dims, coords=chain_draw | space, attrs={
                "long_name": "source weight per pixel (scale-corrected)",
                "units": "fluctuators per pixel"}),
            "larmor": xr.DataArray(larmor, dims=dims, coords=chain_draw | space, attrs={
                "long_name": "Larmor frequency", "units": "GHz",
                "off_support": _off_support_note(config)}),
        }, attrs={"inference": config["run"]["method"], "operator": operator,
                  "model": config["model"]["name"],
                  "scale_corrected": int("scale_correction" in draw_stats),
                  "scale_note": SCALE_NOTE if "scale_correction" in draw_stats
                  else GENERATIVE_SCALE_NOTE})
        if "gain" in draw_stats:
            posterior["gain"] = xr.DataArray(np.asarray(draw_stats["gain"]),
                                             dims=("chain", "draw"), coords=chain_draw,
                                             attrs={"long_name": "gain between the model's "
                                                    "spectrum and the measured one"})
        predictive = xr.Dataset({k: v.assign_coords(chain_draw) for k, v in predictive.items()})
        sample_stats = xr.Dataset(
            {k: xr.DataArray(np.asarray(v), dims=("chain", "draw"), coords=chain_draw)
             for k, v in draw_stats.items() if k != "gain"},
            attrs={k: _attr(v) for k, v in fit_stats.items()})
        observed = xr.Dataset({k: measurement[k].reset_coords(drop=True)
                               for k in ("spectrum", "mask", "noise_sigma")
                               if k in measurement and (k != "noise_sigma"
                                                        or measurement[k].ndim == 2)},
                              attrs=dict(measurement.attrs))
        constant = xr.Dataset({k: measurement[k].reset_coords(drop=True)
                               for k in ("rho_true", "larmor_true") if k in measurement})
        for name in ("scene_class", "seed"):
            if name in measurement.coords:
                constant.attrs[name] = measurement[name].values.item()
        groups = {"posterior": posterior, "posterior_predictive": predictive,
                  "sample_stats": sample_stats, "observed_data": observed}
        if constant.data_vars:
            groups["constant_data"] = constant
        idata = az.InferenceData(**groups)
        hist = xr.Dataset({k: ("step", np.asarray(v)) for k, v in history.items()},
                          attrs={"description": "weighted loss terms of the negative log joint "
                                                "per optimization step (0: not in the stage)"})
        if history:
            hist = hist.assign_coords(step=np.arange(len(next(iter(history.values())))))
        return cls(idata=idata, history=hist, config=config, messages=list(messages))

    # ---- views -----------------------------------------------------------------------------

    @property
    def rho(self) -> xr.DataArray:
        """Posterior mean of ρ ``(y, x)`` (the MAP itself for a MAP run)."""
        return self.idata.posterior["rho"].mean(("chain", "draw"))

    @property
    def larmor(self) -> xr.DataArray:
        return self.idata.posterior["larmor"].mean(("chain", "draw"))

    @property
    def predicted(self) -> "xr.DataArray | None":
        """The predicted spectrum of a MAP run (``None`` for a sampling run, which keeps the
        predicted noise map of every draw instead)."""
        predictive = self.idata.posterior_predictive
        if "spectrum" not in predictive:
            return None
        return predictive["spectrum"].mean(("chain", "draw"))

    @property
    def predicted_noise_map(self) -> xr.DataArray:
        """The posterior mean of the predicted noise map ``N = Σ_ω S`` ``(y, x)``."""
        predictive = self.idata.posterior_predictive
        if "noise_map" in predictive:
            return predictive["noise_map"].mean(("chain", "draw"))
        return predictive["spectrum"].mean(("chain", "draw")).sum("freq")

    @property
    def diverged(self) -> bool:
        """Whether the fit's optimization diverged (and kept its last finite state)."""
        stats = self.idata.sample_stats
        if "diverged" in stats:
            return bool(stats["diverged"].values.any())
        return bool(stats.attrs.get("diverged", 0))

    @property
    def draws(self) -> int:
        """Number of posterior draws (chains × draws); 1 for a MAP run."""
        post = self.idata.posterior
        return int(post.sizes["chain"] * post.sizes["draw"])

    @property
    def observed(self) -> xr.DataArray:
        return self.idata.observed_data["spectrum"]

    @property
    def truth(self) -> "xr.Dataset | None":
        return self.idata.constant_data if "constant_data" in self.idata.groups() else None

    # ---- files -----------------------------------------------------------------------------

    def save(self, folder: "str | os.PathLike", figures: "dict | None" = None) -> Path:
        """Write the run folder atomically, with ``figures`` (file name → matplotlib
        ``Figure``) beside the data files; returns its path."""
        def fill(tmp: Path) -> None:
            self.idata.to_netcdf(str(tmp / POSTERIOR))
            (tmp / CONFIG).write_text(toml_dumps(self.config))
            named = {HISTORY: self.history, METRICS: self.metrics} | {
                f"{stem}.nc": table for stem, table in self.tables.items()}
            for name, table in named.items():
                if table is not None:
                    table.to_netcdf(tmp / name, engine="netcdf4")
            if self.summary is not None:
                self.summary.to_csv(tmp / SUMMARY)
            for stem, frame in self.frames.items():
                frame.to_csv(tmp / f"{stem}.csv", index=False)
            for name, figure in (figures or {}).items():
                figure.savefig(tmp / name, dpi=FIGURE_DPI)

        target = write_folder(folder, fill)
        self.path = target
        return target

    @classmethod
    def load(cls, folder: "str | os.PathLike") -> "Run":
        folder = Path(folder)
        if not (folder / POSTERIOR).is_file() or not (folder / CONFIG).is_file():
            raise NvbayesError(f"{folder} is not a run folder (no {POSTERIOR} or {CONFIG})",
                               "pass a folder written by 'nvbayes fit'")
        idata = az.from_netcdf(str(folder / POSTERIOR))
        tables = {}
        for path in sorted(folder.glob("*.nc")):
            if path.name != POSTERIOR:
                with xr.open_dataset(path, engine="netcdf4") as handle:
                    tables[path.stem] = handle.load()
        summary = (pd.read_csv(folder / SUMMARY, index_col=0)
                   if (folder / SUMMARY).is_file() else None)
        frames = {path.stem: pd.read_csv(path) for path in sorted(folder.glob("*.csv"))
                  if path.name != SUMMARY}
        config = tomllib.loads((folder / CONFIG).read_text())
        return cls(idata=idata, config=config, history=tables.pop("history", None),
                   metrics=tables.pop("metrics", None), path=folder, tables=tables,
                   summary=summary, frames=frames)


def run_config(spec_dict: dict, *, method: str, operator: str, seed: int, device: str,
               wall_time_s: float, source: str, sample: "int | None",
               precision: str = "fp32", batch_size: int = 1) -> dict:
    """The ``config.toml`` content of a run.  ``wall_time_s`` of a batched fit is the batch's
    wall time divided by ``batch_size``."""
    return {
        "run": {"schema": RUN_SCHEMA, "method": method, "operator": operator, "seed": seed,
                "device": device, "precision": precision, "batch_size": int(batch_size),
                "wall_time_s": wall_time_s, "measurement": source,
                "sample": -1 if sample is None else int(sample),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
        "versions": versions(),
        "model": spec_dict,
    }


def decay_rate(spatial_frequency: np.ndarray, eigenvalue: np.ndarray, standoff: float,
               bins: int = 12) -> float:
    """``−d ln λ / d(k z0)``: the slope of a straight line through the median ln λ of the
    positive eigenvalues in equal-width bins of ``k z0`` (appendix C.1 predicts a positive
    slope: eigenvalues that fall exponentially with spatial frequency)."""
    keep = eigenvalue > 0
    kz = spatial_frequency[keep] * standoff
    logs = np.log(eigenvalue[keep])
    edges = np.linspace(kz.min(), kz.max(), bins + 1)
    index = np.clip(np.digitize(kz, edges) - 1, 0, bins - 1)
    centres, medians = [], []
    for b in range(bins):
        if np.any(index == b):
            centres.append(0.5 * (edges[b] + edges[b + 1]))
            medians.append(np.median(logs[index == b]))
    return float(-np.polyfit(centres, medians, 1)[0])


#: Offsets per side and samples per standoff of the continuum transfer function.
CONTINUUM_SIDE, CONTINUUM_SAMPLING = 160, 8


def hessian_dataset(result, measurement: xr.Dataset) -> xr.Dataset:
    """The Laplace Hessian's eigen-spectrum (``hessian.nc``): one row per eigenmode."""
    eigenvalue = np.asarray(result.extra["eigenvalue"])
    k = np.asarray(result.extra["spatial_frequency"])
    standoff = float(measurement.attrs["standoff_nm"])
    x = measurement["x"].values
    spacing = float(x[1] - x[0])
    k_axis = np.linspace(0.0, np.pi / spacing, 64)
    return xr.Dataset(
        {"eigenvalue": ("mode", eigenvalue, {
            "long_name": "eigenvalue of the Hessian of the negative log posterior with "
                         "respect to the pixel density, at the MAP",
            "units": "(fluctuators per pixel)^-2"}),
         "spatial_frequency": ("mode", k, {
             "long_name": "power-weighted mean |k| of the eigenvector", "units": "rad/nm"}),
         "sampled_transfer": ("k_axis", sampled_transfer(len(x), spacing, standoff, k_axis), {
             "long_name": "|P_d(k)|^2 / |P_d(0)|^2 of the power kernel sampled on the "
                          "pixel offsets, k along x"}),
         "continuum_transfer": ("k_axis", sampled_transfer(
             CONTINUUM_SIDE, standoff / CONTINUUM_SAMPLING, standoff, k_axis), {
             "long_name": "the same for the continuum kernel (sampled at z0/8 over 20 z0): "
                          "appendix C.1's envelope, exp(-2 k z0) times algebraic factors"})},
        coords={"mode": np.arange(len(eigenvalue)),
                "k_axis": ("k_axis", k_axis, {"units": "rad/nm"})},
        attrs={"condition_number": float(result.stats["condition_number"]),
               "nonpositive_eigenvalues": int(result.stats["nonpositive_eigenvalues"]),
               "decay_per_standoff": decay_rate(k, eigenvalue, standoff),
               "standoff_nm": standoff, "spacing_nm": spacing,
               "description": "appendix C.1: eigenvalues fall about exponentially with "
                              "spatial frequency; decay_per_standoff is -d ln(eigenvalue) / "
                              "d(k z0) fitted to binned medians"})


__all__ = ["Run", "decay_rate", "hessian_dataset", "run_config"]
