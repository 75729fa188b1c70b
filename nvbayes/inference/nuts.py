"""NUTS (Hamiltonian Monte Carlo) for low-dimensional Pyro models.

Chains are run one after another, each from its own seed and its own random initial point
(``initial_values(generator)`` when given, else Pyro's ``init_to_uniform`` in the
unconstrained space), so the draws do not depend on the number of CPU cores.  Draws come
back as arrays of shape ``(chain, draw, ...)``, ready for ArviZ.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_value

from nvbayes.progress import show_progress


@dataclass
class McmcResult:
    """Posterior draws ``{site: (chain, draw, ...)}`` with per-draw sampler statistics."""

    samples: dict
    diverging: np.ndarray
    step_size: np.ndarray
    wall_time_s: float
    chain_time_s: list = field(default_factory=list)


def run_nuts(model, *args, chains: int = 4, warmup: int = 500, draws: int = 500,
             seed: int = 0, target_accept: float = 0.8, max_tree_depth: int = 10,
             full_mass: bool = True, initial_values=None, max_plate_nesting=None,
             transforms=None, potential_fn=None, first_chain: int = 0,
             show: "bool | None" = None, **kwargs) -> McmcResult:
    """Sample ``model(*args, **kwargs)`` with NUTS; ``chains`` chains of ``draws`` draws.

    ``max_plate_nesting`` spares Pyro a trial run of the model (needed when a site cannot be
    sampled, as an improper prior cannot); ``transforms`` maps sites to the bijections from
    HMC's unconstrained coordinates (default: each support's own).

    With ``model=None`` and ``potential_fn`` (``{name: tensor} → U``, the negative log
    density in unconstrained coordinates) NUTS samples that potential instead, from
    ``initial_values(generator)``, which is then required.

    Chain ``c`` is seeded by ``seed · 1000 + c``; ``first_chain`` numbers the chains from
    there, so chains run one at a time (``chains=1, first_chain=c``), in any process, are
    the chains of one call.  ``show`` overrides :func:`~nvbayes.progress.show_progress` for
    Pyro's progress bar."""
    per_chain, diverging, step_size, times = [], [], [], []
    start = time.perf_counter()
    for chain in range(first_chain, first_chain + chains):
        pyro.clear_param_store()
        pyro.set_rng_seed(seed * 1000 + chain)
        init, first = {}, None
        if initial_values is not None:
            generator = torch.Generator().manual_seed(seed * 1000 + chain)
            first = initial_values(generator)
            if potential_fn is None:
                init = {"init_strategy": init_to_value(values=first)}
        if potential_fn is not None:
            kernel = NUTS(potential_fn=potential_fn, target_accept_prob=target_accept,
                          max_tree_depth=max_tree_depth, full_mass=full_mass)
        else:
            kernel = NUTS(model, target_accept_prob=target_accept,
                          max_tree_depth=max_tree_depth, full_mass=full_mass,
                          max_plate_nesting=max_plate_nesting, transforms=transforms, **init)
        mcmc = MCMC(kernel, num_samples=draws, warmup_steps=warmup, num_chains=1,
                    initial_params=first if potential_fn is not None else None,
                    disable_progbar=not (show_progress() if show is None else show))
        t0 = time.perf_counter()
        mcmc.run(*args, **kwargs)
        times.append(time.perf_counter() - t0)
        per_chain.append({k: v.detach().cpu().numpy() for k, v in mcmc.get_samples().items()})
        flags = np.zeros(draws, dtype=bool)
        for indices in mcmc.diagnostics()["divergences"].values():
            flags[np.asarray(indices, dtype=int)] = True
        diverging.append(flags)
        step_size.append(float(kernel.step_size))
    samples = {k: np.stack([c[k] for c in per_chain]) for k in per_chain[0]}
    return McmcResult(samples=samples, diverging=np.stack(diverging),
                      step_size=np.asarray(step_size), wall_time_s=time.perf_counter() - start,
                      chain_time_s=times)


__all__ = ["McmcResult", "run_nuts"]
