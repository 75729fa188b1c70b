"""The Laplace approximation: the Gaussian ``N(mode, H⁻¹)`` of a Hessian ``H`` at a mode.

:class:`HessianGaussian` is the one implementation of the Gaussian itself (eigen-decomposition,
condition number, draws); two mode finders use it:

* :func:`run_laplace`, for a Pyro model with a few constrained sites (the α-RuCl3 ansatz): the
  mode in Pyro's unconstrained space by Adam (an ``AutoLaplaceApproximation`` guide) polished
  with L-BFGS, ``H`` of the negative log joint there, and the draws mapped back through each
  site's constraint transform;
* :func:`~nvbayes.inference.pixel_posterior.fit_laplace`, for the pixel density of an imaging
  fit: the mode is the MAP, ``H`` the exact pixel Hessian by Hessian-vector products.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoLaplaceApproximation
from pyro.infer.autoguide.initialization import init_to_median
from pyro.ops.hessian import hessian as pyro_hessian
from torch.distributions import biject_to

from nvbayes.errors import NvbayesError


@dataclass
class HessianGaussian:
    """``N(mean, H⁻¹)`` through ``H = V diag(λ) Vᵀ``.  Eigenvalues ≤ 0 carry no curvature (a
    point that is not a minimum of the energy in every direction): draws use the smallest
    positive eigenvalue there.  ``condition_number`` is ``λ_max / λ_min`` over the positive
    eigenvalues; ``nonpositive`` counts the others."""

    eigenvalues: torch.Tensor       # ascending, (m,)
    modes: torch.Tensor             # eigenvectors as columns, (m, m)

    @classmethod
    def of(cls, hessian: torch.Tensor) -> "HessianGaussian":
        eigenvalues, modes = torch.linalg.eigh(0.5 * (hessian + hessian.T))
        if not bool((eigenvalues > 0).any()):
            raise NvbayesError("the Hessian at the mode has no positive curvature",
                               "the posterior is not locally Gaussian there; use another "
                               "method (svi, or nuts on a small model)")
        return cls(eigenvalues, modes)

    @property
    def condition_number(self) -> float:
        positive = self.eigenvalues[self.eigenvalues > 0]
        return float(self.eigenvalues[-1] / positive.min())

    @property
    def nonpositive(self) -> int:
        return int((self.eigenvalues <= 0).sum())

    def draws(self, mean: torch.Tensor, count: int,
              generator: "torch.Generator | None" = None) -> torch.Tensor:
        """``mean + V diag(λ^(-1/2)) z``, z standard normal: ``(count, *mean.shape)``."""
        floor = self.eigenvalues[self.eigenvalues > 0].min()
        curvature = torch.where(self.eigenvalues > 0, self.eigenvalues, floor)
        z = torch.randn(count, curvature.numel(), generator=generator, dtype=mean.dtype)
        delta = (z / curvature.sqrt()) @ self.modes.T
        return (mean.reshape(1, -1) + delta).reshape(count, *mean.shape)


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
    loc = guide.loc.detach()
    energy = Trace_ELBO().differentiable_loss(model, guide, *args, **kwargs)
    hessian = pyro_hessian(energy, guide.loc).detach()
    gaussian = HessianGaussian.of(hessian)
    if gaussian.nonpositive:
        raise NvbayesError("the Hessian at the mode is not positive definite",
                           "the posterior is not locally Gaussian there; use --method nuts")
    latent = gaussian.draws(loc, draws, torch.Generator().manual_seed(seed))
    samples, mode, at = {}, {}, 0
    with torch.no_grad():                  # the latent vector is the sites' values, in order
        for name, site in guide.prototype_trace.iter_stochastic_nodes():
            shape = guide._unconstrained_shapes[name]
            size, constrain = math.prod(shape), biject_to(site["fn"].support)
            samples[name] = constrain(latent[:, at:at + size].reshape(draws, *shape))[None]
            mode[name] = constrain(loc[at:at + size].reshape(shape))
            at += size
    samples = {k: v.cpu().numpy() for k, v in samples.items()}
    mode = {k: v.cpu().numpy() for k, v in mode.items()}
    eigenvalues = gaussian.eigenvalues.cpu().numpy()
    return LaplaceResult(samples=samples, mode=mode, hessian=hessian.cpu().numpy(),
                         eigenvalues=eigenvalues, condition_number=gaussian.condition_number,
                         final_loss=float(loss), wall_time_s=time.perf_counter() - start)


__all__ = ["HessianGaussian", "LaplaceResult", "run_laplace"]
