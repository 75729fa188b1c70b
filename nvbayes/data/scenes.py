"""Synthetic scenes of sparse fluctuating spins and the simulated measurements they produce.

A scene class is ``<count>/<separation>``:

* count: ``few`` 1–3, ``medium`` 4–8, ``many`` 9–16 point sources;
* separation: each source's nearest-neighbour distance in units of the standoff z0,
  ``close`` [2, 3), ``medium`` [3, 5), ``far`` ≥ 5.

The paper's benchmark uses eight of the nine combinations (all but ``many/medium``); all nine
are accepted.  A tenth class, ``dense``, is the paper's training generator of the supervised
baselines (appendix E.7): 30–60 sources on distinct pixels anywhere inside the margin, with no
separation rule, so that neighbours touch and the mass is nearly continuous.

Sources sit on pixel centres at least 3 z0 from the outermost pixels, with
amplitudes uniform in [0.5, 1] and one Larmor frequency each, uniform in the band.  Placement
grows a cluster: every new source lands within the class's distance interval of some earlier
source and no closer than its lower bound to any, so every nearest-neighbour distance ends up
inside the interval.

The Larmor *field* is defined at every pixel as the frequency of the source that dominates the
pixel's noise (largest ``ρ_s P(r − s)``); it is what F1 and F2 need at readout pixels, and it
equals each source's own frequency on the support, where F3 reads it.

Sensor noise is Gaussian, ``σ = noise × (max S − min S)`` of the clean spectrum.
Everything is drawn from one ``numpy.random.default_rng(seed)``: the same class, seed and
settings give identical arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr
from scipy.ndimage import gaussian_filter

from nvbayes.errors import SceneError
from nvbayes.physics.geometry import Grid
from nvbayes.physics.kernels import Z_AXIS, power_kernel, power_kernel_closed_form
from nvbayes.physics.lorentzian import (
    LARMOR_BAND_GHZ,
    LINEWIDTH_GHZ,
    N_FREQ,
    check_spectral,
    readout_frequencies,
)
from nvbayes.physics.operators import make_operator
from nvbayes.physics.validity import in_kernel_chi

from .io import measurement_dataset
from .realism import NUISANCE_STREAM, Realism, render

COUNTS = {"few": (1, 3), "medium": (4, 8), "many": (9, 16)}
SEPARATIONS = {"close": (2.0, 3.0), "medium": (3.0, 5.0), "far": (5.0, float("inf"))}
PAPER_CLASSES = (
    "few/close", "few/medium", "few/far",
    "medium/close", "medium/medium", "medium/far",
    "many/close", "many/far",
)
ALL_CLASSES = tuple(f"{c}/{s}" for c in COUNTS for s in SEPARATIONS)
#: The dense training generator of appendix E.7: its source count and (no) separation rule.
DENSE_CLASS = "dense"
DENSE_COUNT = (30, 60)
DENSE_SEPARATION = (1e-9, float("inf"))     # distinct pixels, nothing more
MARGIN_STANDOFFS = 3.0
AMPLITUDE_RANGE = (0.5, 1.0)
NOISE = 0.01
_MAX_RESTARTS = 200


@dataclass(frozen=True)
class SceneClass:
    """A ``<count>/<separation>`` class with its source-count and distance ranges."""

    name: str
    count_range: tuple[int, int] = field(init=False)
    separation_range: tuple[float, float] = field(init=False)

    def __post_init__(self):
        count, sep = parse_scene_class(self.name)
        dense = count == DENSE_CLASS
        object.__setattr__(self, "count_range", DENSE_COUNT if dense else COUNTS[count])
        object.__setattr__(self, "separation_range",
                           DENSE_SEPARATION if dense else SEPARATIONS[sep])


def parse_scene_class(name: str) -> tuple[str, str]:
    """``"medium/far"`` → ``("medium", "far")``, ``"dense"`` → ``("dense", "any")``;
    :class:`SceneError` if unknown."""
    if str(name).strip().lower() == DENSE_CLASS:
        return DENSE_CLASS, "any"
    parts = str(name).strip().lower().split("/")
    if len(parts) != 2 or parts[0] not in COUNTS or parts[1] not in SEPARATIONS:
        raise SceneError(f"unknown scene class {name!r}",
                         f"use <count>/<separation> with count in {'|'.join(COUNTS)} and "
                         f"separation in {'|'.join(SEPARATIONS)}, e.g. medium/far "
                         f"(or {DENSE_CLASS})")
    return parts[0], parts[1]


def expand_classes(spec: str) -> list[str]:
    """``"all"`` → the paper's eight classes; otherwise a comma-separated list, validated."""
    if spec.strip().lower() == "all":
        return list(PAPER_CLASSES)
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    if not names:
        raise SceneError("no scene class given", "pass --classes all or e.g. few/far,many/close")
    for n in names:
        parse_scene_class(n)
    return names


@dataclass(frozen=True)
class Scene:
    """Point sources on a grid.

    Attributes
    ----------
    grid : the sensing grid.
    scene_class : class name.
    positions : ``(k, 2)`` integer pixel indices ``(iy, ix)``.
    amplitudes : ``(k,)`` source weights.
    larmor : ``(k,)`` Larmor frequency per source, GHz.
    """

    grid: Grid
    scene_class: str
    positions: np.ndarray
    amplitudes: np.ndarray
    larmor: np.ndarray
    nv_axis: tuple = Z_AXIS

    def density(self) -> np.ndarray:
        """``ρ(y, x)``: the amplitudes on their pixels, zero elsewhere."""
        rho = np.zeros(self.grid.shape)
        rho[self.positions[:, 0], self.positions[:, 1]] = self.amplitudes
        return rho

    def larmor_field(self) -> np.ndarray:
        """``ω_L(y, x)``: at each pixel, the frequency of the source dominating its noise."""
        ny, nx = self.grid.shape
        iy, ix = np.arange(ny, dtype=float), np.arange(nx, dtype=float)
        dy = (iy[None, :, None] - self.positions[:, 0, None, None]) * self.grid.spacing
        dx = (ix[None, None, :] - self.positions[:, 1, None, None]) * self.grid.spacing
        dy, dx = np.broadcast_arrays(dy, dx)
        dx, dy = torch.from_numpy(dx.copy()), torch.from_numpy(dy.copy())
        power = (power_kernel_closed_form(dx, dy, self.grid.standoff)
                 if tuple(self.nv_axis) == Z_AXIS
                 else power_kernel(dx, dy, self.grid.standoff, self.nv_axis)).numpy()
        dominant = np.argmax(self.amplitudes[:, None, None] * power, axis=0)
        return self.larmor[dominant]

    def nearest_neighbour_standoffs(self) -> np.ndarray:
        """Each source's nearest-neighbour distance in units of z0 (``inf`` for one source)."""
        return _nearest(self.positions, self.grid)


def _nearest(positions: np.ndarray, grid: Grid) -> np.ndarray:
    if len(positions) < 2:
        return np.full(len(positions), np.inf)
    d = _distance_standoffs(positions[:, None, :], positions[None, :, :], grid)
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


def _distance_standoffs(a: np.ndarray, b: np.ndarray, grid: Grid) -> np.ndarray:
    return np.sqrt(((a - b) ** 2).sum(-1)) * grid.spacing / grid.standoff


def allowed_pixels(grid: Grid) -> np.ndarray:
    """Pixels at least 3 z0 from the outermost pixel centres, as ``(m, 2)`` indices."""
    margin = int(np.ceil(MARGIN_STANDOFFS * grid.standoff / grid.spacing - 1e-9))
    inner_y, inner_x = (np.arange(margin, side - margin) for side in grid.shape)
    if inner_y.size == 0 or inner_x.size == 0:
        raise SceneError(
            f"a {grid.shape[0]} x {grid.shape[1]} grid leaves no pixel 3 standoffs from the "
            "border", f"use --grid larger than {2 * margin} or a smaller --standoff")
    iy, ix = np.meshgrid(inner_y, inner_x, indexing="ij")
    return np.stack([iy.ravel(), ix.ravel()], axis=1)


def sample_scene(scene_class: str, seed: "int | np.random.Generator", grid: Grid = Grid(),
                 band: tuple[float, float] = LARMOR_BAND_GHZ, nv_axis=Z_AXIS,
                 amplitude_range: tuple[float, float] = AMPLITUDE_RANGE) -> Scene:
    """Draw one scene of ``scene_class`` from a seed or an existing generator; the
    amplitudes are uniform in ``amplitude_range``."""
    cls = SceneClass(scene_class)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    lo_count, hi_count = cls.count_range
    count = int(rng.integers(lo_count, hi_count + 1))
    candidates = allowed_pixels(grid)
    positions = _place(count, cls.separation_range, candidates, grid, rng, cls.name)
    amplitudes = rng.uniform(*amplitude_range, size=count)
    larmor = rng.uniform(band[0], band[1], size=count)
    return Scene(grid, cls.name, positions, amplitudes, larmor, tuple(nv_axis))


def _place(count, separation, candidates, grid, rng, name) -> np.ndarray:
    lo, hi = separation
    for _ in range(_MAX_RESTARTS):
        placed = [candidates[rng.integers(len(candidates))]]
        while len(placed) < count:
            d = _distance_standoffs(candidates[:, None, :], np.asarray(placed)[None], grid)
            ok = (d >= lo).all(axis=1) & (d < hi).any(axis=1)
            choices = np.flatnonzero(ok)
            if choices.size == 0:
                break
            placed.append(candidates[choices[rng.integers(choices.size)]])
        if len(placed) == count:
            return np.asarray(placed, dtype=np.int64)
    raise SceneError(f"cannot place {count} sources of class {name} on a "
                     f"{grid.shape[0]} x {grid.shape[1]} grid",
                     "use a larger --grid or a sparser scene class")


def simulate_spectrum(scene: Scene, operator: str = "F3", linewidth: float = LINEWIDTH_GHZ,
                      freqs: "torch.Tensor | None" = None, units: str = "normalized"):
    """The clean spectrum of ``scene`` under ``operator``: ``(n_freq, ny, nx)`` float64, seen
    by NV centres along the scene's ``nv_axis``."""
    freqs = readout_frequencies(linewidth=linewidth) if freqs is None else freqs
    op = make_operator(operator, freqs, linewidth, scene.grid.spacing, scene.grid.standoff,
                       units=units, nv_axis=scene.nv_axis)
    rho = torch.from_numpy(scene.density())
    larmor = torch.from_numpy(scene.larmor_field())
    return op(rho, larmor).to(torch.float64).numpy()


def sensor_sigma(clean: np.ndarray, noise: float) -> float:
    """``σ = noise × (max − min)`` of the clean spectrum."""
    return noise * float(clean.max() - clean.min())


def add_sensor_noise(clean: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with ``σ =`` :func:`sensor_sigma`."""
    return clean + rng.normal(0.0, 1.0, size=clean.shape) * sensor_sigma(clean, noise)


@dataclass(frozen=True)
class SimulationSettings:
    """Everything besides class and seed that defines a simulated measurement."""

    grid: Grid = Grid()
    operator: str = "F3"
    noise: float = NOISE
    linewidth: float = LINEWIDTH_GHZ
    band: tuple[float, float] = LARMOR_BAND_GHZ
    n_freq: int = N_FREQ
    units: str = "normalized"
    readout: str = "wide"      # or "band": the paper's E.1 readout on the Larmor band
    nv_axis: tuple = Z_AXIS
    realism: Realism = Realism()   # a lab's nuisances (data/realism.py); off: the paper's

    def __post_init__(self):
        check_spectral(self.band, self.linewidth)
        readout_frequencies(self.band, self.linewidth, 1, readout=self.readout)
        if not (np.isfinite(self.noise) and self.noise >= 0):
            raise SceneError(f"noise level must be >= 0, got {self.noise}",
                             "pass --noise 0 for a clean spectrum or e.g. 0.01")
        make_operator(self.operator, [1.0], self.linewidth, self.grid.spacing,
                      self.grid.standoff, units=self.units)

    def freqs(self) -> torch.Tensor:
        return readout_frequencies(self.band, self.linewidth, self.n_freq,
                                   readout=self.readout)


def _simulate_arrays(scene_class: str, seed: int, settings: SimulationSettings) -> dict:
    """One sample's arrays by variable name: the spectrum, its truth and, with nuisances on,
    theirs (:mod:`nvbayes.data.realism`)."""
    rng = np.random.default_rng(seed)
    realism = settings.realism
    scene = sample_scene(scene_class, rng, settings.grid, settings.band, settings.nv_axis,
                         (realism.amplitude_min, AMPLITUDE_RANGE[1]))
    if realism.off:
        clean = simulate_spectrum(scene, settings.operator, settings.linewidth,
                                  settings.freqs(), settings.units)
        spectrum = add_sensor_noise(clean, settings.noise, rng)
        return {"spectrum": spectrum, "rho_true": scene.density(),
                "larmor_true": scene.larmor_field(),
                "noise_sigma": sensor_sigma(clean, settings.noise)}
    if settings.operator.upper() != "F3":
        raise SceneError(f"the nuisances are simulated by the direct sum F3, not by "
                         f"{settings.operator}", "drop --realism, or use --simulator F3")
    grid = settings.grid
    lab = render(scene.positions, scene.amplitudes, scene.larmor, grid.shape, grid.spacing,
                 grid.standoff, settings.freqs().numpy(), settings.linewidth, settings.noise,
                 realism, scene.nv_axis, settings.units, rng,
                 np.random.default_rng([seed, NUISANCE_STREAM]))
    out = {"spectrum": lab.spectrum, "rho_true": lab.rho, "larmor_true": lab.larmor,
           "noise_sigma": lab.noise_sigma() if realism.record_sigma else None,
           "standoff_true": lab.standoff, "depth_true": lab.depth, "gain_true": lab.gain,
           "background_true": lab.background, "read_sigma_true": lab.read_sigma,
           "shot_noise_true": lab.shot, "sources_true": lab.sources}
    return out


#: Truth of the nuisances: name → (dims after ``sample``, long name, unit kind).
NUISANCE_TRUTH = {
    "standoff_true": ((), "true mean standoff of the NV plane", "nm"),
    "depth_true": (("y", "x"), "true NV depth under each pixel", "nm"),
    "gain_true": (("y", "x"), "true per-pixel gain", "1"),
    "background_true": (("y", "x"), "true intrinsic background of one readout", "spectrum"),
    "read_sigma_true": ((), "true read-noise sigma of one readout", "spectrum"),
    "shot_noise_true": ((), "true shot-noise slope k: variance = read_sigma^2 + k S",
                        "spectrum"),
}
#: Columns of ``sources_true``.
SOURCE_FIELDS = ("y_nm", "x_nm", "amplitude", "larmor_ghz")


def _dataset(samples: list[dict], classes, seeds, settings: SimulationSettings,
             batched: bool) -> xr.Dataset:
    stack = (lambda name: np.stack([s[name] for s in samples])) if batched else (
        lambda name: samples[0][name])
    recorded = samples[0]["noise_sigma"] is not None
    data = measurement_dataset(
        stack("spectrum"), settings.freqs().numpy(), settings.grid.axes,
        standoff_nm=settings.grid.standoff, linewidth_ghz=settings.linewidth,
        larmor_band_ghz=settings.band, operator=settings.operator.upper(),
        noise=settings.noise, units=settings.units, rho_true=stack("rho_true"),
        larmor_true=stack("larmor_true"),
        scene_class=classes, seed=seeds, noise_sigma=stack("noise_sigma") if recorded else None,
        nv_axis=None if tuple(settings.nv_axis) == Z_AXIS else settings.nv_axis)
    if settings.realism.off:
        return data
    lead = ("sample",) if batched else ()
    spectrum_unit = data["spectrum"].attrs["units"]
    for name, (dims, long_name, unit) in NUISANCE_TRUTH.items():
        data[name] = (lead + dims, np.asarray(stack(name), dtype=np.float64),
                      {"long_name": long_name,
                       "units": spectrum_unit if unit == "spectrum" else unit})
    tables = [s["sources_true"] for s in samples]
    table = np.full((len(tables), max(len(t) for t in tables), len(SOURCE_FIELDS)), np.nan)
    for i, t in enumerate(tables):
        table[i, :len(t)] = t
    data["sources_true"] = (lead + ("source", "source_field"),
                            table if batched else table[0],
                            {"long_name": "true sources (NaN rows pad a shorter list)"})
    data = data.assign_coords(source_field=list(SOURCE_FIELDS))
    data.attrs["realism"] = settings.realism.describe()
    return data


def simulate(scene_class: str, seed: int, settings: SimulationSettings = SimulationSettings()
             ) -> xr.Dataset:
    """One simulated measurement (no ``sample`` dimension) with its truth.

    >>> data = simulate("medium/far", seed=3, settings=SimulationSettings(grid=Grid(32)))
    >>> data["spectrum"].shape
    (50, 32, 32)
    """
    return _dataset([_simulate_arrays(scene_class, seed, settings)], scene_class, seed,
                    settings, batched=False)


def dataset_plan(classes: list[str], per_class: "int | None" = None,
                 samples: "int | None" = None, seed: int = 0) -> list[tuple[str, int]]:
    """``(class, seed)`` of every sample of a data set.

    ``per_class`` gives K samples of each class, class after class; ``samples`` gives N samples
    cycling through the classes.  Sample i gets seed ``seed + i``, so
    ``simulate(class_i, seed + i)`` regenerates it alone.
    """
    if (per_class is None) == (samples is None):
        raise SceneError("give exactly one of per_class and samples",
                         "pass --per-class K or --samples N")
    total = per_class * len(classes) if per_class is not None else samples
    if total < 1:
        raise SceneError(f"a data set needs at least one sample, got {total}",
                         "pass --per-class or --samples of 1 or more")
    if per_class is not None:
        names = [c for c in classes for _ in range(per_class)]
    else:
        names = [classes[i % len(classes)] for i in range(samples)]
    return [(name, seed + i) for i, name in enumerate(names)]


def simulate_dataset(plan: list[tuple[str, int]],
                     settings: SimulationSettings = SimulationSettings(),
                     progress=None) -> xr.Dataset:
    """Simulate every ``(class, seed)`` of ``plan`` into one data set with a ``sample`` axis.

    ``progress`` optionally wraps the iteration (e.g. a progress bar).

    >>> data = simulate_dataset(dataset_plan(["few/far", "many/close"], per_class=2))
    >>> data.sizes["sample"]
    4
    """
    items = progress(plan) if progress is not None else plan
    samples = [_simulate_arrays(name, seed, settings) for name, seed in items]
    return _dataset(samples, [c for c, _ in plan], [s for _, s in plan], settings,
                    batched=True)


def larmor_spread_scene(chi: float, seed: int = 0, grid: Grid = Grid(32),
                        linewidth: float = LINEWIDTH_GHZ, centre_ghz: float = 2.0):
    """A stress test of F2's readout-side Lorentzian (paper appendix A.8) at a chosen χ.

    Every pixel is a unit source (ρ = 1); ω_L = centre + a·ξ, with ξ a Gaussian random field
    of correlation length one pixel (``gaussian_filter`` of white noise from ``seed``,
    standardized) and ``a`` chosen so that :func:`~nvbayes.physics.in_kernel_chi` equals
    ``chi`` exactly.  Returns ``(rho, larmor)`` as float64 tensors ``(n, n)``.
    """
    n = grid.n
    xi = gaussian_filter(np.random.default_rng(seed).standard_normal((n, n)), 1.0,
                         mode="reflect")
    xi = torch.from_numpy(xi / xi.std())
    rho = torch.ones(n, n, dtype=torch.float64)
    unit = in_kernel_chi(rho, centre_ghz + xi, grid.spacing, grid.standoff, linewidth)
    return rho, centre_ghz + xi * (chi / unit)
