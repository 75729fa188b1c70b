"""First-order MAP solver: Adam or AdamW steps over the stages of the curriculum.

Each step: the stage's loss (:func:`~.objective.stage_evaluator`: the Delta guide's
:class:`~.objective.StagePotential`, built once per stage); backward; gradient-norm
clipping; a fused optimizer step at the stage's cosine-scheduled learning rate; then the field's
own hooks (:class:`~nvbayes.fields.base.Field`): ``project_`` (the free density's projection
onto ρ ≥ 0) and ``observe_gradients`` / ``densify`` (the splats' adaptive density control,
after which the optimizer is rebuilt for the new parameter set).  β of the Fourier annealing
rises from 0 to K within each stage (K = 0 for fields without an encoding).

Batched fits.  A field with ``instances = B`` (:class:`~nvbayes.fields.NeuralField`) holds B
independent networks for B measurements; the loss is one value per measurement and the solver
keeps every measurement on its own trajectory: the gradient norm is clipped per measurement,
Adam's moments are elementwise (so per measurement), early stopping
(:mod:`.stopping`) and the NaN guard act per measurement, and a measurement that has stopped
is held at its state while the others go on.  Instance ``i`` therefore ends where a single fit
of measurement ``i`` ends.

NaN guard: every ``guard_every`` steps (:class:`~nvbayes.data.spec.OptimizerSpec`, and at a
stage's end) the losses and gradient norms of the steps since the last check are read at
once; a measurement with a non-finite one is rolled back to its state at that check, its
later steps leave its history, and its fit ends (flagged ``diverged``); the others continue.
The finite measurements' states are saved as the next check's.  Between checks nothing is
read back from the device but the history rows.
"""

from __future__ import annotations

import torch

from nvbayes.data.spec import ModelSpec, OptimizerSpec
from nvbayes.fields import Field
from nvbayes.model.problem import InverseProblem

from .objective import stage_evaluator, stage_objective
from .recorder import Recorder, Snapshot, gradient_norm
from .schedule import annealing_progress, cosine_lr
from .stopping import ConvergenceMonitor

#: Added to the norm in the clipping coefficient, as torch.nn.utils.clip_grad_norm_ does.
_CLIP_EPS = 1e-6


def make_optimizer(field: torch.nn.Module, lr: float, spec: OptimizerSpec):
    """Adam or AdamW over ``field``'s current parameters, in the field's ``param_groups`` if
    it has them (each with an ``lr_scale``; see :func:`set_lr`)."""
    cls = torch.optim.AdamW if spec.name == "adamw" else torch.optim.Adam
    params = list(field.parameters())
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    optimizer = cls(field.param_groups(), lr=lr, weight_decay=spec.weight_decay,
                    fused=fused or None)
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
    """One NaN-guarded optimizer step on a scalar ``loss``: the gradient norm before clipping,
    or ``None`` (with the state before the step restored) if the loss or gradient is not
    finite.

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


def per_instance(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values`` ``(B,)`` shaped to broadcast against a stacked tensor ``like`` ``(B, ...)``."""
    return values.to(like.device).view(-1, *([1] * (like.dim() - 1)))


class InstanceState:
    """The parameters of a field of B instances (leading axis B), saved and restored per
    instance; a field without instances is one instance (its whole state, by
    :class:`~.recorder.Snapshot`, which also follows parameter sets that change size)."""

    def __init__(self, field: Field):
        self.field = field
        self.count = field.instances or 1
        self.batched = field.instances is not None
        self.snapshot = None if self.batched else Snapshot(field)
        self.saved = None

    def save(self, mask: torch.Tensor) -> None:
        """Keep the current state of the instances in ``mask`` (bool ``(B,)``)."""
        if not bool(mask.any()):
            return
        if not self.batched:
            self.snapshot.save()
            return
        params = [p.detach() for p in self.field.parameters()]
        if self.saved is None:
            self.saved = [p.clone() for p in params]
            return
        for saved, p in zip(self.saved, params, strict=True):
            saved.copy_(torch.where(per_instance(mask, p), p, saved))

    def restore(self, mask: torch.Tensor) -> None:
        """Put the instances in ``mask`` back to their saved state."""
        if not bool(mask.any()):
            return
        if not self.batched:
            self.snapshot.restore()
            return
        if self.saved is None:
            return
        with torch.no_grad():
            for saved, p in zip(self.saved, self.field.parameters(), strict=True):
                p.copy_(torch.where(per_instance(mask, p), saved, p))

    def gradient_norms(self) -> torch.Tensor:
        """The 2-norm of each instance's gradient, ``(B,)`` (0 where there is none)."""
        grads = [p.grad for p in self.field.parameters() if p.grad is not None]
        if not grads:
            return torch.zeros(self.count)
        if not self.batched:
            return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))).reshape(1)
        squares = sum(g.detach().reshape(self.count, -1).pow(2).sum(dim=1) for g in grads)
        return squares.sqrt()

    def scale_gradients(self, factor: torch.Tensor) -> None:
        """Multiply instance ``i``'s gradient by ``factor[i]``; a factor of 0 zeroes it
        (non-finite entries included)."""
        grads = [p.grad for p in self.field.parameters() if p.grad is not None]
        if not grads:
            return
        if not self.batched:
            f = factor.to(grads[0].device, grads[0].dtype).reshape(())
            if bool(f == 0):
                torch._foreach_zero_(grads)
            else:
                torch._foreach_mul_(grads, f)
            return
        for g in grads:
            f = per_instance(factor.to(g.dtype), g)
            g.copy_(torch.where(f == 0, torch.zeros_like(g), g * f))


def clip_factor(norms: torch.Tensor, limit: float, running: torch.Tensor) -> torch.Tensor:
    """Per-instance gradient multiplier: ``min(1, limit / (‖g‖ + 1e-6))`` (1 without a limit),
    0 for the instances not running."""
    factor = torch.ones_like(norms)
    if limit > 0:
        factor = (limit / (norms + _CLIP_EPS)).clamp(max=1.0)
    return torch.where(running.to(norms.device), factor, torch.zeros_like(factor))


def solve_gradient(field: torch.nn.Module, problem: InverseProblem, spec: ModelSpec,
                   operator: str, recorder: Recorder, max_steps: "int | None" = None,
                   **objective) -> list[str]:
    """Run every stage for every instance; returns messages (one per diverged measurement).

    ``max_steps`` ends the fit after that many steps (the diagnostics take the first step
    through this very loop).

    ``objective`` goes to :func:`~.objective.stage_objective` (``guide_type``,
    ``noise_sigma``: the variational guide and calibrated likelihood of SVI).
    """
    opt = spec.optimizer
    octaves = getattr(spec.field, "octaves", 0)
    state = InstanceState(field)
    count = state.count
    alive = torch.ones(count, dtype=torch.bool)          # not diverged
    messages: list[str] = []

    def diverge(bad: torch.Tensor) -> None:
        """Roll ``bad`` back to the last check, drop its later history, flag it and stop it."""
        state.restore(bad)
        recorder.drop_since(checked, bad)
        for i in bad.nonzero().flatten().tolist():
            messages.append(recorder.diverge(spec.total_steps, i))
        alive.copy_(alive & ~bad)
        running.copy_(running & ~bad)

    taken = 0
    for stage_no, stage in enumerate(spec.stages, start=1):
        if taken == max_steps:
            break
        model, guide = stage_objective(problem, spec, stage, operator, field,
                                       **objective)
        evaluate = stage_evaluator(model, guide)
        optimizer = make_optimizer(field, stage.lr, opt)
        monitor = ConvergenceMonitor(spec.stopping, count)
        running = alive.clone()
        state.save(running)
        checked = recorder.count                       # the history row of the last check
        for t in range(stage.steps):
            if not bool(running.any()) or taken == max_steps:
                break
            taken += 1
            beta = annealing_progress(t, stage.steps, octaves, stage.anneal)
            lr = cosine_lr(t, stage.steps, stage.lr, opt.final_lr_fraction)
            set_lr(optimizer, lr)
            loss, terms = evaluate(beta)
            loss = loss.reshape(count)
            every = bool(running.all())
            optimizer.zero_grad(set_to_none=True)
            (loss if every else torch.where(running.to(loss.device), loss,
                                            torch.zeros_like(loss))).sum().backward()
            field.observe_gradients()
            norms = state.gradient_norms()
            state.scale_gradients(clip_factor(norms, opt.grad_clip, running))
            optimizer.step()
            if not every:
                state.restore(~running)      # stopped and diverged instances stay put
            field.project_()
            densified = field.densify(t + 1)
            if densified:
                optimizer = make_optimizer(field, lr, opt)
            losses = recorder.record(loss, terms, norms, running, lr=lr, beta=beta,
                                     stage=stage_no)
            if densified or (t + 1) % opt.guard_every == 0 or t + 1 == stage.steps:
                bad = running & ~recorder.finite_since(checked)
                if bool(bad.any()):
                    diverge(bad)
                state.save(running)
                checked = recorder.count
            if not monitor.enabled:
                continue
            converged = running & monitor.update(losses)
            if bool(converged.any()):
                state.save(converged)
                running &= ~converged
        bad = running & ~recorder.finite_since(checked)     # a stage cut short by max_steps
        if bool(bad.any()):
            diverge(bad)
    return messages
