"""Quasi-Newton MAP solver: L-BFGS on the free density (appendix E.2).

A stage step is one outer iteration: ``torch.optim.LBFGS.step`` with at most
``inner_iterations`` evaluations, curvature pairs from the last ``history_size`` iterations
and the strong-Wolfe line search, followed by the field's projection onto ρ ≥ 0 (the free
density is read through ``max(v, 0)``, so pixels below zero carry no gradient between
projections).  A non-finite loss after an outer iteration restores the state before it and
ends the fit.
"""

from __future__ import annotations

import torch

from ..model.problem import InverseProblem
from ..spec import ModelSpec
from .objective import stage_objective, traced_objective
from .recorder import Recorder, Snapshot, divergence_message, gradient_norm


def solve_lbfgs(field: torch.nn.Module, problem: InverseProblem, spec: ModelSpec,
                operator: str, device, recorder: Recorder) -> list[str]:
    opt = spec.optimizer
    guard = Snapshot(field)
    project = getattr(field, "project_", None)
    for stage_no, stage in enumerate(spec.stages, start=1):
        model, guide = stage_objective(problem, spec, stage, operator, field, device)
        params = list(field.parameters())
        optimizer = torch.optim.LBFGS(
            params, lr=stage.lr, max_iter=opt.inner_iterations, history_size=opt.history_size,
            line_search_fn=None if opt.line_search == "none" else opt.line_search)

        def closure():
            optimizer.zero_grad(set_to_none=True)
            loss, _ = traced_objective(model, guide, 0.0)
            loss.backward()
            return loss

        for _ in range(stage.steps):
            guard.save()
            optimizer.step(closure)
            if project is not None:
                project()
            grad_norm = gradient_norm(params)
            with torch.no_grad():
                loss, terms = traced_objective(model, guide, 0.0)
            if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
                guard.restore()
                return [divergence_message(recorder.count, spec.total_steps)]
            evaluations = optimizer.state[params[0]].get("func_evals", 0)
            recorder.record(loss, terms, grad_norm, lr=stage.lr, beta=0.0, stage=stage_no,
                            evaluations=evaluations)
    return []
