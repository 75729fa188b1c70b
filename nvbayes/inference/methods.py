"""The registry of inference methods: what each one is, its defaults and what it supports.

The command line's ``--method`` choices, help and defaults, the fit workflow and the
calibration all read :data:`METHODS`; :func:`infer` fits one problem by name.

======== ============================================================ ======= ====== ======
method   result                                                        draws  chains warmup
======== ============================================================ ======= ====== ======
map      the specification's solver: one point estimate                 —      —      —
svi      a full-rank Gaussian guide (noise-map: the neural field)       200    —      —
laplace  the mode and its exact Hessian's Gaussian                      200    —      —
nuts     NUTS on the free pixel grid (≤ 16 × 16, CPU, fp32)             300    2      1000
catalogue K point sources by NUTS, K by PSIS-LOO (CPU, fp32)           200    2      200
======== ============================================================ ======= ====== ======

The sampling methods take ``likelihood``: ``generative`` (the default;
:mod:`nvbayes.inference.generative`: every readout value observed with its Gaussian noise, ω_L
and, where the units are arbitrary, the gain latent) or ``noise-map`` (the max-normalized
noise map and the total power, ω_L plugged in: :mod:`.pixel_posterior` and :mod:`.svi`).

>>> from nvbayes.inference.methods import METHODS
>>> METHODS["nuts"].draws, METHODS["nuts"].chains
(300, 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from nvbayes.errors import ParameterError

from .catalogue import fit_catalogue_draws
from .generative import GENERATIVE_METHODS, LIKELIHOODS, Priors, fit_generative, resolve_gain
from .map import batchable, check_precision, fit_map
from .nuisance import held_at_estimates
from .pixel_posterior import fit_laplace, fit_nuts
from .svi import fit_svi

DEVICES = ("cpu", "cuda")
DEFAULT_LIKELIHOOD = "generative"


@dataclass(frozen=True)
class InferenceMethod:
    """One entry of the registry.

    ``fit(problem, spec, operator, **options)`` fits, given those of :func:`infer`'s options
    (seed, device, show, precision, draws, chains, warmup) named in ``options``.  ``draws`` is
    the default number of posterior draws (per chain where there are chains), ``None`` for a
    point estimate; ``neural_field_only`` methods need a neural-field model; ``fp32_only``
    methods refuse ``--precision bf16``; ``cpu_only`` methods refuse CUDA.
    """

    name: str
    summary: str
    fit: Callable
    options: tuple = ("seed", "device", "show", "precision")
    draws: "int | None" = None
    chains: "int | None" = None
    warmup: "int | None" = None
    neural_field_only: bool = False
    fp32_only: bool = False
    cpu_only: bool = False

    def check(self, spec, device: str, precision: str,
              likelihood: str = DEFAULT_LIKELIHOOD) -> None:
        """One-line errors for a model, device or precision this method cannot take."""
        if spec.field.kind == "trained" and self.name != "map":
            raise ParameterError(f"{spec.name} is a trained network: it gives one point "
                                 "estimate, no posterior", "use --method map")
        if self.name in GENERATIVE_METHODS + ("catalogue",) and \
                check_likelihood(likelihood) == "generative":
            if device != "cpu":
                raise ParameterError(f"the generative {self.name} runs on the CPU",
                                     "drop --device, or use --likelihood noise-map")
            if precision != "fp32":
                raise ParameterError("--precision bf16 applies to map fits", "drop --precision")
            return
        if self.neural_field_only and not batchable(spec):
            raise ParameterError(f"{self.name} uses the neural field as its guide; {spec.name} "
                                 f"is a {spec.field.kind} model",
                                 "use --model netmy or netmy-fast")
        if self.fp32_only and precision != "fp32":
            raise ParameterError(f"--precision {precision} applies to map and laplace fits",
                                 "drop --precision")
        if self.cpu_only and device != "cpu":
            raise ParameterError(f"{self.name} runs on the CPU", "drop --device")


#: Every inference method by name.
METHODS = {m.name: m for m in (
    InferenceMethod("map", "the specification's solver: one point estimate", fit_map),
    InferenceMethod("svi", "the neural field as variational guide", fit_svi,
                    ("seed", "device", "show", "draws"), draws=200, neural_field_only=True,
                    fp32_only=True),
    InferenceMethod("laplace", "the MAP, then the exact pixel Hessian's Gaussian", fit_laplace,
                    ("seed", "device", "show", "precision", "draws"), draws=200),
    InferenceMethod("nuts", "NUTS on the free pixel grid (up to 16 x 16)", fit_nuts,
                    ("seed", "chains", "warmup", "draws"), draws=300, chains=2, warmup=1000,
                    fp32_only=True, cpu_only=True),
    InferenceMethod("catalogue", "K point sources (F3 physics) by NUTS, K chosen by PSIS-LOO",
                    fit_catalogue_draws, ("seed", "chains", "warmup", "draws"), draws=200,
                    chains=2, warmup=200, fp32_only=True, cpu_only=True),
)}


def check_likelihood(name: str) -> str:
    if name not in LIKELIHOODS:
        raise ParameterError(f"unknown likelihood {name!r}",
                             f"use --likelihood {' or '.join(LIKELIHOODS)}")
    return name


def check_method(name: str) -> InferenceMethod:
    if name not in METHODS:
        raise ParameterError(f"unknown method {name!r}", f"use one of {', '.join(METHODS)}")
    return METHODS[name]


def check_device(device: str) -> str:
    name = str(device).lower()
    if name not in DEVICES:
        raise ParameterError(f"unknown device {device!r}", "use --device cpu or --device cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParameterError("CUDA is not available on this machine",
                             "use --device cpu (or install a CUDA build of torch)")
    return name


def infer(problem, spec, *, method: str, operator: str, seed: int = 0, device: str = "cpu",
          show: "bool | None" = None, precision: str = "fp32", draws: "int | None" = None,
          chains: "int | None" = None, warmup: "int | None" = None,
          likelihood: str = DEFAULT_LIKELIHOOD, gain: str = "auto",
          rho_mean: "float | None" = None, sources: "int | None" = None,
          jobs: "int | None" = None, rho_prior: str = "exponential"):
    """Fit one :class:`~nvbayes.model.problem.InverseProblem` by ``method``: a ``MapResult``
    (``map``) or ``PosteriorDraws`` (``svi``, ``laplace``, ``nuts``).  Counts left ``None``
    take the method's defaults.  ``likelihood``, ``gain`` and ``rho_mean`` (the prior mean of
    ρ; default the data's energy-matched uniform level) set the sampling methods' model;
    ``sources`` the catalogue's starting K (default: the peaks counted) and ``jobs`` the
    processes for its chains (default: the CPU cores); ``rho_prior`` ρ's generative prior,
    ``exponential`` or ``sparse`` (:class:`~nvbayes.inference.generative.Priors`).

    Where the gain is latent the spectrum is first divided by its unit scale
    (:meth:`~nvbayes.model.problem.InverseProblem.unit_scale`), so that the gain's prior,
    centred at 1, and the result do not depend on the unit the spectrum is written in."""
    entry = check_method(method)
    draws = entry.draws if draws is None else int(draws)
    chains = entry.chains if chains is None else int(chains)
    warmup = entry.warmup if warmup is None else int(warmup)
    if entry.draws is not None and draws < 2:
        raise ParameterError(f"draws must be >= 2, got {draws}", "pass --draws 2 or more")
    if entry.chains is not None and (chains < 1 or warmup < 1):
        raise ParameterError(f"chains {chains} and warmup {warmup}",
                             "pass --chains and --warmup of 1 or more")
    if method == "catalogue":
        held = {}
        if spec is not None and spec.nuisance.any:
            problem, held = held_at_estimates(problem, spec.nuisance)
        result = fit_catalogue_draws(problem, seed=seed, draws=draws, chains=chains,
                                     warmup=warmup, gain=gain, sources=sources, jobs=jobs)
        result.stats |= held
        result.tables["catalogue"].attrs |= {f"held_{k}": v for k, v in held.items()}
        return result
    if method in GENERATIVE_METHODS and check_likelihood(likelihood) == "generative":
        problem, gain_sd, scale = resolve_gain(problem, gain)
        result = fit_generative(problem, method, operator, seed=seed, draws=draws,
                                chains=chains, warmup=warmup,
                                priors=Priors(rho_mean=rho_mean, gain_sd=gain_sd,
                                              larmor="signal", rho_prior=rho_prior))
        result.stats["spectrum_divided_by"] = scale
        return result
    given = {"seed": seed, "device": device, "show": show,
             "precision": check_precision(precision), "draws": draws, "chains": chains,
             "warmup": warmup}
    return entry.fit(problem, spec, operator, **{k: given[k] for k in entry.options})


__all__ = ["DEFAULT_LIKELIHOOD", "DEVICES", "InferenceMethod", "LIKELIHOODS", "METHODS",
           "check_device", "check_likelihood", "check_method", "infer"]
