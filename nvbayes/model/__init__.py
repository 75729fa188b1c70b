"""Pyro models: priors on (ρ, ω_L) and a forward operator as the likelihood."""

from .losses import anisotropic_tv, direct_density_mse, l1_norm, noise_map_mse, spectrum_shape_mse
from .netmy import NoiseSpectrumModel

__all__ = [
    "NoiseSpectrumModel", "anisotropic_tv", "direct_density_mse", "l1_norm", "noise_map_mse",
    "spectrum_shape_mse",
]
