"""The nuisance parameters of a MAP fit, beside its field of (ρ, ω_L).

:class:`NuisanceParameters` holds unconstrained parameters and maps them onto the supports of
:mod:`nvbayes.model.nuisance`'s sites: background grid ``b = softplus(u)`` ``(…, m, m)``,
standoff ``z = z_start · e^t`` ``(…)`` (either held at its start if fixed), log gain ``γ``
``(…, ny, nx)`` on the full grid and block-averaged onto a coarser stage's grid.  A leading
instance axis B where the field has one.
:class:`NuisanceField` pairs a field with them: the solvers see one module (its parameters,
groups and hooks), and the guide reads :meth:`NuisanceField.nuisance_values`.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Field


def _inverse_softplus(value: torch.Tensor) -> torch.Tensor:
    return value + torch.log(-torch.expm1(-value))


class NuisanceParameters(nn.Module):
    """Unconstrained parameters of the nuisances named in ``names``.

    Parameters
    ----------
    names : any of ``background``, ``standoff``, ``gain``.
    shape : the full grid ``(ny, nx)``.
    background : the starting background grid ``(…, m, m)`` (values ≥ 0).
    standoff_nm : the starting standoff, a number or one per instance ``(B,)``.
    fixed : the names held at their start (buffers, not parameters).
    instances : B, or ``None``.
    """

    def __init__(self, names: tuple, shape: tuple[int, int], background: torch.Tensor,
                 standoff_nm, fixed: tuple = (), instances: "int | None" = None):
        super().__init__()
        lead = () if instances is None else (instances,)
        self.names = tuple(names)
        self.fixed = tuple(fixed)
        self.shape = tuple(shape)
        standoff = torch.broadcast_to(torch.as_tensor(standoff_nm, dtype=torch.float32), lead)
        self.register_buffer("standoff_start", standoff.clone())
        start = torch.as_tensor(background, dtype=torch.float64).clamp(min=1e-6)
        self.register_buffer("background_start", start.to(torch.float32).clone())
        if "background" in names and "background" not in self.fixed:
            self.background = nn.Parameter(_inverse_softplus(start).to(torch.float32).clone())
        if "standoff" in names and "standoff" not in self.fixed:
            self.log_standoff = nn.Parameter(torch.zeros(lead))
        if "gain" in names:
            self.log_gain = nn.Parameter(torch.zeros(*lead, *shape))

    def forward(self, shape: tuple[int, int]) -> dict:
        """The nuisance values on a stage grid ``shape`` (the full grid or a block-averaged
        one)."""
        out = {}
        if "background" in self.names:
            out["background"] = (self.background_start if "background" in self.fixed
                                  else nn.functional.softplus(self.background))
        if "standoff" in self.names:
            out["standoff"] = (self.standoff_start if "standoff" in self.fixed
                               else self.standoff_start * torch.exp(self.log_standoff))
        if "gain" in self.names:
            factor = self.shape[0] // shape[0]
            gain = self.log_gain
            if factor > 1:
                flat = gain.reshape(-1, 1, *self.shape)
                gain = nn.functional.avg_pool2d(flat, factor).reshape(*gain.shape[:-2], *shape)
            out["gain"] = gain
        return out


class NuisanceField(Field):
    """A field of (ρ, ω_L) and the nuisance parameters fitted with it (module docstring).

    The nuisance parameters form their own optimizer group at ``lr_scale`` times the base
    rate; every other hook is the field's.
    """

    def __init__(self, field: Field, nuisance: NuisanceParameters, lr_scale: float = 1.0):
        super().__init__()
        self.field = field
        self.nuisance = nuisance
        self.instances = field.instances
        self.lr_scale = float(lr_scale)

    def forward(self, coords: torch.Tensor, beta):
        return self.field(coords, beta)

    def nuisance_values(self, shape: tuple[int, int]) -> dict:
        return self.nuisance(tuple(shape))

    @property
    def density(self):
        """The wrapped field's density (the free-density solvers read it)."""
        return self.field.density

    def param_groups(self) -> list[dict]:
        return self.field.param_groups() + [
            {"params": list(self.nuisance.parameters()), "lr_scale": self.lr_scale}]

    def project_(self) -> None:
        self.field.project_()

    def observe_gradients(self) -> None:
        self.field.observe_gradients()

    def densify(self, step: int) -> bool:
        return self.field.densify(step)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("field"), name)


__all__ = ["NuisanceField", "NuisanceParameters"]
