"""Supervised models (paper appendix E.2, E.7): their specifications and the one file a trained
model lives in.

Four models share the U-Net of :mod:`nvbayes.fields.unet` and differ in the input and the
training loss (``L_pix = mean (ρ̂ − ρ/c)² + mean ((ω̂ − ω_L)/(ω_max − ω_min))²``,
``L_phys = mean (F2(ρ̂, ω̂) − S/c)²``, ``c`` = the spectrum's maximum, :func:`input_scale`):

=================  ==========================================  ==============================
model              loss                                        input
=================  ==========================================  ==============================
``unet-sl``        L_pix                                       S / c
``unet-sl-physics`` L_pix + L_phys                             S / c
``gan-sl-physics`` L_pix + L_phys + λ_adv · BCE(D(x, ρ̂), 1)   S / c; PatchGAN D
``hybrid-netmy``   L_pix                                       S / c ⊕ γ(r) (K = 12)
=================  ==========================================  ==============================

The paper gives the architecture, Adam at 1e-3, 300 pairs and 200 epochs; it leaves the
physics weight (1 here), the adversarial weight (λ_adv = 0.01: pix2pix's 1 : 100 between the
adversarial and the pixel term), the batch size (16) and the hybrid's encoding (NeTMY's own,
K = 12 octaves of base 2 along the two axes) open.

A trained model is one ``.pt`` file (``torch.save`` of plain containers, read back with
``weights_only=True``): ``schema``, ``spec`` (the :class:`SupervisedSpec` as a dict),
``input`` (the measurement geometry it was trained on: readout frequencies, grid, spacing,
standoff, linewidth, band, NV axis), ``provenance`` (training set, data seed, pairs, epochs,
wall time, the validation loss of the stored weights, versions) and ``state`` (the weights,
in half precision).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from nvbayes.errors import ParameterError

from .io import atomic_path

SCHEMA = "nvbayes.trained-model/1"
SUFFIX = ".pt"
TRAIN_SETS = ("dense", "sparse")


@dataclass(frozen=True)
class SupervisedSpec:
    """One supervised model: its loss terms, input encoding and the paper's training
    settings (appendix E.2)."""

    name: str
    physics: float = 0.0           # weight of L_phys
    adversarial: float = 0.0       # λ_adv (> 0: a PatchGAN discriminator is trained)
    fourier_octaves: int = 0       # K of the coordinate features appended (hybrid)
    channels: tuple = (32, 64, 128, 256)
    lr: float = 1e-3
    epochs: int = 200
    pairs: int = 300
    batch_size: int = 16

    def __post_init__(self):
        for key in ("lr", "epochs", "pairs", "batch_size"):
            if not getattr(self, key) > 0:
                raise ParameterError(f"{self.name}: {key} must be > 0, got "
                                     f"{getattr(self, key)}", f"pass a positive {key}")

    def to_dict(self) -> dict:
        return asdict(self) | {"channels": list(self.channels)}


#: The four supervised baselines of the paper, with its settings.
SUPERVISED = {s.name: s for s in (
    SupervisedSpec("unet-sl"),
    SupervisedSpec("unet-sl-physics", physics=1.0),
    SupervisedSpec("gan-sl-physics", physics=1.0, adversarial=0.01),
    SupervisedSpec("hybrid-netmy", fourier_octaves=12),
)}


def supervised_spec(name: str, **changes) -> SupervisedSpec:
    """The paper's settings of model ``name`` with ``changes`` (e.g. ``epochs=20``)."""
    if name not in SUPERVISED:
        raise ParameterError(f"unknown supervised model {name!r}",
                             f"choose one of {', '.join(SUPERVISED)}")
    base = SUPERVISED[name].to_dict()
    given = {k: v for k, v in changes.items() if v is not None}
    return SupervisedSpec(**(base | given | {"channels": tuple(base["channels"])}))


def input_scale(spectrum: torch.Tensor) -> torch.Tensor:
    """``c`` of each spectrum ``(..., n_freq, ny, nx)``: its largest value, ``(..., 1, 1,
    1)``.  The networks see ``S / c``, so that their prediction does not depend on the unit
    the spectrum is written in."""
    peak = spectrum.amax(dim=(-3, -2, -1), keepdim=True)
    if not bool((peak > 0).all()):
        raise ParameterError("a spectrum has no positive value",
                             "check the measurement's baseline (noise spectra are >= 0)")
    return peak


def geometry(freqs, shape, spacing, standoff, linewidth, band, nv_axis) -> dict:
    """The ``input`` table of a model file: what a measurement must match."""
    return {"freqs": [float(f) for f in np.asarray(freqs, dtype=np.float64)],
            "shape": [int(shape[0]), int(shape[1])], "spacing_nm": float(spacing),
            "standoff_nm": float(standoff), "linewidth_ghz": float(linewidth),
            "larmor_band_ghz": [float(band[0]), float(band[1])],
            "nv_axis": [float(a) for a in nv_axis]}


def check_geometry(expected: dict, actual: dict, where: str) -> None:
    """One-line error where a measurement's geometry is not the one a model was trained on."""
    if len(actual["freqs"]) != len(expected["freqs"]) or actual["shape"] != expected["shape"]:
        raise ParameterError(
            f"{where} takes spectra of {len(expected['freqs'])} frequencies on a "
            f"{expected['shape'][0]} x {expected['shape'][1]} grid, the measurement has "
            f"{len(actual['freqs'])} on {actual['shape'][0]} x {actual['shape'][1]}",
            "train a model on this geometry (nvbayes train --grid/--freqs) or use a "
            "per-measurement model such as netmy-fast")
    for key in ("freqs", "spacing_nm", "standoff_nm", "linewidth_ghz", "larmor_band_ghz",
                "nv_axis"):
        a, b = np.asarray(actual[key], float), np.asarray(expected[key], float)
        if not np.allclose(a, b, rtol=1e-5, atol=1e-9):
            raise ParameterError(f"{where} was trained with {key} = {_short(b)}, the "
                                 f"measurement has {_short(a)}",
                                 "train a model on this geometry or use a per-measurement "
                                 "model such as netmy-fast")


def _short(a: np.ndarray) -> str:
    if a.size > 4:
        return f"[{a[0]:g} … {a[-1]:g}] ({a.size} values)"
    return str([float(f"{v:.6g}") for v in a.ravel()])


def half_state(module: torch.nn.Module) -> dict:
    """The module's weights as a state dict, floating tensors in float16."""
    return {k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).clone()
            for k, v in module.state_dict().items()}


def write_model_file(record: dict, path: "str | Path") -> Path:
    """Save a model record atomically (a temporary name, then a rename)."""
    with atomic_path(path) as tmp:
        torch.save({"schema": SCHEMA} | record, tmp)
    return Path(path)


def file_digest(path: "str | Path") -> str:
    """SHA-256 of a file, hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_model_file(path: "str | Path") -> dict:
    """A model record, checked: its schema, its tables, and that its weights fit its spec
    and input geometry.  A bad file is refused with one line."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"no such model file: {path}", "check the path to the .pt file")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # noqa: BLE001 - any unreadable file gets the same one line
        raise ParameterError(f"{path} is not a trained nvbayes model "
                             f"({type(exc).__name__})",
                             "train one with 'nvbayes train' or pass another file") from None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise ParameterError(f"{path} is not a trained nvbayes model (schema "
                             f"{record.get('schema') if isinstance(record, dict) else None!r})",
                             f"train one with 'nvbayes train' (schema {SCHEMA})")
    for key, kind in (("spec", dict), ("input", dict), ("provenance", dict), ("state", dict)):
        if not isinstance(record.get(key), kind):
            raise ParameterError(f"{path} has no {key} table", "train the model again")
    try:
        spec = SupervisedSpec(**(record["spec"] | {"channels": tuple(record["spec"]
                                                                      ["channels"])}))
    except (TypeError, KeyError) as exc:
        raise ParameterError(f"{path}: its spec is not a supervised model's ({exc})",
                             "train the model again") from None
    if spec.name not in SUPERVISED:
        raise ParameterError(f"{path}: unknown supervised model {spec.name!r}",
                             f"models are {', '.join(SUPERVISED)}")
    geo = record["input"]
    try:
        freqs = np.asarray(geo["freqs"], dtype=np.float64)
        shape = [int(s) for s in geo["shape"]]
        values = [float(geo[k]) for k in ("spacing_nm", "standoff_nm", "linewidth_ghz")]
        band = [float(b) for b in geo["larmor_band_ghz"]]
        axis = [float(a) for a in geo["nv_axis"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ParameterError(f"{path}: its input table is incomplete ({exc})",
                             "train the model again") from None
    if (freqs.ndim != 1 or freqs.size < 1 or len(shape) != 2 or min(shape) < 8
            or any(s % 8 for s in shape) or len(band) != 2 or len(axis) != 3
            or not all(math.isfinite(v) and v > 0 for v in values + band)):
        raise ParameterError(f"{path}: its input geometry is not valid ({len(freqs)} "
                             f"frequencies, grid {shape})", "train the model again")
    first = record["state"].get("down.0.0.weight")
    expected = freqs.size + (2 + 4 * spec.fourier_octaves if spec.fourier_octaves else 0)
    if not isinstance(first, torch.Tensor) or first.ndim != 4 or first.shape[1] != expected:
        got = tuple(first.shape) if isinstance(first, torch.Tensor) else None
        raise ParameterError(f"{path}: its weights take {got[1] if got else '?'} input "
                             f"channels, its input table {expected} ({freqs.size} "
                             "frequencies)", "train the model again")
    record["spec"] = spec
    return record


__all__ = ["SCHEMA", "SUFFIX", "SUPERVISED", "SupervisedSpec", "TRAIN_SETS", "check_geometry",
           "file_digest", "geometry", "half_state", "input_scale", "read_model_file",
           "supervised_spec", "write_model_file"]
