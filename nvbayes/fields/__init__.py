"""Parameterizations of (ρ, ω_L): functions from pixel coordinates to a density and a Larmor field.

Depends on torch only.  The neural field of the NeTMY paper (appendix D.1–D.2) lives in
:mod:`.neural`, its annealed Fourier encoding in :mod:`.encoding`, and the output transforms
in :mod:`.heads`.  The baselines of appendix E.2 parameterize the density alone (free pixels in
:mod:`.pixels`, Gaussian primitives in :mod:`.splats`, the Deep Decoder in :mod:`.decoder`) and
pair it with a free per-pixel Larmor map (:class:`.pixels.DensityField`).
"""

from .base import Density, Field, Parameterization
from .decoder import DeepDecoder
from .encoding import AnnealedFourierFeatures, annealing_weights, pixel_coordinates
from .heads import density_head, larmor_head, support_mask
from .neural import NeuralField
from .nuisance import NuisanceField, NuisanceParameters
from .pixels import DensityField, LarmorMap, PixelDensity
from .splats import DensityControl, GaussianSplats

__all__ = [
    "AnnealedFourierFeatures", "DeepDecoder", "Density", "DensityControl", "DensityField",
    "Field", "Parameterization",
    "GaussianSplats", "LarmorMap", "NeuralField", "NuisanceField", "NuisanceParameters",
    "PixelDensity", "annealing_weights",
    "density_head", "larmor_head", "pixel_coordinates", "support_mask",
]
