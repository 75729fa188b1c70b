"""Pyro models: priors on (ρ, ω_L) and a forward operator as the likelihood."""

from nvbayes.model.losses import (
    anisotropic_tv,
    direct_density_mse,
    l1_norm,
    noise_map_mse,
    spectrum_shape_mse,
)
from nvbayes.model.netmy import NoiseSpectrumModel

__all__ = [
    "NoiseSpectrumModel", "anisotropic_tv", "direct_density_mse", "l1_norm", "noise_map_mse",
    "spectrum_shape_mse",
]
