"""Coordinates and the annealed Fourier encoding of appendix D.2.

For a coordinate ``x ∈ [−1, 1]²`` and progress ``β ∈ [0, K]``::

    γ_β(x) = (x, {w_k(β) sin(2^k π x), w_k(β) cos(2^k π x)}_{k=0}^{K−1})
    w_k(β) = (1 − cos(π · clip(β − k, 0, 1))) / 2

so at ``β = 0`` only the raw coordinates pass, and at ``β = K`` every octave is fully on.
The encoded width is ``2 + 2·2·K`` (50 for the paper's ``K = 12``).

``directions = M`` (the paper: 2, the two axes) projects the coordinate on ``M`` unit vectors
``u_m = (sin θ_m, cos θ_m)`` at ``θ_m = m·π/M`` before the sines and cosines,
``γ_β(x) = (x, {w_k sin(2^k π u_m·x), w_k cos(2^k π u_m·x)}_{k,m})``, width ``2 + 2·M·K``.
With the two axes alone the first layer's pre-activation is a sum of a function of ``y``
and one of ``x``, so an under-trained field is nearly separable and writes a source as a
row and a column (ghosts at every crossing); diagonal directions break that symmetry.
``M = 2`` is exactly the paper's encoding (the two axes, in its ``(y, x)`` order).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def pixel_coordinates(shape: "int | tuple[int, int]", dtype=torch.float32, device=None
                      ) -> torch.Tensor:
    """Pixel centres of an ``ny × nx`` window (``n`` for a square one), shape ``(ny, nx, 2)``
    as ``(y, x)``.

    The longer side spans ``[−1, 1]``: centres sit at ``(i + ½)·h − ny·h/2`` with
    ``h = 2 / max(ny, nx)``, so a pixel is square in coordinates too (a rectangular window's
    Fourier features have one physical frequency along both axes), and the 32² and 64² grids
    of the curriculum cover the same physical square.
    """
    ny, nx = (shape, shape) if isinstance(shape, int) else (int(shape[0]), int(shape[1]))
    step = 2.0 / max(ny, nx)

    def axis(count: int) -> torch.Tensor:
        return ((torch.arange(count, dtype=torch.float64, device=device) + 0.5) * step
                - 0.5 * count * step)

    yy, xx = torch.meshgrid(axis(ny), axis(nx), indexing="ij")
    return torch.stack([yy, xx], dim=-1).to(dtype)


def annealing_weights(beta: "float | torch.Tensor", octaves: int) -> torch.Tensor:
    """The cosine window ``w_k(β)`` for ``k = 0 … K−1``, shape ``(K,)`` (or ``β.shape + (K,)``)."""
    beta = torch.as_tensor(beta, dtype=torch.float64)
    k = torch.arange(octaves, dtype=torch.float64, device=beta.device)
    alpha = (beta.unsqueeze(-1) - k).clamp(0.0, 1.0)
    return 0.5 * (1.0 - torch.cos(math.pi * alpha))


class AnnealedFourierFeatures(nn.Module):
    """``γ_β``: ``(..., 2) → (..., 2 + 4K)``.

    Parameters
    ----------
    octaves : K, the number of frequency bands (paper: 12).
    base : ratio between successive bands (paper: 2).
    directions : M ≥ 2, the projection directions (paper: 2, the axes).
    """

    def __init__(self, octaves: int = 12, base: float = 2.0, directions: int = 2):
        super().__init__()
        if octaves < 0:
            raise ValueError(f"octaves must be >= 0, got {octaves}")
        if directions < 2:
            raise ValueError(f"directions must be >= 2, got {directions}")
        self.octaves = int(octaves)
        self.base = float(base)
        self.directions = int(directions)
        self.frequencies = tuple(math.pi * self.base ** k for k in range(self.octaves))
        theta = torch.arange(self.directions, dtype=torch.float64) * (math.pi / self.directions)
        # rows (sin θ, cos θ) act on (y, x): θ = 0 is x, θ = π/2 is y
        axes = torch.stack([torch.sin(theta), torch.cos(theta)], dim=-1)
        self.register_buffer("axes", axes, persistent=False)          # (M, 2)

    @property
    def out_features(self) -> int:
        return 2 + 2 * self.directions * self.octaves

    def forward(self, coords: torch.Tensor, beta: "float | torch.Tensor") -> torch.Tensor:
        """``β`` a number, or a tensor whose shape (with a trailing axis for K) broadcasts
        against ``coords``'s leading axes."""
        weights = annealing_weights(beta, self.octaves).to(coords)            # (K,)
        freqs = torch.tensor(self.frequencies, dtype=coords.dtype, device=coords.device)
        # M = 2 is the paper's encoding of (y, x) as they are, without the projection
        projected = coords if self.directions == 2 else coords @ self.axes.to(coords).T
        phase = projected.unsqueeze(-1) * freqs                               # (..., M, K)
        sin = (torch.sin(phase) * weights).flatten(-2)                        # (..., MK)
        cos = (torch.cos(phase) * weights).flatten(-2)
        coords = coords.expand(*sin.shape[:-1], coords.shape[-1])           # β may add axes
        return torch.cat([coords, sin, cos], dim=-1)
