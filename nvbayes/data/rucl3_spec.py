"""The α-RuCl3 specification, ``models/rucl3.toml``, as typed and validated objects.

Every published constant lives in the TOML file with its source; this module only reads it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from nvbayes.errors import ParameterError
from nvbayes.physics.conventions import PaperRates, PhysicalRates, check_convention
from nvbayes.physics.operators import check_inversion_operator
from nvbayes.physics.relaxation import SpinBath, check_component, nv_axis

from .spec import models_dir
from .validation import build, interval, positive


@dataclass(frozen=True)
class Constants:
    """Published material and bath constants (``[constants]``)."""

    spin_density_m2: float
    moment_bohr: float
    tau_c_ns: float
    bath_linewidth_ghz: float
    calibration_fields_gauss: tuple
    sheet_radius_nm: float

    def __post_init__(self):
        for f in fields(self):
            if f.name != "calibration_fields_gauss":
                positive(f.name, getattr(self, f.name), "fix models/rucl3.toml")
        object.__setattr__(self, "calibration_fields_gauss",
                           tuple(float(b) for b in self.calibration_fields_gauss))

    @property
    def bath(self) -> SpinBath:
        return SpinBath(self.moment_bohr, self.tau_c_ns * 1e-9)


@dataclass(frozen=True)
class Physics:
    """How the physical convention sees the NV and the flake (``[physics]``).

    ``layer_densities_m2`` empty: ``layers`` layers at the crystallographic density.
    """

    noise: str
    nv_polar_deg: float
    nv_azimuth_deg: float
    layers: int
    layer_spacing_nm: float
    layer_densities_m2: tuple

    def __post_init__(self):
        object.__setattr__(self, "noise", check_component(self.noise))
        nv_axis(self.nv_polar_deg, self.nv_azimuth_deg)
        if int(self.layers) != self.layers or self.layers < 1:
            raise ParameterError(f"layers must be a whole number >= 1, got {self.layers}",
                                 "give the number of layers of the flake")
        object.__setattr__(self, "layers", int(self.layers))
        positive("layer_spacing_nm", self.layer_spacing_nm, "give the interlayer distance")
        densities = tuple(float(v) for v in self.layer_densities_m2)
        if densities and len(densities) != self.layers:
            raise ParameterError(f"{len(densities)} layer densities for {self.layers} layers",
                                 "give one density per layer, or none")
        for value in densities:
            if not value >= 0:
                raise ParameterError(f"layer density {value} is negative or not a number",
                                     "give densities in m^-2, nearest layer first")
        object.__setattr__(self, "layer_densities_m2", densities)

    @property
    def axis(self) -> tuple:
        return tuple(float(v) for v in nv_axis(self.nv_polar_deg, self.nv_azimuth_deg))


@dataclass(frozen=True)
class Prior:
    """Priors of the Gaussian-ansatz model (``[prior]``)."""

    depth_mean_nm: float
    depth_sd_nm: float
    implantation_kev: float
    log10_amplitude: tuple
    sigma_g_nm: tuple

    def __post_init__(self):
        for name in ("depth_mean_nm", "depth_sd_nm", "implantation_kev"):
            positive(name, getattr(self, name), "fix models/rucl3.toml")
        object.__setattr__(self, "log10_amplitude",
                           interval("log10_amplitude", self.log10_amplitude))
        sigma = interval("sigma_g_nm", self.sigma_g_nm)
        if sigma[0] <= 0:
            raise ParameterError("sigma_g_nm must be positive", "fix models/rucl3.toml")
        object.__setattr__(self, "sigma_g_nm", sigma)


@dataclass(frozen=True)
class Likelihood:
    min_log_sd: float

    def __post_init__(self):
        positive("min_log_sd", self.min_log_sd, "fix models/rucl3.toml")


@dataclass(frozen=True)
class Protocol:
    """The depth window, point depth and power-law numbers of appendix E.8."""

    depth_window_nm: tuple
    point_depth_nm: float
    alpha: float
    alpha_err: float
    measured_slope: float
    measured_slope_err: float

    def __post_init__(self):
        object.__setattr__(self, "depth_window_nm",
                           interval("depth_window_nm", self.depth_window_nm))
        for name in ("point_depth_nm", "alpha", "alpha_err", "measured_slope_err"):
            positive(name, getattr(self, name), "fix models/rucl3.toml")


@dataclass(frozen=True)
class Inference:
    chains: int
    warmup: int
    draws: int
    target_accept: float
    max_tree_depth: int
    laplace_steps: int
    laplace_lr: float
    laplace_draws: int
    landscape_grid: int

    def __post_init__(self):
        for f in fields(self):
            positive(f.name, getattr(self, f.name), "fix models/rucl3.toml")
        if not self.target_accept < 1:
            raise ParameterError("target_accept must be in (0, 1)", "fix models/rucl3.toml")


@dataclass(frozen=True)
class Synthetic:
    """How the shipped synthetic data set is generated (``[synthetic]``)."""

    operator: str
    log10_amplitude: float
    sigma_g_nm: float
    internal_rate_per_s: float
    relative_error: float
    field_gauss: float
    seed: int
    labels: tuple

    def __post_init__(self):
        object.__setattr__(self, "operator", check_inversion_operator(self.operator))
        for name in ("sigma_g_nm", "internal_rate_per_s", "relative_error"):
            positive(name, getattr(self, name), "fix models/rucl3.toml")
        object.__setattr__(self, "labels", tuple(str(v) for v in self.labels))


@dataclass(frozen=True)
class Spectral:
    """Step 3, the spectral calibration (``[spectral]``): priors and the synthetic set."""

    log10_tau_c_ns: tuple
    log10_rate: tuple
    min_log_sd: float
    synthetic_depth_nm: float
    synthetic_relative_error: float
    synthetic_seed: int

    def __post_init__(self):
        for name in ("log10_tau_c_ns", "log10_rate"):
            object.__setattr__(self, name, interval(name, getattr(self, name)))
        for name in ("min_log_sd", "synthetic_depth_nm", "synthetic_relative_error"):
            positive(name, getattr(self, name), "fix models/rucl3.toml")


@dataclass(frozen=True)
class Paper:
    """Numbers the paper reports: for comparison, and the paper convention's K."""

    rate_f2_per_s: float
    rate_f1_per_s: float
    kappa_f2: float
    kappa_f1: float
    in_window_f2: int
    in_window_f1: int


@dataclass(frozen=True)
class AnsatzSpec:
    name: str
    kind: str
    constants: Constants
    prior: Prior
    likelihood: Likelihood
    protocol: Protocol
    inference: Inference
    synthetic: Synthetic
    paper: Paper
    physics: Physics
    spectral: Spectral

    @property
    def bath(self) -> SpinBath:
        return self.constants.bath

    def rates(self, convention: str = "physical") -> "PhysicalRates | PaperRates":
        """The rate convention ``physical`` (default) or ``paper``, built from this spec."""
        if check_convention(convention) == "paper":
            depth = self.protocol.point_depth_nm
            return PaperRates(k=self.paper.rate_f2_per_s * depth**4,
                              reference_density_m2=self.constants.spin_density_m2,
                              reference_sigma_nm=depth)
        ph = self.physics
        densities = ph.layer_densities_m2 or (self.constants.spin_density_m2,) * ph.layers
        return PhysicalRates(self.bath, densities, ph.layer_spacing_nm,
                             self.constants.sheet_radius_nm, ph.axis, ph.noise)


_SECTIONS = {"constants": Constants, "prior": Prior, "likelihood": Likelihood,
             "protocol": Protocol, "inference": Inference, "synthetic": Synthetic,
             "paper": Paper, "physics": Physics, "spectral": Spectral}
ANSATZ_KIND = "gaussian-ansatz"


def ansatz_from_dict(data: dict, where: str = "rucl3 spec") -> AnsatzSpec:
    data = dict(data)
    if data.get("kind") != ANSATZ_KIND:
        raise ParameterError(f"{where} is not a Gaussian-ansatz file",
                             f"it needs kind = \"{ANSATZ_KIND}\" (see models/rucl3.toml)")
    built = {k: build(cls, data.pop(k, None), f"{where} [{k}]", exact=True,
                   hint="restore it from models/rucl3.toml")
             for k, cls in _SECTIONS.items()}
    extra = sorted(set(data) - {"name", "kind"})
    if extra:
        raise ParameterError(f"{where}: unknown key(s) {', '.join(extra)}",
                             "remove them")
    return AnsatzSpec(name=str(data.get("name", "rucl3")), kind=ANSATZ_KIND, **built)


def load_ansatz(name: "str | Path" = "rucl3") -> AnsatzSpec:
    """``models/NAME.toml`` (default ``rucl3``) or the TOML file at a path."""
    path = Path(name)
    if path.suffix != ".toml":
        path = models_dir() / f"{name}.toml"
    if not path.is_file():
        raise ParameterError(f"no such ansatz file: {path}", "pass models/rucl3.toml or a copy")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ParameterError(f"{path} is not valid TOML ({exc})", "fix the syntax") from None
    return ansatz_from_dict(data, str(path))


__all__ = ["ANSATZ_KIND", "AnsatzSpec", "ansatz_from_dict", "load_ansatz"]
