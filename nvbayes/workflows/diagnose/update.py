"""NeTMY's realized first step in image space and the filtered gradient that explains it.

Lemma 2 of the paper (appendix D.6): a gradient step ``θ → θ − η ∇_θ L`` on a parameterized
density ``ρ_θ`` moves it by

    Δρ ≈ −η J_θ J_θᵀ ∇_ρ L,        J_θ = ∂ρ_θ / ∂θ,

so the raw density gradient reaches the image only through the kernel ``G_θ = J_θ J_θᵀ``.

:func:`first_step` takes the first step of the solver exactly as a fit of ``spec`` takes it:
the field seeded like :func:`~nvbayes.inference.map.fit_map`, and the update taken by the
solver's own loop (:func:`~nvbayes.inference.gradient.solve_gradient` with ``max_steps=1``:
the first stage's objective, ``β`` and learning rate of step 0, its gradient clipping, the
AdamW (or Adam) update and the field's hooks).  It returns

* the realized update ``Δρ = ρ_{θ₁} − ρ_{θ₀}`` on the full grid, both read at step 0's ``β``
  so that only the parameters differ;
* the filtered gradient ``J_full J_stageᵀ ∇_ρ L``: the θ-gradient that flows through the
  density alone (``J_stageᵀ ∇_ρ L``, Larmor path excluded), pushed forward to the full grid
  by a Jacobian-vector product.  Adam rescales each parameter's step (appendix D.6), so the
  realized update follows this direction only qualitatively.

Everything runs in float64 on the CPU (the weights are drawn as a float32 fit draws them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nvbayes.data.spec import ModelSpec
from nvbayes.fields import pixel_coordinates
from nvbayes.inference.gradient import solve_gradient
from nvbayes.inference.map import SOLVER_COLUMNS, build_field, fresh_start, working_problem
from nvbayes.inference.objective import FieldGuide, stage_objective, traced_objective
from nvbayes.inference.recorder import Recorder
from nvbayes.inference.schedule import annealing_progress, cosine_lr
from nvbayes.metrics import centre_to_outer_ratio
from nvbayes.model.problem import InverseProblem, check_inversion_operator


@dataclass
class FirstStep:
    """The first solver step of a parameterized fit; maps ``(n, n)`` on the full grid."""

    rho_start: np.ndarray        # ρ_{θ₀}
    delta: np.ndarray            # ρ_{θ₁} − ρ_{θ₀}
    filtered: np.ndarray         # J_full J_stageᵀ ∇_ρ L  (an ascent direction)
    stage_gradient: np.ndarray   # ∇_ρ L on the first stage's grid
    loss: float                  # L at θ₀
    beta: float
    lr: float
    uniform_filtered: "np.ndarray | None" = None   # J_full J_fullᵀ g for a given g

    @property
    def delta_ratio(self) -> float:
        return centre_to_outer_ratio(self.delta)

    @property
    def filtered_ratio(self) -> float:
        return centre_to_outer_ratio(self.filtered)

    @property
    def stage_gradient_ratio(self) -> float:
        return centre_to_outer_ratio(self.stage_gradient)


class _CapturingGuide(FieldGuide):
    """The MAP's Delta guide, keeping the density it put in the trace."""

    def __call__(self, beta, *args, **kwargs):
        rho, larmor = super().__call__(beta, *args, **kwargs)
        self.rho = rho
        return rho, larmor


def parameter_kernel(field: torch.nn.Module, beta: float, gradient: torch.Tensor,
                     coords_in: torch.Tensor, coords_out: torch.Tensor) -> torch.Tensor:
    """``J_out J_inᵀ g``: the density gradient ``g`` on the pixels ``coords_in`` pulled back
    to the parameters and pushed forward to the pixels ``coords_out`` (``G_θ g`` when both are
    the same grid), with ``J = ∂ρ_θ/∂θ`` at the field's current parameters and progress β.

    The push-forward ``J v`` is the gradient in ``u`` of ``⟨J_outᵀ u, v⟩`` (double backward),
    which needs no functional transform of the field (the Deep Decoder's batch norm updates
    buffers as it runs).
    """
    params = [p for p in field.parameters() if p.requires_grad]
    pulled = torch.autograd.grad(field(coords_in, beta)[0], params,
                                 grad_outputs=gradient.to(torch.float64), allow_unused=True)
    out = field(coords_out, beta)[0]
    u = torch.zeros_like(out, requires_grad=True)
    dual = torch.autograd.grad(out, params, grad_outputs=u, create_graph=True,
                               allow_unused=True)
    dot = sum((a * b).sum() for a, b in zip(dual, pulled, strict=True)
              if a is not None and b is not None)
    (pushed,) = torch.autograd.grad(dot, u)
    return pushed.detach()


def first_step(problem: InverseProblem, spec: ModelSpec, operator: str = "F2",
               seed: int = 0, gradient: "np.ndarray | None" = None) -> FirstStep:
    """Step 0 of a gradient-solver fit of ``spec`` (see the module docstring).

    ``gradient`` (``(n, n)``, optional): a density gradient on the full grid, returned filtered
    by the starting field's kernel as ``uniform_filtered`` (``G_θ₀ g``).
    """
    if spec.solver != "gradient" or spec.field.kind == "pixels":
        raise ValueError(f"first_step follows a parameterized field under the gradient solver; "
                         f"{spec.name} is a {spec.field.kind} model under {spec.solver}")
    operator = check_inversion_operator(operator)
    fresh_start(seed)
    problem = working_problem(problem, spec)
    field = build_field(spec, problem).to(torch.float64)
    stage = spec.stages[0]
    beta = annealing_progress(0, stage.steps, getattr(spec.field, "octaves", 0),
                              stage.anneal)
    lr = cosine_lr(0, stage.steps, stage.lr, spec.optimizer.final_lr_fraction)
    model, guide = stage_objective(problem, spec, stage, operator, field,
                                   guide_type=_CapturingGuide)
    coords = pixel_coordinates(problem.n, dtype=torch.float64)
    with torch.no_grad():
        rho_start = field(coords, beta)[0]
    loss, _ = traced_objective(model, guide, beta)
    (stage_gradient,) = torch.autograd.grad(loss, guide.rho)
    filtered = parameter_kernel(field, beta, stage_gradient, guide.coords, coords)
    uniform_filtered = None
    if gradient is not None:
        uniform_filtered = parameter_kernel(field, beta, torch.as_tensor(gradient), coords,
                                            coords).numpy()

    solve_gradient(field, problem, spec, operator, Recorder(1, False, SOLVER_COLUMNS[spec.solver]),
                   max_steps=1)
    with torch.no_grad():
        rho_next = field(coords, beta)[0]
    return FirstStep(rho_start=rho_start.numpy(), delta=(rho_next - rho_start).numpy(),
                     filtered=filtered.numpy(), stage_gradient=stage_gradient.numpy(),
                     loss=float(loss.detach()), beta=float(beta), lr=float(lr),
                     uniform_filtered=uniform_filtered)
