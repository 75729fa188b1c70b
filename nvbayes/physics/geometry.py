"""The sensing grid: an ``ny × nx`` array of NV pixels of spacing ``dx`` at standoff ``z0``.

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
    """Geometry of a sensing window.

    Parameters
    ----------
    n : pixels along y (≥ 2); along x too unless ``nx`` is given.
    spacing : pixel spacing dx in nm (the same along y and x).
    standoff : NV plane height z0 in nm.
    nx : pixels along x for a rectangular window (default ``n``).
    """

    n: int = GRID
    spacing: float = SPACING_NM
    standoff: float = STANDOFF_NM
    nx: "int | None" = None

    def __post_init__(self):
        for side in (self.n, self.n if self.nx is None else self.nx):
            if int(side) != side or side < 2:
                raise ParameterError(f"grid must have at least 2 pixels per side, got {side}",
                                     "pass --grid 2 or more (the paper uses 64)")
        check_geometry(self.spacing, self.standoff)

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)``."""
        return (int(self.n), int(self.n if self.nx is None else self.nx))

    @property
    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates ``(y, x)`` in nm, ``(ny,)`` and ``(nx,)``."""
        return tuple(np.arange(side, dtype=np.float64) * self.spacing for side in self.shape)

    @property
    def coords(self) -> np.ndarray:
        """Pixel coordinates along y in nm, ``(ny,)`` (along either axis of a square grid)."""
        return self.axes[0]

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
