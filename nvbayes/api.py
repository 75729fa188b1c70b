"""``nvbayes.fit``: one measurement in, one :class:`~nvbayes.run.Run` out; ``fit_samples``: the
samples of a data set, fitted in batches, one run each."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import xarray as xr

from .errors import ParameterError
from .inference.draws import PosteriorDraws
from .inference.map import batchable, check_precision, fit_batch, fit_map
from .inference.pixel_posterior import fit_laplace, fit_nuts
from .inference.svi import fit_svi
from .io import n_samples, read_measurement, select_sample, validate_measurement
from .model.problem import InverseProblem, check_inversion_operator
from .run import Run, hessian_dataset, run_config
from .spec import load_spec

#: ``map`` (the specification's solver), ``svi`` (the neural field as variational guide),
#: ``laplace`` (the MAP, then the exact pixel Hessian), ``nuts`` (the free grid, ≤ 16 × 16).
METHODS = ("map", "svi", "laplace", "nuts")
#: Default number of posterior draws (per chain for NUTS) and NUTS chains and warm-up.
DRAWS = {"svi": 200, "laplace": 200, "nuts": 300}
CHAINS, WARMUP = 2, 1000


def check_device(device: str) -> str:
    name = str(device).lower()
    if name not in ("cpu", "cuda"):
        raise ParameterError(f"unknown device {device!r}", "use --device cpu or --device cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParameterError("CUDA is not available on this machine",
                             "use --device cpu (or install a CUDA build of torch)")
    return name


def _prepare(measurement, model: str, method: str, operator: str, device: str,
             precision: str, protocol: "str | None"):
    if isinstance(measurement, (str, os.PathLike)):
        source = str(measurement)
        data = read_measurement(Path(measurement))
    else:
        source = "<dataset>"
        data = validate_measurement(measurement)
    spec = load_spec(model, protocol)
    if method not in METHODS:
        raise ParameterError(f"unknown method {method!r}", f"use one of {', '.join(METHODS)}")
    if method == "svi" and not batchable(spec):
        raise ParameterError(f"SVI uses the neural field as its guide; {spec.name} is a "
                             f"{spec.field.kind} model", "use --model netmy or netmy-fast")
    if precision != "fp32" and method in ("svi", "nuts"):
        raise ParameterError(f"--precision {precision} applies to map and laplace fits",
                             "drop --precision")
    device = check_device(device)
    if method == "nuts" and device != "cpu":
        raise ParameterError("NUTS runs on the CPU", "drop --device")
    return (data, source, spec, check_inversion_operator(operator), device,
            check_precision(precision))


def infer(problem: InverseProblem, spec, *, method, operator, seed, device, show, precision,
          draws, chains, warmup):
    """Fit one problem by ``method``: a MapResult (``map``) or PosteriorDraws (``svi``,
    ``laplace``, ``nuts``), with checked draw, chain and warm-up counts."""
    if method == "map":
        return fit_map(problem, spec, operator, seed=seed, device=device, show=show,
                       precision=precision)
    draws = DRAWS[method] if draws is None else int(draws)
    if draws < 2:
        raise ParameterError(f"draws must be >= 2, got {draws}", "pass --draws 2 or more")
    if method == "svi":
        return fit_svi(problem, spec, operator, seed=seed, device=device, show=show,
                       draws=draws)
    if method == "laplace":
        return fit_laplace(problem, spec, operator, seed=seed, device=device, show=show,
                           draws=draws, precision=precision)
    if chains < 1 or warmup < 1:
        raise ParameterError(f"chains {chains} and warmup {warmup}",
                             "pass --chains and --warmup of 1 or more")
    return fit_nuts(problem, spec, operator, seed=seed, chains=chains, warmup=warmup,
                    draws=draws)


def _run(one: xr.Dataset, result, spec, *, method, operator, seed, device, precision, source,
         sample) -> Run:
    config = run_config(spec.to_dict(), method=method, operator=operator, seed=seed,
                        device=device, wall_time_s=result.wall_time_s, source=source,
                        sample=sample, precision=precision,
                        batch_size=int(result.stats.get("batch_size", 1)))
    if isinstance(result, PosteriorDraws):
        run = Run.from_draws(one, result, config)
        if result.extra:
            run.hessian = hessian_dataset(result, one)
    else:
        run = Run.from_point_estimate(one, result.rho, result.larmor, result.predicted,
                                      result.stats, result.history, config, result.messages)
    run.evaluate()
    return run


def fit(measurement: "xr.Dataset | str | os.PathLike", model: str = "netmy",
        method: str = "map", operator: str = "F2", sample: "int | None" = None, seed: int = 0,
        device: str = "cpu", show_progress: "bool | None" = None,
        precision: str = "fp32", draws: "int | None" = None, chains: int = CHAINS,
        warmup: int = WARMUP, protocol: "str | None" = None) -> Run:
    """Fit one measurement and return the run (metrics included when the truth is known).

    Parameters
    ----------
    measurement : an ``nvbayes.measurement/1`` dataset or the path of one.
    model : a name in ``models/`` (``netmy``, ``netmy-fast`` or a baseline: ``tikhonov``,
        ``admm``, ``lbfgs``, ``gsplat``, ``deepdecoder``) or a ``.toml`` path.
    method : ``map``, ``svi``, ``laplace`` or ``nuts`` (:data:`METHODS`).
    operator : the likelihood's operator, ``F1`` or ``F2``.
    sample : which sample of a data set (required when it holds more than one).
    seed : seeds the field's initialization; the same seed gives the same run.
    device : ``cpu`` or ``cuda``.
    precision : ``fp32``, or ``bf16`` for the neural field's MLP in mixed precision.
    draws : posterior draws of svi and laplace, draws per chain of nuts (:data:`DRAWS`).
    chains, warmup : NUTS chains and warm-up iterations per chain.
    protocol : ``paper`` or ``robust`` (default: the model file's, else robust;
        :mod:`nvbayes.spec`).
    """
    data, source, spec, operator, device, precision = _prepare(measurement, model, method,
                                                               operator, device, precision,
                                                               protocol)
    one = select_sample(data, sample)
    result = infer(InverseProblem.from_measurement(one), spec, method=method,
                    operator=operator, seed=seed, device=device, show=show_progress,
                    precision=precision, draws=draws, chains=chains, warmup=warmup)
    return _run(one, result, spec, method=method, operator=operator, seed=seed, device=device,
                precision=precision, source=source, sample=sample)


def fit_samples(measurement: "xr.Dataset | str | os.PathLike", model: str = "netmy",
                method: str = "map", operator: str = "F2",
                samples: "list[int] | None" = None, seed: int = 0, device: str = "cpu",
                batch: int = 8, show_progress: "bool | None" = None,
                precision: str = "fp32", draws: "int | None" = None, chains: int = CHAINS,
                warmup: int = WARMUP, protocol: "str | None" = None) -> list[Run]:
    """Fit several samples of a data set (default: all), ``batch`` at a time in one
    optimization loop (neural-field MAP fits; baselines and the sampling methods one after
    the other), and return one run per sample, each the run :func:`fit` gives for that sample
    alone."""
    data, source, spec, operator, device, precision = _prepare(measurement, model, method,
                                                               operator, device, precision,
                                                               protocol)
    count = n_samples(data)
    samples = list(range(count)) if samples is None else [int(i) for i in samples]
    if not samples:
        raise ParameterError("no samples to fit", "choose at least one sample")
    for i in samples:
        select_sample(data, i)                      # range check, one-line error
    if batch < 1:
        raise ParameterError(f"batch must be >= 1, got {batch}", "pass --batch 1 or more")
    if method != "map":
        return [_run(select_sample(data, i), infer(
            InverseProblem.from_measurement(select_sample(data, i)), spec, method=method,
            operator=operator, seed=seed, device=device, show=show_progress,
            precision=precision, draws=draws, chains=chains, warmup=warmup), spec,
            method=method, operator=operator, seed=seed, device=device, precision=precision,
            source=source, sample=i) for i in samples]
    runs = []
    for lo in range(0, len(samples), batch):
        chunk = samples[lo: lo + batch]
        ones = [select_sample(data, i) for i in chunk]
        stacked = InverseProblem.from_measurement(xr.concat(ones, "sample"))
        results = fit_batch(stacked, spec, operator, seeds=seed, device=device,
                            show=show_progress, precision=precision)
        runs += [_run(one, result, spec, method=method, operator=operator, seed=seed,
                      device=device, precision=precision, source=source, sample=i)
                 for i, one, result in zip(chunk, ones, results, strict=True)]
    return runs
