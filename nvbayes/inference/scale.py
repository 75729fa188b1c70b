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


def least_squares_scale(observed: torch.Tensor, predicted: torch.Tensor, operator: str,
                        mask: "torch.Tensor | None" = None) -> dict:
    """The scale of a signal that sits on a modelled background: ``c = Σ S_pred S_obs /
    Σ S_pred²`` (``S_obs`` less the background), the least-squares coefficient, and
    ``α = c^(1/p)``; the same keys as :func:`scale_correction`.

    Where a background carries most of the power, the energy ratio measures the background's
    error more than the signal (an error of 1 % of the peak in every readout outweighs a sparse
    scene's whole signal); the least-squares coefficient is weighted by the signal itself.
    """
    if mask is not None:
        observed, predicted = observed * mask, predicted * mask
    o, s = observed.detach().to(torch.float64), predicted.detach().to(torch.float64)
    cross, power = float((s * o).sum()), float((s * s).sum())
    coefficient = cross / power if power > 0 else math.nan
    alpha = (coefficient ** (1.0 / HOMOGENEITY[operator]) if coefficient > 0 else math.nan)
    return {"scale_correction": alpha, "energy_obs": float(o.sum()),
            "energy_pred": float(s.sum())}

