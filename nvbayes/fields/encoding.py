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


class GridEncoding:
    """``γ_β`` on one fixed set of coordinates, its β-independent part computed once.

    ``γ_β(x)_j = w_{k(j)}(β) · φ_j(x)`` with ``φ_j`` the raw coordinate or a sine or cosine
    (``w = 1`` on the raw coordinates), so for a fixed grid the sines and cosines are a
    constant table and a step costs one product with the column weights.  They are computed in
    float64 and then cast: a float32 coordinate carries a rounding error of 6e-8, which the
    top octave (2¹¹π at K = 12) turns into phase errors of 4e-4.

    On pixel centres many high-octave columns are constant over the grid (``sin(2^k π x)``
    lands on 0 or ±1 at every centre once ``2^k`` reaches the grid's size): a layer that reads
    the encoding gets those columns as a bias (:meth:`split`), not as a product with ``P``
    equal rows.  A column counts as constant where its spread over the grid is below 1e-9.

    Parameters
    ----------
    encoding : the encoding ``γ``.
    coords : ``(..., 2)``, the ``P`` points (leading axes flattened).
    """

    #: Spread below which a column is constant over the grid (float64 arithmetic).
    CONSTANT_SPREAD = 1e-9

    def __init__(self, encoding: AnnealedFourierFeatures, coords: torch.Tensor):
        self.octaves = encoding.octaves
        self.dtype, self.device = coords.dtype, coords.device
        flat = coords.reshape(-1, coords.shape[-1]).to(torch.float64)
        table = encoding(flat, float(encoding.octaves))                      # (P, E), w = 1
        spread = table.amax(dim=0) - table.amin(dim=0)
        constant = spread <= self.CONSTANT_SPREAD
        constant[: coords.shape[-1]] = False          # the raw coordinates always vary
        self.varying_index = (~constant).nonzero().flatten().to(coords.device)
        self.constant_index = constant.nonzero().flatten().to(coords.device)
        self.varying_table = table[:, ~constant].to(coords)                # (P, E_v)
        self.constant_values = table[0, constant].to(coords)               # (E_c,)
        # each column's octave k (sines, then cosines, each M blocks of K); −1: a raw coordinate
        octave = torch.cat([torch.full((coords.shape[-1],), -1, dtype=torch.long),
                            torch.arange(encoding.octaves).repeat(2 * encoding.directions)])
        self.varying_octave = octave[~constant].to(coords.device)
        self.constant_octave = octave[constant].to(coords.device)
        self._octaves_of = (self.varying_octave.tolist(), self.constant_octave.tolist())
        self._last = None                   # (β, split(β)) of the last number asked for

    @property
    def out_features(self) -> int:
        return int(self.varying_index.numel() + self.constant_index.numel())

    def _weights(self, beta, octave: torch.Tensor) -> torch.Tensor:
        """Column weights ``w_{k(j)}(β)`` ``(..., E_part)``: 1 on the raw coordinates."""
        w = annealing_weights(beta, self.octaves).to(self.dtype).to(self.device)   # (..., K)
        ones = torch.ones(*w.shape[:-1], 1, dtype=w.dtype, device=w.device)
        return torch.cat([w, ones], dim=-1)[..., octave]      # octave −1 → the appended 1

    def split(self, beta: "float | torch.Tensor") -> tuple[torch.Tensor, torch.Tensor]:
        """``(varying, constant)``: the varying columns ``(P, E_v)`` (``(B, P, E_v)`` for a
        ``β`` of shape ``(B,)``) and the constant columns' values ``(E_c,)`` (``(B, E_c)``).

        For a number ``β`` the last result is kept
        (a stage that does not anneal asks for the same ``β`` at every step)."""
        if isinstance(beta, torch.Tensor) and beta.dim() > 0:
            w_v = self._weights(beta, self.varying_octave)
            w_c = self._weights(beta, self.constant_octave)
            return self.varying_table * w_v.unsqueeze(-2), self.constant_values * w_c
        beta = float(beta)
        if self._last is not None and self._last[0] == beta:
            return self._last[1]
        weights = annealing_weights(beta, self.octaves).tolist() + [1.0]    # octave −1 → 1
        if all(w == 1.0 for w in weights):          # every octave on: the tables as they are
            out = (self.varying_table, self.constant_values)
        else:
            w_v, w_c = (torch.tensor([weights[k] for k in part], dtype=self.dtype,
                                     device=self.device) for part in self._octaves_of)
            out = (self.varying_table * w_v, self.constant_values * w_c)
        self._last = (beta, out)
        return out

    def __call__(self, beta: "float | torch.Tensor") -> torch.Tensor:
        """The whole encoding ``(P, E)`` (``(B, P, E)``), columns in ``γ``'s order."""
        varying, constant = self.split(beta)
        out = varying.new_empty(*varying.shape[:-1], self.out_features)
        out[..., self.varying_index] = varying
        out[..., self.constant_index] = constant.unsqueeze(-2).expand(
            *varying.shape[:-1], constant.shape[-1])
        return out
