"""The energy-ratio scale correction (paper Proposition 1, Eq. 30).

The max-normalized likelihood cannot see the absolute scale of ρ.  After a fit, with
``E_obs = Σ_{ω,r} S_obs`` and ``E_pred = Σ_{ω,r} F(ρ̂, ω̂_L)``::

    α = E_obs / E_pred           under F2 (linear in ρ)
    α = √(E_obs / E_pred)        under F1 (quadratic in ρ)

and ``α ρ̂`` reproduces the observed energy exactly.
"""

from __future__ import annotations

import math

import torch

from nvbayes.errors import MeasurementError
from nvbayes.physics.operators import OPERATORS

#: Power of ρ in each operator's homogeneity, ``F(cρ) = c^p F(ρ)``, as the operators declare.
HOMOGENEITY = {name: cls.homogeneity for name, cls in OPERATORS.items()}


def scale_correction(observed: torch.Tensor, predicted: torch.Tensor, operator: str,
                     mask: "torch.Tensor | None" = None) -> dict:
    """``{"scale_correction": α, "energy_obs": E_obs, "energy_pred": E_pred}`` as floats; the
    energies sum over the pixels of ``mask`` (bool ``(ny, nx)``) alone when one is given."""
    if mask is not None:
        observed, predicted = observed * mask, predicted * mask
    e_obs = float(observed.detach().to(torch.float64).sum())
    e_pred = float(predicted.detach().to(torch.float64).sum())
    if not e_obs > 0:
        raise MeasurementError(f"the spectrum's total power is {e_obs:g}, not positive",
                               "check the measurement's baseline (noise spectra are >= 0)")
    alpha = (e_obs / e_pred) ** (1.0 / HOMOGENEITY[operator]) if e_pred > 0 else math.nan
    return {"scale_correction": alpha, "energy_obs": e_obs, "energy_pred": e_pred}
