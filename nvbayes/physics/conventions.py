"""Two conventions for the α-RuCl3 rates: the physical one and the paper's power laws.

Both answer the same two questions, in s⁻¹, for depths in nm:

* ``sheet(depth_nm, operator, field_gauss)``: the rate of the flake at its crystallographic
  density (step 1 of appendix E.8);
* ``gaussian(amplitude_m2, sigma_nm, depth_nm, operator, field_gauss)``: the rate of the
  Gaussian ansatz ``ρ(r) = A exp(−|r|²/2σg²)`` (steps 2 and 4, and the fits).

:class:`PhysicalRates` is Fermi's golden rule with the field transverse to the NV axis
(:mod:`nvbayes.physics.relaxation`): a flake of one or more layers, each a disc of the
crystallographic density (or its own), and the NV axis as a parameter.

:class:`PaperRates` reproduces the paper's numbers.  Its step-1 rates 54.0 s⁻¹ (F2) and
11,353.5 s⁻¹ (F1) at 14.5 nm have the ratio 210.25 = 14.5², and its step-2 exponents are 4 and
2, so they follow one constant ``K = 54.0 · 14.5⁴`` s⁻¹ nm⁴ and

    Γ_F2 = K d⁻⁴,        Γ_F1 = K d⁻²        (d in nm; field-independent).

No standard physical convention gives 54.0 at these constants (the golden rule gives about
720 s⁻¹), and the d⁻² law of F1 has no physical derivation for a sheet, whose coherent field
vanishes; the convention is kept so that the paper's numbers can be reproduced and compared.
Its Gaussian ansatz, which the paper does not write out, is defined here as

    F2:  Γ = K (A/ρ0) g(σg/d) d⁻⁴,   g = the z-axis power of the Gaussian relative to the sheet,
    F1:  Γ = K (A/ρ0)² (σg/σ_ref)² d⁻²,   σ_ref = 14.5 nm,

so that F2 tends to the sheet law as σg → ∞ and F1 is separable, ``K A² h(σg) d⁻²``, with the
degenerate valley ``A² σg² = const`` the paper describes: the rates of all NVs depend on
(A, σg) through one number, and the Hessian of any loss of them has rank one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from nvbayes.errors import ParameterError

from .operators import check_inversion_operator
from .relaxation import (
    Flake,
    GaussianDensity,
    SpinBath,
    UniformDisc,
    check_component,
    check_layers,
    relaxation_rate,
)

NM = 1e-9
#: The conventions, by name; ``physical`` is the default everywhere.
CONVENTIONS = ("physical", "paper")
#: The depth exponent n of ``Γ ∝ d⁻ⁿ`` in the paper's convention.
PAPER_EXPONENTS = {"F2": 4, "F1": 2}


def check_convention(name: str) -> str:
    value = str(name).lower()
    if value not in CONVENTIONS:
        raise ParameterError(f"unknown convention {name!r}", f"use one of {', '.join(CONVENTIONS)}")
    return value


def _nm(value) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64) * NM


@dataclass(frozen=True)
class PhysicalRates:
    """Fermi's golden rule, ``Γ = 3γe²⟨B⊥²⟩ τc/(1+ω²τc²)``, for a layered flake.

    ``layer_densities_m2`` are the spin densities of the layers, nearest the NV first; the
    ansatz's amplitude is that of the first layer and the others scale with it.
    ``component="axial"`` uses ``⟨(B·n)²⟩`` instead (the imaging operators' definition), for
    comparison only.
    """

    name: ClassVar[str] = "physical"
    bath: SpinBath
    layer_densities_m2: tuple
    layer_spacing_nm: float
    sheet_radius_nm: float
    axis: tuple = (0.0, 0.0, 1.0)
    component: str = "transverse"
    _weights: tuple = field(init=False, repr=False)

    def __post_init__(self):
        densities = tuple(float(v) for v in self.layer_densities_m2)
        if not densities or densities[0] <= 0:
            raise ParameterError("the flake needs a positive density in its first layer",
                                 "give layer_densities_m2 (m^-2), nearest layer first")
        object.__setattr__(self, "layer_densities_m2", densities)
        object.__setattr__(self, "_weights", tuple(v / densities[0] for v in densities))
        object.__setattr__(self, "component", check_component(self.component))
        object.__setattr__(self, "axis", tuple(float(v) for v in self.axis))
        check_layers(self.layer_spacing_nm * NM, self._weights)

    def _flake(self, layer):
        if len(self._weights) == 1:
            return layer
        return Flake(layer, self.layer_spacing_nm * NM, self._weights)

    def _rate(self, source, depth_nm, operator, field_gauss):
        return relaxation_rate(source, _nm(depth_nm), operator, self.bath,
                               torch.as_tensor(field_gauss, dtype=torch.float64),
                               torch.tensor(self.axis, dtype=torch.float64), self.component)

    def sheet(self, depth_nm, operator: str, field_gauss=0.0) -> torch.Tensor:
        disc = UniformDisc(self.layer_densities_m2[0], self.sheet_radius_nm * NM)
        return self._rate(self._flake(disc), depth_nm, operator, field_gauss)

    def gaussian(self, amplitude_m2, sigma_nm, depth_nm, operator: str,
                 field_gauss=0.0) -> torch.Tensor:
        source = self._flake(GaussianDensity(amplitude_m2, _nm(sigma_nm)))
        return self._rate(source, depth_nm, operator, field_gauss)

    def describe(self) -> str:
        n = torch.tensor(self.axis)
        polar = math.degrees(math.acos(max(-1.0, min(1.0, float(n[2])))))
        layers = len(self.layer_densities_m2)
        flake = ("one layer" if layers == 1 else
                 f"{layers} layers {self.layer_spacing_nm:g} nm apart "
                 f"({layers * self.layer_spacing_nm:.4g} nm thick)")
        return (f"physical convention: Fermi's golden rule, {self.component} noise, NV axis "
                f"{polar:.1f} deg from z, {flake}")


@dataclass(frozen=True)
class PaperRates:
    """The paper's power laws ``Γ_F2 = K d⁻⁴``, ``Γ_F1 = K d⁻²``; see the module docstring.

    ``k`` is in s⁻¹ nm⁴, ``reference_density_m2`` is ρ0 and ``reference_sigma_nm`` σ_ref.
    """

    name: ClassVar[str] = "paper"
    k: float
    reference_density_m2: float
    reference_sigma_nm: float

    def __post_init__(self):
        for key in ("k", "reference_density_m2", "reference_sigma_nm"):
            value = getattr(self, key)
            if not (value > 0 and math.isfinite(value)):
                raise ParameterError(f"paper convention: {key} must be positive, got {value}",
                                     "fix models/rucl3.toml")

    def sheet(self, depth_nm, operator: str, field_gauss=0.0) -> torch.Tensor:
        n = PAPER_EXPONENTS[check_inversion_operator(operator)]
        depth, _ = torch.broadcast_tensors(torch.as_tensor(depth_nm, dtype=torch.float64),
                                           torch.as_tensor(field_gauss, dtype=torch.float64))
        return self.k * depth ** (-n)

    def gaussian(self, amplitude_m2, sigma_nm, depth_nm, operator: str,
                 field_gauss=0.0) -> torch.Tensor:
        relative = torch.as_tensor(amplitude_m2, dtype=torch.float64) / self.reference_density_m2
        sigma = torch.as_tensor(sigma_nm, dtype=torch.float64)
        sheet = self.sheet(depth_nm, operator, field_gauss)
        if check_inversion_operator(operator) == "F1":
            return sheet * relative**2 * (sigma / self.reference_sigma_nm) ** 2
        depth = _nm(depth_nm)
        shape = GaussianDensity(1.0, sigma * NM).power(depth) * depth**4 / (1.5 * math.pi)
        return sheet * relative * shape

    def describe(self) -> str:
        return (f"paper convention: Gamma_F2 = K d^-4, Gamma_F1 = K d^-2 (d in nm), "
                f"K = {self.k:.6g} s^-1 nm^4")


__all__ = ["CONVENTIONS", "PAPER_EXPONENTS", "PaperRates", "PhysicalRates", "check_convention"]
