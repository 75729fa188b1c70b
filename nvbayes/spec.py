"""Model specifications: the TOML files of ``models/`` as typed, validated objects.

A specification names the parameterization (``[field]``), the optimizer (``[optimizer]``) and
the curriculum (one ``[[stages]]`` table per stage, each with its loss weights).  ``nvbayes fit
--model NAME`` reads ``models/NAME.toml``; a path to a ``.toml`` file works too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import tomllib

from .errors import ParameterError

#: Loss terms of the NeTMY objective (paper Eq. 6, Table 7) plus the spectrum-shape term.
LOSS_TERMS = ("log_mse", "noise_map", "direct_density", "sparsity", "l1", "tv",
              "spectrum_shape")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the objective's terms; a weight of 0 removes the term from the model.

    ``log_mse`` is D (Eq. 19), ``noise_map`` R_nm, ``direct_density`` R_ds, ``sparsity`` and
    ``l1`` the two L1 entries of Table 7, ``tv`` the anisotropic TV and ``spectrum_shape`` the
    per-frequency shape term of :mod:`nvbayes.model.losses`.
    """

    log_mse: float = 0.0
    noise_map: float = 0.0
    direct_density: float = 0.0
    sparsity: float = 0.0
    l1: float = 0.0
    tv: float = 0.0
    spectrum_shape: float = 0.0

    def __post_init__(self):
        for name in LOSS_TERMS:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ParameterError(f"loss weight {name} = {value!r} is not a number >= 0",
                                     "set every weight in [stages.weights] to a number >= 0")

    def active(self) -> dict[str, float]:
        return {n: float(getattr(self, n)) for n in LOSS_TERMS if getattr(self, n) > 0}


@dataclass(frozen=True)
class Stage:
    """One stage of the curriculum: resolution, length, learning rate, weights.

    ``downsample`` coarsens the measurement grid by that integer factor (paper stage 1: 2, so a
    64² measurement is fitted at 32²); the learning rate decays by a cosine from ``lr`` to
    ``final_lr_fraction · lr`` within the stage, and β rises linearly from 0 to K.
    """

    steps: int
    lr: float
    downsample: int = 1
    weights: LossWeights = LossWeights()

    def __post_init__(self):
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise ParameterError(f"stage steps = {self.steps!r}", "use an integer >= 1")
        if not (isinstance(self.downsample, int) and self.downsample >= 1):
            raise ParameterError(f"stage downsample = {self.downsample!r}",
                                 "use an integer >= 1")
        if not self.lr > 0:
            raise ParameterError(f"stage lr = {self.lr!r}", "use a learning rate > 0")


@dataclass(frozen=True)
class FieldSpec:
    """The neural field of Table 5."""

    kind: str = "neural"
    octaves: int = 12
    base: float = 2.0
    width: int = 320
    depth: int = 6
    skip_layer: int = 3
    support_threshold: float = 0.3
    off_support: str = "zero"

    def __post_init__(self):
        if self.kind != "neural":
            raise ParameterError(f"unknown field kind {self.kind!r}", "use kind = \"neural\"")
        if self.off_support not in ("zero", "centre"):
            raise ParameterError(f"off_support = {self.off_support!r}",
                                 "use \"zero\" (the paper) or \"centre\"")
        if not 0 <= self.support_threshold < 1:
            raise ParameterError(f"support_threshold = {self.support_threshold}",
                                 "use a fraction of the peak in [0, 1)")


@dataclass(frozen=True)
class OptimizerSpec:
    """AdamW with global gradient-norm clipping and a per-stage cosine schedule."""

    name: str = "adamw"
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    final_lr_fraction: float = 0.01

    def __post_init__(self):
        if self.name != "adamw":
            raise ParameterError(f"unknown optimizer {self.name!r}", "use name = \"adamw\"")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str = ""
    method: str = "map"
    log_eps: float = 1e-10
    field: FieldSpec = FieldSpec()
    optimizer: OptimizerSpec = OptimizerSpec()
    stages: tuple[Stage, ...] = ()

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def to_dict(self) -> dict:
        """Plain nested dict, the inverse of :func:`spec_from_dict`."""
        return dataclasses.asdict(self) | {"stages": [dataclasses.asdict(s) for s in self.stages]}


def _build(cls, table: dict, where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise ParameterError(f"{where}: unknown key(s) {', '.join(unknown)}",
                             f"use only {', '.join(sorted(names))}")
    try:
        return cls(**table)
    except TypeError as exc:
        raise ParameterError(f"{where}: {exc}", "check the model specification") from None


def spec_from_dict(data: dict, where: str = "model") -> ModelSpec:
    data = dict(data)
    stages = data.pop("stages", [])
    if not stages:
        raise ParameterError(f"{where} has no [[stages]]", "add at least one [[stages]] table")
    built = []
    for i, stage in enumerate(stages, start=1):
        stage = dict(stage)
        weights = _build(LossWeights, stage.pop("weights", {}), f"{where} stage {i} weights")
        built.append(_build(Stage, stage | {"weights": weights}, f"{where} stage {i}"))
    field_spec = _build(FieldSpec, data.pop("field", {}), f"{where} [field]")
    optimizer = _build(OptimizerSpec, data.pop("optimizer", {}), f"{where} [optimizer]")
    if "name" not in data:
        raise ParameterError(f"{where} has no name", "add name = \"...\" at the top")
    return _build(ModelSpec, data | {"field": field_spec, "optimizer": optimizer,
                                     "stages": tuple(built)}, where)


def models_dir() -> Path:
    """``nvbayes/models`` inside an installed wheel, else ``models/`` of the source tree."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "models", here.parent / "models"):
        if candidate.is_dir():
            return candidate
    raise ParameterError("the models folder is missing from this installation",
                         "reinstall nvbayes")


def available_models() -> list[str]:
    return sorted(p.stem for p in models_dir().glob("*.toml"))


def load_spec(name: "str | Path") -> ModelSpec:
    """The specification ``models/NAME.toml``, or the TOML file at ``name`` if it is a path."""
    path = Path(name)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ParameterError(f"no such model file: {path}", "check the path to the .toml")
        text, where = path.read_text(), str(path)
    else:
        entry = models_dir() / f"{name}.toml"
        if not entry.is_file():
            raise ParameterError(f"unknown model {name!r}",
                                 f"choose one of {', '.join(available_models())}")
        text, where = entry.read_text(), f"models/{name}.toml"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ParameterError(f"{where} is not valid TOML ({exc})", "fix the syntax") from None
    return spec_from_dict(data, where)
