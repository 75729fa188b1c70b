"""ADMM MAP solver on the free density (appendix E.2), in scaled form.

With the smooth part ``f(ρ)`` of the objective (the stage's weighted terms), the ℓ1 weight κ
and the box ``[0, ρ_max]``, each outer cycle of a stage runs::

    ρ ← ``inner_steps`` Adam steps on  f(ρ) + (μ/2) ‖ρ − z + u‖²        (then ρ ← max(ρ, 0))
    z ← clip(ρ + u − κ, 0, ρ_max)                      prox of κ‖z‖₁ + box at ρ + u
    u ← u + ρ − z                                      scaled dual update

and stops once the primal residual ``‖ρ − z‖∞`` falls below the tolerance.  The learning rate
is the stage's cosine schedule over the cycles.  ``ρ_max`` is ``upper_bound`` times the total
mass of the uniform start.  The reported density is ``z``, which satisfies the box and carries
the shrinkage; the history records the penalty and the primal residual per cycle.
"""

from __future__ import annotations

import torch

from ..model.problem import InverseProblem
from ..spec import ModelSpec
from .gradient import clip_gradients, make_optimizer
from .objective import stage_objective, traced_objective
from .recorder import Recorder, Snapshot, divergence_message
from .schedule import cosine_lr


def solve_admm(field: torch.nn.Module, problem: InverseProblem, spec: ModelSpec,
               operator: str, device, recorder: Recorder) -> list[str]:
    a, opt = spec.admm, spec.optimizer
    rho = field.density.values
    guard = Snapshot(field)
    upper = a.upper_bound * float(rho.detach().sum())
    z = rho.detach().clone()
    u = torch.zeros_like(z)
    messages: list[str] = []
    for stage_no, stage in enumerate(spec.stages, start=1):
        model, guide = stage_objective(problem, spec, stage, operator, field, device)
        optimizer = make_optimizer(field, stage.lr, opt)
        for cycle in range(stage.steps):
            lr = cosine_lr(cycle, stage.steps, stage.lr, opt.final_lr_fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr
            for _ in range(a.inner_steps):
                loss, terms = traced_objective(model, guide, 0.0)
                penalty = 0.5 * a.penalty * (rho - z + u).square().sum()
                total = loss + penalty
                if not torch.isfinite(total):
                    guard.restore()
                    return [divergence_message(recorder.count, spec.total_steps)]
                guard.save()
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                grad_norm = clip_gradients(field, opt.grad_clip)
                if not torch.isfinite(grad_norm):
                    guard.restore()
                    return [divergence_message(recorder.count, spec.total_steps)]
                optimizer.step()
                field.project_()
            with torch.no_grad():
                x = rho.detach()
                z = (x + u - a.shrinkage).clamp(0.0, upper)
                u = u + x - z
                residual = (x - z).abs().max()
            recorder.record(loss, terms, grad_norm, lr=lr, beta=0.0, stage=stage_no,
                            penalty=penalty.detach(), primal_residual=residual)
            if residual < a.tolerance:
                messages.append(f"ADMM converged after {cycle + 1} cycles "
                                f"(primal residual {float(residual):.2e} < {a.tolerance:g})")
                break
        else:
            messages.append(f"ADMM ran all {stage.steps} cycles; the primal residual is "
                            f"{float(residual):.2e} (tolerance {a.tolerance:g})")
    with torch.no_grad():
        rho.copy_(z)
    return messages
