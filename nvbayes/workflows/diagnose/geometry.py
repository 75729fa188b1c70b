"""Where the data fidelity pulls a density: iter-0 gradient, rings and the energy barrier.

The data fidelity is the paper's ``D`` (Eq. 19), the mean squared difference of the log
max-normalized noise maps of prediction and measurement (:func:`~nvbayes.physics.log_mse`).
Every function here works on one measurement ``(n_freq, n, n)`` in float64.

Rings (fixed for nvbayes; the paper does not define them).  With ``r`` the distance of a pixel
centre from the grid centre ``((n − 1)/2, (n − 1)/2)`` in pixels::

    centre disk    r ≤ n/8                 (the disk of the centre-mass ratio)
    outer ring     3n/8 ≤ r < n/2          (the outermost band of the inscribed circle)

and the centre-to-outer ratio of a map ``g`` is ``mean_{disk} |g| / mean_{ring} |g|``.  A
map that does not depend on position scores 1; the paper's F2 iter-0 gradient 18.29.

Energy barrier.  Along the straight path ``ρ(t) = (1 − t) ρ_a + t ρ_b`` (Larmor map held) the
curve ``D(t)`` is summarized by its barrier ``h = max_t D(t) − D(0)`` at ``t* = argmax_t D``:
``h = 0`` and ``t* = 0`` when nothing along the path lies above the start.
"""

from __future__ import annotations

import numpy as np
import torch

from nvbayes.model.problem import InverseProblem
from nvbayes.physics.noise_map import LOG_EPS, log_map, log_mse, noise_map, normalized_noise_map

#: The outer ring runs from this fraction of n to n/2 (distance from the grid centre).
#: A peak "at the grid centre" lies within this many pixels of it (one of the four central
#: pixels of an even grid is 0.71 px away).
CENTRE_TOLERANCE_PX = 1.0


def peak_location(image) -> tuple[int, int]:
    """``(iy, ix)`` of the largest ``|g|``."""
    a = np.abs(np.asarray(image, dtype=np.float64))
    iy, ix = np.unravel_index(int(np.argmax(a)), a.shape)
    return int(iy), int(ix)


def distance_from_centre(index: tuple[int, int], n: int) -> float:
    """Distance of pixel ``(iy, ix)`` from the grid centre, pixels."""
    return float(np.hypot(index[0] - (n - 1) / 2.0, index[1] - (n - 1) / 2.0))


def uniform_start(problem: InverseProblem, level: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ρ, ω_L)``: the constant density ``level`` and the band-centre Larmor map, float64,
    the start of the free-density baselines (:func:`~nvbayes.inference.map.uniform_level`)."""
    n = problem.n
    rho = torch.full((n, n), float(level), dtype=torch.float64)
    larmor = torch.full((n, n), 0.5 * (problem.band[0] + problem.band[1]), dtype=torch.float64)
    return rho, larmor


def data_fidelity(problem: InverseProblem, operator: str, rho: torch.Tensor,
                  larmor: torch.Tensor, log_eps: float = LOG_EPS,
                  fixed_peak: bool = False) -> torch.Tensor:
    """``D`` of the prediction of ``(ρ, ω_L)`` (``(..., n, n)``) against the measurement:
    shape ``(...)``.

    ``fixed_peak``: divide the predicted noise map by its maximum taken as a constant (no
    gradient through ``max N_pred``), which removes the peak coupling P3 of Eq. 24 from
    ``∂D/∂ρ`` and leaves the value of ``D`` unchanged.
    """
    predicted = problem.operator(operator)(rho, larmor)
    observed = problem.observed(dtype=rho.dtype)
    if not fixed_peak:
        return log_mse(predicted, observed, log_eps)
    n_pred, n_obs = noise_map(predicted), noise_map(observed)
    peak = n_pred.detach().amax(dim=(-2, -1), keepdim=True)
    diff = (log_map(n_pred / peak, log_eps)
            - log_map(normalized_noise_map(n_obs), log_eps))
    return (diff * diff).mean(dim=(-2, -1))


def fidelity_gradient(problem: InverseProblem, operator: str, rho: torch.Tensor,
                      larmor: torch.Tensor, log_eps: float = LOG_EPS,
                      fixed_peak: bool = False) -> np.ndarray:
    """``∂D/∂ρ`` at ``(ρ, ω_L)``, ``(n, n)`` (``fixed_peak``: see :func:`data_fidelity`)."""
    rho = rho.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(data_fidelity(problem, operator, rho, larmor.detach(),
                                                log_eps, fixed_peak), rho)
    return grad.numpy()


def path_losses(problem: InverseProblem, operator: str, rho_start, rho_end, larmor,
                ts, log_eps: float = LOG_EPS) -> np.ndarray:
    """``D(ρ(t))`` along ``ρ(t) = (1 − t) ρ_start + t ρ_end`` for each ``t`` in ``ts``,
    Larmor map ``larmor`` throughout."""
    a, b, w = (torch.tensor(np.array(v, dtype=np.float64)) for v in (rho_start, rho_end, larmor))
    t = torch.tensor(np.array(ts, dtype=np.float64)).reshape(-1, 1, 1)
    with torch.no_grad():
        return data_fidelity(problem, operator, (1.0 - t) * a + t * b,
                             w.expand(t.shape[0], -1, -1), log_eps).numpy()


def barrier(ts, losses) -> dict:
    """``height`` (max D − D(0)), ``relative_height`` (max D / D(0)), ``position`` (t* of the
    maximum) and ``monotone`` (D never rises along t) of a path curve."""
    ts, losses = np.asarray(ts, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    k = int(np.argmax(losses))
    return {"height": float(losses[k] - losses[0]),
            "relative_height": float(losses[k] / losses[0]),
            "position": float(ts[k]),
            "monotone": bool(np.all(np.diff(losses) <= 0.0))}
