"""Per-pixel parameterizations: a free density and a free Larmor field (appendix E.2).

The free-density baselines (Tikhonov, ADMM, L-BFGS) optimize ρ itself, one value per pixel:
the parameterization Jacobian is the identity, so the raw density gradient is executed
verbatim (section 5.3).  Every baseline pairs its density with :class:`LarmorMap`, and
:class:`DensityField` joins the two behind the interface of
:class:`~nvbayes.fields.NeuralField`: coordinates ``(ny, nx, 2)`` and β in, ``(ρ, ω_L)`` out.
A map's ``size`` is its grid ``(ny, nx)`` (or ``n`` for a square one).
"""

from __future__ import annotations

import torch
from torch import nn

from nvbayes.physics.geometry import coarsen

from .base import Density, Field
from .heads import larmor_head


def grid_shape(size: "int | tuple[int, int]") -> tuple[int, int]:
    """``(ny, nx)`` of a size given as ``n`` (square) or ``(ny, nx)``."""
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _factor(shape: tuple, coords: torch.Tensor) -> int:
    """The block size that takes a map of ``shape`` to the grid of ``coords``."""
    ny, nx = shape[-2:]
    my, mx = coords.shape[-3], coords.shape[-2]
    if ny % my or nx % mx or ny // my != nx // mx:
        raise ValueError(f"a {ny} x {nx} map cannot be shown on a {my} x {mx} grid")
    return ny // my


class PixelDensity(Density):
    """``ρ = c · max(v, 0)`` for a free map ``v`` ``(ny, nx)`` started at 1: uniform at
    ``level`` = c.

    The fixed unit ``c`` makes an optimizer's step a fraction of the starting density whatever
    the measurement's units: the data term cannot see the scale of ρ, so only these relative
    steps matter to it.  (In absolute units, Adam's 5e-3 is ten times the energy-matched level
    of a few-source 32² scene, and one source under F1 then came back with a spurious
    single-pixel peak at the window's corner, the self-reinforcing maximum of P3.)
    :meth:`project_` clamps ``v`` at 0 in place (projected gradient steps); on a coarser grid
    the map is block-averaged.
    """

    def __init__(self, size: "int | tuple[int, int]", level: float = 1.0):
        super().__init__()
        self.level = float(level)
        self.values = nn.Parameter(torch.ones(grid_shape(size)))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        rho = self.level * self.values.clamp(min=0.0)
        return coarsen(rho, _factor(self.values.shape, coords))

    @torch.no_grad()
    def project_(self) -> None:
        self.values.clamp_(min=0.0)


class LarmorMap(nn.Module):
    """``ω_L = ω_min + (ω_max − ω_min) σ(h)`` for free per-pixel logits ``h`` ``(ny, nx)``.

    The logits start at 0, the band centre.  Under F1 and F2 ω_L is read at the readout pixel,
    so it is a field over the whole window, not only the support.
    """

    def __init__(self, size: "int | tuple[int, int]", band: tuple[float, float]):
        super().__init__()
        self.band = (float(band[0]), float(band[1]))
        self.logits = nn.Parameter(torch.zeros(grid_shape(size)))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return larmor_head(coarsen(self.logits, _factor(self.logits.shape, coords)), self.band)


class DensityField(Field):
    """A density module and a :class:`LarmorMap` as one field ``(coords, β) → (ρ, ω_L)``.

    β (the Fourier annealing of NeTMY) is accepted and ignored.  The density's hooks
    (:mod:`nvbayes.fields.base`) are the field's, with the Larmor map as one more group.
    """

    def __init__(self, density: Density, larmor: LarmorMap):
        super().__init__()
        self.density = density
        self.larmor = larmor

    def forward(self, coords: torch.Tensor, beta: float = 0.0):
        return self.density(coords), self.larmor(coords)

    def project_(self) -> None:
        self.density.project_()

    def param_groups(self) -> list[dict]:
        return self.density.param_groups() + [
            {"params": list(self.larmor.parameters()), "lr_scale": 1.0}]

    def observe_gradients(self) -> None:
        self.density.observe_gradients()

    def densify(self, step: int) -> bool:
        return bool(self.density.densify(step))
