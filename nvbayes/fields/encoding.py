"""Coordinates and the annealed Fourier encoding of appendix D.2.

For a coordinate ``x ∈ [−1, 1]²`` and progress ``β ∈ [0, K]``::

    γ_β(x) = (x, {w_k(β) sin(2^k π x), w_k(β) cos(2^k π x)}_{k=0}^{K−1})
    w_k(β) = (1 − cos(π · clip(β − k, 0, 1))) / 2

so at ``β = 0`` only the raw coordinates pass, and at ``β = K`` every octave is fully on.
The encoded width is ``2 + 2·2·K`` (50 for the paper's ``K = 12``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def pixel_coordinates(n: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """Pixel centres of an ``n × n`` window in ``[−1, 1]²``, shape ``(n, n, 2)`` as ``(y, x)``.

    Centres sit at ``(i + ½)·2/n − 1``: normalized by the half extent of the window, so the 32²
    and 64² grids of the curriculum cover the same physical square.
    """
    axis = (torch.arange(n, dtype=torch.float64, device=device) + 0.5) * (2.0 / n) - 1.0
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
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
    """

    def __init__(self, octaves: int = 12, base: float = 2.0):
        super().__init__()
        if octaves < 0:
            raise ValueError(f"octaves must be >= 0, got {octaves}")
        self.octaves = int(octaves)
        self.base = float(base)
        self.frequencies = tuple(math.pi * self.base ** k for k in range(self.octaves))

    @property
    def out_features(self) -> int:
        return 2 + 4 * self.octaves

    def forward(self, coords: torch.Tensor, beta: "float | torch.Tensor") -> torch.Tensor:
        """``β`` a number, or a tensor whose shape (with a trailing axis for K) broadcasts
        against ``coords``'s leading axes."""
        weights = annealing_weights(beta, self.octaves).to(coords)            # (K,)
        freqs = torch.tensor(self.frequencies, dtype=coords.dtype, device=coords.device)
        phase = coords.unsqueeze(-1) * freqs                                  # (..., 2, K)
        sin = (torch.sin(phase) * weights).flatten(-2)                        # (..., 2K)
        cos = (torch.cos(phase) * weights).flatten(-2)
        coords = coords.expand(*sin.shape[:-1], coords.shape[-1])           # β may add axes
        return torch.cat([coords, sin, cos], dim=-1)
