"""The contract of every parameterization, with no-op default hooks.

A :class:`Field` maps pixel coordinates ``(ny, nx, 2)`` and the annealing progress β to
``(ρ, ω_L)``, each ``(ny, nx)`` (``(B, ny, nx)`` for a field of ``instances = B`` independent
fields fitted in one loop).  A :class:`Density` maps coordinates to ρ alone and is paired with
a Larmor map by :class:`~nvbayes.fields.pixels.DensityField`.  The solvers call the hooks
below on every field; a parameterization overrides the ones it needs:

================== ========================================================================
``instances``      ``None`` (one field) or B (a leading instance axis on every parameter)
``param_groups``   optimizer groups, each with an ``lr_scale`` (default: one group, scale 1)
``project_``       in-place projection after each optimizer step (the free density: ρ ≥ 0)
``observe_grads``  reads the gradients after ``backward`` (the splats' densification
                   statistics); spelled ``observe_gradients``
``densify``        may replace the parameters at a step; ``True`` when it did (the solver
                   then rebuilds its optimizer)
================== ========================================================================
"""

from __future__ import annotations

import torch
from torch import nn


class Parameterization(nn.Module):
    """The solver hooks shared by :class:`Field` and :class:`Density`, all no-ops."""

    #: ``None`` for one field, B for B independent fields stacked on a leading axis.
    instances: "int | None" = None

    @property
    def device(self) -> torch.device:
        """Where the parameters live: the solvers build the loss there."""
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype: the solvers build the loss in it."""
        return next(self.parameters()).dtype

    def param_groups(self) -> list[dict]:
        """Optimizer groups, each with an ``lr_scale`` relative to the base learning rate."""
        return [{"params": list(self.parameters()), "lr_scale": 1.0}]

    def project_(self) -> None:
        """Project the parameters in place after an optimizer step (default: nothing)."""

    def observe_gradients(self) -> None:
        """Read the gradients after ``backward`` (default: nothing)."""

    def densify(self, step: int) -> bool:
        """Adapt the parameter set before ``step``; ``True`` if it changed (default: never)."""
        return False


class Field(Parameterization):
    """``forward(coords (ny, nx, 2), beta) → (ρ, ω_L)``, each ``(ny, nx)`` or
    ``(B, ny, nx)``."""


class Density(Parameterization):
    """``forward(coords (ny, nx, 2)) → ρ (ny, nx)``: the density half of a baseline field."""


__all__ = ["Density", "Field", "Parameterization"]
