"""Model specifications: the TOML files of ``models/`` as typed, validated objects.

A specification names the parameterization (``[field]``, one of :data:`FIELD_KINDS`), the
optimizer (``[optimizer]``), optionally the ADMM splitting (``[admm]``) or early stopping
(``[stopping]``), and the curriculum (one ``[[stages]]`` table per stage, each with its loss
weights).  ``nvbayes fit --model NAME``
reads ``models/NAME.toml``; a path to a ``.toml`` file works too.

Protocols.  Every specification is resolved under one of two named protocols
(:data:`PROTOCOLS`), chosen by ``--protocol``, else ``robust``; a file with a ``protocol`` key
is pinned to that protocol and holds its final settings (:func:`resolve_protocol`):

* ``paper``: the file's top-level settings, which are the paper's objective verbatim (ε = 1e-10
  in D, its weights, schedules and initialisation; ℓ1, ℓ2 and TV as pixel sums; the spectrum in
  the units it was written in);
* ``robust``: nvbayes's measured choices, the same for every method: ε at the noise floor of
  N̂ (:func:`nvbayes.physics.noise_map.noise_floor`, at least :data:`NOISE_FLOOR_MIN`), and the
  spectrum divided by a unit-free scale before the fit (:meth:`InverseProblem.unit_scale
  <nvbayes.model.problem.InverseProblem.unit_scale>`), so that no result depends on the unit
  the spectrum is written in.  A file's ``[robust]`` table adds that model's own measured
  deviations: top-level keys, ``[robust.field]`` and ``[robust.optimizer]`` update their
  tables key by key, and ``[[robust.stages]]`` updates the stages by position (``weights``
  key by key).

The paper's settings are therefore never replaced: they stay in the file, and the ``robust``
deviations are listed beside them.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path

from nvbayes.errors import ParameterError

from .trained import SUFFIX, file_digest
from .trained import read_model_file as read_trained
from .validation import build

#: The two objectives (see the module docstring).
PROTOCOLS = ("paper", "robust")
DEFAULT_PROTOCOL = "robust"
#: ``log_eps`` value that selects the noise floor of the measurement.
NOISE_FLOOR = "noise_floor"
#: The least ε of the noise floor: below 1e-3 of the peak, N̂ of a noiseless measurement is
#: set by what F1 and F2 leave out of the physics (F3's source-side Lorentzian, F1's coherent
#: cancellations), not by the scene; with ε = 1e-10 on a clean single source, Tikhonov,
#: ADMM and L-BFGS under F1 put their maximum in a corner of the window (tests/test_baselines).
NOISE_FLOOR_MIN = 1e-3

#: The robust protocol's choices for every method, unless a file's ``[robust]`` sets them.
ROBUST_DEFAULTS = {"log_eps": NOISE_FLOOR}

#: Loss terms of the NeTMY objective (paper Eq. 6, Table 7) plus the spectrum-shape term.
LOSS_TERMS = ("log_mse", "noise_map", "direct_density", "sparsity", "l1", "l2", "tv",
              "spectrum_shape", "energy")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the objective's terms; a weight of 0 removes the term from the model.

    ``log_mse`` is D (Eq. 19), ``noise_map`` R_nm, ``direct_density`` R_ds, ``sparsity`` and
    ``l1`` the two L1 entries of Table 7, ``l2`` the Tikhonov term ``Σ ρ²`` (appendix E.2),
    ``tv`` the anisotropic TV, ``spectrum_shape`` the per-frequency shape term and ``energy``
    the scale anchor of :mod:`nvbayes.model.losses` (neither is in the paper).
    """

    log_mse: float = 0.0
    noise_map: float = 0.0
    direct_density: float = 0.0
    sparsity: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    tv: float = 0.0
    spectrum_shape: float = 0.0
    energy: float = 0.0

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
    ``final_lr_fraction · lr`` within the stage, and β rises linearly from 0 to K
    (``anneal = false``: β stays at K, every octave on, through the stage).
    """

    steps: int
    lr: float
    downsample: int = 1
    weights: LossWeights = LossWeights()
    anneal: bool = True

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
    directions: int = 2        # Fourier projection directions; the paper's: the two axes
    width: int = 320
    depth: int = 6
    skip_layer: int = 3
    support_threshold: float = 0.3
    off_support: str = "zero"
    annealed: bool = True      # False: every octave on from step 0 (Table 3, −annealed PE)
    gate: bool = True          # False: ρ = softplus(h_ρ) (Table 3, −gate)
    init: str = "default"      # "uniform": zero hidden biases, read-out × readout_scale
    readout_scale: float = 0.01

    def __post_init__(self):
        if self.init not in ("default", "uniform"):
            raise ParameterError(f"field init = {self.init!r}",
                                 "use \"default\" (PyTorch's, the paper's) or \"uniform\"")
        if not self.readout_scale > 0:
            raise ParameterError(f"readout_scale = {self.readout_scale!r}", "use a number > 0")
        if self.off_support not in ("zero", "centre"):
            raise ParameterError(f"off_support = {self.off_support!r}",
                                 "use \"zero\" (the paper) or \"centre\"")
        if not 0 <= self.support_threshold < 1:
            raise ParameterError(f"support_threshold = {self.support_threshold}",
                                 "use a fraction of the peak in [0, 1)")
        if not (isinstance(self.directions, int) and self.directions >= 2):
            raise ParameterError(f"field directions = {self.directions!r}",
                                 "use an integer >= 2 (2: the paper's two axes)")
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


@dataclass(frozen=True)
class TrainedFieldSpec:
    """A supervised network trained by ``nvbayes train`` (:mod:`nvbayes.data.trained`): the
    ``.pt`` file and its SHA-256, so that a run names the exact weights it used.  It has no
    solver: a fit is one forward pass and the energy-ratio scale correction."""

    kind: str = "trained"
    path: str = ""
    sha256: str = ""
    model: str = ""
    train_set: str = ""


#: ``[field] kind`` → its specification class.
FIELD_KINDS = {"neural": NeuralFieldSpec, "pixels": PixelFieldSpec, "splats": SplatFieldSpec,
               "decoder": DecoderFieldSpec, "trained": TrainedFieldSpec}

OPTIMIZERS = ("adamw", "adam", "lbfgs")


@dataclass(frozen=True)
class OptimizerSpec:
    """The optimizer: AdamW or Adam (with a per-stage cosine schedule, ``final_lr_fraction``
    1 keeps it constant) or L-BFGS (one stage step = one outer iteration of at most
    ``inner_iterations`` evaluations; ``history_size``; ``line_search`` strong_wolfe or none).

    ``grad_clip`` is the global gradient-norm limit (0: none); ``weight_decay`` is decoupled
    for AdamW and added to the gradient for Adam.  ``guard_every``: the Adam solver's NaN
    guard checks the losses and gradient norms every that many steps and rolls a fit that
    went non-finite back to the state of the last check (1: every step, the state before the
    first non-finite step).
    """

    name: str = "adamw"
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    final_lr_fraction: float = 0.01
    history_size: int = 20
    inner_iterations: int = 20
    line_search: str = "strong_wolfe"
    guard_every: int = 25

    def __post_init__(self):
        if not (isinstance(self.guard_every, int) and self.guard_every >= 1):
            raise ParameterError(f"guard_every = {self.guard_every!r}",
                                 "use a whole number of steps >= 1")
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


#: The nuisances a fit can model (:class:`NuisanceSpec`), by their ``--nuisance`` names.
NUISANCE_NAMES = ("background", "standoff", "gain")
#: How the standoff and the background are fitted (:class:`NuisanceSpec`).
NUISANCE_FITS = ("profile", "joint")


@dataclass(frozen=True)
class NuisanceSpec:
    """Which of a lab's nuisances the forward model carries (:mod:`nvbayes.model.nuisance`),
    with their priors; all off by default (the paper's objective has none).

    ``background``: an additive background, flat in frequency and smooth in space: bilinear
    on a ``background_grid`` × ``background_grid`` grid (0, the default: the side that
    predicts the spectral-shape estimate best out of sample,
    :func:`nvbayes.inference.nuisance.grid_side`); non-negative where fitted jointly.
    ``standoff``: the standoff as a parameter, prior ``Normal(recorded, standoff_sd_nm)``
    (default a quarter of the recorded standoff).  ``gain``: a per-pixel gain ``exp(γ(r))``,
    prior ``γ ~ Normal(0, gain_sd)``.

    ``standoff_fit``: ``profile`` (default) estimates the standoff from the point spread of
    the sources before the fit and holds it there; ``joint`` optimizes it with the field from
    that start (:mod:`nvbayes.inference.nuisance`: with a free density the joint standoff
    drifts below the truth).  ``background_fit``: likewise, ``profile`` holds the background
    at its estimate from the spectral shape, ``joint`` optimizes it from there (the
    noise-map data terms cannot tell it from a uniform density, and drift).
    """

    background: bool = False
    standoff: bool = False
    gain: bool = False
    background_grid: int = 0
    standoff_sd_nm: float = 0.0
    gain_sd: float = 0.03
    standoff_fit: str = "profile"
    background_fit: str = "profile"

    def __post_init__(self):
        if not (isinstance(self.background_grid, int) and (self.background_grid >= 2
                                                            or self.background_grid == 0)):
            raise ParameterError(f"background_grid = {self.background_grid!r}",
                                 "use an integer grid side of 2 or more, or 0 to let the "
                                 "data choose it")
        if not self.standoff_sd_nm >= 0:
            raise ParameterError(f"standoff_sd_nm = {self.standoff_sd_nm!r}",
                                 "pass --standoff-sd-nm > 0, e.g. 5 (0: a quarter of the "
                                 "recorded standoff)")
        if not self.gain_sd > 0:
            raise ParameterError(f"gain_sd = {self.gain_sd!r}", "use a gain spread > 0")
        for name in ("standoff_fit", "background_fit"):
            if getattr(self, name) not in NUISANCE_FITS:
                raise ParameterError(f"{name} = {getattr(self, name)!r}",
                                     f"use {' or '.join(NUISANCE_FITS)}")

    @property
    def fixed(self) -> tuple[str, ...]:
        """The nuisances held at their estimates from the data (``profile``)."""
        return tuple(n for n in ("background", "standoff")
                     if getattr(self, f"{n}_fit") == "profile")

    @property
    def any(self) -> bool:
        """Whether any nuisance is modelled."""
        return self.background or self.standoff or self.gain

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n in NUISANCE_NAMES if getattr(self, n))

    def standoff_sd(self, recorded_nm: float) -> float:
        """The standoff prior's standard deviation, nm."""
        return self.standoff_sd_nm or 0.25 * recorded_nm


def parse_nuisance(text: str, **priors) -> NuisanceSpec:
    """``"none"``, ``"all"`` or a comma list of :data:`NUISANCE_NAMES` → a
    :class:`NuisanceSpec` (``priors``: its other fields)."""
    key = str(text).strip().lower()
    names = (() if key in ("", "none", "off") else NUISANCE_NAMES if key == "all"
             else tuple(n.strip() for n in key.split(",") if n.strip()))
    unknown = [n for n in names if n not in NUISANCE_NAMES]
    if unknown:
        raise ParameterError(f"unknown nuisance {unknown[0]!r} in --nuisance {text!r}",
                             f"use none, all, or a comma list of {', '.join(NUISANCE_NAMES)}")
    return NuisanceSpec(**{n: True for n in names},
                        **{k: v for k, v in priors.items() if v is not None})


def with_nuisance(spec: "ModelSpec", nuisance: NuisanceSpec) -> "ModelSpec":
    """``spec`` with ``nuisance`` modelled; the paper's protocol has no nuisance terms."""
    if not nuisance.any:
        return dataclasses.replace(spec, nuisance=nuisance)
    if spec.protocol == "paper":
        raise ParameterError(f"{spec.name}: the paper's objective has no nuisance terms",
                             "drop --nuisance, or fit under --protocol robust")
    if spec.field.kind == "trained":
        raise ParameterError(f"{spec.name}: a trained model has no nuisance parameters",
                             "drop --nuisance, or use an optimized model (netmy-fast, lbfgs, …)")
    return dataclasses.replace(spec, nuisance=nuisance)


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model specification (see the module docstring for ``protocol``).

    ``log_eps`` is ε inside the log noise map of D: a number, or ``"noise_floor"``
    (:data:`NOISE_FLOOR`) for the measurement's own noise floor.  ``reduction`` says how ℓ1,
    ℓ2 and TV add up over the pixels: ``sum`` (the paper) or ``mean``.
    """

    name: str
    description: str = ""
    log_eps: "float | str" = 1e-10
    protocol: str = "paper"
    reduction: str = "sum"
    field: "NeuralFieldSpec | PixelFieldSpec | SplatFieldSpec | DecoderFieldSpec" = \
        NeuralFieldSpec()
    optimizer: OptimizerSpec = OptimizerSpec()
    stages: tuple[Stage, ...] = ()
    admm: "AdmmSpec | None" = None
    stopping: StoppingSpec = StoppingSpec()
    nuisance: NuisanceSpec = NuisanceSpec()

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ParameterError(f"{self.name}: unknown protocol {self.protocol!r}",
                                 f"use one of {', '.join(PROTOCOLS)}")
        if self.log_eps != NOISE_FLOOR and not (isinstance(self.log_eps, (int, float))
                                                 and self.log_eps > 0):
            raise ParameterError(f"{self.name}: log_eps = {self.log_eps!r}",
                                 f"use a number > 0 or \"{NOISE_FLOOR}\"")
        if self.reduction not in ("sum", "mean"):
            raise ParameterError(f"{self.name}: reduction = {self.reduction!r}",
                                 "use \"sum\" (the paper) or \"mean\"")
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
    def unit_free(self) -> bool:
        """Whether the spectrum is divided by its unit scale before the fit (robust)."""
        return self.protocol == "robust"

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


def _merged(base: dict, update: dict) -> dict:
    """``base`` with the keys of ``update``; nested tables merged key by key."""
    out = dict(base)
    for key, value in update.items():
        out[key] = (_merged(out[key], value) if isinstance(value, dict)
                    and isinstance(out.get(key), dict) else value)
    return out


def resolve_protocol(data: dict, protocol: "str | None" = None, where: str = "model") -> dict:
    """The settings of a model file under ``protocol`` (default :data:`DEFAULT_PROTOCOL`),
    with ``protocol`` recorded and ``[robust]`` consumed.

    A file that names its ``protocol`` holds that protocol's final settings (as every
    ``config.toml`` and ``benchmark.toml`` nvbayes writes does): it is read as it stands, and
    asking it for the other protocol is an error.
    """
    data = dict(data)
    robust = data.pop("robust", {})
    pinned = data.get("protocol")
    if pinned is not None:
        if pinned not in PROTOCOLS:
            raise ParameterError(f"{where}: unknown protocol {pinned!r}",
                                 f"use one of {', '.join(PROTOCOLS)}")
        if robust:
            raise ParameterError(f"{where} names protocol = {pinned!r} and has a [robust] table",
                                 "drop the protocol key (the top level is then the paper's)")
        if protocol is not None and protocol != pinned:
            raise ParameterError(f"{where} is written for the {pinned} protocol",
                                 f"drop --protocol {protocol}, or use a model file without a "
                                 "protocol key")
        return data
    chosen = protocol or DEFAULT_PROTOCOL
    if chosen not in PROTOCOLS:
        raise ParameterError(f"{where}: unknown protocol {chosen!r}",
                             f"use one of {', '.join(PROTOCOLS)}")
    if not isinstance(robust, dict):
        raise ParameterError(f"{where}: [robust] must be a table", "write it as [robust]")
    if chosen == "paper":
        return data | {"protocol": "paper"}
    robust = dict(robust)
    stages = robust.pop("stages", [])
    if len(stages) > len(data.get("stages", [])):
        raise ParameterError(f"{where}: [[robust.stages]] has more stages than [[stages]]",
                             "list at most one [[robust.stages]] per stage")
    merged = _merged(data, robust)
    merged["stages"] = [_merged(stage, update) for stage, update in
                        zip(data.get("stages", [])[:len(stages)], stages, strict=True)] + \
        list(data.get("stages", []))[len(stages):]
    for key, value in ROBUST_DEFAULTS.items():
        if key not in robust:
            merged[key] = value
    return merged | {"protocol": "robust"}


def spec_from_dict(data: dict, where: str = "model") -> ModelSpec:
    """A spec from the plain dict of a resolved file (see :func:`resolve_protocol`) or of
    :meth:`ModelSpec.to_dict`."""
    data = dict(data)
    # files and benchmark folders written before 0.2 name the inference method here; it is
    # chosen per fit (``--method``), so the key is read and dropped
    data.pop("method", None)
    stages = data.pop("stages", [])
    if not stages and dict(data.get("field", {})).get("kind") != "trained":
        raise ParameterError(f"{where} has no [[stages]]", "add at least one [[stages]] table")
    built = []
    for i, stage in enumerate(stages, start=1):
        stage = dict(stage)
        weights = build(LossWeights, stage.pop("weights", {}), f"{where} stage {i} weights")
        built.append(build(Stage, stage | {"weights": weights}, f"{where} stage {i}"))
    field_table = dict(data.pop("field", {}))
    kind = field_table.get("kind", "neural")
    if kind not in FIELD_KINDS:
        raise ParameterError(f"{where} [field]: unknown kind {kind!r}",
                             f"use one of {', '.join(FIELD_KINDS)}")
    field_spec = build(FIELD_KINDS[kind], field_table, f"{where} [field]")
    optimizer = build(OptimizerSpec, data.pop("optimizer", {}), f"{where} [optimizer]")
    admm = data.pop("admm", None)
    if admm is not None:
        admm = build(AdmmSpec, admm, f"{where} [admm]")
    stopping = build(StoppingSpec, data.pop("stopping", {}), f"{where} [stopping]")
    nuisance = build(NuisanceSpec, data.pop("nuisance", {}), f"{where} [nuisance]")
    if "name" not in data:
        raise ParameterError(f"{where} has no name", "add name = \"...\" at the top")
    return build(ModelSpec, data | {"field": field_spec, "optimizer": optimizer,
                                     "stages": tuple(built), "admm": admm,
                                     "stopping": stopping, "nuisance": nuisance}, where)


#: The model files shipped with nvbayes (the package's ``models/`` folder).
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def models_dir() -> Path:
    """``nvbayes/models``: the shipped model files."""
    return MODELS_DIR


#: Files of ``models/`` that are not imaging models (read by ``nvbayes rucl3``).
ANSATZ_MODELS = ("rucl3",)


def available_models() -> list[str]:
    """The imaging models of ``models/`` (the α-RuCl3 ansatz file is not one), trained
    supervised models (``*.pt``) included."""
    names = {p.stem for p in models_dir().glob("*.toml") if p.stem not in ANSATZ_MODELS}
    return sorted(names | {p.stem for p in models_dir().glob(f"*{SUFFIX}")})


def read_model_file(name: "str | Path") -> tuple[dict, str]:
    """The raw table of ``models/NAME.toml`` (or of the ``.toml`` file at ``name``) and a
    label for messages, before any protocol is resolved."""
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
        return tomllib.loads(text), where
    except tomllib.TOMLDecodeError as exc:
        raise ParameterError(f"{where} is not valid TOML ({exc})", "fix the syntax") from None


def trained_path(name: "str | Path") -> "Path | None":
    """The ``.pt`` file ``name`` names (a path, or ``models/NAME.pt``), else ``None``."""
    path = Path(name)
    if path.suffix == SUFFIX:
        return path
    entry = models_dir() / f"{name}{SUFFIX}"
    return entry if path.suffix == "" and entry.is_file() else None


def trained_spec(path: "str | Path", protocol: "str | None" = None) -> ModelSpec:
    """The specification of a trained supervised model file (checked on reading)."""
    path = Path(path)
    record = read_trained(path)
    spec = record["spec"]
    field = TrainedFieldSpec(path=str(path), sha256=file_digest(path), model=spec.name,
                             train_set=str(record["provenance"].get("train_set", "")))
    # a training folder's model.pt is named after its folder (runs/train-unet-sl-dense)
    name = path.parent.name if path.stem == "model" and path.parent.name else path.stem
    return ModelSpec(name=name, description=f"{spec.name} trained on "
                     f"{field.train_set} scenes (nvbayes train)",
                     protocol=protocol or DEFAULT_PROTOCOL, field=field)


def load_spec(name: "str | Path", protocol: "str | None" = None) -> ModelSpec:
    """The specification ``models/NAME.toml``, or the TOML file at ``name`` if it is a path,
    resolved under ``protocol`` (see the module docstring); a trained model's ``.pt`` file
    (``models/NAME.pt`` or a path) gives its :func:`trained_spec`."""
    trained = trained_path(name)
    if trained is not None:
        return trained_spec(trained, protocol)
    data, where = read_model_file(name)
    return spec_from_dict(resolve_protocol(data, protocol, where), where)


def robust_deviations(data: dict) -> list[tuple]:
    """The settings in which a model file's robust protocol departs from its paper protocol,
    as key paths into the resolved table (``("field", "init")``, ``("stages", 1, "anneal")``,
    ``("log_eps",)``, …): the protocol's own defaults and every entry of ``[robust]``."""
    paths = [(key,) for key in ROBUST_DEFAULTS]

    def walk(table, prefix):
        for key, value in table.items():
            if key == "description":
                continue
            if key == "stages" and not prefix:
                for i, stage in enumerate(value):
                    walk(stage, ("stages", i))
            elif isinstance(value, dict):
                walk(value, prefix + (key,))
            elif prefix + (key,) not in paths:
                paths.append(prefix + (key,))

    walk(data.get("robust", {}), ())
    return paths


def _lookup(table, path, default=None):
    for key in path:
        try:
            table = table[key]
        except (KeyError, IndexError, TypeError):
            return default
    return table


def without_deviation(data: dict, path: tuple, where: str = "model") -> ModelSpec:
    """The robust specification of a model file with the setting at ``path`` put back to its
    paper value (its class default where the paper's table does not name it, which for
    ``log_eps`` and ``reduction`` is the paper's 1e-10 and ``sum``)."""
    paper = resolve_protocol(data, "paper", where)
    robust = copy.deepcopy(resolve_protocol(data, "robust", where))
    value = _lookup(paper, path)
    parent = _lookup(robust, path[:-1])
    if value is None:
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = value
    return spec_from_dict(robust, where)
