"""NeTMY ablations as benchmark methods: the cumulative removal of Table 3 and the single-axis
sweeps of Table 10.

Cumulative (each row removes one more component, in the paper's order)::

    full            the preset as shipped
    -tv             TV weight 0 in every stage
    -annealed-pe    every Fourier octave on from the first step (β ignored)
    -pe             no Fourier features at all (K = 0: the raw coordinates only)
    -multiscale     one full-resolution stage of the same total length (the first stage's
                    learning rate, the last stage's loss weights)
    -l1             ℓ1 weight 0
    -gate           ρ = softplus(h_ρ), no gate
    -rds            direct-density loss R_ds weight 0

Deviations (``nvbayes ablate --deviations``): the robust protocol against the paper's, one
setting at a time::

    paper           the model file under the paper protocol
    robust          the model file under the robust protocol (every deviation)
    -<setting>      robust with that one setting back at its paper value, for each setting in
                    which the two protocols differ (:func:`nvbayes.data.spec.robust_deviations`)

Sweeps vary one setting of the preset: ``lr`` (η₀: every stage's rate scaled by η₀ over the
first stage's rate, keeping their ratio), ``width`` (hidden width) and ``octaves`` (K).  The
paper's grids are the defaults (Table 10).
"""

from __future__ import annotations

import dataclasses

from nvbayes.data.spec import (
    ModelSpec,
    Stage,
    read_model_file,
    resolve_protocol,
    robust_deviations,
    spec_from_dict,
    without_deviation,
)
from nvbayes.errors import ParameterError

CUMULATIVE = ("full", "-tv", "-annealed-pe", "-pe", "-multiscale", "-l1", "-gate", "-rds")
SWEEPS = {"lr": (1e-4, 5e-4, 1e-3, 5e-3, 1e-2), "width": (128, 256, 320, 384, 512),
          "octaves": (4, 8, 12, 16, 20)}
TABLE3_METRICS = ("density_mse", "masked_ssim")


def _weights(spec: ModelSpec, **changes) -> ModelSpec:
    stages = tuple(dataclasses.replace(s, weights=dataclasses.replace(s.weights, **changes))
                   for s in spec.stages)
    return dataclasses.replace(spec, stages=stages)


def _field(spec: ModelSpec, **changes) -> ModelSpec:
    return dataclasses.replace(spec, field=dataclasses.replace(spec.field, **changes))


def _single_scale(spec: ModelSpec) -> ModelSpec:
    first, last = spec.stages[0], spec.stages[-1]
    stage = Stage(weights=last.weights, steps=spec.total_steps, lr=first.lr, downsample=1)
    return dataclasses.replace(spec, stages=(stage,))


_REMOVE = {
    "-tv": lambda s: _weights(s, tv=0.0),
    "-annealed-pe": lambda s: _field(s, annealed=False),
    "-pe": lambda s: _field(s, octaves=0),
    "-multiscale": _single_scale,
    "-l1": lambda s: _weights(s, l1=0.0),
    "-gate": lambda s: _field(s, gate=False),
    "-rds": lambda s: _weights(s, direct_density=0.0),
}


def _check_neural(base: ModelSpec) -> None:
    if base.field.kind != "neural":
        raise ParameterError(f"{base.name} is not a NeTMY neural field",
                             "ablate the netmy presets (--preset fast|paper)")


def cumulative_variants(base: ModelSpec) -> dict[str, ModelSpec]:
    """``{row: spec}`` of Table 3, each row with every removal above it."""
    _check_neural(base)
    variants, spec = {"full": dataclasses.replace(base, name="full")}, base
    for row in CUMULATIVE[1:]:
        spec = _REMOVE[row](spec)
        variants[row] = dataclasses.replace(spec, name=row)
    return variants


def sweep_variants(base: ModelSpec, axis: str, values=None) -> dict[str, ModelSpec]:
    """``{"axis=value": spec}`` for one axis of Table 10."""
    _check_neural(base)
    if axis not in SWEEPS:
        raise ParameterError(f"unknown sweep axis {axis!r}", f"use one of {', '.join(SWEEPS)}")
    values = SWEEPS[axis] if values is None else values
    variants = {}
    for value in values:
        if axis == "lr":
            factor = float(value) / base.stages[0].lr
            spec = dataclasses.replace(base, stages=tuple(
                dataclasses.replace(s, lr=s.lr * factor) for s in base.stages))
        elif axis == "width":
            spec = _field(base, width=int(value))
        else:
            spec = _field(base, octaves=int(value))
        name = f"{axis}={value:g}" if axis == "lr" else f"{axis}={int(value)}"
        variants[name] = dataclasses.replace(spec, name=name)
    return variants


def deviation_name(path: tuple) -> str:
    """``("stages", 1, "weights", "log_mse")`` → ``-stage2.log_mse``."""
    parts = []
    for i, key in enumerate(path):
        if key == "stages":
            continue
        if isinstance(key, int):
            parts.append(f"stage{key + 1}")
        elif key != "weights" or i == len(path) - 1:
            parts.append(str(key))
    return "-" + ".".join(parts)


def deviation_variants(model: str) -> dict[str, ModelSpec]:
    """``{row: spec}``: ``paper``, ``robust`` and robust less each deviation (module
    docstring), from the model file ``model`` (a name in models/ or a ``.toml`` path)."""
    data, where = read_model_file(model)
    variants = {"paper": spec_from_dict(resolve_protocol(data, "paper", where), where),
                "robust": spec_from_dict(resolve_protocol(data, "robust", where), where)}
    _check_neural(variants["robust"])
    for path in robust_deviations(data):
        name = deviation_name(path)
        variants[name] = without_deviation(data, path, where)
    return {name: dataclasses.replace(spec, name=name) for name, spec in variants.items()}
