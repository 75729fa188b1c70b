"""ADMM MAP solver on the free density (appendix E.2), in scaled form.

The split variable is the free map ``v`` of :class:`~nvbayes.fields.PixelDensity`
(``ρ = c·max(v, 0)``, ``v`` = 1 at the uniform start), so κ, the box and the tolerance are in
units of the starting level.  With the smooth part ``f`` of the objective (the stage's
weighted terms), the ℓ1 weight κ and the box ``[0, v_max]``, each outer cycle runs::

    v ← ``inner_steps`` Adam steps on  f(c v) + (μ/2) ‖v − z + u‖²     (then v ← max(v, 0))
    z ← clip(v + u − κ, 0, v_max)                      prox of κ‖z‖₁ + box at v + u
    u ← u + v − z                                      scaled dual update

and stops once the primal residual ``‖v − z‖∞`` and the change ``‖z − z_prev‖∞`` (the dual
residual without the factor μ) are both below the tolerance.  The primal residual alone, the
paper's criterion, is met trivially in the second cycle: once ``u = κ`` on the positive
pixels, ``z = v`` exactly wherever no pixel crosses a threshold.  The learning rate
is the stage's cosine schedule over the cycles.  ``v_max`` is ``upper_bound`` times the total
of the uniform start (the pixel count: all the start's mass in one pixel).  The reported
density is ``c·z``, which satisfies the box and carries the shrinkage; the history records
the penalty and both residuals per cycle.
"""

from __future__ import annotations

import torch

from nvbayes.data.spec import ModelSpec
from nvbayes.model.problem import InverseProblem

from .gradient import guarded_step, make_optimizer, set_lr
from .objective import stage_objective, traced_objective
from .recorder import Recorder, Snapshot
from .schedule import cosine_lr


def solve_admm(field: torch.nn.Module, problem: InverseProblem, spec: ModelSpec,
               operator: str, recorder: Recorder) -> list[str]:
    a, opt = spec.admm, spec.optimizer
    rho = field.density.values
    guard = Snapshot(field)
    upper = a.upper_bound * rho.numel()
    z = rho.detach().clone()
    u = torch.zeros_like(z)
    messages: list[str] = []
    for stage_no, stage in enumerate(spec.stages, start=1):
        model, guide = stage_objective(problem, spec, stage, operator, field)
        optimizer = make_optimizer(field, stage.lr, opt)
        for cycle in range(stage.steps):
            lr = cosine_lr(cycle, stage.steps, stage.lr, opt.final_lr_fraction)
            set_lr(optimizer, lr)
            for _ in range(a.inner_steps):
                loss, terms = traced_objective(model, guide, 0.0)
                penalty = 0.5 * a.penalty * (rho - z + u).square().sum()
                grad_norm = guarded_step(loss + penalty, field, optimizer, guard,
                                         opt.grad_clip)
                if grad_norm is None:
                    return [recorder.diverge(spec.total_steps)]
                field.project_()
            with torch.no_grad():
                x = rho.detach()
                z_prev = z
                z = (x + u - a.shrinkage).clamp(0.0, upper)
                u = u + x - z
                residual = (x - z).abs().max()
                change = (z - z_prev).abs().max()
            recorder.record(loss, terms, grad_norm, lr=lr, beta=0.0, stage=stage_no,
                            penalty=penalty.detach(), primal_residual=residual,
                            dual_residual=change)
            if residual < a.tolerance and change < a.tolerance:
                messages.append(f"ADMM converged after {cycle + 1} cycles (primal residual "
                                f"{float(residual):.2e}, change of z {float(change):.2e}, "
                                f"both < {a.tolerance:g})")
                break
        else:
            messages.append(f"ADMM ran all {stage.steps} cycles; primal residual "
                            f"{float(residual):.2e}, change of z {float(change):.2e} "
                            f"(tolerance {a.tolerance:g})")
    with torch.no_grad():
        rho.copy_(z)
    return messages
