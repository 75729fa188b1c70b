"""Calibration of credible intervals on seeded synthetic scenes (``nvbayes calibrate``).

For every scene and method the posterior draws of ρ (under the generative likelihood, the
default, as drawn: no scale correction; docs/architecture.md) give, for each true source s
at pixel p_s, two functionals of ρ over the disc W_s of radius ``radius`` standoffs around
p_s, above the local background b_s (the median of ρ on the ring one standoff wide outside
the disc)::

    mass      m_s(ρ) = Σ_{r ∈ W_s} (ρ(r) − b_s)                          (the amplitude)
    position  c_s(ρ) = Σ_{r ∈ W_s} w(r) r / Σ w,   w = max(ρ − b_s, 0)     (x and y, nm)

The same functionals of the true density are the truth: the amplitude and the pixel centre of
the source (other sources lie farther than the radius in the medium and far classes).  The
central credible interval at level q runs from the (1 − q)/2 to the (1 + q)/2 quantile of
the draws; its coverage is the fraction of (scene, source) pairs whose truth it holds.  A
calibrated method covers a fraction q at every level q.

Results are kept per (method, scene) in ``cells/`` as they finish, so an interrupted run
resumes where it stopped; ``coverage.nc``, ``coverage.md`` and ``coverage.png`` are written
from all cells at the end.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from nvbayes.data.io import toml_dumps, write_netcdf, write_with
from nvbayes.data.realism import parse_realism
from nvbayes.data.scenes import SimulationSettings, expand_classes, simulate
from nvbayes.data.spec import load_spec, parse_nuisance, with_nuisance
from nvbayes.data.validation import positive
from nvbayes.errors import ParameterError
from nvbayes.figures import save_figure
from nvbayes.figures.imaging import plot_coverage
from nvbayes.inference.generative import RHO_PRIORS
from nvbayes.inference.methods import METHODS, infer
from nvbayes.metrics import wilson
from nvbayes.model.problem import InverseProblem
from nvbayes.physics.geometry import Grid
from nvbayes.physics.operators import OPERATORS
from nvbayes.progress import progress_bar
from nvbayes.results.store import CellStore, stored_settings

#: The inference methods with posterior draws.
SAMPLING_METHODS = tuple(name for name, m in METHODS.items() if m.draws is not None)
QUANTITIES = ("x", "y", "mass")
#: Nominal levels of the calibration curve.
LEVELS = np.round(np.arange(0.1, 1.0, 0.1).tolist() + [0.95], 2)
CONFIG, TABLE, DATASET, FIGURE = ("calibration.toml", "coverage.md", "coverage.nc",
                                  "coverage.png")


@dataclass(frozen=True)
class CalibrationPlan:
    """What ``nvbayes calibrate`` runs: ``scenes`` scenes cycling ``classes`` (seeds
    ``seed``, ``seed + 1``, ...) on an ``grid``-pixel window, simulated by ``simulator``
    (F3, or the inversion operator itself for a matched-model control), each fitted by
    ``methods`` (the generative ones with ρ's prior ``rho_prior``)."""

    methods: tuple = ("svi", "laplace")
    scenes: int = 32
    simulator: str = "F3"
    classes: tuple = ("few/far", "medium/far")
    grid: int = 32
    model: str = "netmy-fast"
    operator: str = "F2"
    noise: float = 0.01
    seed: int = 0
    level: float = 0.9
    radius: float = 2.0
    draws: "int | None" = None       # None: each method's default (the method registry)
    chains: "int | None" = None
    warmup: "int | None" = None
    rho_prior: str = "exponential"
    realism: str = "off"             # off, lab or nuisance names (data/realism.py)
    nuisance: str = "none"           # the nuisances the catalogue holds (data/spec.py)

    def __post_init__(self):
        object.__setattr__(self, "methods", tuple(self.methods))
        parse_realism(self.realism)
        if parse_nuisance(self.nuisance).any and set(self.methods) - set(NUISANCE_METHODS):
            raise ParameterError(f"--nuisance {self.nuisance} with --method "
                                 f"{','.join(self.methods)}",
                                 "of the sampling methods only the catalogue models the "
                                 "nuisances: use --method catalogue, or drop --nuisance")
        if self.rho_prior not in RHO_PRIORS:
            raise ParameterError(f"unknown rho prior {self.rho_prior!r}",
                                 f"use --rho-prior {' or '.join(RHO_PRIORS)}")
        object.__setattr__(self, "classes", tuple(self.classes))
        unknown = [m for m in self.methods if m not in SAMPLING_METHODS]
        if unknown or not self.methods:
            raise ParameterError(f"unknown calibration method(s) {', '.join(unknown)}",
                                 f"use --method with {', '.join(SAMPLING_METHODS)}")
        if "nuts" in self.methods and self.grid > 16:
            raise ParameterError(f"NUTS samples grids up to 16x16, --grid is {self.grid}",
                                 "use --grid 16, or drop nuts from --method")
        positive("--scenes", self.scenes, "use 1 or more scenes")
        positive("--radius", self.radius, "use a radius > 0 standoffs")
        if not 0 < self.level < 1:
            raise ParameterError(f"--level {self.level}", "use a credible level in (0, 1)")
        expand_classes(",".join(self.classes))              # validates the class names
        if self.simulator not in OPERATORS:
            raise ParameterError(f"unknown simulator {self.simulator!r}",
                                 "use --simulator F3 (the default), F2 or F1")

    def scene(self, index: int) -> tuple[str, int]:
        return self.classes[index % len(self.classes)], self.seed + index

    def to_dict(self) -> dict:
        """The plan as a TOML table (settings left to the method's default are absent)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
                if v is not None}


#: The sampling methods that carry the lab's nuisances (held at their estimates).
NUISANCE_METHODS = ("catalogue",)


def source_functionals(rho: np.ndarray, sources: np.ndarray, coords: np.ndarray,
                       radius_px: float, ring_px: float) -> np.ndarray:
    """``(x, y, mass)`` of each source (pixel indices ``(iy, ix)``) for densities ``rho``
    ``(..., n, n)``: ``(..., n_sources, 3)``.

    Aperture photometry: the local background b is the median of ρ on the ring
    ``radius < d ≤ radius + ring`` around the source, the mass is ``Σ_disc (ρ − b)`` and the
    centroid weighs each disc pixel by ``max(ρ − b, 0)`` (NaN where those weights are all 0).
    Without the background a positive posterior's mass would grow with the disc's area.
    """
    n = rho.shape[-1]
    iy, ix = np.mgrid[0:n, 0:n]
    out = np.empty(rho.shape[:-2] + (len(sources), 3))
    for k, (sy, sx) in enumerate(sources):
        d2 = (iy - sy) ** 2 + (ix - sx) ** 2
        disc = d2 <= radius_px ** 2
        ring = (d2 > radius_px ** 2) & (d2 <= (radius_px + ring_px) ** 2)
        background = np.median(rho[..., ring], axis=-1)[..., None]
        excess = rho[..., disc] - background
        weights = np.clip(excess, 0.0, None)
        total = weights.sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[..., k, 0] = (weights * coords[ix[disc]]).sum(-1) / total
            out[..., k, 1] = (weights * coords[iy[disc]]).sum(-1) / total
        out[..., k, 2] = excess.sum(-1)
    return out


def interval(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The central credible interval of ``draws`` along axis 0 (NaN draws ignored)."""
    lo, hi = np.nanquantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return lo, hi


def _fit_cell(plan: CalibrationPlan, method: str, index: int) -> xr.Dataset:
    """One scene fitted by one method: its sources' truth and draws of the functionals."""
    scene_class, seed = plan.scene(index)
    settings = SimulationSettings(grid=Grid(plan.grid), noise=plan.noise,
                                  operator=plan.simulator, realism=parse_realism(plan.realism))
    data = simulate(scene_class, seed, settings)
    problem = InverseProblem.from_measurement(data)
    spec = with_nuisance(load_spec(plan.model), parse_nuisance(plan.nuisance))
    result = infer(problem, spec, method=method, operator=plan.operator,
                    seed=0, device="cpu", show=False, precision="fp32", draws=plan.draws,
                    chains=plan.chains, warmup=plan.warmup, rho_prior=plan.rho_prior)
    truth = data["rho_true"].values
    sources = np.argwhere(truth > 0)
    coords = data["x"].values
    radius_px = plan.radius * problem.standoff / problem.spacing
    draws = result.rho.reshape(-1, *result.rho.shape[-2:])
    ring_px = problem.standoff / problem.spacing
    values = source_functionals(draws, sources, coords, radius_px, ring_px)
    true = source_functionals(truth, sources, coords, radius_px, ring_px)
    return xr.Dataset(
        {"draws": (("draw", "source", "quantity"), values),
         "truth": (("source", "quantity"), true),
         "wall_time_s": ((), result.wall_time_s)},
        coords={"quantity": list(QUANTITIES)},
        attrs={"method": method, "scene": index, "scene_class": scene_class, "seed": seed})


def _key(method: str, index: int) -> str:
    return f"{method}-{index:04d}"


def _check_folder(folder: Path, plan: CalibrationPlan) -> None:
    stored = stored_settings(folder, CONFIG, "calibration")
    if stored is not None and CalibrationPlan().to_dict() | stored != plan.to_dict():
        raise ParameterError(f"{folder} holds a calibration with other settings",
                             "pass the same settings to resume, or another --out")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).write_text(toml_dumps(plan.to_dict()))


def run_calibration(plan: CalibrationPlan, folder: "str | Path",
                    show: "bool | None" = None) -> xr.Dataset:
    """Fit every (method, scene) not yet in ``folder/cells`` and write the summary files;
    returns the coverage dataset.

    >>> plan = CalibrationPlan(methods=("laplace",), scenes=8, grid=16)   # doctest: +SKIP
    >>> run_calibration(plan, "runs/cal")["coverage"].sel(level=0.9)     # doctest: +SKIP
    """
    folder = Path(folder)
    _check_folder(folder, plan)
    store = CellStore(folder)
    todo = [(m, i) for i in range(plan.scenes) for m in plan.methods
            if not store.has(_key(m, i))]
    bar = progress_bar(len(todo), "calibrate", "fit", show)
    for method, index in todo:
        store.write(_key(method, index), _fit_cell(plan, method, index))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    coverage = coverage_dataset(store, plan)
    table = coverage_table(coverage)
    write_netcdf(coverage, folder / DATASET)
    write_with(folder / TABLE, lambda tmp: tmp.write_text(table))
    save_figure(plot_coverage(coverage), folder / FIGURE)
    return coverage


def coverage_dataset(store: CellStore, plan: CalibrationPlan) -> xr.Dataset:
    """Per method and quantity: coverage at every level of :data:`LEVELS` and at
    ``plan.level``, interval widths and the wall time per fit, from the cells."""
    levels = sorted(set(LEVELS.tolist()) | {plan.level})
    covered = np.full((len(plan.methods), len(QUANTITIES), len(levels)), np.nan)
    count = np.zeros((len(plan.methods), len(QUANTITIES)), dtype=int)
    width = np.full((len(plan.methods), len(QUANTITIES)), np.nan)
    wall = np.full((len(plan.methods), plan.scenes), np.nan)
    for a, method in enumerate(plan.methods):
        hits = np.zeros((len(QUANTITIES), len(levels)))
        widths = [[] for _ in QUANTITIES]
        for i in range(plan.scenes):
            cell = store.read(_key(method, i))
            draws, truth = cell["draws"].values, cell["truth"].values
            wall[a, i] = float(cell["wall_time_s"])
            for b, q in enumerate(levels):
                lo, hi = interval(draws, q)
                hits[:, b] += ((lo <= truth) & (truth <= hi)).sum(0)
            lo, hi = interval(draws, plan.level)
            for c in range(len(QUANTITIES)):
                widths[c] += list(hi[:, c] - lo[:, c])
            count[a] += truth.shape[0]
        covered[a] = hits / np.maximum(count[a], 1)[:, None]
        width[a] = [np.nanmedian(w) for w in widths]
    return xr.Dataset(
        {"coverage": (("method", "quantity", "level"), covered,
                      {"long_name": "fraction of true values inside the central credible "
                                    "interval"}),
         "sources": (("method", "quantity"), count),
         "median_width": (("method", "quantity"), width,
                          {"long_name": f"median width of the {plan.level:.0%} interval",
                           "units": "nm (x, y); fluctuators (mass)"}),
         "wall_time_s": (("method", "scene"), wall, {"units": "s"})},
        coords={"method": list(plan.methods), "quantity": list(QUANTITIES), "level": levels,
                "scene": np.arange(plan.scenes)},
        attrs={"nominal_level": plan.level, "schema": "nvbayes.calibration/1",
               "description": "coverage of central credible intervals of per-source disc "
                              "mass and centroid of the posterior density draws"}
        | {k: ", ".join(v) if isinstance(v, list) else v for k, v in plan.to_dict().items()})


def coverage_table(ds: xr.Dataset) -> str:
    """Markdown: coverage at the nominal level (with its Wilson 95 % interval), median
    interval width and median wall time per fit, one row per method."""
    level = float(ds.attrs["nominal_level"])
    lines = [f"# Coverage of {level:.0%} credible intervals",
             "",
             f"{ds.sizes['scene']} scenes ({ds.attrs['classes']}), grid {ds.attrs['grid']}², "
             f"simulated by {ds.attrs['simulator']}, model {ds.attrs['model']}, operator "
             f"{ds.attrs['operator']}, noise "
             f"{ds.attrs['noise']}; per source, the mass and centroid of the density within "
             f"{ds.attrs['radius']} standoffs; ρ's prior "
             f"{ds.attrs.get('rho_prior', 'exponential')}.",
             "",
             "| method | sources | x | y | mass | width x (nm) | width mass | s per fit |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for method in ds["method"].values:
        row = ds.sel({"method": method})
        cells = []
        for q in QUANTITIES:
            p = float(row["coverage"].sel(quantity=q, level=level))
            n = int(row["sources"].sel(quantity=q))
            lo, hi = wilson(p, n)
            cells.append(f"{p:.2f} [{lo:.2f}, {hi:.2f}]")
        widths = row["median_width"]
        lines.append(f"| {method} | {int(row['sources'].sel(quantity='mass'))} | "
                     + " | ".join(cells)
                     + f" | {float(widths.sel(quantity='x')):.2f} | "
                       f"{float(widths.sel(quantity='mass')):.3f} | "
                       f"{float(np.nanmedian(row['wall_time_s'])):.1f} |")
    lines += ["", "Brackets: Wilson 95 % interval of the coverage.  A calibrated method "
              f"covers {level:.0%}."]
    return "\n".join(lines) + "\n"


__all__ = ["CalibrationPlan", "coverage_dataset", "coverage_table", "interval",
           "run_calibration", "source_functionals", "wilson"]
