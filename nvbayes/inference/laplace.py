"""The Laplace approximation of a Pyro model's posterior.

The mode of the posterior density in Pyro's unconstrained space is found with Adam (an
``AutoLaplaceApproximation`` guide, i.e. a point mass trained on the negative log joint),
then polished with L-BFGS;
the Hessian ``H`` of the negative log joint there gives the Gaussian ``N(mode, H⁻¹)``, whose
draws are mapped back through each site's constraint transform.  Draws are made in one
vectorized pass (``Predictive(parallel=True)``), so the model must broadcast over a leading
sample axis.  ``H`` is returned with its
eigenvalues and condition number ``λ_max / λ_min``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyro
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoLaplaceApproximation
from pyro.infer.autoguide.initialization import init_to_median

from nvbayes.errors import NvbayesError


@dataclass
class LaplaceResult:
    """Draws ``{site: (1, draw, ...)}``, the mode and the unconstrained Hessian."""

    samples: dict
    mode: dict
    hessian: np.ndarray
    eigenvalues: np.ndarray
    condition_number: float
    final_loss: float
    wall_time_s: float


def _polish(model, guide, *args, **kwargs) -> float:
    """Finish the mode search with L-BFGS on the (deterministic) negative log joint."""
    elbo = Trace_ELBO()
    loc = guide.loc
    optimizer = torch.optim.LBFGS([loc], lr=1.0, max_iter=200, tolerance_grad=1e-10,
                                  tolerance_change=1e-14, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        value = elbo.differentiable_loss(model, guide, *args, **kwargs)
        value.backward()
        return value

    optimizer.step(closure)
    with torch.no_grad():
        return float(elbo.differentiable_loss(model, guide, *args, **kwargs))


def run_laplace(model, *args, steps: int = 3000, lr: float = 0.02, draws: int = 2000,
                seed: int = 0, **kwargs) -> LaplaceResult:
    """Fit the mode of ``model(*args, **kwargs)`` and draw from the Laplace posterior."""
    start = time.perf_counter()
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = AutoLaplaceApproximation(model, init_loc_fn=init_to_median(num_samples=31))
    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.1 ** (1 / steps)}),
              Trace_ELBO())
    loss = float("nan")
    for _ in range(steps):
        loss = svi.step(*args, **kwargs)
    loss = _polish(model, guide, *args, **kwargs)
    if not np.isfinite(loss):
        raise NvbayesError("the Laplace mode search diverged (non-finite loss)",
                           "check the data, or use --method nuts")
    try:
        gaussian = guide.laplace_approximation(*args, **kwargs)
    except (RuntimeError, torch.linalg.LinAlgError):
        raise NvbayesError("the Hessian at the mode is not positive definite",
                           "the posterior is not locally Gaussian there; use --method nuts") \
            from None
    with torch.no_grad():
        covariance = gaussian.get_posterior(*args, **kwargs).covariance_matrix.detach()
        hessian = torch.linalg.inv(covariance)
        hessian = 0.5 * (hessian + hessian.T)
        eigenvalues = torch.linalg.eigvalsh(hessian).cpu().numpy()
        mode = {k: v.detach().cpu().numpy() for k, v in gaussian.median(*args, **kwargs).items()}
    sites = list(mode)
    predictive = Predictive(model, guide=gaussian, num_samples=draws, return_sites=sites,
                           parallel=True)
    with torch.no_grad():
        drawn = predictive(*args, **kwargs)
    samples = {k: drawn[k].detach().cpu().numpy().reshape((1, draws) + np.shape(mode[k]))
               for k in sites}
    return LaplaceResult(samples=samples, mode=mode, hessian=hessian.cpu().numpy(),
                         eigenvalues=eigenvalues,
                         condition_number=float(eigenvalues.max() / eigenvalues.min()),
                         final_loss=float(loss), wall_time_s=time.perf_counter() - start)


__all__ = ["LaplaceResult", "run_laplace"]
