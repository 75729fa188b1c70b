"""Simulation-based calibration (Talts et al. 2018) of the generative posterior (``nvbayes sbc``).

For replication r = 0 … R−1 (seed ``seed + r``): draw (g, ρ, ω_L) from the prior of
:class:`~nvbayes.model.generative.GenerativeSpectrumModel`, simulate a spectrum from its
likelihood, fit it by each method, and record for every tracked scalar quantity θ the rank

    rank_r(θ) = #{ l : θ^(l) < θ_true },     l = 1 … L posterior draws (thinned for NUTS)

If the posteriors are right, each rank is uniform on {0, …, L} whatever the prior and the
data.  The ranks are binned into B equal bins and tested with Pearson's χ² (B − 1 degrees of
freedom); p > 0.01 passes.  An over-confident posterior gives a ∪-shaped histogram, a biased
one a sloped histogram.

Tracked quantities (grid side n): ρ and ω_L at the centre pixel, at (n/4, n/4) and at the
corner (0, 0); the mass Σρ over the central window [n/4, 3n/4)²; the gain where it is latent.

Results are kept per (method, replication) in ``cells/`` as they finish, so an interrupted run
resumes; ``sbc.nc``, ``sbc.md`` and ``sbc.png`` are written from all cells at the end.
Replications run on an executor of :mod:`~nvbayes.workflows.benchmark.executors` (here, or
on a Dask cluster).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import xarray as xr
from scipy import stats

from nvbayes.data.io import toml_dumps, write_netcdf, write_with
from nvbayes.data.validation import positive
from nvbayes.errors import ParameterError
from nvbayes.figures import save_figure
from nvbayes.figures.imaging import plot_rank_histograms
from nvbayes.inference.generative import GENERATIVE_METHODS, sample_generative
from nvbayes.inference.pixel_posterior import NUTS_MAX_SIDE, spectral_larmor
from nvbayes.model.generative import GenerativeSpectrumModel
from nvbayes.model.problem import InverseProblem
from nvbayes.physics.lorentzian import LARMOR_BAND_GHZ, LINEWIDTH_GHZ, readout_frequencies
from nvbayes.physics.operators import check_inversion_operator, make_operator
from nvbayes.progress import progress_bar
from nvbayes.results.store import CellStore, stored_settings

CONFIG, TABLE, DATASET, FIGURE = "sbc.toml", "sbc.md", "sbc.nc", "sbc.png"
#: p-value below which a rank histogram fails the uniformity test.
ALPHA = 0.01


@dataclass(frozen=True)
class SbcPlan:
    """What ``nvbayes sbc`` runs: ``replications`` prior draws on an ``grid``² window
    (``spacing``, ``standoff`` nm; 50 readouts over the band widened by one linewidth), noise
    ``sigma`` per readout (spectrum units: a unit source peaks at 1), ρ's prior mean
    ``rho_mean``, the gain's prior sd ``gain_sd`` (0: gain fixed at 1), each fitted by
    ``methods`` with ``draws`` posterior draws (L; NUTS keeps every ``thin``-th of
    ``draws × thin`` after ``warmup``), ranks in ``bins`` bins."""

    methods: tuple = ("nuts", "laplace", "svi")
    replications: int = 200
    grid: int = 8
    operator: str = "F2"
    spacing: float = 20.0
    standoff: float = 20.0
    sigma: float = 0.02
    rho_mean: float = 0.3
    gain_sd: float = 0.3
    draws: int = 99
    thin: int = 3
    warmup: int = 300
    bins: int = 10
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "methods", tuple(self.methods))
        unknown = [m for m in self.methods if m not in GENERATIVE_METHODS]
        if unknown or not self.methods:
            raise ParameterError(f"unknown SBC method(s) {', '.join(unknown) or '(none)'}",
                                 f"use --method with {', '.join(GENERATIVE_METHODS)}")
        object.__setattr__(self, "operator", check_inversion_operator(self.operator))
        for name, hint in (("replications", "use 1 or more"), ("grid", "use 4 or more pixels"),
                           ("sigma", "use a noise sd > 0"), ("rho_mean", "use a mean > 0"),
                           ("draws", "use 1 or more draws"), ("thin", "use 1 or more"),
                           ("warmup", "use 1 or more"), ("bins", "use 2 or more bins")):
            positive(f"--{name.replace('_', '-')}", getattr(self, name), hint)
        if self.grid < 4:
            raise ParameterError(f"--grid {self.grid}", "use a grid of 4 or more pixels")
        if "nuts" in self.methods and self.grid > NUTS_MAX_SIDE:
            raise ParameterError(f"NUTS samples grids up to {NUTS_MAX_SIDE}, --grid is "
                                 f"{self.grid}", f"use --grid {NUTS_MAX_SIDE} or less")
        if self.gain_sd < 0:
            raise ParameterError(f"--gain-sd {self.gain_sd}", "use 0 (gain fixed) or more")
        if (self.draws + 1) % self.bins:
            raise ParameterError(f"{self.draws + 1} rank values do not fill {self.bins} equal "
                                 "bins", "choose --draws so that draws + 1 is a multiple of "
                                         "--bins (e.g. 99 draws, 10 bins)")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def model(self) -> GenerativeSpectrumModel:
        """The generative model SBC draws from and fits."""
        n = self.grid
        operator = make_operator(self.operator, readout_frequencies(), LINEWIDTH_GHZ,
                                 spacing=self.spacing, standoff=self.standoff)
        return GenerativeSpectrumModel(operator, (n, n), self.sigma, LARMOR_BAND_GHZ,
                                       self.rho_mean, self.gain_sd or None)

    def quantities(self) -> list[str]:
        names = [f"{kind}[{y},{x}]" for kind in ("rho", "larmor") for y, x in self.pixels()]
        return names + ["mass_centre"] + (["gain"] if self.gain_sd > 0 else [])

    def pixels(self) -> list[tuple[int, int]]:
        n = self.grid
        return [(n // 2, n // 2), (n // 4, n // 4), (0, 0)]


def tracked(plan: SbcPlan, rho: np.ndarray, larmor: np.ndarray,
            gain: "np.ndarray | None") -> np.ndarray:
    """The tracked quantities of draws ``rho``, ``larmor`` ``(..., n, n)`` (and ``gain``
    ``(...)``): ``(..., n_quantities)`` in the order of :meth:`SbcPlan.quantities`."""
    n = plan.grid
    lo, hi = n // 4, (3 * n) // 4
    columns = [rho[..., y, x] for y, x in plan.pixels()]
    columns += [larmor[..., y, x] for y, x in plan.pixels()]
    columns.append(rho[..., lo:hi, lo:hi].sum(axis=(-2, -1)))
    if gain is not None:
        columns.append(gain)
    return np.stack(columns, axis=-1)


def ranks(draws: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``#{draws < truth}`` per quantity: draws ``(L, q)``, truth ``(q,)`` → ``(q,)``."""
    return (np.asarray(draws) < np.asarray(truth)[None]).sum(axis=0)


def uniformity(rank_values: np.ndarray, draws: int, bins: int) -> tuple[np.ndarray, float,
                                                                          float]:
    """``(counts (bins,), χ², p)`` of ranks in ``0 … draws`` against the uniform law."""
    width = (draws + 1) // bins
    counts = np.bincount(np.asarray(rank_values, dtype=int) // width, minlength=bins)[:bins]
    expected = len(rank_values) / bins
    chi2 = float(((counts - expected) ** 2).sum() / expected)
    return counts, chi2, float(stats.chi2.sf(chi2, bins - 1))


def sbc_ranks(simulate: Callable, posterior: Callable, replications: int, seed: int = 0
              ) -> np.ndarray:
    """The SBC loop for any model: ``simulate(seed) → (truth (q,), data)``,
    ``posterior(data, seed) → draws (L, q)``; returns ranks ``(replications, q)``."""
    out = []
    for r in range(replications):
        truth, data = simulate(seed + r)
        out.append(ranks(posterior(data, seed + r), truth))
    return np.stack(out)


def replicate(plan: SbcPlan, method: str, index: int) -> xr.Dataset:
    """Replication ``index`` by ``method``: simulate from the prior, fit, rank."""
    start = time.perf_counter()
    seed = plan.seed + index
    model = plan.model()
    truth = model.simulate(seed)
    fitted = model.conditioned(truth["spectrum"])
    problem = InverseProblem(spectrum=truth["spectrum"].numpy(),
                             freqs=model.operator.freqs.numpy(), spacing=plan.spacing,
                             standoff=plan.standoff, linewidth=LINEWIDTH_GHZ,
                             band=LARMOR_BAND_GHZ)
    start_larmor = spectral_larmor(problem).reshape(-1)[model.larmor_index]
    thin = plan.thin if method == "nuts" else 1
    result = sample_generative(fitted, method, seed=seed, draws=plan.draws * thin, chains=1,
                               warmup=plan.warmup, start_larmor=start_larmor)
    draws = tracked(plan, result.rho, result.larmor, result.gain).reshape(-1, len(
        plan.quantities()))[::thin][:plan.draws]
    true_gain = truth["gain"].numpy() if "gain" in truth else None
    true = tracked(plan, truth["rho"].numpy(), model.larmor_map(truth["larmor"]).numpy(),
                   true_gain)
    divergences = int(result.diverging.sum()) if result.diverging is not None else 0
    return xr.Dataset(
        {"rank": ("quantity", ranks(draws, true)),
         "truth": ("quantity", true),
         "posterior_mean": ("quantity", draws.mean(0)),
         "posterior_sd": ("quantity", draws.std(0)),
         "wall_time_s": ((), time.perf_counter() - start),
         "divergences": ((), divergences)},
        coords={"quantity": plan.quantities()},
        attrs={"method": method, "replication": index, "seed": seed})


def _key(method: str, index: int) -> str:
    return f"{method}-{index:04d}"


def _check_folder(folder: Path, plan: SbcPlan) -> None:
    stored = stored_settings(folder, CONFIG, "SBC")
    if stored is not None and stored != plan.to_dict():
        raise ParameterError(f"{folder} holds an SBC run with other settings",
                             "pass the same settings to resume, or another --out")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).write_text(toml_dumps(plan.to_dict()))


class _Replicate:
    """A picklable task for the executors: one (method, replication) pair."""

    def __init__(self, plan: SbcPlan):
        self.plan = plan

    def __call__(self, item: tuple[str, int]) -> xr.Dataset:
        return replicate(self.plan, *item)


def run_sbc(plan: SbcPlan, folder: "str | Path", executor,
            show: "bool | None" = None) -> xr.Dataset:
    """Compute the replications not yet in ``folder/cells`` on ``executor`` (an
    :mod:`~nvbayes.workflows.benchmark.executors` instance, not yet entered) and write the
    summary files; returns the SBC dataset.

    >>> from nvbayes.workflows.benchmark.executors import InProcess   # doctest: +SKIP
    >>> run_sbc(SbcPlan(methods=("laplace",), replications=20), "runs/sbc", InProcess())
    ... # doctest: +SKIP
    """
    folder = Path(folder)
    _check_folder(folder, plan)
    store = CellStore(folder)
    todo = [(m, i) for i in range(plan.replications) for m in plan.methods
            if not store.done(_key(m, i))]
    failures = []
    if todo:
        bar = progress_bar(len(todo), "sbc", "fit", show)
        with executor:
            for (method, index), cell, error in executor.map(_Replicate(plan), todo):
                if error is not None:
                    failures.append(f"{method} replication {index}: {error}")
                else:
                    store.write(_key(method, index), cell)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
    result = sbc_dataset(store, plan)
    result.attrs["failed"] = len(failures)
    write_netcdf(result, folder / DATASET)
    write_with(folder / TABLE, lambda tmp: tmp.write_text(sbc_table(result)))
    save_figure(plot_rank_histograms(result), folder / FIGURE)
    return result


def sbc_dataset(store: CellStore, plan: SbcPlan) -> xr.Dataset:
    """Ranks, histograms, χ² and p per method and quantity from the stored cells (missing
    replications are left out and counted)."""
    quantities = plan.quantities()
    shape = (len(plan.methods), plan.replications, len(quantities))
    rank = np.full(shape, -1, dtype=int)
    wall = np.full(shape[:2], np.nan)
    divergences = np.zeros(shape[:2], dtype=int)
    counts = np.zeros((len(plan.methods), len(quantities), plan.bins), dtype=int)
    chi2 = np.full((len(plan.methods), len(quantities)), np.nan)
    p = np.full_like(chi2, np.nan)
    done = np.zeros(len(plan.methods), dtype=int)
    for a, method in enumerate(plan.methods):
        for i in range(plan.replications):
            cell = store.read(_key(method, i))
            if cell is None or cell.attrs.get("error"):
                continue
            rank[a, i] = cell["rank"].values
            wall[a, i] = float(cell["wall_time_s"])
            divergences[a, i] = int(cell["divergences"])
        kept = rank[a][rank[a, :, 0] >= 0]
        done[a] = len(kept)
        if len(kept):
            for b in range(len(quantities)):
                counts[a, b], chi2[a, b], p[a, b] = uniformity(kept[:, b], plan.draws,
                                                               plan.bins)
    return xr.Dataset(
        {"rank": (("method", "replication", "quantity"), rank,
                  {"long_name": "number of posterior draws below the true value",
                   "missing": -1}),
         "histogram": (("method", "quantity", "bin"), counts,
                       {"long_name": "replications per rank bin"}),
         "chi2": (("method", "quantity"), chi2,
                  {"long_name": "Pearson chi-square against uniform ranks",
                   "degrees_of_freedom": plan.bins - 1}),
         "p_value": (("method", "quantity"), p),
         "replications_done": ("method", done),
         "wall_time_s": (("method", "replication"), wall, {"units": "s"}),
         "divergences": (("method", "replication"), divergences)},
        coords={"method": list(plan.methods), "quantity": quantities,
                "replication": np.arange(plan.replications), "bin": np.arange(plan.bins)},
        attrs={"schema": "nvbayes.sbc/1", "alpha": ALPHA,
               "description": "simulation-based calibration (Talts et al. 2018) of the "
                              "generative-likelihood posterior: ranks of prior-drawn truths "
                              "among posterior draws"}
        | {k: ", ".join(v) if isinstance(v, list) else v for k, v in plan.to_dict().items()})


def sbc_table(ds: xr.Dataset) -> str:
    """Markdown: the p-value of each quantity's rank histogram per method (✗ below α)."""
    alpha = float(ds.attrs["alpha"])
    methods = list(ds["method"].values)
    lines = [f"# Simulation-based calibration, {ds.attrs['grid']}×{ds.attrs['grid']} "
             f"{ds.attrs['operator']} model",
             "",
             f"Prior: ρ ~ Exponential(mean {ds.attrs['rho_mean']}), ω_L ~ Uniform(band), "
             + (f"gain ~ LogNormal(0, {ds.attrs['gain_sd']})" if ds.attrs["gain_sd"] > 0
                else "gain fixed at 1")
             + f"; noise σ = {ds.attrs['sigma']}.  L = {ds.attrs['draws']} draws per fit "
             f"(NUTS: 1 chain, {ds.attrs['warmup']} warm-up, thinned by {ds.attrs['thin']}), "
             f"{ds.attrs['bins']} bins, χ² p-values (fail below {alpha}).",
             "",
             "| quantity | " + " | ".join(methods) + " |",
             "| --- | " + " | ".join("---" for _ in methods) + " |"]
    for q in ds["quantity"].values:
        cells = []
        for m in methods:
            value = float(ds["p_value"].sel({"method": m, "quantity": q}))
            cells.append(f"{value:.3f}" + (" ✗" if value < alpha else ""))
        lines.append(f"| {q} | " + " | ".join(cells) + " |")
    done = [f"{m} {int(ds['replications_done'].sel({'method': m}))}" for m in methods]
    times = [f"{m} {float(np.nanmedian(ds['wall_time_s'].sel({'method': m}))):.1f} s"
             for m in methods]
    divergent = [f"{m} {int(ds['divergences'].sel({'method': m}).sum())}" for m in methods]
    lines += ["", f"Replications: {', '.join(done)}.  Median wall time per fit: "
              f"{', '.join(times)}.  Divergent transitions: {', '.join(divergent)}."]
    return "\n".join(lines) + "\n"


__all__ = ["ALPHA", "SbcPlan", "ranks", "replicate", "run_sbc", "sbc_dataset", "sbc_ranks",
           "sbc_table", "tracked", "uniformity"]
