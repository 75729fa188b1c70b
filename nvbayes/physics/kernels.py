"""Dipolar Green tensor, power kernel and scalar kernel.

For a source in the sample plane and an NV at height ``z0``, the separation is
``R = (Δx, Δy, z0)`` with ``Δ = r_nv − r_src``.  The geometric Green tensor is

    g_ia(R) = (3 R_i R_a − |R|² δ_ia) / |R|⁵,          i, a ∈ {x, y, z}

(the physical tensor is ``μ0/4π · g``; prefactors live in :mod:`nvbayes.physics.units`).
For an NV with unit quantization axis ``n`` the field kernel of a source fluctuating along
``a`` is ``g_nv,a = Σ_i n_i g_ia`` and

    power kernel   P(R)    = Σ_a g_nv,a(R)²            (tensor channel sum, F2 and F3)
    scalar kernel  g_nv(R) = Σ_a n_a g_nv,a(R)          (single projection, F1)

For the z-axis NV of the paper, ``g_nv,a = g_az`` and ``P = (|R|² + 3 z0²) / |R|⁸`` in
closed form; ``g_nv = g_zz = (3 z0² − |R|²) / |R|⁵``.

Kernels on a grid are tabulated on all offsets ``d ∈ [−(n−1), n−1]`` (shape
``(2 ny − 1, 2 nx − 1)``) and, for the FFT operators, transformed once and cached per
(shape, spacing, standoff, units, NV axis, channels, dtype, device).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch

from nvbayes.errors import ParameterError

from .units import Units, as_units

Z_AXIS = (0.0, 0.0, 1.0)
AXES = ("x", "y", "z")

_THIRD = 1.0 / math.sqrt(3.0)
#: Named NV axes: ``z`` (the paper's, normal to the surface) and the four ⟨111⟩ orientations
#: of a (100)-cut diamond, each 54.7° from the surface normal ``z = [001]``.  An axis and its
#: opposite give the same kernels (P and g_nv are even in n), so four names cover the eight
#: ⟨111⟩ directions.
NV_ORIENTATIONS = {
    "z": Z_AXIS,
    "111": (_THIRD, _THIRD, _THIRD),
    "1-11": (_THIRD, -_THIRD, _THIRD),
    "-111": (-_THIRD, _THIRD, _THIRD),
    "-1-11": (-_THIRD, -_THIRD, _THIRD),
}


def nv_axis_named(text: str) -> tuple[float, float, float]:
    """An NV axis by name (:data:`NV_ORIENTATIONS`) or as ``"nx,ny,nz"``, normalized."""
    key = str(text).strip()
    if key in NV_ORIENTATIONS:
        return NV_ORIENTATIONS[key]
    try:
        values = tuple(float(v) for v in key.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise ParameterError(f"unknown NV axis {text!r}",
                             f"use {', '.join(NV_ORIENTATIONS)} or three numbers nx,ny,nz")
    return _unit_axis(values)


def _unit_axis(nv_axis: Sequence[float]) -> tuple[float, float, float]:
    n = tuple(float(v) for v in nv_axis)
    norm = math.sqrt(sum(v * v for v in n))
    if len(n) != 3 or norm == 0.0 or not math.isfinite(norm):
        raise ParameterError(
            f"NV axis {tuple(nv_axis)} is not a nonzero 3-vector", "give three finite numbers"
        )
    return tuple(v / norm for v in n)


def green_tensor(dx: torch.Tensor, dy: torch.Tensor, z0: float) -> torch.Tensor:
    """Geometric dipolar Green tensor ``g_ia``.

    Parameters
    ----------
    dx, dy : tensors of the same shape ``(...)``: in-plane separation ``r_nv − r_src``.
    z0 : standoff, in the same length unit (> 0).

    Returns
    -------
    Tensor of shape ``(..., 3, 3)``, symmetric in its last two axes.
    """
    dz = torch.full_like(dx, float(z0))
    r_vec = torch.stack([dx, dy, dz], dim=-1)
    r2 = (r_vec * r_vec).sum(-1)
    eye = torch.eye(3, dtype=dx.dtype, device=dx.device)
    outer = r_vec.unsqueeze(-1) * r_vec.unsqueeze(-2)
    return (3.0 * outer - r2[..., None, None] * eye) / r2[..., None, None] ** 2.5


def nv_field_kernel(
    dx: torch.Tensor, dy: torch.Tensor, z0: "float | torch.Tensor",
    nv_axis: Sequence[float] = Z_AXIS
) -> torch.Tensor:
    """Field kernel per source channel, ``g_nv,a = Σ_i n_i g_ia``: shape ``(..., 3)``.

    ``z0`` is a number or a tensor broadcastable to ``dx`` (a standoff per readout pixel, or
    a fitted standoff that carries a gradient).

    Evaluated directly as ``(3 (n·R) R_a − |R|² n_a) / |R|⁵`` (equal to contracting
    :func:`green_tensor` with ``n``, without forming the 3 × 3 tensor).
    """
    nx_, ny_, nz_ = _unit_axis(nv_axis)
    dx, dy, dz = torch.broadcast_tensors(dx, dy, torch.zeros_like(dx) + z0)
    r_vec = torch.stack([dx, dy, dz], dim=-1)
    r2 = dx * dx + dy * dy + z0 * z0
    n_dot_r = nx_ * dx + ny_ * dy + nz_ * z0
    n = torch.tensor((nx_, ny_, nz_), dtype=dx.dtype, device=dx.device)
    return (3.0 * n_dot_r[..., None] * r_vec - r2[..., None] * n) / r2[..., None] ** 2.5


def power_kernel(
    dx: torch.Tensor,
    dy: torch.Tensor,
    z0: "float | torch.Tensor",
    nv_axis: Sequence[float] = Z_AXIS,
    channels: Sequence[str] = AXES,
) -> torch.Tensor:
    """Tensor power kernel ``P = Σ_{a ∈ channels} g_nv,a²`` (geometric), shape ``(...)``."""
    g = nv_field_kernel(dx, dy, z0, nv_axis)
    idx = [_channel_index(c) for c in channels]
    return (g[..., idx] ** 2).sum(-1)


def power_kernel_closed_form(dx: torch.Tensor, dy: torch.Tensor, z0: float) -> torch.Tensor:
    """``P = (|R|² + 3 z0²) / |R|⁸`` for a z-axis NV (all three channels)."""
    r2 = dx * dx + dy * dy + z0 * z0
    return (r2 + 3.0 * z0 * z0) / r2**4


def scalar_kernel(
    dx: torch.Tensor, dy: torch.Tensor, z0: "float | torch.Tensor",
    nv_axis: Sequence[float] = Z_AXIS
) -> torch.Tensor:
    """Scalar kernel ``g_nv = nᵀ g n`` (``g_zz`` for a z-axis NV), shape ``(...)``."""
    n = torch.tensor(_unit_axis(nv_axis), dtype=dx.dtype, device=dx.device)
    return torch.einsum("a,...a->...", n, nv_field_kernel(dx, dy, z0, nv_axis))


def _channel_index(channel: str) -> int:
    if channel not in AXES:
        raise ParameterError(f"unknown kernel channel {channel!r}", "use x, y or z")
    return AXES.index(channel)


def check_geometry(spacing_nm: float, standoff_nm: float) -> None:
    """Raise :class:`ParameterError` unless spacing and standoff are positive and finite."""
    for name, value in (("spacing", spacing_nm), ("standoff", standoff_nm)):
        if not (math.isfinite(value) and value > 0):
            raise ParameterError(
                f"{name} must be a positive length in nm, got {value}",
                f"pass a {name} > 0 (the paper uses 20 nm)",
            )


def offsets(shape: tuple[int, int], spacing: float, dtype, device=None):
    """In-plane offsets of every (readout − source) pixel pair on a ``shape`` grid.

    Returns ``(dy, dx)``, each of shape ``(2 ny − 1, 2 nx − 1)``; index ``[ny − 1, nx − 1]``
    is the zero offset.
    """
    ny, nx = shape
    ky = torch.arange(-(ny - 1), ny, dtype=dtype, device=device) * spacing
    kx = torch.arange(-(nx - 1), nx, dtype=dtype, device=device) * spacing
    return torch.meshgrid(ky, kx, indexing="ij")


def kernel_table(
    kind: str,
    shape: tuple[int, int],
    spacing_nm: float,
    standoff_nm: float,
    units: "Units | str" = "normalized",
    nv_axis: Sequence[float] = Z_AXIS,
    channels: Sequence[str] = AXES,
    dtype=torch.float64,
    device=None,
) -> torch.Tensor:
    """Physical kernel on all grid offsets, shape ``(2 ny − 1, 2 nx − 1)``.

    ``kind="power"`` gives ``c · P`` (F2); ``kind="scalar"`` gives ``√c · g_nv`` (F1), with
    ``c`` the power scale of ``units``.
    """
    check_geometry(spacing_nm, standoff_nm)
    units = as_units(units)
    spacing, z0 = units.length(spacing_nm), units.length(standoff_nm)
    dy, dx = offsets(shape, spacing, torch.float64, device)
    return _scaled_kernel(kind, dx, dy, z0, units.power_scale(standoff_nm), nv_axis,
                          channels).to(dtype)


def _scaled_kernel(kind: str, dx: torch.Tensor, dy: torch.Tensor, z0, scale: float,
                   nv_axis: Sequence[float], channels: Sequence[str]) -> torch.Tensor:
    """``c · P`` (``kind="power"``) or ``√c · g_nv`` (``"scalar"``) at the offsets, with ``c``
    the power scale."""
    if kind == "power":
        return scale * power_kernel(dx, dy, z0, nv_axis, channels)
    if kind == "scalar":
        return math.sqrt(scale) * scalar_kernel(dx, dy, z0, nv_axis)
    raise ParameterError(f"unknown kernel kind {kind!r}", "use 'power' or 'scalar'")


def _laid_out_spectrum(table: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``rfft2`` of ``table (..., 2 ny − 1, 2 nx − 1)`` with the value for offset ``d`` at index
    ``d mod M`` of an ``M = fft_shape(shape)`` buffer (see :func:`kernel_spectrum`)."""
    ny, nx = shape
    rolled = torch.zeros(*table.shape[:-2], *fft_shape(shape), dtype=table.dtype,
                         device=table.device)
    rolled[..., : 2 * ny - 1, : 2 * nx - 1] = table
    rolled = torch.roll(rolled, shifts=(-(ny - 1), -(nx - 1)), dims=(-2, -1))
    return torch.fft.rfft2(rolled)


def fft_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """FFT size for an exact linear convolution of a ``shape`` image with its offset kernel.

    Any size ≥ 2n − 1 avoids wrap-around inside the cropped n × n window; 2n keeps it even.
    """
    return (2 * shape[0], 2 * shape[1])


@functools.lru_cache(maxsize=64)
def kernel_spectrum(
    kind: str,
    shape: tuple[int, int],
    spacing_nm: float,
    standoff_nm: float,
    units: Units,
    nv_axis: tuple[float, float, float],
    channels: tuple[str, ...],
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """``rfft2`` of the kernel table laid out for :func:`convolve`; cached.

    The table value for offset ``d`` sits at index ``d mod M`` of an ``M = fft_shape(shape)``
    buffer, so that a circular convolution of size M equals the linear one on the window.
    """
    table = kernel_table(kind, shape, spacing_nm, standoff_nm, units, nv_axis, channels,
                         torch.float64, device)
    return _laid_out_spectrum(table, shape).to(_complex_of(dtype))


def standoff_spectrum(kind: str, shape: tuple[int, int], spacing_nm: float,
                      standoff_nm: torch.Tensor, units: "Units | str",
                      nv_axis: Sequence[float], channels: Sequence[str],
                      unit_standoff_nm: float) -> torch.Tensor:
    """:func:`kernel_spectrum` at a standoff that is a tensor (a fitted standoff, with its
    gradient): ``standoff_nm`` ``()`` or ``(B,)`` → ``(..., My, Mx // 2 + 1)``, uncached.

    The power scale stays that of ``unit_standoff_nm`` (the recorded standoff): the units of
    the spectrum are fixed by the recorded geometry, and a source farther away than recorded
    is dimmer in them.  Computed in the dtype of ``standoff_nm``.
    """
    units = as_units(units)
    z0 = units.length(1.0) * standoff_nm.reshape(*standoff_nm.shape, 1, 1)
    dy, dx = offsets(shape, units.length(spacing_nm), standoff_nm.dtype, standoff_nm.device)
    table = _scaled_kernel(kind, dx, dy, z0, units.power_scale(unit_standoff_nm), nv_axis,
                           channels)
    return _laid_out_spectrum(table, shape)


def _complex_of(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def convolve(image: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
    """Linear (zero-padded) convolution of ``image (..., ny, nx)`` with a cached kernel.

    ``out[i] = Σ_j image[j] · K(r_i − r_j)`` over the finite window; no wrap-around.
    """
    ny, nx = image.shape[-2:]
    size = fft_shape((ny, nx))
    full = torch.fft.irfft2(torch.fft.rfft2(image, s=size) * spectrum, s=size)
    return full[..., :ny, :nx]


def cached_spectrum(
    kind: str,
    shape: tuple[int, int],
    spacing_nm: float,
    standoff_nm: float,
    units: "Units | str",
    nv_axis: Sequence[float],
    channels: Sequence[str],
    like: torch.Tensor,
) -> torch.Tensor:
    """:func:`kernel_spectrum` for the dtype and device of ``like`` (hashable key built here)."""
    return kernel_spectrum(
        kind,
        (int(shape[0]), int(shape[1])),
        float(spacing_nm),
        float(standoff_nm),
        as_units(units),
        _unit_axis(nv_axis),
        tuple(channels),
        like.dtype,
        like.device,
    )
