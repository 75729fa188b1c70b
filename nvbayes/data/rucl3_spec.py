"""The α-RuCl3 specification, ``models/rucl3.toml``, as typed and validated objects.

Every published constant lives in the TOML file with its source; this module only reads it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from nvbayes.errors import ParameterError
from nvbayes.physics.operators import check_inversion_operator
from nvbayes.physics.relaxation import SpinBath

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
class Paper:
    """Numbers the paper reports; used for comparison only."""

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

    @property
    def bath(self) -> SpinBath:
        return self.constants.bath


_SECTIONS = {"constants": Constants, "prior": Prior, "likelihood": Likelihood,
             "protocol": Protocol, "inference": Inference, "synthetic": Synthetic,
             "paper": Paper}
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
