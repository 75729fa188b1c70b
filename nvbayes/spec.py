"""Model specifications: the TOML files of ``models/`` as typed, validated objects.

A specification names the parameterization (``[field]``, one of :data:`FIELD_KINDS`), the
optimizer (``[optimizer]``), optionally the ADMM splitting (``[admm]``) or early stopping
(``[stopping]``), and the curriculum (one ``[[stages]]`` table per stage, each with its loss
weights).  ``nvbayes fit --model NAME``
reads ``models/NAME.toml``; a path to a ``.toml`` file works too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import tomllib

from .errors import ParameterError

#: Loss terms of the NeTMY objective (paper Eq. 6, Table 7) plus the spectrum-shape term.
LOSS_TERMS = ("log_mse", "noise_map", "direct_density", "sparsity", "l1", "l2", "tv",
              "spectrum_shape")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the objective's terms; a weight of 0 removes the term from the model.

    ``log_mse`` is D (Eq. 19), ``noise_map`` R_nm, ``direct_density`` R_ds, ``sparsity`` and
    ``l1`` the two L1 entries of Table 7, ``l2`` the Tikhonov term ``Σ ρ²`` (appendix E.2),
    ``tv`` the anisotropic TV and ``spectrum_shape`` the per-frequency shape term of
    :mod:`nvbayes.model.losses`.
    """

    log_mse: float = 0.0
    noise_map: float = 0.0
    direct_density: float = 0.0
    sparsity: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
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
class NeuralFieldSpec:
    """The NeTMY neural field of Table 5 (:class:`nvbayes.fields.NeuralField`)."""

    kind: str = "neural"
    octaves: int = 12
    base: float = 2.0
    width: int = 320
    depth: int = 6
    skip_layer: int = 3
    support_threshold: float = 0.3
    off_support: str = "zero"
    annealed: bool = True      # False: every octave on from step 0 (Table 3, −annealed PE)
    gate: bool = True          # False: ρ = softplus(h_ρ) (Table 3, −gate)

    def __post_init__(self):
        if self.off_support not in ("zero", "centre"):
            raise ParameterError(f"off_support = {self.off_support!r}",
                                 "use \"zero\" (the paper) or \"centre\"")
        if not 0 <= self.support_threshold < 1:
            raise ParameterError(f"support_threshold = {self.support_threshold}",
                                 "use a fraction of the peak in [0, 1)")
        if self.depth < 2 or self.width < 1 or self.octaves < 0:
            raise ParameterError(f"field depth {self.depth}, width {self.width}, octaves "
                                 f"{self.octaves}", "use depth >= 2, width >= 1, octaves >= 0")
        if not 0 <= self.skip_layer <= self.depth:
            raise ParameterError(f"skip_layer = {self.skip_layer} with depth {self.depth}",
                                 "use a skip layer between 0 (none) and the depth")


@dataclass(frozen=True)
class PixelFieldSpec:
    """A free density, one value per pixel (Tikhonov, ADMM, L-BFGS; appendix E.2)."""

    kind: str = "pixels"


@dataclass(frozen=True)
class SplatFieldSpec:
    """Anisotropic Gaussian primitives with adaptive density control (appendix E.2).

    Lengths (``merge_distance``, ``split_width``) are in units of the standoff z0, the
    resolution scale of the dipolar kernel; ``grad_ratio`` selects the primitives whose mean
    positional gradient since the last densification is at least that multiple of the mean
    over all primitives.  ``width_lr_scale`` and ``amplitude_lr_scale`` multiply the learning
    rate for the log-widths and log-amplitudes.
    """

    kind: str = "splats"
    count: int = 64
    max_count: int = 128
    densify_from: int = 50
    densify_until: int = 300
    densify_every: int = 50
    grad_ratio: float = 2.0
    split_width: float = 1.0
    merge_distance: float = 0.5
    prune_fraction: float = 0.01
    width_lr_scale: float = 5.0
    amplitude_lr_scale: float = 10.0

    def __post_init__(self):
        if not 1 <= self.count <= self.max_count:
            raise ParameterError(f"splat count {self.count} with max_count {self.max_count}",
                                 "use 1 <= count <= max_count")
        if self.densify_every < 1:
            raise ParameterError(f"densify_every = {self.densify_every}", "use an integer >= 1")


@dataclass(frozen=True)
class DecoderFieldSpec:
    """The Deep Decoder: 1×1 convolutions and bilinear upsampling from a fixed random input.

    One upsampling stage per entry of ``channels`` (the output channels of its convolution);
    the last entry must be 1, the density.
    """

    kind: str = "decoder"
    channels: tuple[int, ...] = (128, 128, 128, 128, 1)
    upsample: str = "bilinear"

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(self.channels))
        if len(self.channels) < 1 or self.channels[-1] != 1 or min(self.channels) < 1:
            raise ParameterError(f"decoder channels {list(self.channels)}",
                                 "list positive widths ending in 1")
        if self.upsample not in ("bilinear", "nearest"):
            raise ParameterError(f"upsample = {self.upsample!r}", "use bilinear or nearest")


#: ``[field] kind`` → its specification class.
FIELD_KINDS = {"neural": NeuralFieldSpec, "pixels": PixelFieldSpec, "splats": SplatFieldSpec,
               "decoder": DecoderFieldSpec}

OPTIMIZERS = ("adamw", "adam", "lbfgs")


@dataclass(frozen=True)
class OptimizerSpec:
    """The optimizer: AdamW or Adam (with a per-stage cosine schedule, ``final_lr_fraction``
    1 keeps it constant) or L-BFGS (one stage step = one outer iteration of at most
    ``inner_iterations`` evaluations; ``history_size``; ``line_search`` strong_wolfe or none).

    ``grad_clip`` is the global gradient-norm limit (0: none); ``weight_decay`` is decoupled
    for AdamW and added to the gradient for Adam.
    """

    name: str = "adamw"
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    final_lr_fraction: float = 0.01
    history_size: int = 20
    inner_iterations: int = 20
    line_search: str = "strong_wolfe"

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ParameterError(f"unknown optimizer {self.name!r}",
                                 f"use name = one of {', '.join(OPTIMIZERS)}")
        if self.line_search not in ("strong_wolfe", "none"):
            raise ParameterError(f"line_search = {self.line_search!r}",
                                 "use \"strong_wolfe\" or \"none\"")
        if not 0 < self.final_lr_fraction <= 1:
            raise ParameterError(f"final_lr_fraction = {self.final_lr_fraction}",
                                 "use a fraction in (0, 1]")


@dataclass(frozen=True)
class AdmmSpec:
    """ADMM splitting ρ = z (appendix E.2); a stage step is one outer cycle.

    Each cycle runs ``inner_steps`` optimizer steps on the smooth objective plus the
    augmented-Lagrangian penalty ``(μ/2)‖ρ − z + u‖²``, then ``z = clip(ρ + u − κ, 0, ρ_max)``
    (ℓ1 shrinkage κ = ``shrinkage`` and the box), then ``u ← u + ρ − z``.  ``upper_bound``
    sets ``ρ_max`` as a multiple of the total mass of the energy-matched uniform start (all
    the measured energy in one pixel at 1).  The stage ends early once ``‖ρ − z‖∞ <
    tolerance``.
    """

    penalty: float = 1e-3
    inner_steps: int = 30
    shrinkage: float = 1e-2
    upper_bound: float = 1.0
    tolerance: float = 1e-3

    def __post_init__(self):
        if not (self.penalty > 0 and self.inner_steps >= 1 and self.shrinkage >= 0
                and self.upper_bound > 0 and self.tolerance > 0):
            raise ParameterError("[admm] needs penalty > 0, inner_steps >= 1, shrinkage >= 0, "
                                 "upper_bound > 0 and tolerance > 0", "fix the [admm] table")


@dataclass(frozen=True)
class StoppingSpec:
    """Convergence-based early stopping for Adam/AdamW stages (:mod:`nvbayes.inference.stopping`):
    a stage ends once the loss has fallen by less than ``rel_tol`` (relative) over the last
    ``window`` steps.  ``window = 0`` (the default) runs every stage to its full length."""

    window: int = 0
    rel_tol: float = 1e-3

    def __post_init__(self):
        if not (isinstance(self.window, int) and self.window >= 0):
            raise ParameterError(f"[stopping] window = {self.window!r}",
                                 "use an integer number of steps >= 0 (0: no early stopping)")
        if not (isinstance(self.rel_tol, (int, float)) and self.rel_tol > 0):
            raise ParameterError(f"[stopping] rel_tol = {self.rel_tol!r}",
                                 "use a relative loss change > 0, e.g. 1e-3")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str = ""
    method: str = "map"
    log_eps: float = 1e-10
    field: "NeuralFieldSpec | PixelFieldSpec | SplatFieldSpec | DecoderFieldSpec" = \
        NeuralFieldSpec()
    optimizer: OptimizerSpec = OptimizerSpec()
    stages: tuple[Stage, ...] = ()
    admm: "AdmmSpec | None" = None
    stopping: StoppingSpec = StoppingSpec()

    def __post_init__(self):
        if self.stopping.window > 0 and self.solver != "gradient":
            raise ParameterError(f"{self.name}: [stopping] applies to Adam/AdamW stages",
                                 "drop [stopping] (ADMM has its own tolerance; L-BFGS its "
                                 "line search)")
        if self.admm is not None and self.field.kind != "pixels":
            raise ParameterError(f"{self.name}: ADMM splits a free density",
                                 "use [field] kind = \"pixels\" with an [admm] table")
        if self.admm is not None and self.optimizer.name == "lbfgs":
            raise ParameterError(f"{self.name}: ADMM's inner steps need adam or adamw",
                                 "set [optimizer] name = \"adam\" with an [admm] table")
        if self.field.kind != "neural" and any(s.downsample != 1 for s in self.stages):
            raise ParameterError(f"{self.name}: a {self.field.kind} field has one resolution",
                                 "use downsample = 1 in every stage")

    @property
    def solver(self) -> str:
        """``admm``, ``lbfgs`` or ``gradient`` (Adam/AdamW steps)."""
        if self.admm is not None:
            return "admm"
        return "lbfgs" if self.optimizer.name == "lbfgs" else "gradient"

    @property
    def seeded(self) -> bool:
        """Whether the fit depends on its seed: the neural field and the Deep Decoder draw
        their initial weights (and the decoder its input); free pixels and splats start from
        the uniform density and no solver draws random numbers, so their fits are the same for
        every seed."""
        return self.field.kind in ("neural", "decoder")

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
    field_table = dict(data.pop("field", {}))
    kind = field_table.get("kind", "neural")
    if kind not in FIELD_KINDS:
        raise ParameterError(f"{where} [field]: unknown kind {kind!r}",
                             f"use one of {', '.join(FIELD_KINDS)}")
    field_spec = _build(FIELD_KINDS[kind], field_table, f"{where} [field]")
    optimizer = _build(OptimizerSpec, data.pop("optimizer", {}), f"{where} [optimizer]")
    admm = data.pop("admm", None)
    if admm is not None:
        admm = _build(AdmmSpec, admm, f"{where} [admm]")
    stopping = _build(StoppingSpec, data.pop("stopping", {}), f"{where} [stopping]")
    if "name" not in data:
        raise ParameterError(f"{where} has no name", "add name = \"...\" at the top")
    return _build(ModelSpec, data | {"field": field_spec, "optimizer": optimizer,
                                     "stages": tuple(built), "admm": admm,
                                     "stopping": stopping}, where)


def models_dir() -> Path:
    """``nvbayes/models`` inside an installed wheel, else ``models/`` of the source tree."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "models", here.parent / "models"):
        if candidate.is_dir():
            return candidate
    raise ParameterError("the models folder is missing from this installation",
                         "reinstall nvbayes")


#: Files of ``models/`` that are not imaging models (read by ``nvbayes rucl3``).
ANSATZ_MODELS = ("rucl3",)


def available_models() -> list[str]:
    """The imaging models of ``models/`` (the α-RuCl3 ansatz file is not one)."""
    return sorted(p.stem for p in models_dir().glob("*.toml") if p.stem not in ANSATZ_MODELS)


def load_spec(name: "str | Path") -> ModelSpec:
    """The specification ``models/NAME.toml``, or the TOML file at ``name`` if it is a path."""
    path = Path(name)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ParameterError(f"no such model file: {path}", "check the path to the .toml")
        text, where = path.read_text(), str(path)
    else:
        entry = models_dir() / f"{name}.toml"
        if str(name) in ANSATZ_MODELS:
            raise ParameterError(f"models/{name}.toml is the α-RuCl3 Gaussian ansatz, not an "
                                 "imaging model", "use it with 'nvbayes rucl3 fit'")
        if not entry.is_file():
            raise ParameterError(f"unknown model {name!r}",
                                 f"choose one of {', '.join(available_models())}")
        text, where = entry.read_text(), f"models/{name}.toml"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ParameterError(f"{where} is not valid TOML ({exc})", "fix the syntax") from None
    return spec_from_dict(data, where)
