"""Forward operators F1, F2 and F3: from a source density and a Larmor field to a spectrum.

With ``ρ`` the per-pixel source weight, ``ω_L`` the Larmor field, ``L`` the Lorentzian of
:mod:`nvbayes.physics.lorentzian` and ``∗`` the linear (zero-padded) convolution over the
finite window:

    F1 (scalar, coherent)    S(ω, r) = |(G_nv ∗ ρ)(r)|² · L(ω; ω_L(r))
    F2 (tensor, incoherent)  S(ω, r) = (P ∗ ρ)(r)      · L(ω; ω_L(r))
    F3 (direct, source-side) S(ω, r) = Σ_s ρ(s) P(r − s) · L(ω; ω_L(s))

F1 and F2 evaluate the convolution by FFT in the dtype of ρ and are differentiable; F2 is linear
in ρ, F1 quadratically homogeneous.  F3 keeps the Lorentzian at the *source* pixel (the first
line of the paper's Eq. 9), sums over the nonzero sources directly in float64 with the kernel
evaluated from coordinates, and is the simulator: with a constant ω_L it equals F2 to round-off.

All operators take ``rho`` of shape ``(..., ny, nx)`` and ``larmor`` broadcastable to it (or a
number) and return ``(..., n_freq, ny, nx)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from nvbayes.errors import ParameterError

from .kernels import (
    AXES,
    Z_AXIS,
    _complex_of,
    _unit_axis,
    cached_spectrum,
    check_geometry,
    convolve,
    power_kernel,
    standoff_spectrum,
)
from .lorentzian import lorentzian
from .units import as_units

#: Sources handled per block by the direct sum (bounds F3's memory to ~100 MB at 64 × 64).
_DIRECT_BLOCK = 128


class ForwardOperator:
    """Configuration shared by F1, F2 and F3.

    Parameters
    ----------
    freqs : readout frequencies ``(n_freq,)`` in GHz.
    linewidth : Lorentzian linewidth γ in GHz.
    spacing : pixel spacing in nm.
    standoff : NV plane height z0 in nm.
    units : ``"normalized"`` (peak power of a unit source is 1) or ``"si"``; see
        :mod:`nvbayes.physics.units`.
    nv_axis : NV quantization axis (default z).
    """

    name = ""
    #: The power p of the operator's homogeneity in ρ, ``F(cρ) = c^p F(ρ)``.
    homogeneity = 1

    def __init__(
        self,
        freqs,
        linewidth: float,
        spacing: float,
        standoff: float,
        units="normalized",
        nv_axis: Sequence[float] = Z_AXIS,
    ):
        check_geometry(spacing, standoff)
        if not (math.isfinite(linewidth) and linewidth > 0):
            raise ParameterError(f"linewidth must be positive, got {linewidth} GHz",
                                 "pass a linewidth > 0 (the paper uses 0.5 GHz)")
        freqs = (freqs.detach().to(torch.float64) if isinstance(freqs, torch.Tensor)
                 else torch.tensor(freqs, dtype=torch.float64)).reshape(-1)
        if freqs.numel() == 0 or not torch.isfinite(freqs).all():
            raise ParameterError("readout frequencies must be finite and non-empty",
                                 "pass at least one finite frequency in GHz")
        self.freqs = freqs
        self.linewidth = float(linewidth)
        self.spacing = float(spacing)
        self.standoff = float(standoff)
        self.units = as_units(units)
        self.nv_axis = _unit_axis(nv_axis)

    @property
    def n_freq(self) -> int:
        return self.freqs.numel()

    def _prepare(self, rho, larmor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(rho, torch.Tensor):
            rho = torch.as_tensor(rho, dtype=torch.float64)
        if rho.dim() < 2:
            raise ParameterError(f"density must have shape (..., ny, nx), got {tuple(rho.shape)}",
                                 "pass a 2-D map or a batch of them")
        if not rho.is_floating_point():
            rho = rho.to(torch.float64)
        larmor = torch.as_tensor(larmor, dtype=rho.dtype, device=rho.device)
        try:
            larmor = torch.broadcast_to(larmor, rho.shape)
        except RuntimeError:
            raise ParameterError(
                f"Larmor field of shape {tuple(larmor.shape)} does not match the density "
                f"{tuple(rho.shape)}", "give one Larmor frequency per pixel, or one number"
            ) from None
        return rho, larmor

    def noise_map(self, rho: torch.Tensor, larmor,
                  standoff: "torch.Tensor | None" = None) -> torch.Tensor:
        """``N(r) = Σ_ω S(ω, r)`` of the prediction, ``(..., ny, nx)`` (here the spectrum
        summed; the factorized operators sum the Lorentzian alone)."""
        spectrum = self(rho, larmor) if standoff is None else self(rho, larmor, standoff)
        return spectrum.sum(-3)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n_freq={self.n_freq}, linewidth={self.linewidth}, "
                f"spacing={self.spacing}, standoff={self.standoff}, units={self.units.kind!r})")


class FactorizedOperator(ForwardOperator):
    """F1 and F2: a frequency-independent map times the Lorentzian at the readout pixel,
    ``S(ω, r) = A(r) · L(ω; ω_L(r))``; subclasses define ``A`` in :meth:`source_power`.

    ``standoff``, when given to a call, is a tensor ``()`` or ``(B,)`` that replaces the
    operator's standoff (a fitted standoff, differentiable); the spectrum stays in the units of
    the operator's own (recorded) standoff.
    """

    #: The kernel this operator convolves with (:mod:`.kernels`).
    kernel_kind = ""

    def __call__(self, rho: torch.Tensor, larmor,
                 standoff: "torch.Tensor | None" = None) -> torch.Tensor:
        rho, larmor = self._prepare(rho, larmor)
        amplitude = self.source_power(rho, standoff).unsqueeze(-3)
        return amplitude * lorentzian(self.freqs.to(rho), larmor, self.linewidth)

    def noise_map(self, rho: torch.Tensor, larmor,
                  standoff: "torch.Tensor | None" = None) -> torch.Tensor:
        """``N(r) = A(r) · Σ_ω L(ω; ω_L(r))``: the factorization sums the Lorentzian alone,
        and no ``(n_freq, ny, nx)`` product with ``A`` is formed."""
        rho, larmor = self._prepare(rho, larmor)
        weight = lorentzian(self.freqs.to(rho), larmor, self.linewidth).sum(-3)
        return self.source_power(rho, standoff) * weight

    def kernel(self, rho: torch.Tensor, standoff: "torch.Tensor | None") -> torch.Tensor:
        """The kernel's spectrum for :func:`~.kernels.convolve`: cached at the operator's
        standoff, or computed at a tensor ``standoff`` (``(B,)`` gives one per image)."""
        channels = getattr(self, "channels", AXES)
        if standoff is None:
            return cached_spectrum(self.kernel_kind, rho.shape[-2:], self.spacing,
                                   self.standoff, self.units, self.nv_axis, channels, rho)
        spectrum = standoff_spectrum(self.kernel_kind, tuple(rho.shape[-2:]), self.spacing,
                                     standoff.to(torch.float64), self.units, self.nv_axis,
                                     channels, self.standoff)
        return spectrum.to(_complex_of(rho.dtype))

    def source_power(self, rho: torch.Tensor, standoff: "torch.Tensor | None" = None
                     ) -> torch.Tensor:
        """The map ``A(r)``, shape ``(..., ny, nx)``."""
        raise NotImplementedError


class ScalarOperator(FactorizedOperator):
    """F1: the scalar, coherent operator ``|(G_nv ∗ ρ)(r)|² · L(ω; ω_L(r))``.

    Quadratically homogeneous: ``F1(cρ) = c² F1(ρ)``.  Its cross terms between distinct sources
    (paper Eq. 10) have no counterpart in F2.
    """

    name = "F1"
    homogeneity = 2
    kernel_kind = "scalar"

    def source_power(self, rho: torch.Tensor, standoff: "torch.Tensor | None" = None
                     ) -> torch.Tensor:
        field = convolve(rho, self.kernel(rho, standoff))
        return field * field


class TensorOperator(FactorizedOperator):
    """F2: the tensor, incoherent operator ``(P ∗ ρ)(r) · L(ω; ω_L(r))``.

    Linear in ρ; the physical inversion operator of the paper.  ``channels`` restricts the
    channel sum ``P = Σ_a |G_az|²`` (default all three), e.g. ``("z",)`` for the ``G_zz²`` term.
    """

    name = "F2"
    kernel_kind = "power"

    def __init__(self, *args, channels: Sequence[str] = AXES, **kwargs):
        super().__init__(*args, **kwargs)
        self.channels = tuple(channels)

    def source_power(self, rho: torch.Tensor, standoff: "torch.Tensor | None" = None
                     ) -> torch.Tensor:
        return convolve(rho, self.kernel(rho, standoff))


class DirectOperator(ForwardOperator):
    """F3: the direct source-side sum ``Σ_s ρ(s) P(r − s) L(ω; ω_L(s))`` in float64.

    The Lorentzian is evaluated at each source pixel, the power kernel from the coordinates
    (no FFT, no tabulation), and only pixels with ``ρ ≠ 0`` are visited, so sparse scenes are
    cheap.  Returns float64 whatever the input dtype; meant for simulation, not for gradients.
    """

    name = "F3"

    def __init__(self, *args, channels: Sequence[str] = AXES, **kwargs):
        super().__init__(*args, **kwargs)
        self.channels = tuple(channels)

    def __call__(self, rho: torch.Tensor, larmor) -> torch.Tensor:
        rho, larmor = self._prepare(rho, larmor)
        rho = rho.detach().to(torch.float64)
        larmor = larmor.detach().to(torch.float64)
        *batch, ny, nx = rho.shape
        flat_rho = rho.reshape(-1, ny, nx)
        flat_larmor = larmor.reshape(-1, ny, nx)
        out = torch.zeros(flat_rho.shape[0], self.n_freq, ny, nx, dtype=torch.float64,
                          device=rho.device)
        for b in range(flat_rho.shape[0]):
            out[b] = self._direct_sum(flat_rho[b], flat_larmor[b])
        return out.reshape(*batch, self.n_freq, ny, nx)

    def _direct_sum(self, rho: torch.Tensor, larmor: torch.Tensor) -> torch.Tensor:
        ny, nx = rho.shape
        spacing, z0 = self.units.length(self.spacing), self.units.length(self.standoff)
        scale = self.units.power_scale(self.standoff)
        freqs = self.freqs.to(rho.device)
        y = torch.arange(ny, dtype=torch.float64, device=rho.device) * spacing
        x = torch.arange(nx, dtype=torch.float64, device=rho.device) * spacing
        iy, ix = torch.nonzero(rho, as_tuple=True)
        spectrum = torch.zeros(self.n_freq, ny, nx, dtype=torch.float64, device=rho.device)
        for start in range(0, iy.numel(), _DIRECT_BLOCK):
            sy, sx = iy[start:start + _DIRECT_BLOCK], ix[start:start + _DIRECT_BLOCK]
            dy = (y[None, :, None] - y[sy][:, None, None]).expand(-1, ny, nx)
            dx = (x[None, None, :] - x[sx][:, None, None]).expand(-1, ny, nx)
            power = scale * power_kernel(dx, dy, z0, self.nv_axis, self.channels)
            detuning = freqs[None, :] - larmor[sy, sx][:, None]
            weights = rho[sy, sx][:, None] * self.linewidth**2 / (
                detuning * detuning + self.linewidth**2)
            spectrum += torch.einsum("sf,syx->fyx", weights, power)
        return spectrum


OPERATORS = {"F1": ScalarOperator, "F2": TensorOperator, "F3": DirectOperator}


#: Operators a model may use as its likelihood or a rate model (F3 is the simulator).
INVERSION_OPERATORS = ("F1", "F2")


def check_inversion_operator(name: str) -> str:
    """``name`` as ``"F1"`` or ``"F2"`` (any case); anything else is a user error."""
    key = str(name).upper()
    if key not in INVERSION_OPERATORS:
        raise ParameterError(f"cannot invert under operator {name!r}",
                             "use --operator F1 or F2 (F3 is the simulator)")
    return key


def make_operator(name: str, *args, **kwargs) -> ForwardOperator:
    """Build an operator by its paper name, ``"F1"``, ``"F2"`` or ``"F3"``.

    >>> from nvbayes.physics.lorentzian import readout_frequencies
    >>> f2 = make_operator("F2", readout_frequencies(), 0.5, spacing=20.0, standoff=20.0)
    >>> f2(torch.ones(8, 8), 2.0).shape          # (n_freq, ny, nx)
    torch.Size([50, 8, 8])
    """
    key = str(name).upper()
    if key not in OPERATORS:
        raise ParameterError(f"unknown operator {name!r}", "use F1, F2 or F3")
    return OPERATORS[key](*args, **kwargs)
