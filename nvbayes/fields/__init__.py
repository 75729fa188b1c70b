"""Parameterizations of (ρ, ω_L): functions from pixel coordinates to a density and a Larmor field.

Depends on torch only.  The neural field of the NeTMY paper (appendix D.1–D.2) lives in
:mod:`.neural`, its annealed Fourier encoding in :mod:`.encoding`, and the output transforms
in :mod:`.heads`.  The baselines of appendix E.2 parameterize the density alone (free pixels in
:mod:`.pixels`, Gaussian primitives in :mod:`.splats`, the Deep Decoder in :mod:`.decoder`) and
pair it with a free per-pixel Larmor map (:class:`.pixels.DensityField`).
"""

from nvbayes.fields.base import Density, Field, Parameterization
from nvbayes.fields.decoder import DeepDecoder
from nvbayes.fields.encoding import AnnealedFourierFeatures, annealing_weights, pixel_coordinates
from nvbayes.fields.heads import density_head, larmor_head, support_mask
from nvbayes.fields.neural import NeuralField
from nvbayes.fields.pixels import DensityField, LarmorMap, PixelDensity
from nvbayes.fields.splats import DensityControl, GaussianSplats

__all__ = [
    "AnnealedFourierFeatures", "DeepDecoder", "Density", "DensityControl", "DensityField",
    "Field", "Parameterization",
    "GaussianSplats", "LarmorMap", "NeuralField", "PixelDensity", "annealing_weights",
    "density_head", "larmor_head", "pixel_coordinates", "support_mask",
]
