"""The sensing grid: an ``n × n`` array of NV pixels of spacing ``dx`` at standoff ``z0``.

Pixel ``(i, j)`` sits at ``y = i·dx``, ``x = j·dx`` (nm), so coordinates start at 0 in the
corner; the readout plane is at height ``z0`` above the source plane.  The paper's default is
``n = 64``, ``dx = 20 nm``, ``z0 = 20 nm``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch  # noqa: F401  (type hints of coarsen)

from nvbayes.errors import ParameterError

from .kernels import check_geometry

GRID = 64
SPACING_NM = 20.0
STANDOFF_NM = 20.0


@dataclass(frozen=True)
class Grid:
    """Geometry of a square sensing window.

    Parameters
    ----------
    n : pixels per side (≥ 2).
    spacing : pixel spacing dx in nm.
    standoff : NV plane height z0 in nm.
    """

    n: int = GRID
    spacing: float = SPACING_NM
    standoff: float = STANDOFF_NM

    def __post_init__(self):
        if int(self.n) != self.n or self.n < 2:
            raise ParameterError(f"grid must have at least 2 pixels per side, got {self.n}",
                                 "pass --grid 2 or more (the paper uses 64)")
        check_geometry(self.spacing, self.standoff)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.n), int(self.n))

    @property
    def coords(self) -> np.ndarray:
        """Pixel coordinates along either axis in nm, ``(n,)``."""
        return np.arange(self.n, dtype=np.float64) * self.spacing

    @property
    def pixels_per_standoff(self) -> float:
        """How many pixels one standoff spans (1 at the paper's defaults)."""
        return self.standoff / self.spacing


def coarsen(image: "torch.Tensor", factor: int) -> "torch.Tensor":
    """Block mean of ``(..., ny, nx)`` over ``factor × factor`` pixels → ``(..., ny/f, nx/f)``.

    A spectrum coarsened this way is what a sensor of ``factor``-times larger pixels would
    read; the matching operator uses the spacing ``factor · dx``.
    """
    if factor == 1:
        return image
    ny, nx = image.shape[-2:]
    if ny % factor or nx % factor:
        raise ParameterError(f"a {ny} x {nx} grid cannot be coarsened by {factor}",
                             f"use a grid whose side is a multiple of {factor}, or downsample 1")
    blocks = image.reshape(*image.shape[:-2], ny // factor, factor, nx // factor, factor)
    return blocks.mean(dim=(-3, -1))
