"""Parameterizations of (ρ, ω_L): functions from pixel coordinates to a density and a Larmor field.

Depends on torch only.  The neural field of the NeTMY paper (appendix D.1–D.2) lives in
:mod:`.neural`, its annealed Fourier encoding in :mod:`.encoding`, and the output transforms
shared by every parameterization in :mod:`.heads`.
"""

from .encoding import AnnealedFourierFeatures, annealing_weights, pixel_coordinates
from .heads import density_head, larmor_head, support_mask
from .neural import NeuralField

__all__ = [
    "AnnealedFourierFeatures", "NeuralField", "annealing_weights", "density_head",
    "larmor_head", "pixel_coordinates", "support_mask",
]
