"""Step 3 of appendix E.8: the spin bath's correlation time from one NV's rates at several
fields, as a Pyro model.

The flake's rate at an axial field ``B`` is ``Γ(B) = 3γe²⟨B⊥²⟩ τc/(1 + ω(B)²τc²)`` with
``ω(B) = 2π (D − γe B/2π)``; the geometry enters only through ``⟨B⊥²⟩``, which does not depend
on B, so the step is the same under F1 and F2 and under both conventions.  Written with
``Γ₁``, the rate at the first field ``B₁`` (which the data pin down whatever τc is),

    log10(τc / ns) ~ Uniform(t₀, t₁),        log10(Γ₁ / s⁻¹) ~ Uniform(g₀, g₁),
    ln Γ_i ~ Normal(ln Γ₁ + ln[(1 + ω₁²τc²)/(1 + ω_i²τc²)], s_i),

with ``s_i`` the relative error of rate ``i`` floored at ``min_log_sd``.  The Lorentzian's
half width at half maximum in angular frequency is the bath linewidth ``γ_bath = 1/τc``
(the paper's 2.45 "GHz" is 1/0.41 ns in 10⁹ s⁻¹); in ordinary frequency it is 1/(2π τc).

What the fields can tell.  For ``ωτc ≫ 1`` the Lorentzian is ``1/(ω²τc)``: the ratio of two
rates tends to ``(ω_j/ω_i)²`` and stops depending on τc.  At the paper's fields (2, 313 and
383.5 G: ωτc = 7.4, 5.1 and 4.6 at τc = 0.41 ns) the rates bound τc from below but hardly from
above; fields near the level crossing (ω τc ≲ 1) are what fix it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch

from nvbayes.physics.relaxation import lorentzian

NS = 1e-9
#: Physical parameters of the model, with their units.
SPECTRAL_SITES = {"log10_tau_c_ns": "log10(ns)", "log10_rate_1": "log10(s-1)"}


def spectral_rate(log10_tau_c_ns, log10_rate_1, field_gauss,
                  reference_field_gauss) -> torch.Tensor:
    """Γ(B) = Γ₁ L(B)/L(B₁) in s⁻¹ with ``L = τc/(1 + ω²τc²)``; arguments broadcast."""
    tau = 10.0 ** torch.as_tensor(log10_tau_c_ns, dtype=torch.float64) * NS
    shape = lorentzian(field_gauss, tau) / lorentzian(reference_field_gauss, tau)
    return 10.0 ** torch.as_tensor(log10_rate_1, dtype=torch.float64) * shape


@dataclass(frozen=True)
class SpectralModel:
    """Priors of step 3 (``[spectral]`` of models/rucl3.toml) and the first field ``B₁``."""

    log10_tau_c_ns: tuple[float, float]
    log10_rate: tuple[float, float]
    min_log_sd: float
    reference_field_gauss: float

    def rates(self, log10_tau_c_ns, log10_rate_1, field_gauss) -> torch.Tensor:
        """Γ(B) in s⁻¹; arguments broadcast (e.g. ``(..., 1)`` against ``(n_field,)``)."""
        return spectral_rate(log10_tau_c_ns, log10_rate_1, field_gauss,
                             self.reference_field_gauss)

    def initial_values(self, generator: torch.Generator) -> dict:
        """A random start: both sites uniform on the middle half of their boxes."""
        def uniform(box):
            lo, hi = box[0] + (box[1] - box[0]) / 4, box[1] - (box[1] - box[0]) / 4
            return lo + (hi - lo) * torch.rand((), generator=generator, dtype=torch.float64)

        return {"log10_tau_c_ns": uniform(self.log10_tau_c_ns),
                "log10_rate_1": uniform(self.log10_rate)}

    def model(self, field_gauss: torch.Tensor, relative_error: torch.Tensor,
              log_rate: "torch.Tensor | None" = None) -> None:
        """The Pyro model; tensors are ``(n_field,)`` float64, ``log_rate`` is ln Γ."""
        dtype = field_gauss.dtype
        tau = pyro.sample("log10_tau_c_ns", dist.Uniform(
            *(torch.tensor(v, dtype=dtype) for v in self.log10_tau_c_ns)))
        rate_1 = pyro.sample("log10_rate_1", dist.Uniform(
            *(torch.tensor(v, dtype=dtype) for v in self.log10_rate)))
        with pyro.plate("field", field_gauss.shape[-1]):
            rate = self.rates(tau, rate_1, field_gauss)
            pyro.sample("log_rate", dist.Normal(torch.log(rate),
                                                relative_error.clamp(min=self.min_log_sd)),
                        obs=log_rate)


def linewidth_per_ns(log10_tau_c_ns) -> torch.Tensor:
    """The bath linewidth ``γ_bath = 1/τc`` in 10⁹ s⁻¹ (the paper's "GHz")."""
    return 10.0 ** -torch.as_tensor(log10_tau_c_ns, dtype=torch.float64)


def hwhm_ghz(log10_tau_c_ns) -> torch.Tensor:
    """The Lorentzian's half width at half maximum in ordinary frequency, 1/(2π τc), GHz."""
    return linewidth_per_ns(log10_tau_c_ns) / (2 * math.pi)


__all__ = ["SPECTRAL_SITES", "SpectralModel", "hwhm_ghz", "linewidth_per_ns", "spectral_rate"]
