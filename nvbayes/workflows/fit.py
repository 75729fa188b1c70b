"""``nvbayes.fit``: one measurement in, one :class:`~nvbayes.results.run.Run` out (with its
residual table, :mod:`nvbayes.results.residuals`, whose findings are ``run.notes``);
``fit_samples``: the samples of a data set, fitted in batches, one run each; ``save_run``: the
run folder with its figures.

>>> import nvbayes
>>> from nvbayes.workflows.fit import save_run
>>> run = nvbayes.fit("runs/scene.nc", model="netmy-fast", method="map")   # doctest: +SKIP
>>> save_run(run, "runs/scene-netmy-fast")                                 # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import xarray as xr

from nvbayes.data.io import n_samples, read_measurement, select_sample, validate_measurement
from nvbayes.data.spec import NuisanceSpec, load_spec, parse_nuisance, with_nuisance
from nvbayes.errors import ParameterError
from nvbayes.fields.neural import bf16_instructions
from nvbayes.figures.imaging import plot_catalogue, plot_hessian_spectrum, plot_run
from nvbayes.inference.draws import PosteriorDraws
from nvbayes.inference.map import check_precision, fit_batch
from nvbayes.inference.methods import DEFAULT_LIKELIHOOD, check_device, check_method, infer
from nvbayes.metrics import evaluate_run
from nvbayes.model.problem import InverseProblem, check_inversion_operator
from nvbayes.results.residuals import RESIDUALS, run_residuals
from nvbayes.results.run import Run, hessian_dataset, run_config

#: The figure of every run, and the Laplace fit's Hessian spectrum.
FIGURE, HESSIAN_FIGURE = "reconstruction.png", "hessian_spectrum.png"
CATALOGUE_FIGURE = "catalogue.png"


def precision_note(device: str, precision: str) -> "str | None":
    """One line where ``bf16`` was asked for on a device without bf16 matrix instructions
    (:func:`~nvbayes.fields.neural.bf16_instructions`): its products are then emulated."""
    if precision == "bf16" and not bf16_instructions(device):
        return (f"--precision bf16 on a {device} without bf16 matrix instructions (avx512_bf16, "
                "AMX or tensor cores): its products are emulated and slower than fp32; "
                "--precision fp32 is the faster choice here")
    return None


def _prepare(measurement, model: str, method: str, operator: str, device: str,
             precision: str, protocol: "str | None", likelihood: str = DEFAULT_LIKELIHOOD,
             nuisance: "str | NuisanceSpec" = "none"):
    if isinstance(measurement, (str, os.PathLike)):
        source = str(measurement)
        data = read_measurement(Path(measurement))
    else:
        source = "<dataset>"
        data = validate_measurement(measurement)
    nuisance = (nuisance if isinstance(nuisance, NuisanceSpec) else parse_nuisance(nuisance))
    if nuisance.any and method not in ("map", "catalogue"):
        raise ParameterError(f"--nuisance is modelled by map and catalogue fits, not yet by "
                             f"--method {method}", "use --method map, or drop --nuisance")
    spec = with_nuisance(load_spec(model, protocol), nuisance)
    device, precision = check_device(device), check_precision(precision)
    check_method(method).check(spec, device, precision, likelihood)
    return data, source, spec, check_inversion_operator(operator), device, precision


def save_run(run: Run, folder: "str | os.PathLike") -> Path:
    """Write ``run``'s folder with its figures (``reconstruction.png``, and
    ``hessian_spectrum.png`` for a Laplace fit)."""
    figures = {FIGURE: plot_run(run)}
    if run.hessian is not None:
        figures[HESSIAN_FIGURE] = plot_hessian_spectrum(run.hessian)
    if "catalogue" in run.tables:
        figures[CATALOGUE_FIGURE] = plot_catalogue(run).figure
    return run.save(folder, figures)


def _run(one: xr.Dataset, result, spec, *, method, operator, seed, device, precision, source,
         sample) -> Run:
    config = run_config(spec.to_dict(), method=method, operator=operator, seed=seed,
                        device=device, wall_time_s=result.wall_time_s, source=source,
                        sample=sample, precision=precision,
                        batch_size=int(result.stats.get("batch_size", 1)))
    config["run"]["bf16_instructions"] = ",".join(bf16_instructions(device)) or "none"
    if isinstance(result, PosteriorDraws):
        config["run"]["likelihood"] = str(result.stats.get("likelihood", "noise-map"))
        run = Run.from_draws(one, result, config)
        run.tables |= result.tables
        run.frames |= result.frames
        if result.extra:
            run.tables["hessian"] = hessian_dataset(result, one)
    else:
        run = Run.from_point_estimate(one, result.rho, result.larmor, result.predicted,
                                      result.stats, result.history, config, result.messages)
    evaluate_run(run)
    residuals = run_residuals(run)
    if residuals is not None:
        run.tables[RESIDUALS] = residuals
    return run


def fit(measurement: "xr.Dataset | str | os.PathLike", model: str = "netmy",
        method: str = "map", operator: str = "F2", sample: "int | None" = None, seed: int = 0,
        device: str = "cpu", show_progress: "bool | None" = None,
        precision: str = "fp32", draws: "int | None" = None, chains: "int | None" = None,
        warmup: "int | None" = None, protocol: "str | None" = None,
        likelihood: str = DEFAULT_LIKELIHOOD, gain: str = "auto",
        rho_mean: "float | None" = None, sources: "int | None" = None,
        jobs: "int | None" = None, rho_prior: str = "exponential",
        nuisance: "str | NuisanceSpec" = "none") -> Run:
    """Fit one measurement and return the run (metrics included when the truth is known).

    Parameters
    ----------
    measurement : an ``nvbayes.measurement/1`` dataset or the path of one.
    model : a name in ``models/`` (``netmy``, ``netmy-fast`` or a baseline: ``tikhonov``,
        ``admm``, ``lbfgs``, ``gsplat``, ``deepdecoder``) or a ``.toml`` path.
    method : ``map``, ``svi``, ``laplace`` or ``nuts``
        (:data:`nvbayes.inference.methods.METHODS`).
    operator : the likelihood's operator, ``F1`` or ``F2``.
    sample : which sample of a data set (required when it holds more than one).
    seed : seeds the field's initialization; the same seed gives the same run.
    device : ``cpu`` or ``cuda``.
    precision : ``fp32``, or ``bf16`` for the neural field's MLP in mixed precision.
    draws : posterior draws of svi and laplace, draws per chain of nuts (default: the
        method's, :data:`nvbayes.inference.methods.METHODS`).
    chains, warmup : NUTS chains and warm-up iterations per chain (default: the method's).
    protocol : ``paper`` or ``robust`` (default: the model file's, else robust;
        :mod:`nvbayes.data.spec`).
    likelihood : the sampling methods' likelihood, ``generative`` (default) or
        ``noise-map`` (:mod:`nvbayes.inference.methods`).
    gain : ``auto``, ``fixed`` or ``latent``: the generative model's gain
        (:func:`nvbayes.inference.generative.resolve_gain`).
    rho_mean : the generative prior's mean of ρ per pixel (default: the energy-matched
        uniform level of the data).
    nuisance : the lab's nuisances the MAP fit models: ``none`` (default), ``all``, a comma
        list of ``background``, ``standoff``, ``gain``, or a
        :class:`~nvbayes.data.spec.NuisanceSpec` (:mod:`nvbayes.model.nuisance`).
    sources : the catalogue's K to start from (default: the peaks of its MAP, counted).
    jobs : processes for the catalogue's NUTS chains (default: the CPU cores; the draws do
        not depend on it).
    rho_prior : the generative prior of ρ, ``exponential`` (default) or ``sparse`` (a few
        sources on a dark background; :class:`nvbayes.inference.generative.Priors`).
    """
    data, source, spec, operator, device, precision = _prepare(measurement, model, method,
                                                               operator, device, precision,
                                                               protocol, likelihood,
                                                               nuisance)
    one = select_sample(data, sample)
    result = infer(InverseProblem.from_measurement(one), spec, method=method,
                    operator=operator, seed=seed, device=device, show=show_progress,
                    precision=precision, draws=draws, chains=chains, warmup=warmup,
                    likelihood=likelihood, gain=gain, rho_mean=rho_mean, sources=sources,
                   jobs=jobs, rho_prior=rho_prior)
    return _run(one, result, spec, method=method, operator=operator, seed=seed, device=device,
                precision=precision, source=source, sample=sample)


def fit_samples(measurement: "xr.Dataset | str | os.PathLike", model: str = "netmy",
                method: str = "map", operator: str = "F2",
                samples: "list[int] | None" = None, seed: int = 0, device: str = "cpu",
                batch: int = 8, show_progress: "bool | None" = None,
                precision: str = "fp32", draws: "int | None" = None,
                chains: "int | None" = None, warmup: "int | None" = None,
                protocol: "str | None" = None, likelihood: str = DEFAULT_LIKELIHOOD,
                gain: str = "auto", rho_mean: "float | None" = None,
                sources: "int | None" = None, jobs: "int | None" = None,
                rho_prior: str = "exponential", nuisance: "str | NuisanceSpec" = "none"
                ) -> list[Run]:
    """Fit several samples of a data set (default: all), ``batch`` at a time in one
    optimization loop (neural-field MAP fits; baselines and the sampling methods one after
    the other), and return one run per sample, each the run :func:`fit` gives for that sample
    alone.  ``likelihood``, ``gain``, ``rho_mean``, ``sources``, ``jobs`` and ``rho_prior``
    as in :func:`fit`."""
    data, source, spec, operator, device, precision = _prepare(measurement, model, method,
                                                               operator, device, precision,
                                                               protocol, likelihood,
                                                               nuisance)
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
            precision=precision, draws=draws, chains=chains, warmup=warmup,
            likelihood=likelihood, gain=gain, rho_mean=rho_mean, sources=sources,
            jobs=jobs, rho_prior=rho_prior), spec,
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
