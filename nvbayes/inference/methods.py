"""The registry of inference methods: what each one is, its defaults and what it supports.

The command line's ``--method`` choices, help and defaults, the fit workflow and the
calibration all read :data:`METHODS`; :func:`infer` fits one problem by name.

======== ============================================================ ======= ====== ======
method   result                                                        draws  chains warmup
======== ============================================================ ======= ====== ======
map      the specification's solver: one point estimate                 —      —      —
svi      the neural field as variational guide (neural fields only)     200    —      —
laplace  the MAP, then the exact pixel Hessian's Gaussian               200    —      —
nuts     NUTS on the free pixel grid (≤ 16 × 16, CPU, fp32)             300    2      1000
======== ============================================================ ======= ====== ======

>>> from nvbayes.inference.methods import METHODS
>>> METHODS["nuts"].draws, METHODS["nuts"].chains
(300, 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from nvbayes.errors import ParameterError

from .map import batchable, check_precision, fit_map
from .pixel_posterior import fit_laplace, fit_nuts
from .svi import fit_svi

DEVICES = ("cpu", "cuda")


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

    def check(self, spec, device: str, precision: str) -> None:
        """One-line errors for a model, device or precision this method cannot take."""
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
)}


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
          chains: "int | None" = None, warmup: "int | None" = None):
    """Fit one :class:`~nvbayes.model.problem.InverseProblem` by ``method``: a ``MapResult``
    (``map``) or ``PosteriorDraws`` (``svi``, ``laplace``, ``nuts``).  Counts left ``None``
    take the method's defaults."""
    entry = check_method(method)
    draws = entry.draws if draws is None else int(draws)
    chains = entry.chains if chains is None else int(chains)
    warmup = entry.warmup if warmup is None else int(warmup)
    if entry.draws is not None and draws < 2:
        raise ParameterError(f"draws must be >= 2, got {draws}", "pass --draws 2 or more")
    if entry.chains is not None and (chains < 1 or warmup < 1):
        raise ParameterError(f"chains {chains} and warmup {warmup}",
                             "pass --chains and --warmup of 1 or more")
    given = {"seed": seed, "device": device, "show": show,
             "precision": check_precision(precision), "draws": draws, "chains": chains,
             "warmup": warmup}
    return entry.fit(problem, spec, operator, **{k: given[k] for k in entry.options})


__all__ = ["DEVICES", "InferenceMethod", "METHODS", "check_device", "check_method", "infer"]
