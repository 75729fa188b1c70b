"""Centre collapse of whole fits: the centre-mass ratio at a fixed step budget, and the ADMM
sweep of appendix E.5.

*Fixed budget* (paper Figure 4c): every method gets the same number of solver steps, its
stages scaled in proportion (:func:`budgeted`): NeTMY's 3000 + 7000 Adam steps become 60 + 140
at a budget of 200, Tikhonov takes 200 Adam steps, ADMM 200 outer cycles (of its 30 inner
steps), L-BFGS 200 outer iterations.  The centre-mass ratio of each result is
:func:`~nvbayes.metrics.centre_mass_ratio`.

*ADMM sweep* (paper Table 9): ADMM run to termination on several samples under 8 loss
settings (:func:`admm_settings`), the 2³ combinations of

* the data term: ``D`` (log max-normalized noise map, the paper's) or ``R_nm`` (the
  mean-normalized noise map, which has no max in it and so none of the peak coupling P3);
* TV weight 0 or the model file's;
* ℓ1 shrinkage κ 0 or the model file's.

The paper does not list its 8 settings; these are nvbayes's.
"""

from __future__ import annotations

import dataclasses

from nvbayes.data.spec import LossWeights, ModelSpec
from nvbayes.inference.map import MapResult, fit_map
from nvbayes.metrics import centre_mass_ratio
from nvbayes.model.problem import InverseProblem

#: The methods of the paper's Figure 4c, in its order.
BUDGET_METHODS = ("netmy", "gsplat", "lbfgs", "admm", "tikhonov")
#: Methods that optimize the pixel values themselves.
FREE_DENSITY_KINDS = ("pixels",)
DATA_TERMS = ("log_mse", "noise_map")


def budgeted(spec: ModelSpec, steps: int) -> ModelSpec:
    """``spec`` with its stages rescaled to ``steps`` solver steps in all, in proportion to
    their lengths (each at least 1; rounding goes to the last stage)."""
    if steps < len(spec.stages):
        raise ValueError(f"a budget of {steps} steps cannot cover {len(spec.stages)} stages")
    total = spec.total_steps
    lengths = [max(1, round(s.steps * steps / total)) for s in spec.stages[:-1]]
    lengths.append(steps - sum(lengths))
    if lengths[-1] < 1:
        raise ValueError(f"a budget of {steps} steps is too small for {spec.name}")
    return dataclasses.replace(spec, stages=tuple(
        dataclasses.replace(s, steps=k) for s, k in zip(spec.stages, lengths, strict=True)))


def is_free_density(spec: ModelSpec) -> bool:
    return spec.field.kind in FREE_DENSITY_KINDS


def budget_fit(problem: InverseProblem, spec: ModelSpec, operator: str, steps: int,
               seed: int = 0) -> MapResult:
    """One MAP fit of ``spec`` cut to ``steps`` solver steps (:func:`budgeted`)."""
    return fit_map(problem, budgeted(spec, steps), operator, seed=seed, show=False)


def admm_settings(base: ModelSpec) -> dict[str, ModelSpec]:
    """The 8 loss settings of the sweep, by label ``"<data>/tv=<w>/l1=<κ>"``, built from the
    ADMM model file ``base`` (its TV weight and shrinkage are the 'on' values)."""
    if base.solver != "admm":
        raise ValueError(f"the sweep needs an ADMM model, {base.name} uses {base.solver}")
    tv_on = max((s.weights.tv for s in base.stages), default=0.0) or 1e-3
    kappa_on = base.admm.shrinkage or 1e-2
    settings = {}
    for data in DATA_TERMS:
        for tv in (0.0, tv_on):
            for kappa in (0.0, kappa_on):
                weights = LossWeights(**{data: 1.0, "tv": tv})
                stages = tuple(dataclasses.replace(s, weights=weights) for s in base.stages)
                spec = dataclasses.replace(base, name=f"{base.name}-sweep", stages=stages,
                                           admm=dataclasses.replace(base.admm,
                                                                    shrinkage=kappa))
                settings[f"{data}/tv={tv:g}/l1={kappa:g}"] = spec
    return settings


def sweep_centre_mass(problem: InverseProblem, spec: ModelSpec, operator: str) -> float:
    """Centre-mass ratio of one ADMM fit run to termination."""
    return centre_mass_ratio(fit_map(problem, spec, operator, seed=0, show=False).rho)
