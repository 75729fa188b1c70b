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

Units (robust protocol, :attr:`ModelSpec.unit_free`): the solver sees the spectrum divided by
its unit scale (:meth:`InverseProblem.unit_scale`), so the start and the regularizers do not
depend on the unit the spectrum is written in; the final energy-ratio correction is taken
against the spectrum as given, which puts ρ̂ back in the measurement's units.

NaN guard: the state of the last step with a finite loss is kept; a non-finite loss or gradient
restores it and ends the fit early, flagged ``diverged`` in the result.

:func:`fit_batch` fits B measurements of one grid in one optimization loop (a neural field of
B instances, :mod:`.gradient`), each as :func:`fit_map` would fit it alone.  The final maps
are evaluated at the annealing progress β of each fit's last step (K, unless early stopping
ended the last stage sooner).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch

from nvbayes.data.spec import ModelSpec
from nvbayes.errors import ParameterError
from nvbayes.fields import (
    DeepDecoder,
    DensityControl,
    DensityField,
    GaussianSplats,
    LarmorMap,
    NeuralField,
    NuisanceField,
    NuisanceParameters,
    PixelDensity,
    pixel_coordinates,
)
from nvbayes.fields.neural import PRECISIONS
from nvbayes.model.nuisance import apply_nuisance, background_map
from nvbayes.model.problem import InverseProblem, check_inversion_operator

from .admm import solve_admm
from .amortized import fit_trained
from .gradient import solve_gradient
from .lbfgs import solve_lbfgs
from .nuisance import background_stats, estimates, less_background
from .objective import FieldGuide, traced_objective
from .recorder import Recorder
from .scale import HOMOGENEITY, least_squares_scale, scale_correction

__all__ = ["FieldGuide", "MapResult", "batchable", "build_field", "fit_batch", "fit_map",
           "traced_objective", "uniform_level"]

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


def uniform_level(problem: InverseProblem, operator: str = "F2") -> float:
    """The constant density whose prediction carries the observed energy (band-centre ω_L)."""
    with torch.no_grad():
        ones = torch.ones(problem.shape, dtype=torch.float64)
        centre = torch.full_like(ones, 0.5 * (problem.band[0] + problem.band[1]))
        predicted = problem.operator(operator)(ones, centre)
        observed = problem.observed(dtype=torch.float64)
        return float(scale_correction(observed, predicted, operator,
                                      problem.pixel_mask())["scale_correction"])


def build_field(spec: ModelSpec, problem: InverseProblem, level: float = 1.0,
                instances: "int | None" = None, precision: str = "fp32",
                scales: bool = False) -> torch.nn.Module:
    """The parameterization of ``spec.field`` on ``problem``'s grid; baselines start at
    ``level``.  ``instances``, ``precision`` and ``scales`` (the variational scale channels)
    apply to the neural field."""
    f = spec.field
    if f.kind == "neural":
        return NeuralField(problem.band, octaves=f.octaves, base=f.base,
                           directions=f.directions, width=f.width,
                           depth=f.depth, skip_layer=f.skip_layer,
                           support_threshold=f.support_threshold, off_support=f.off_support,
                           annealed=f.annealed, gate=f.gate, instances=instances,
                           precision=precision, scales=scales, init=f.init,
                           readout_scale=f.readout_scale)
    if instances is not None:
        raise ValueError(f"a {f.kind} field has no instance axis")
    n = problem.shape
    if f.kind == "pixels":
        density = PixelDensity(n, level)
    elif f.kind == "splats":
        standoff = problem.standoff / problem.spacing * (2.0 / max(n))   # z0 in coordinates
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


def nuisance_start(spec: ModelSpec, problem: InverseProblem
                   ) -> "tuple[torch.Tensor, torch.Tensor] | None":
    """Each measurement's :func:`~.nuisance.estimates` where ``spec`` models nuisances: the
    background grids ``([B,] m, m)`` and standoffs ``([B])``; ``None`` where it models none."""
    if not spec.nuisance.any:
        return None
    problems = ([problem] if problem.batch is None
                else [problem.instance(i) for i in range(problem.batch)])
    grids, standoffs = zip(*(estimates(one, spec.nuisance) for one in problems), strict=True)
    side = max(grid.shape[-1] for grid in grids)
    if any(grid.shape[-1] != side for grid in grids):     # one grid side for a shared loop
        fixed = dataclasses.replace(spec.nuisance, background_grid=side)
        grids = [estimates(one, fixed)[0] for one in problems]
    if problem.batch is None:
        return grids[0], torch.tensor(standoffs[0])
    return torch.stack(grids), torch.tensor(standoffs)


def solver_problem(problem: InverseProblem, spec: ModelSpec
                   ) -> tuple[InverseProblem, "tuple | None", InverseProblem, ModelSpec]:
    """``(work, start, signal, spec)``: the problem the solver sees (:func:`working_problem`,
    less the background where it is held at its estimate, ``profile``: the data terms then
    see the signal alone, a max-normalized noise map standing on a background having little
    contrast left), the nuisances' :func:`nuisance_start`, the working problem less the
    estimated background (whose energy sets the baselines' uniform start), and ``spec`` with
    the background grid side its estimate chose (``background_grid = 0``)."""
    work = working_problem(problem, spec)
    start = nuisance_start(spec, work)
    if start is None:
        return work, None, work, spec
    signal = less_background(work, start[0])
    nuisance = spec.nuisance
    if nuisance.background_grid == 0:
        nuisance = dataclasses.replace(nuisance, background_grid=int(start[0].shape[-1]))
        spec = dataclasses.replace(spec, nuisance=nuisance)
    held = nuisance.background and nuisance.background_fit == "profile"
    return (signal if held else work), start, signal, spec


def with_nuisance(field: torch.nn.Module, spec: ModelSpec, problem: InverseProblem,
                  start, instances: "int | None" = None) -> torch.nn.Module:
    """``field`` paired with the nuisance parameters of ``spec.nuisance`` from ``start``
    (:func:`nuisance_start`; ``field`` itself where none is modelled), each held there under
    ``profile`` (:class:`~nvbayes.data.spec.NuisanceSpec`)."""
    if start is None:
        return field
    nuisance = spec.nuisance
    params = NuisanceParameters(nuisance.names, problem.shape, start[0], start[1],
                                nuisance.fixed, instances)
    return NuisanceField(field, params)


def nuisance_stats(values: dict, background: "torch.Tensor | None",
                   problem: InverseProblem) -> dict:
    """The fitted nuisances of one measurement as numbers for the run's stats: the standoff
    (nm), the background's :func:`~.nuisance.background_stats` (``background`` ``(ny, nx)``
    in the measurement's units), the gain's spread."""
    out = {}
    if "standoff" in values:
        out["standoff_nm"] = float(values["standoff"])
    if background is not None:
        out |= background_stats(background, problem)
    if "gain" in values:
        out["gain_sd"] = float(values["gain"].to(torch.float64).std())
    return out


def working_problem(problem: InverseProblem, spec: ModelSpec) -> InverseProblem:
    """The problem the solver sees: ``problem`` divided by its unit scale under the robust
    protocol, ``problem`` itself under the paper's."""
    return problem.rescaled(working_unit(problem, spec)) if spec.unit_free else problem


def working_unit(problem: InverseProblem, spec: ModelSpec) -> np.ndarray:
    """The unit scale the solver's spectrum is divided by, ``()`` or ``(B,)`` (1 under the
    paper's protocol)."""
    if spec.unit_free:
        return np.asarray(problem.unit_scale(), dtype=np.float64)
    return np.ones(() if problem.batch is None else (problem.batch,))


def fresh_start(seed: int) -> None:
    """Seed torch and Pyro with ``seed`` and empty Pyro's parameter store: a fit from here
    depends on nothing that ran before it."""
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()


def batchable(spec: ModelSpec) -> bool:
    """Whether measurements can share one optimization loop under ``spec`` (the neural field
    with Adam/AdamW; the baselines are fitted one after the other)."""
    return spec.field.kind == "neural" and spec.solver == "gradient"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ParameterError(f"unknown precision {precision!r}",
                             f"use one of {', '.join(PRECISIONS)}")
    return precision


def fit_map(problem: InverseProblem, spec: ModelSpec, operator: str = "F2", seed: int = 0,
            device: str = "cpu", show: "bool | None" = None, precision: str = "fp32",
            dtype: torch.dtype = torch.float32) -> MapResult:
    """Fit the single measurement of ``problem`` with the parameterization and solver of
    ``spec``; see the module docstring.  ``precision`` (``fp32`` or ``bf16``) applies to the
    neural field's MLP; ``dtype`` is that of the parameters, the operator and the loss."""
    if problem.batch is not None:
        raise ValueError("fit_map takes one measurement; use fit_batch for a stack")
    operator = check_inversion_operator(operator)
    precision = check_precision(precision)
    start = time.perf_counter()
    if spec.field.kind == "trained":
        rho, larmor, predicted, stats = fit_trained(problem, spec, operator, device)
        return MapResult(rho=rho, larmor=larmor, predicted=predicted, stats=stats,
                         history={},
                         wall_time_s=time.perf_counter() - start)
    fresh_start(seed)
    device = torch.device(device)
    work, start_nuisance, signal, spec = solver_problem(problem, spec)
    if spec.field.kind == "neural":
        net = build_field(spec, work, precision=precision)
    else:
        net = build_field(spec, work, uniform_level(signal))
    net = with_nuisance(net, spec, work, start_nuisance).to(device, dtype)
    recorder = Recorder(spec.total_steps, show, SOLVER_COLUMNS[spec.solver])
    messages = SOLVERS[spec.solver](net, work, spec, operator, recorder)
    recorder.close()
    beta = final_beta(recorder, spec, 0)
    coords = pixel_coordinates(problem.shape, dtype=dtype, device=device)
    maps = _final_maps(net, coords, beta, problem, operator, working_unit(problem, spec))[0]
    return _result(maps, recorder, 0, time.perf_counter() - start, messages, net)


def fit_batch(problem: InverseProblem, spec: ModelSpec, operator: str = "F2",
              seeds: "int | list[int]" = 0, device: str = "cpu", show: "bool | None" = None,
              precision: str = "fp32", dtype: torch.dtype = torch.float32
              ) -> list[MapResult]:
    """Fit every measurement of a stacked ``problem`` (``(B, n_freq, n, n)``); one result
    each.

    With a neural field (:func:`batchable`) the B fits share one optimization loop (see
    :mod:`.gradient`), measurement ``i`` seeded ``seeds[i]`` (one number: the same seed for
    all), and each result is what :func:`fit_map` of that measurement alone gives.  Other
    parameterizations are fitted one after the other.  Each result's ``wall_time_s`` is the
    batch's wall time divided by B.
    """
    count = problem.batch
    if count is None:
        raise ValueError("fit_batch takes a stacked problem (B, n_freq, n, n)")
    seeds = [int(seeds)] * count if isinstance(seeds, int) else [int(s) for s in seeds]
    if len(seeds) != count:
        raise ValueError(f"need {count} seeds, got {len(seeds)}")
    if not batchable(spec):
        return [fit_map(problem.instance(i), spec, operator, seeds[i], device, show, precision,
                        dtype) for i in range(count)]
    operator = check_inversion_operator(operator)
    precision = check_precision(precision)
    start = time.perf_counter()
    pyro.clear_param_store()
    device = torch.device(device)
    net = build_field(spec, problem, instances=count, precision=precision)
    net.reset_parameters(seeds)
    work, start_nuisance, _, spec = solver_problem(problem, spec)
    net = with_nuisance(net, spec, work, start_nuisance, count).to(device, dtype)
    recorder = Recorder(spec.total_steps, show, SOLVER_COLUMNS[spec.solver], instances=count)
    messages = SOLVERS[spec.solver](net, work, spec, operator, recorder)
    recorder.close()
    beta = torch.tensor([final_beta(recorder, spec, i) for i in range(count)],
                        dtype=dtype, device=device)
    coords = pixel_coordinates(problem.shape, dtype=dtype, device=device)
    maps = _final_maps(net, coords, beta, problem, operator, working_unit(problem, spec))
    wall = (time.perf_counter() - start) / count
    prefix = [f"measurement {i}:" for i in range(count)]
    results = []
    for i in range(count):
        mine = [m for m in messages if m.startswith(prefix[i] + " ")]
        result = _result(maps[i], recorder, i, wall, mine, net)
        result.stats["batch_size"] = count
        results.append(result)
    return results


def final_beta(recorder: Recorder, spec: ModelSpec, index: int) -> float:
    """The annealing progress of the instance's last step (K if it recorded none)."""
    beta = recorder.last("beta", index)
    return float(getattr(spec.field, "octaves", 0)) if math.isnan(beta) else beta


def _result(maps: tuple, recorder: Recorder, index: int, wall: float, messages: list,
            net) -> MapResult:
    rho, larmor, predicted, stats = maps
    diverged = bool(recorder.diverged[index])
    stats.update(steps=recorder.steps(index), diverged=int(diverged),
                 final_loss=recorder.last("loss", index))
    return MapResult(rho=rho, larmor=larmor, predicted=predicted, stats=stats,
                     history=recorder.history(index), wall_time_s=wall, diverged=diverged,
                     messages=list(messages), field=net)


def _final_maps(net: torch.nn.Module, coords: torch.Tensor, beta, problem: InverseProblem,
                operator: str, unit: np.ndarray) -> list[tuple]:
    """``(ρ, ω_L, S_pred, stats)`` per measurement on the full grid at the last step's β,
    scale-corrected, as numpy.

    With nuisances the prediction is :func:`~nvbayes.model.nuisance.apply_nuisance`'s; the
    background, in the solver's units, is taken back to the measurement's by ``unit`` (the
    working unit scale, ``()`` or ``(B,)``), and the signal's scale is its least-squares
    coefficient against the observed spectrum less that background
    (:func:`~.scale.least_squares_scale`; the energy ratio would measure the background's
    error)."""
    with torch.no_grad():
        rho, larmor = net(coords, beta)
        rho, larmor = rho.to(torch.float64), larmor.to(torch.float64)
        values = ({k: v.to(torch.float64) for k, v in net.nuisance_values(problem.shape).items()}
                  if isinstance(net, NuisanceField) else {})
        grid = values.pop("background", None)
        signal = apply_nuisance(problem.operator(operator), rho, larmor, values)
        observed = problem.observed(dtype=torch.float64, device=coords.device)
        unit = torch.as_tensor(unit, dtype=torch.float64, device=coords.device).reshape(-1)
        if problem.batch is None:
            rho, larmor, signal, observed = (t.unsqueeze(0) for t in
                                             (rho, larmor, signal, observed))
            values = {k: v.unsqueeze(0) for k, v in values.items()}
            grid = None if grid is None else grid.unsqueeze(0)
        out = []
        mask = problem.pixel_mask(device=coords.device)
        for i in range(rho.shape[0]):
            background = (None if grid is None
                          else background_map(grid[i], problem.shape) * unit[i])
            flat = 0.0 if background is None else background.unsqueeze(-3)
            scale = scale_correction if background is None else least_squares_scale
            stats = scale(observed[i] - flat, signal[i], operator, mask)
            alpha = stats["scale_correction"]
            one = problem if problem.batch is None else problem.instance(i)
            stats |= nuisance_stats({k: v[i] for k, v in values.items()}, background, one)
            predicted = alpha ** HOMOGENEITY[operator] * signal[i] + flat
            out.append(((alpha * rho[i]).cpu().numpy(), larmor[i].cpu().numpy(),
                        predicted.cpu().numpy(), stats))
    return out
