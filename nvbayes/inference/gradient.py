"""First-order MAP solver: Adam or AdamW steps over the stages of the curriculum.

Each step: the loss of :func:`~.objective.traced_objective`; backward; global gradient-norm
clipping; an optimizer step at the stage's cosine-scheduled learning rate; then the field's
own hooks, if it has them: ``project_`` (the free density's projection onto ρ ≥ 0) and
``observe_gradients`` / ``densify`` (the splats' adaptive density control, after which the
optimizer is rebuilt for the new parameter set).  β of the Fourier annealing rises from 0 to
K within each stage (K = 0 for fields without an encoding).
"""

from __future__ import annotations

import torch

from ..model.problem import InverseProblem
from ..spec import ModelSpec, OptimizerSpec
from .objective import stage_objective, traced_objective
from .recorder import Recorder, Snapshot, gradient_norm
from .schedule import annealing_progress, cosine_lr


def make_optimizer(field: torch.nn.Module, lr: float, spec: OptimizerSpec):
    """Adam or AdamW over ``field``'s current parameters, in the field's ``param_groups`` if
    it has them (each with an ``lr_scale``; see :func:`set_lr`)."""
    cls = torch.optim.AdamW if spec.name == "adamw" else torch.optim.Adam
    groups = getattr(field, "param_groups", None)
    groups = groups() if groups is not None else [{"params": list(field.parameters())}]
    optimizer = cls(groups, lr=lr, weight_decay=spec.weight_decay)
    set_lr(optimizer, lr)
    return optimizer


def set_lr(optimizer, lr: float) -> None:
    """Set every group's rate to ``lr`` times its ``lr_scale`` (default 1)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def clip_gradients(field: torch.nn.Module, limit: float) -> torch.Tensor:
    """Clip the global gradient norm at ``limit`` (0: no clipping); the norm before clipping."""
    params = [p for p in field.parameters() if p.grad is not None]
    if limit > 0:
        return torch.nn.utils.clip_grad_norm_(params, limit)
    return gradient_norm(params)


def guarded_step(loss: torch.Tensor, field: torch.nn.Module, optimizer, guard: Snapshot,
                 grad_clip: float, observe=None) -> "torch.Tensor | None":
    """One NaN-guarded optimizer step on ``loss``: the gradient norm before clipping, or
    ``None`` (with the state before the step restored) if the loss or gradient is not finite.

    ``observe`` runs between ``backward`` and clipping (the splats' gradient statistics).
    """
    if not torch.isfinite(loss):
        guard.restore()
        return None
    guard.save()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if observe is not None:
        observe()
    grad_norm = clip_gradients(field, grad_clip)
    if not torch.isfinite(grad_norm):
        guard.restore()
        return None
    optimizer.step()
    return grad_norm


def solve_gradient(field: torch.nn.Module, problem: InverseProblem, spec: ModelSpec,
                   operator: str, device, recorder: Recorder) -> list[str]:
    """Run every stage; returns messages (a divergence ends the fit at the last finite state)."""
    opt = spec.optimizer
    octaves = getattr(spec.field, "octaves", 0)
    guard = Snapshot(field)
    project = getattr(field, "project_", None)
    observe = getattr(field, "observe_gradients", None)
    densify = getattr(field, "densify", None)
    for stage_no, stage in enumerate(spec.stages, start=1):
        model, guide = stage_objective(problem, spec, stage, operator, field, device)
        optimizer = make_optimizer(field, stage.lr, opt)
        for t in range(stage.steps):
            beta = annealing_progress(t, stage.steps, octaves)
            lr = cosine_lr(t, stage.steps, stage.lr, opt.final_lr_fraction)
            set_lr(optimizer, lr)
            loss, terms = traced_objective(model, guide, beta)
            grad_norm = guarded_step(loss, field, optimizer, guard, opt.grad_clip, observe)
            if grad_norm is None:
                return [recorder.diverge(spec.total_steps)]
            if project is not None:
                project()
            if densify is not None and densify(t + 1):
                optimizer = make_optimizer(field, lr, opt)
                guard.save()
            recorder.record(loss, terms, grad_norm, lr=lr, beta=beta, stage=stage_no)
    return []
