"""Unit conventions shared by the forward operators F1, F2 and F3.

The kernels of :mod:`nvbayes.physics.kernels` are *geometric*: the Green tensor without its
prefactor, ``(3 R_i R_a - |R|² δ_ia) / |R|⁵``, with lengths in whatever unit the caller uses.
A convention turns them into physical kernels with one scalar, the *power scale* ``c``:

    P = c · P_geom,        G_nv = √c · G_nv,geom

so that F2 and F3 (linear in the power kernel P) and F1 (quadratic in the field kernel G_nv)
always carry the same constant and their energies compare across operators.

``normalized``
    ``c = z0⁶ / 4`` with lengths in nanometres.  The tensor power kernel of a z-axis NV then
    peaks at exactly 1 (directly above a unit source, ``P(0, 0, z0) = 4 / z0⁶``), and so does
    ``G_zz²``.  Spectra are dimensionless: multiples of the peak noise of one unit source.

``si``
    ``c = (μ0 / 4π)²`` with lengths in metres.  The field kernel ``G_nv`` is then in
    T / (A·m²): the field at the NV per unit dipole moment, and spectra are field variances per
    squared moment, T² / (A·m²)².  Multiply by the squared effective moment of one source
    (e.g. ``(2.31 μ_B)²``) to obtain T².  The source weights ρ are per-pixel counts of
    fluctuators: an areal density (m⁻²) times the pixel area ``spacing²``.
"""

from __future__ import annotations

from dataclasses import dataclass

from nvbayes.errors import ParameterError

#: μ0 / 4π in T·m / A (exact in the pre-2019 SI, 1e-7 to 1 part in 1e9 since).
MU0_OVER_4PI = 1.00000000055e-7
#: Bohr magneton in A·m² (CODATA 2018).
BOHR_MAGNETON = 9.2740100783e-24
#: Nanometres per metre.
NM_PER_M = 1e9

UNIT_KINDS = ("normalized", "si")


@dataclass(frozen=True)
class Units:
    """A unit convention: how nanometre inputs become kernel lengths and the power scale.

    Parameters
    ----------
    kind : {"normalized", "si"}
    """

    kind: str = "normalized"

    def __post_init__(self):
        if self.kind not in UNIT_KINDS:
            raise ParameterError(
                f"unknown units {self.kind!r}", f"use one of {', '.join(UNIT_KINDS)}"
            )

    def length(self, nanometres: float) -> float:
        """A length given in nm, expressed in this convention's length unit."""
        return nanometres / NM_PER_M if self.kind == "si" else nanometres

    def power_scale(self, standoff_nm: float) -> float:
        """The constant ``c`` multiplying the geometric power kernel at this standoff."""
        if self.kind == "si":
            return MU0_OVER_4PI**2
        return standoff_nm**6 / 4.0

    @property
    def spectrum_units(self) -> str:
        """The units string stored with a spectrum computed in this convention."""
        if self.kind == "si":
            return "T2 per (A m2)2"
        return "peak noise of one unit source"


def as_units(units: "Units | str") -> Units:
    """Accept a :class:`Units` or its name."""
    return units if isinstance(units, Units) else Units(str(units))
