"""The per-stage objective every MAP solver minimizes: a Pyro model and a Delta guide.

For a stage of the curriculum the measurement and the operator are coarsened by the stage's
``downsample``, the model is :class:`~nvbayes.model.NoiseSpectrumModel` with the stage's loss
weights, and the guide puts point masses at the field's output on that stage's pixel grid.

Two evaluations of one objective: :func:`traced_objective` runs the guide and the model under
Pyro's tracing and reads the terms off the trace (any guide); :class:`StagePotential`, built
once per stage for the Delta guide, evaluates the same terms from the field's output directly
(:meth:`~nvbayes.model.NoiseSpectrumModel.potential`), as Pyro's HMC turns a model into a
potential function once rather than tracing it at every step.
"""

from __future__ import annotations

import contextlib
import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from nvbayes.data.spec import NOISE_FLOOR, NOISE_FLOOR_MIN, ModelSpec, Stage
from nvbayes.fields import Field, NuisanceField, pixel_coordinates
from nvbayes.model.netmy import NoiseSpectrumModel
from nvbayes.model.nuisance import EVENT_DIMS
from nvbayes.model.problem import InverseProblem
from nvbayes.physics.noise_map import noise_floor


class FieldGuide:
    """Pyro guide ``guide(beta)``: Delta sites ``rho`` and ``larmor`` at the field's output,
    and one at each nuisance value of a :class:`~nvbayes.fields.NuisanceField`.

    ``field`` is any module ``(coords, β) → (ρ, ω_L)``; ``coords`` ``(n, n, 2)`` fixes the
    pixel grid of the stage.  A field of B instances gives its sites the plate of the model's
    B measurements.
    """

    def __init__(self, field: Field, coords: torch.Tensor):
        self.field = field
        self.coords = coords

    def __call__(self, beta: float, *args, **kwargs):
        pyro.module("field", self.field)
        rho, larmor = self.field(self.coords, beta)
        instances = self.field.instances
        nuisance = (self.field.nuisance_values(self.coords.shape[:2])
                    if isinstance(self.field, NuisanceField) else {})
        with (pyro.plate("measurements", instances, dim=-1) if instances
              else contextlib.nullcontext()):
            pyro.sample("rho", dist.Delta(rho, event_dim=2))
            pyro.sample("larmor", dist.Delta(larmor, event_dim=2))
            for name, value in nuisance.items():
                pyro.sample(name, dist.Delta(value, event_dim=EVENT_DIMS[name]))
        return rho, larmor


def stage_log_eps(spec: ModelSpec, problem: InverseProblem, downsample: int = 1
                  ) -> "float | torch.Tensor":
    """ε of D on the grid coarsened by ``downsample``: the specification's number, or the
    noise floor of the (block-averaged) measurement, at least :data:`NOISE_FLOOR_MIN`, ``()``
    or ``(B,)``, with the σ of one readout divided by ``downsample`` (a block mean of d²
    independent readouts)."""
    if spec.log_eps != NOISE_FLOOR:
        return float(spec.log_eps)
    observed = problem.observed(downsample, dtype=torch.float64)
    return noise_floor(observed, problem.sigma(downsample=downsample), NOISE_FLOOR_MIN,
                       problem.pixel_mask(downsample))


def stage_objective(problem: InverseProblem, spec: ModelSpec, stage: Stage, operator: str,
                    field: Field, guide_type=FieldGuide,
                    noise_sigma: "float | torch.Tensor | None" = None
                    ) -> tuple[NoiseSpectrumModel, object]:
    """``(model, guide)`` of one stage, in the dtype and on the device of the field.

    ``guide_type(field, coords)`` builds the guide (the MAP's Delta sites by default);
    ``noise_sigma`` (σ of one readout on the full grid, a number or a map) selects the
    calibrated likelihood, with σ / d on a grid block-averaged by d (a map: the problem's
    own σ of each block, :meth:`~nvbayes.model.problem.InverseProblem.sigma`).
    """
    dtype, device = field.dtype, field.device
    d = stage.downsample
    if noise_sigma is None:
        sigma = None
    elif torch.as_tensor(noise_sigma).dim() >= 2:
        sigma = problem.sigma(downsample=d)
    else:
        sigma = float(noise_sigma) / d
    model = NoiseSpectrumModel(problem.operator(operator, d),
                               problem.observed(d, dtype=dtype, device=device),
                               stage.weights, stage_log_eps(spec, problem, d),
                               noise_sigma=sigma, reduction=spec.reduction,
                               mask=problem.pixel_mask(d, device),
                               nuisance=spec.nuisance, standoff_nm=problem.standoff)
    ny, nx = problem.shape
    guide = guide_type(field, pixel_coordinates((ny // d, nx // d), dtype=dtype,
                                                device=device))
    return model, guide


class StagePotential:
    """``potential(β) → (loss, terms)``: :func:`traced_objective` of ``(model, guide)`` for a
    Delta guide (:class:`FieldGuide`), evaluated without a trace.

    The loss is ``Σ terms`` (a Delta guide has ``log q = 0``), shape: the model's measurement
    batch (``()`` for one measurement, ``(B,)`` for B).
    """

    def __init__(self, model: NoiseSpectrumModel, guide: FieldGuide):
        if type(guide) is not FieldGuide:
            raise TypeError(f"a potential needs the Delta FieldGuide, got {type(guide).__name__}")
        self.model = model
        self.field = guide.field
        self.coords = guide.coords
        self.shape = tuple(guide.coords.shape[:2])

    def __call__(self, beta: "float | torch.Tensor"):
        rho, larmor = self.field(self.coords, beta)
        nuisance = (self.field.nuisance_values(self.shape)
                    if isinstance(self.field, NuisanceField) else {})
        terms = self.model.potential(rho, larmor, nuisance)
        return torch.stack(list(terms.values())).sum(0), terms


def stage_evaluator(model: NoiseSpectrumModel, guide):
    """The cheapest evaluation of the stage's objective for ``guide``: its
    :class:`StagePotential` for the Delta guide, else :func:`traced_objective`."""
    if type(guide) is FieldGuide:
        return StagePotential(model, guide)
    return lambda beta: traced_objective(model, guide, beta)


def traced_objective(model: NoiseSpectrumModel, guide: FieldGuide, beta: float):
    """``(loss, terms)``: the negative log joint minus its constant, and its named terms, each
    with the model's measurement batch shape (a scalar for one measurement).

    The loss is ``−log p(ρ, ω_L, S_obs) + log q(ρ, ω_L)`` with the guide's draws replayed in
    the model, as Trace_ELBO computes it; a Delta guide has ``log q = 0``.
    """
    # a NaN here is the NaN guard's business (the solvers), not an exception or a warning
    with pyro.validation_enabled(False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Encountered NaN")
        guide_trace = poutine.trace(guide).get_trace(beta)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(beta)
        model_trace.compute_log_prob()
        guide_trace.compute_log_prob()
    terms = model.loss_terms(model_trace)
    log_q = sum(site["log_prob"] for site in guide_trace.nodes.values()
                if site["type"] == "sample")
    loss = torch.stack(list(terms.values())).sum(0) + log_q
    return loss, terms
