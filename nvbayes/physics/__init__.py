"""Physics of NV noise sensing: geometry, kernels, Lorentzian, operators F1–F3, noise maps.

Depends on torch only; never imports Pyro.
"""

from .geometry import GRID, SPACING_NM, STANDOFF_NM, Grid
from .kernels import (
    AXES,
    Z_AXIS,
    green_tensor,
    kernel_spectrum,
    kernel_table,
    nv_field_kernel,
    power_kernel,
    power_kernel_closed_form,
    scalar_kernel,
)
from .lorentzian import LARMOR_BAND_GHZ, LINEWIDTH_GHZ, N_FREQ, lorentzian, readout_frequencies
from .noise_map import (
    LOG_EPS,
    log_map,
    log_mse,
    log_noise_map,
    noise_floor,
    noise_map,
    normalized_noise_map,
)
from .operators import (
    OPERATORS,
    DirectOperator,
    ForwardOperator,
    ScalarOperator,
    TensorOperator,
    make_operator,
)
from .units import BOHR_MAGNETON, MU0_OVER_4PI, Units
from .validity import in_kernel_chi, larmor_spread, relative_error

__all__ = [
    "AXES", "BOHR_MAGNETON", "GRID", "LARMOR_BAND_GHZ", "LINEWIDTH_GHZ", "LOG_EPS",
    "MU0_OVER_4PI", "N_FREQ", "OPERATORS", "SPACING_NM", "STANDOFF_NM", "Z_AXIS",
    "DirectOperator", "ForwardOperator", "Grid", "ScalarOperator", "TensorOperator", "Units",
    "green_tensor", "in_kernel_chi", "kernel_spectrum", "kernel_table", "larmor_spread",
    "log_map", "log_mse", "log_noise_map", "lorentzian", "make_operator", "noise_floor",
    "noise_map",
    "normalized_noise_map", "nv_field_kernel", "power_kernel", "power_kernel_closed_form",
    "readout_frequencies", "relative_error", "scalar_kernel",
]
