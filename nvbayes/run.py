"""A fitted run: the posterior as ArviZ InferenceData, the loss history, metrics and config.

On disk a run is a folder (DESIGN.md, "Files")::

    posterior.nc     InferenceData groups: posterior (rho, larmor with chain, draw, y, x),
                     posterior_predictive (spectrum), sample_stats, observed_data (spectrum),
                     constant_data (rho_true, larmor_true when known)
    history.nc       loss terms per optimization step
    metrics.nc       scalar metrics against the truth (when the measurement holds it)
    config.toml      resolved model specification, method, operator, seed, versions, wall time
    reconstruction.png

The folder is assembled under a temporary name and renamed into place, so an interrupted save
leaves the previous run (or none), never a partial one.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tomllib
import xarray as xr

from . import __version__
from .errors import NvbayesError
from .io import SPATIAL, toml_dumps, write_folder

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

RUN_SCHEMA = "nvbayes.run/1"
POSTERIOR, HISTORY, METRICS, CONFIG = "posterior.nc", "history.nc", "metrics.nc", "config.toml"
FIGURE = "reconstruction.png"
SCALE_NOTE = ("rho is scaled by the energy-ratio correction (sample_stats.scale_correction: "
              "E_obs/E_pred under F2, its square root under F1); the max-normalized "
              "likelihood does not determine the scale")


def versions() -> dict:
    import pyro
    import torch

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


@dataclass
class Run:
    """Everything one fit produced; see the module docstring."""

    idata: az.InferenceData
    history: xr.Dataset
    config: dict
    metrics: "xr.Dataset | None" = None
    messages: list = field(default_factory=list)
    path: "Path | None" = None

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def from_point_estimate(cls, measurement: xr.Dataset, rho: np.ndarray, larmor: np.ndarray,
                            predicted: np.ndarray, stats: dict, history: dict,
                            config: dict, messages=()) -> "Run":
        """A MAP run: one chain, one draw.  ``measurement`` holds one sample."""
        space = {c: measurement[c] for c in SPATIAL}
        spec_coords = {"freq": measurement["freq"]} | space
        operator = config["run"]["operator"]
        posterior = xr.Dataset({
            "rho": _point(rho, SPATIAL, space, {
                "long_name": "source weight per pixel (scale-corrected)",
                "units": "fluctuators per pixel"}),
            "larmor": _point(larmor, SPATIAL, space, {
                "long_name": "Larmor frequency", "units": "GHz",
                "off_support": _off_support_note(config)}),
        }, attrs={"inference": config["run"]["method"], "operator": operator,
                  "model": config["model"]["name"], "scale_corrected": 1,
                  "scale_note": SCALE_NOTE})
        predictive = xr.Dataset({"spectrum": _point(
            predicted, ("freq",) + SPATIAL, spec_coords,
            {"long_name": f"spectrum predicted by {operator}",
             "units": measurement["spectrum"].attrs.get("units", "")})})
        sample_stats = xr.Dataset({k: _point(np.float64(v), (), {}, {}) for k, v in
                                   stats.items()})
        observed = xr.Dataset({"spectrum": measurement["spectrum"].reset_coords(drop=True)},
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
        steps = np.arange(len(next(iter(history.values()))))
        hist = xr.Dataset({k: ("step", np.asarray(v)) for k, v in history.items()},
                          coords={"step": steps},
                          attrs={"description": "weighted loss terms of the negative log joint "
                                                "per optimization step (0: not in the stage)"})
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
    def predicted(self) -> xr.DataArray:
        return self.idata.posterior_predictive["spectrum"].mean(("chain", "draw"))

    @property
    def observed(self) -> xr.DataArray:
        return self.idata.observed_data["spectrum"]

    @property
    def truth(self) -> "xr.Dataset | None":
        return self.idata.constant_data if "constant_data" in self.idata.groups() else None

    # ---- metrics ---------------------------------------------------------------------------

    def evaluate(self) -> "xr.Dataset | None":
        """Metrics against the truth (``None`` without one); also stored on the run."""
        from . import metrics

        truth = self.truth
        if truth is None or "rho_true" not in truth:
            return None
        larmor_true = truth["larmor_true"].values if "larmor_true" in truth else None
        values = metrics.evaluate(self.rho.values, truth["rho_true"].values,
                                  self.larmor.values if larmor_true is not None else None,
                                  larmor_true)
        units = {"larmor_mae": "GHz", "density_mse": "(fluctuators per pixel)^2"}
        self.metrics = xr.Dataset(
            {k: ((), v, {"units": units.get(k, "1")}) for k, v in values.items()},
            attrs={"operator": self.config["run"]["operator"],
                   "model": self.config["model"]["name"], "scale_note": SCALE_NOTE})
        return self.metrics

    # ---- files -----------------------------------------------------------------------------

    def save(self, folder: "str | os.PathLike", figure: bool = True) -> Path:
        """Write the run folder atomically; returns its path."""
        def fill(tmp: Path) -> None:
            self.idata.to_netcdf(str(tmp / POSTERIOR))
            self.history.to_netcdf(tmp / HISTORY, engine="netcdf4")
            if self.metrics is not None:
                self.metrics.to_netcdf(tmp / METRICS, engine="netcdf4")
            (tmp / CONFIG).write_text(toml_dumps(self.config))
            if figure:
                from .plots import plot_run, save_figure

                save_figure(plot_run(self), tmp / FIGURE)

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
        with xr.open_dataset(folder / HISTORY, engine="netcdf4") as h:
            history = h.load()
        metrics = None
        if (folder / METRICS).is_file():
            with xr.open_dataset(folder / METRICS, engine="netcdf4") as m:
                metrics = m.load()
        config = tomllib.loads((folder / CONFIG).read_text())
        return cls(idata=idata, history=history, config=config, metrics=metrics, path=folder)

    def save_figure(self, path: "str | os.PathLike | None" = None) -> Path:
        from .plots import plot_run, save_figure

        path = Path(path) if path is not None else self.path / FIGURE
        save_figure(plot_run(self), path)
        return path


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


__all__ = ["Run", "run_config"]
