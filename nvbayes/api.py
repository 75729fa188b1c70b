"""``nvbayes.fit``: one measurement in, one :class:`~nvbayes.run.Run` out."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import xarray as xr

from .errors import ParameterError
from .inference.map import fit_map
from .io import read_measurement, select_sample, validate_measurement
from .model.problem import InverseProblem, check_inversion_operator
from .run import Run, run_config
from .spec import load_spec

METHODS = ("map",)


def check_device(device: str) -> str:
    name = str(device).lower()
    if name not in ("cpu", "cuda"):
        raise ParameterError(f"unknown device {device!r}", "use --device cpu or --device cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParameterError("CUDA is not available on this machine",
                             "use --device cpu (or install a CUDA build of torch)")
    return name


def fit(measurement: "xr.Dataset | str | os.PathLike", model: str = "netmy",
        method: str = "map", operator: str = "F2", sample: "int | None" = None, seed: int = 0,
        device: str = "cpu", show_progress: "bool | None" = None) -> Run:
    """Fit one measurement and return the run (metrics included when the truth is known).

    Parameters
    ----------
    measurement : an ``nvbayes.measurement/1`` dataset or the path of one.
    model : a name in ``models/`` (``netmy``, ``netmy-fast`` or a baseline: ``tikhonov``,
        ``admm``, ``lbfgs``, ``gsplat``, ``deepdecoder``) or a ``.toml`` path.
    method : ``map``.
    operator : the likelihood's operator, ``F1`` or ``F2``.
    sample : which sample of a data set (required when it holds more than one).
    seed : seeds the field's initialization; the same seed gives the same run.
    device : ``cpu`` or ``cuda``.
    """
    if isinstance(measurement, (str, os.PathLike)):
        source = str(measurement)
        data = read_measurement(Path(measurement))
    else:
        source = "<dataset>"
        data = validate_measurement(measurement)
    one = select_sample(data, sample)
    spec = load_spec(model)
    if method not in METHODS:
        raise ParameterError(f"unknown method {method!r}", f"use one of {', '.join(METHODS)}")
    operator = check_inversion_operator(operator)
    device = check_device(device)
    result = fit_map(InverseProblem.from_measurement(one), spec, operator, seed=seed,
                     device=device, show=show_progress)
    config = run_config(spec.to_dict(), method=method, operator=operator, seed=seed,
                        device=device, wall_time_s=result.wall_time_s, source=source,
                        sample=sample)
    run = Run.from_point_estimate(one, result.rho, result.larmor, result.predicted,
                                  result.stats, result.history, config, result.messages)
    run.evaluate()
    return run
