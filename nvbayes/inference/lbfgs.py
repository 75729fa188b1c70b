"""Quasi-Newton MAP solver: L-BFGS on the free density (appendix E.2).

A stage step is one outer iteration: ``torch.optim.LBFGS.step`` with at most
``inner_iterations`` evaluations, curvature pairs from the last ``history_size`` iterations
and the strong-Wolfe line search.  The free density is read through ``ρ = max(v, 0)``, so the
constraint needs no projection; projecting ``v`` between outer iterations would invalidate
the stored curvature pairs (measured on a few/far scene under F2: the loss stalled at 0.033
with projection, 0.015 without).

The data term cannot see the scale of ρ, so the ℓ1 and TV terms pull the scale down for
free, and L-BFGS's long steps follow them until ρ ≡ 0, where the max-normalized noise map is
undefined.  An outer iteration that ends at ρ ≡ 0 is therefore undone and ends the fit as a
*scale collapse*, not a divergence: the shape was settled before it, and the energy-ratio
scale correction restores the scale.  Any other non-finite loss restores the state before
the iteration and ends the fit as diverged.
"""

from __future__ import annotations

import torch

from nvbayes.data.spec import ModelSpec
from nvbayes.model.problem import InverseProblem

from .objective import stage_objective, traced_objective
from .recorder import Recorder, Snapshot, gradient_norm


def solve_lbfgs(field: torch.nn.Module, problem: InverseProblem, spec: ModelSpec,
                operator: str, recorder: Recorder) -> list[str]:
    opt = spec.optimizer
    guard = Snapshot(field)
    for stage_no, stage in enumerate(spec.stages, start=1):
        model, guide = stage_objective(problem, spec, stage, operator, field)
        params = list(field.parameters())
        optimizer = torch.optim.LBFGS(
            params, lr=stage.lr, max_iter=opt.inner_iterations, history_size=opt.history_size,
            line_search_fn=None if opt.line_search == "none" else opt.line_search)

        def closure(optimizer=optimizer, model=model, guide=guide):
            optimizer.zero_grad(set_to_none=True)
            loss, _ = traced_objective(model, guide, 0.0)
            loss.backward()
            return loss

        for _ in range(stage.steps):
            guard.save()
            optimizer.step(closure)
            grad_norm = gradient_norm(params)
            with torch.no_grad():
                loss, terms = traced_objective(model, guide, 0.0)
            if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
                collapsed = not bool((guide(0.0)[0] > 0).any())
                guard.restore()
                if collapsed:
                    return [f"L-BFGS stopped after {recorder.count} outer iterations: the next "
                            "one shrank ρ to 0 (the data term cannot see the scale; the ℓ1/TV "
                            "terms pull it down), so the run holds the state before it"]
                return [recorder.diverge(spec.total_steps)]
            evaluations = optimizer.state[params[0]].get("func_evals", 0)
            recorder.record(loss, terms, grad_norm, lr=stage.lr, beta=0.0, stage=stage_no,
                            evaluations=evaluations)
    return []
