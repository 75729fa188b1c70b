"""Posterior draws of (ρ, ω_L) in the energy-ratio gauge, as every sampling method returns them.

The likelihoods see ρ only up to a positive factor (the max-normalized noise map), so the scale
of a draw is a gauge, not a measured quantity.  docs/architecture.md fixes it by the energy-ratio
correction, here applied to each draw on its own::

    ρ_d  ←  α_d ρ_d,     α_d = (E_obs / E_pred(ρ_d, ω_d))^(1/p),     p = 1 (F2), 2 (F1)

so every corrected draw reproduces the observed total power, and the spread that remains is
the spread of the shape of ρ.  Draws are kept as ``(chain, draw, ny, nx)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from nvbayes.model.problem import InverseProblem
from nvbayes.physics.noise_map import noise_map

from .scale import HOMOGENEITY, scale_correction

#: Draws pushed through the operator at once (a 64² spectrum of 50 readouts is 1.6 MB).
CHUNK = 16


@dataclass
class PosteriorDraws:
    """What SVI, Laplace and NUTS return.

    ``rho``, ``larmor`` and ``noise_map`` (the predicted ``N = Σ_ω S`` of each draw) are
    ``(chain, draw, ny, nx)``, ``rho`` gauge-fixed; ``draw_stats`` holds ``(chain, draw)``
    arrays (``scale_correction`` and the sampler's own), ``stats`` numbers of the fit as a
    whole; ``history`` the optimizer's per-step rows when there was an optimization.
    """

    rho: np.ndarray
    larmor: np.ndarray
    noise_map: np.ndarray
    draw_stats: dict
    stats: dict
    history: dict
    wall_time_s: float
    messages: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)     # method-specific arrays (Laplace spectrum)
    tables: dict = field(default_factory=dict)    # stem → xr.Dataset, saved as stem.nc
    frames: dict = field(default_factory=dict)    # stem → DataFrame, saved as stem.csv


def gauge_fixed(problem: InverseProblem, operator: str, rho: torch.Tensor,
                larmor: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(α ρ, ω_L, N_pred(α ρ), α)`` for draws ``rho``, ``larmor`` of shape ``(..., n, n)``.

    Computed in float64 on the problem's full grid, :data:`CHUNK` draws at a time.
    """
    shape = rho.shape[:-2]
    rho = rho.detach().reshape(-1, *rho.shape[-2:]).to(torch.float64)
    larmor = larmor.detach().reshape(-1, *larmor.shape[-2:]).to(torch.float64)
    forward = problem.operator(operator)
    observed = problem.observed(dtype=torch.float64, device=rho.device)
    power = HOMOGENEITY[operator]
    mask = problem.pixel_mask(device=rho.device)
    alphas, maps = [], []
    with torch.no_grad():
        for lo in range(0, rho.shape[0], CHUNK):
            predicted = forward(rho[lo: lo + CHUNK], larmor[lo: lo + CHUNK])
            for one in predicted:
                alpha = scale_correction(observed, one, operator, mask)["scale_correction"]
                alphas.append(alpha)
                maps.append((alpha ** power * noise_map(one)).cpu().numpy())
    alpha = np.asarray(alphas)
    scaled = rho.cpu().numpy() * alpha[:, None, None]
    return (scaled.reshape(*shape, *scaled.shape[-2:]),
            larmor.cpu().numpy().reshape(*shape, *larmor.shape[-2:]),
            np.stack(maps).reshape(*shape, *scaled.shape[-2:]), alpha.reshape(shape))


__all__ = ["PosteriorDraws", "gauge_fixed"]
