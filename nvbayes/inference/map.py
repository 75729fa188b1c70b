"""MAP inference: a Delta guide holding a parameterization of (ρ, ω_L), fitted by a solver.

The parameterization is the specification's ``[field]``: the NeTMY neural field, or one of the
baselines of appendix E.2 (free pixels, Gaussian splats, Deep Decoder), each paired with a free
per-pixel Larmor map.  The solver follows from the specification (:attr:`ModelSpec.solver`):
Adam/AdamW steps over the curriculum (:mod:`.gradient`), L-BFGS (:mod:`.lbfgs`) or ADMM
(:mod:`.admm`); all of them minimize the negative log joint of the stage's Pyro model under the
Delta guide (:mod:`.objective`).  After the last stage the energy-ratio scale correction
(:mod:`.scale`) is applied to every method alike.

Baselines start from the *energy-matched uniform density*: the constant ``c`` whose F2
prediction (Larmor field at the band centre) carries the observed energy, ``c = α`` of the
scale correction applied to ``ρ = 1``, whichever operator the fit uses.  (Under F1 a uniform
sheet lies close to the operator's null space, its coherent field cancelling away from the
window's edges, so an F1 energy match would set ``c`` by edge effects alone.)

NaN guard: the state of the last step with a finite loss is kept; a non-finite loss or gradient
restores it and ends the fit early, flagged ``diverged`` in the result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch

from ..fields import (
    DeepDecoder,
    DensityControl,
    DensityField,
    GaussianSplats,
    LarmorMap,
    NeuralField,
    PixelDensity,
    pixel_coordinates,
)
from ..model.problem import InverseProblem, check_inversion_operator
from ..spec import ModelSpec
from .admm import solve_admm
from .gradient import solve_gradient
from .lbfgs import solve_lbfgs
from .objective import FieldGuide, traced_objective
from .recorder import Recorder
from .scale import HOMOGENEITY, scale_correction

__all__ = ["FieldGuide", "MapResult", "build_field", "fit_map", "traced_objective",
           "uniform_level"]

SOLVERS = {"gradient": solve_gradient, "lbfgs": solve_lbfgs, "admm": solve_admm}
#: Extra history columns of each solver.
SOLVER_COLUMNS = {"gradient": (), "lbfgs": ("evaluations",),
                  "admm": ("penalty", "primal_residual", "dual_residual")}


@dataclass
class MapResult:
    """What a MAP fit returns: maps on the measurement grid and the per-step history."""

    rho: np.ndarray                 # (n, n), scale-corrected
    larmor: np.ndarray              # (n, n), GHz
    predicted: np.ndarray           # (n_freq, n, n), spectrum of (rho, larmor)
    stats: dict                     # scale_correction, energy_obs, energy_pred, loss, ...
    history: dict                   # name → (steps,) array
    wall_time_s: float
    diverged: bool = False
    messages: list = field(default_factory=list)
    field: "torch.nn.Module | None" = None   # the fitted field itself (not saved with a run)


def uniform_level(problem: InverseProblem, operator: str = "F2", device="cpu") -> float:
    """The constant density whose prediction carries the observed energy (band-centre ω_L)."""
    n = problem.n
    with torch.no_grad():
        ones = torch.ones(n, n, dtype=torch.float64, device=device)
        centre = torch.full_like(ones, 0.5 * (problem.band[0] + problem.band[1]))
        predicted = problem.operator(operator)(ones, centre)
        observed = problem.observed(dtype=torch.float64, device=device)
        return float(scale_correction(observed, predicted, operator)["scale_correction"])


def build_field(spec: ModelSpec, problem: InverseProblem, level: float = 1.0) -> torch.nn.Module:
    """The parameterization of ``spec.field`` on ``problem``'s grid; baselines start at
    ``level``."""
    f = spec.field
    if f.kind == "neural":
        return NeuralField(problem.band, octaves=f.octaves, base=f.base, width=f.width,
                           depth=f.depth, skip_layer=f.skip_layer,
                           support_threshold=f.support_threshold, off_support=f.off_support,
                           annealed=f.annealed, gate=f.gate)
    n = problem.n
    if f.kind == "pixels":
        density = PixelDensity(n, level)
    elif f.kind == "splats":
        standoff = problem.standoff / problem.spacing * (2.0 / n)   # z0 in coordinate units
        control = DensityControl(max_count=f.max_count, start=f.densify_from,
                                 stop=f.densify_until, every=f.densify_every,
                                 grad_ratio=f.grad_ratio, split_width=f.split_width * standoff,
                                 merge_distance=f.merge_distance * standoff,
                                 prune_fraction=f.prune_fraction,
                                 width_lr_scale=f.width_lr_scale,
                                 amplitude_lr_scale=f.amplitude_lr_scale)
        density = GaussianSplats(f.count, level, control)
    else:
        density = DeepDecoder(n, f.channels, level, f.upsample)
    return DensityField(density, LarmorMap(n, problem.band))


def fit_map(problem: InverseProblem, spec: ModelSpec, operator: str = "F2", seed: int = 0,
            device: str = "cpu", show: "bool | None" = None) -> MapResult:
    """Fit ``problem`` with the parameterization and solver of ``spec``; see the module
    docstring."""
    operator = check_inversion_operator(operator)
    start = time.perf_counter()
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    device = torch.device(device)
    level = 1.0 if spec.field.kind == "neural" else uniform_level(problem, device=device)
    net = build_field(spec, problem, level).to(device)
    recorder = Recorder(spec.total_steps, show, SOLVER_COLUMNS[spec.solver])
    messages = SOLVERS[spec.solver](net, problem, spec, operator, device, recorder)
    diverged = recorder.diverged
    history = recorder.close()
    rho, larmor, predicted, stats = _final_maps(net, problem, operator,
                                                getattr(spec.field, "octaves", 0), device)
    stats.update(steps=recorder.count, diverged=int(diverged), final_loss=recorder.final_loss)
    return MapResult(rho=rho, larmor=larmor, predicted=predicted, stats=stats, history=history,
                     wall_time_s=time.perf_counter() - start, diverged=diverged,
                     messages=messages, field=net)


def _final_maps(net: torch.nn.Module, problem: InverseProblem, operator: str, octaves: int,
                device) -> tuple:
    """``(ρ, ω_L, S_pred, stats)`` on the full grid at β = K, scale-corrected, as numpy."""
    coords = pixel_coordinates(problem.n, device=device)
    with torch.no_grad():
        rho, larmor = net(coords, float(octaves))
        rho, larmor = rho.to(torch.float64), larmor.to(torch.float64)
        predicted = problem.operator(operator)(rho, larmor)
        observed = problem.observed(dtype=torch.float64, device=device)
        stats = scale_correction(observed, predicted, operator)
        alpha = stats["scale_correction"]
    return ((alpha * rho).cpu().numpy(), larmor.cpu().numpy(),
            (alpha ** HOMOGENEITY[operator] * predicted).cpu().numpy(), stats)
