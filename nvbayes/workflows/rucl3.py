"""Fit the Gaussian-ansatz model to per-NV data with NUTS or Laplace; the run folder.

A run folder holds ``posterior.nc`` (ArviZ InferenceData: ``posterior`` with
``log10_amplitude``, ``sigma_g`` and ``depth`` over ``chain, draw[, nv]`` and the implied
``rate_ru``; ``sample_stats`` with ``diverging`` for NUTS; ``observed_data`` ln Γ_Ru;
``constant_data`` the fields, the relative errors and, for synthetic sets, the true depths),
``summary.csv`` (``arviz.summary``), ``config.toml``, ``posterior.png`` and, for Laplace,
``laplace.nc`` (mode, Hessian, its eigenvalues and condition number).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import warnings
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from nvbayes.data.rucl3 import SYNTHETIC_NOTE, is_synthetic
from nvbayes.data.rucl3_spec import AnsatzSpec
from nvbayes.errors import ParameterError
from nvbayes.figures.rucl3 import plot_posterior, plot_spectral
from nvbayes.inference.laplace import run_laplace
from nvbayes.inference.nuts import run_nuts
from nvbayes.model.ansatz import ANSATZ_SITES
from nvbayes.model.rucl3 import ansatz_model, spectral_model
from nvbayes.model.spectral import SPECTRAL_SITES, hwhm_ghz, linewidth_per_ns
from nvbayes.physics.conventions import check_convention
from nvbayes.physics.operators import check_inversion_operator
from nvbayes.results.run import Run, versions

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import arviz as az

METHODS = ("nuts", "laplace")
RUN_SCHEMA = "nvbayes.rucl3-run/1"


def model_arguments(data: xr.Dataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(field_gauss, relative_error, ln Γ_Ru)`` as float64 tensors of shape ``(n_nv,)``."""
    gamma = np.asarray(data["gamma_ru"].values, dtype=float)
    rel = np.asarray(data["gamma_ru_err"].values, dtype=float) / gamma
    return (torch.as_tensor(np.asarray(data["field_gauss"].values, dtype=float)),
            torch.as_tensor(rel), torch.log(torch.as_tensor(gamma)))


def save_ansatz_run(run: Run, folder) -> Path:
    """Write an α-RuCl3 run folder with its figure ``posterior.png``."""
    return run.save(folder, {"posterior.png": plot_posterior(run)})


def _posterior(samples: dict, model, field_gauss: torch.Tensor, nv) -> dict:
    """Posterior arrays with the predicted rate added; ``(chain, draw[, nv])``."""
    with torch.no_grad():
        physical = model.physical({k: torch.as_tensor(np.asarray(v, dtype=float))
                                   for k, v in samples.items()})
        rate = model.rates(physical["log10_amplitude"][..., None],
                           physical["sigma_g"][..., None], physical["depth"], field_gauss)
    post = {k: physical[k].numpy() for k in ANSATZ_SITES}
    post["rate_ru"] = rate.numpy()
    return post


def _laplace_dataset(result, nv: list) -> xr.Dataset:
    """The Laplace mode, Hessian and its spectrum, one label per latent coordinate."""
    names = [k if np.ndim(v) == 0 else f"{k}[{nv[i]}]"
             for k, v in result.mode.items() for i in range(max(1, np.size(v)))]
    mode = {f"mode_{k}": (float(v) if np.ndim(v) == 0 else [float(x) for x in v])
            for k, v in result.mode.items()}
    return xr.Dataset(
        {"hessian": (("latent", "latent2"), result.hessian,
                     {"long_name": "Hessian of the negative log joint at the mode, in Pyro's "
                                   "unconstrained coordinates of the sampled sites "
                                   "(log_sigma_g, log10_scale, depth)"}),
         "eigenvalues": ("eigen", result.eigenvalues)},
        coords={"latent": names, "latent2": names},
        attrs={"condition_number": result.condition_number,
               "final_loss": result.final_loss, **mode})


def _sampler_settings(spec: AnsatzSpec, chains, warmup, draws, default_draws) -> tuple:
    """``(chains, warmup, draws)``: the given ones, else ``[inference]``'s; each at least 1."""
    inf = spec.inference
    values = {"chains": inf.chains if chains is None else chains,
              "warmup": inf.warmup if warmup is None else warmup,
              "draws": default_draws if draws is None else draws}
    for name, value in values.items():
        if value < 1:
            raise ParameterError(f"--{name} must be at least 1, got {value}",
                                 f"pass --{name} 1 or more")
    return tuple(values.values())


def fit_ansatz(spec: AnsatzSpec, data: xr.Dataset, operator: str = "F2",
               method: str = "nuts", seed: int = 0, chains: "int | None" = None,
               warmup: "int | None" = None, draws: "int | None" = None,
               convention: str = "physical") -> Run:
    """Sample (NUTS) or approximate (Laplace) the posterior of the ansatz model.

    >>> run = fit_ansatz(load_ansatz(), load_nv_data(None), "F2", "laplace")  # doctest: +SKIP
    >>> save_ansatz_run(run, "runs/rucl3-laplace")                           # doctest: +SKIP
    """
    operator = check_inversion_operator(operator)
    convention = check_convention(convention)
    method = str(method).lower()
    if method not in METHODS:
        raise ParameterError(f"unknown method {method!r} for the α-RuCl3 model",
                             f"use one of {', '.join(METHODS)}")
    inf = spec.inference
    default_draws = inf.draws if method == "nuts" else inf.laplace_draws
    chains, warmup, draws = _sampler_settings(spec, chains, warmup, draws, default_draws)
    if seed < 0:
        raise ParameterError(f"seed must be >= 0, got {seed}", "pass --seed 0 or more")
    model = ansatz_model(spec, operator, convention)
    args = model_arguments(data)
    nv = [str(v) for v in data["nv"].values]
    laplace = None
    messages = []
    if method == "nuts":
        result = run_nuts(model.model, *args, chains=chains, warmup=warmup, draws=draws,
                          seed=seed, target_accept=inf.target_accept,
                          max_tree_depth=inf.max_tree_depth,
                          initial_values=lambda g: model.initial_values(g, len(nv)))
        sample_stats = {"diverging": result.diverging}
        n_div = int(result.diverging.sum())
        if n_div:
            messages.append(f"{n_div} divergent transitions of {result.diverging.size}")
        wall, samples = result.wall_time_s, result.samples
        settings = {"chains": chains, "warmup": warmup, "draws": draws,
                    "target_accept": inf.target_accept, "max_tree_depth": inf.max_tree_depth,
                    "step_size": [float(s) for s in result.step_size],
                    "chain_time_s": [float(t) for t in result.chain_time_s]}
    else:
        result = run_laplace(model.model, *args, steps=inf.laplace_steps, lr=inf.laplace_lr,
                             draws=draws, seed=seed)
        sample_stats = None
        wall, samples = result.wall_time_s, result.samples
        laplace = _laplace_dataset(result, nv)
        settings = {"steps": inf.laplace_steps, "lr": inf.laplace_lr,
                    "draws": int(samples["depth"].shape[1]),
                    "condition_number": result.condition_number}
    post = _posterior(samples, model, args[0], nv)
    dims = {"depth": ["nv"], "rate_ru": ["nv"], "log_rate_ru": ["nv"], "field_gauss": ["nv"],
            "relative_error": ["nv"], "depth_true_nm": ["nv"]}
    constant = {"field_gauss": args[0].numpy(), "relative_error": args[1].numpy()}
    if "depth_true_nm" in data:
        constant["depth_true_nm"] = np.asarray(data["depth_true_nm"].values, dtype=float)
    idata = az.from_dict(posterior=post, sample_stats=sample_stats,
                         observed_data={"log_rate_ru": args[2].numpy()},
                         constant_data=constant, coords={"nv": nv}, dims=dims)
    units = dict(ANSATZ_SITES) | {"rate_ru": "s-1"}
    for name, unit in units.items():
        idata.posterior[name].attrs["units"] = unit
    attrs = {"operator": operator, "method": method, "model": "Gaussian ansatz (rucl3)",
             "convention": convention, "rates": model.convention.describe(),
             "data": str(data.attrs.get("source", "")), "synthetic": int(is_synthetic(data))}
    if is_synthetic(data):
        attrs["synthetic_note"] = SYNTHETIC_NOTE
        for key in ("true_log10_amplitude", "true_sigma_g_nm", "true_operator"):
            if key in data.attrs:
                attrs[key] = data.attrs[key]
    idata.posterior.attrs.update(attrs)
    var_names = list(ANSATZ_SITES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = az.summary(idata, var_names=var_names, hdi_prob=0.9,
                             kind="all" if method == "nuts" else "stats")
    config = {
        "run": {"schema": RUN_SCHEMA, "method": method, "operator": operator, "seed": seed,
                "convention": convention,
                "wall_time_s": wall, "data": attrs["data"], "synthetic": bool(attrs["synthetic"]),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
        "settings": settings, "versions": versions(), "spec": dataclasses.asdict(spec),
    }
    return Run(idata=idata, config=config, summary=summary, messages=messages,
               tables={} if laplace is None else {"laplace": laplace})


def fit_spectral(spec: AnsatzSpec, data: xr.Dataset, seed: int = 0,
                 chains: "int | None" = None, warmup: "int | None" = None,
                 draws: "int | None" = None, convention: str = "physical") -> Run:
    """Step 3: sample τc and the rate at the first field with NUTS (:mod:`.spectral`).

    The posterior holds ``log10_tau_c_ns``, ``tau_c_ns``, ``linewidth`` (1/τc in 10⁹ s⁻¹,
    the paper's "GHz"), ``hwhm_ghz`` (1/2πτc), ``log10_rate_1`` and the predicted ``rate``
    per measurement.  ``convention`` is recorded only: the step is the same in both.
    """
    convention = check_convention(convention)
    inf = spec.inference
    chains, warmup, draws = _sampler_settings(spec, chains, warmup, draws, inf.draws)
    model = spectral_model(spec, data)
    args = model_arguments(data)
    result = run_nuts(model.model, *args, chains=chains, warmup=warmup, draws=draws,
                      seed=seed, target_accept=inf.target_accept,
                      max_tree_depth=inf.max_tree_depth, initial_values=model.initial_values)
    samples = {k: torch.as_tensor(v) for k, v in result.samples.items()}
    with torch.no_grad():
        rate = model.rates(samples["log10_tau_c_ns"][..., None],
                           samples["log10_rate_1"][..., None], args[0])
    tau = samples["log10_tau_c_ns"]
    post = {"log10_tau_c_ns": tau.numpy(), "tau_c_ns": (10.0 ** tau).numpy(),
            "linewidth": linewidth_per_ns(tau).numpy(), "hwhm_ghz": hwhm_ghz(tau).numpy(),
            "log10_rate_1": samples["log10_rate_1"].numpy(), "rate": rate.numpy()}
    labels = [str(v) for v in data["measurement"].values]
    constant = {"field_gauss": args[0].numpy(), "relative_error": args[1].numpy()}
    dims = {"rate": ["measurement"], "log_rate": ["measurement"],
            "field_gauss": ["measurement"], "relative_error": ["measurement"]}
    idata = az.from_dict(posterior=post, sample_stats={"diverging": result.diverging},
                         observed_data={"log_rate": args[2].numpy()}, constant_data=constant,
                         coords={"measurement": labels}, dims=dims)
    units = dict(SPECTRAL_SITES) | {"tau_c_ns": "ns", "linewidth": "1e9 s-1 (GHz, angular)",
                                    "hwhm_ghz": "GHz", "rate": "s-1"}
    for name, unit in units.items():
        idata.posterior[name].attrs["units"] = unit
    attrs = {"method": "nuts", "model": "step-3 Lorentzian (rucl3)", "convention": convention,
             "convention_note": "the Lorentzian is the same in both conventions",
             "data": str(data.attrs.get("source", "")), "nv": str(data.attrs.get("nv", "")),
             "reference_field_gauss": model.reference_field_gauss,
             "synthetic": int(is_synthetic(data))}
    if is_synthetic(data):
        attrs["synthetic_note"] = SYNTHETIC_NOTE
        if "true_tau_c_ns" in data.attrs:
            attrs["true_tau_c_ns"] = float(data.attrs["true_tau_c_ns"])
    idata.posterior.attrs.update(attrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = az.summary(idata, var_names=["tau_c_ns", "linewidth", "hwhm_ghz",
                                               "log10_tau_c_ns", "log10_rate_1"],
                             hdi_prob=0.9, kind="all")
    messages = []
    n_div = int(result.diverging.sum())
    if n_div:
        messages.append(f"{n_div} divergent transitions of {result.diverging.size}")
    config = {
        "run": {"schema": RUN_SCHEMA, "step": "spectral", "method": "nuts", "seed": seed,
                "convention": convention, "wall_time_s": result.wall_time_s,
                "data": attrs["data"], "synthetic": bool(attrs["synthetic"]),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
        "settings": {"chains": chains, "warmup": warmup, "draws": draws,
                     "target_accept": inf.target_accept, "max_tree_depth": inf.max_tree_depth},
        "versions": versions(), "spec": dataclasses.asdict(spec),
    }
    return Run(idata=idata, config=config, summary=summary, messages=messages)


def save_spectral_run(run: Run, folder) -> Path:
    """Write a step-3 run folder with its figure ``spectral.png``."""
    return run.save(folder, {"spectral.png": plot_spectral(run)})


__all__ = ["METHODS", "fit_ansatz", "fit_spectral", "model_arguments", "save_ansatz_run",
           "save_spectral_run"]
