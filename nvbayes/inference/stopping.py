"""Convergence-based early stopping of a stage (``[stopping]`` of a model specification).

With ``L_t`` a measurement's loss at step ``t`` of the stage and ``W`` the window, the stage
ends for that measurement at the first step with ``t ≥ W`` and

    (L_{t−W} − L_t) / |L_{t−W}| < rel_tol,

i.e. once the loss has fallen by less than ``rel_tol`` (relative) over the last ``W`` steps.
Each measurement of a batched fit is judged on its own losses.
"""

from __future__ import annotations

import torch

from nvbayes.data.spec import StoppingSpec


class ConvergenceMonitor:
    """Per-measurement relative loss change over a window, for one stage."""

    def __init__(self, spec: StoppingSpec, instances: int = 1):
        self.window = int(spec.window)
        self.rel_tol = float(spec.rel_tol)
        self.losses: list[torch.Tensor] = []
        self.instances = instances

    @property
    def enabled(self) -> bool:
        return self.window > 0

    def update(self, loss: torch.Tensor) -> torch.Tensor:
        """Add this step's losses ``(instances,)`` (float64, CPU); the boolean mask of the
        measurements that have converged at this step."""
        if not self.enabled:
            return torch.zeros(self.instances, dtype=torch.bool)
        self.losses.append(loss.detach().to("cpu", torch.float64).reshape(self.instances))
        if len(self.losses) <= self.window:
            return torch.zeros(self.instances, dtype=torch.bool)
        before = self.losses[-1 - self.window]
        self.losses = self.losses[-self.window:]
        change = (before - self.losses[-1]) / before.abs()
        return change < self.rel_tol
