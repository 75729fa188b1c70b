"""The source catalogue fit (``nvbayes fit --method catalogue``): K point sources by NUTS, K
chosen by PSIS-LOO.

1. **Peaks of a MAP fit** (:func:`~nvbayes.inference.peaks.detect_peaks`): the local maxima
   of the non-negative least-squares MAP of the noise map that stand
   :data:`~nvbayes.inference.peaks.DETECTION_SNR` amplitude sds out of the noise.  Each peak
   gives a start (3 × 3 centroid in nm, 3 × 3 mass, ω̂ at the peak); K₀ = the number of
   peaks (or ``sources`` when given).
2. **Each K of K₀ − 1, K₀, K₀ + 1**: the :class:`~nvbayes.model.catalogue.PointSourceModel`
   in unconstrained coordinates (logit position in the window, log of ``b = a g``, logit ω in
   the band, log g), its mode and whitening (:class:`~nvbayes.inference.generative.Whitened`)
   and NUTS on the whitened potential (:func:`~nvbayes.inference.generative.whitened_nuts`).
   K₀ − 1 starts without the faintest peak; K₀ + 1 adds a source where the K₀ mode leaves
   the largest noise-map residual.  K₀ + 1 is sampled only if its mode's log-likelihood
   exceeds K₀'s by :data:`SCREEN_NATS` (= DETECTION_SNR² / 2, a detection) or more.  LOO
   charges a nested extra source its effective parameters, about
   :data:`SOURCE_PARAMETERS` nats (4.6–4.8 measured on F3 scenes: a gain of 9.6 nats at the
   mode gave an elpd difference of 4.8, one of 5.6 gave 0.9), so below that gain K₀ + 1
   could not pass the rule of step 3 — and such a source, too faint to pin down, is a
   funnel (its position spreads over the window as its amplitude falls to 0) on which
   NUTS's step size drops four- to tenfold and the fit takes 100–130 s instead of 10.  The
   candidates' chains are independent and run on the CPU cores at once
   (:func:`sample_candidates`); the draws do not depend on how many.
3. **PSIS-LOO** over pixels (each pixel's Σ_ω log-likelihood is one point) by
   :func:`arviz.loo` and :func:`arviz.compare`; the catalogue is the smallest K whose
   expected log predictive density is within both :data:`LOO_SE_RULE` standard errors of the
   difference (``dse``) and :data:`LOO_NATS` of the best one.  A missing source costs
   thousands of nats, but concentrated on a few pixels, so that its ``dse`` (√n times the
   spread of the pointwise differences) is as large as the difference itself: hence the
   bound in nats.  That bound is the detection threshold of step 1 in nats: a source of
   amplitude SNR s raises the log-likelihood by s²/2 and LOO charges its four parameters
   about one nat each, so ``LOO_NATS = DETECTION_SNR² / 2 − 4``.  (A bound of 4 nats let an
   extra source win on 3 of 16 F3 scenes with the model exactly right: free to sit anywhere
   in the window, the K + 1 source finds the noise's largest excursion, a look-elsewhere
   gain of a few nats over thousands of places.)  Pixels outside every source's patch have
   the same log-likelihood in every draw; their Pareto k is undefined and is not counted
   in the warning.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as tnf
import xarray as xr

from nvbayes.errors import NvbayesError, ParameterError
from nvbayes.model.catalogue import PointSourceModel
from nvbayes.model.problem import InverseProblem
from nvbayes.progress import progress_bar

from .draws import PosteriorDraws
from .generative import Whitened, resolve_gain, whitened_nuts
from .map import uniform_level
from .peaks import DETECTION_SNR, detect_peaks
from .pixel_posterior import spectral_larmor

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

#: K is the smallest candidate with elpd_diff ≤ this many dse of the best, and ≤ LOO_NATS.
LOO_SE_RULE = 2.0
#: A source's parameters (x, y, amplitude, ω_L): about what LOO charges one, in nats.
SOURCE_PARAMETERS = 4
LOO_NATS = DETECTION_SNR ** 2 / 2 - SOURCE_PARAMETERS
#: K + 1 is sampled only where its mode's log-likelihood gain reaches this (a detection).
SCREEN_NATS = DETECTION_SNR ** 2 / 2
#: The Pareto k above which PSIS-LOO's estimate of a point is unreliable.
PARETO_K_MAX = 0.7
#: NUTS's tree depth for the catalogue (a superfluous source has flat directions).
MAX_TREE_DEPTH = 8
PARAMETERS = ("x_nm", "y_nm", "amplitude", "larmor_ghz")


class CatalogueCoordinates:
    """``z = (u_x, u_y, log b, h, [log g])`` ↔ ``(x, y, a, ω, g)``, ``a = b / g``; the energy
    ``U = −log p − log |J|``."""

    def __init__(self, model: PointSourceModel):
        self.model = model
        self.k = model.sources
        self.size = 4 * self.k + (1 if model.gain_latent else 0)
        (self.x_lo, x_hi), (self.y_lo, y_hi) = model.window
        self.x_width, self.y_width = x_hi - self.x_lo, y_hi - self.y_lo
        self.band_width = model.high - model.low

    def unpack(self, z: torch.Tensor) -> tuple:
        k = self.k
        ux, uy, lb, h = (z[..., i * k:(i + 1) * k] for i in range(4))
        x = self.x_lo + self.x_width * torch.sigmoid(ux)
        y = self.y_lo + self.y_width * torch.sigmoid(uy)
        larmor = self.model.low + self.band_width * torch.sigmoid(h)
        log_jac = sum((np.log(w) + tnf.logsigmoid(u) + tnf.logsigmoid(-u)).sum(-1)
                      for w, u in ((self.x_width, ux), (self.y_width, uy),
                                   (self.band_width, h)))
        log_jac = log_jac + lb.sum(-1)
        amplitude, gain = torch.exp(lb), None
        if self.model.gain_latent:
            log_g = z[..., -1]
            gain = torch.exp(log_g)
            amplitude = amplitude / gain[..., None]
            log_jac = log_jac - (k - 1) * log_g
        return x, y, amplitude, larmor, gain, log_jac

    def pack(self, x, y, amplitude, larmor, gain=None) -> torch.Tensor:
        def logit(v, lo, width):
            p = ((torch.as_tensor(v, dtype=torch.float64) - lo) / width).clamp(1e-6, 1 - 1e-6)
            return torch.log(p) - torch.log1p(-p)

        g = 1.0 if gain is None else float(gain)
        b = torch.as_tensor(amplitude, dtype=torch.float64).clamp(min=1e-9) * g
        parts = [logit(x, self.x_lo, self.x_width), logit(y, self.y_lo, self.y_width),
                 torch.log(b), logit(larmor, self.model.low, self.band_width)]
        if self.model.gain_latent:
            parts.append(torch.tensor([np.log(g)], dtype=torch.float64))
        return torch.cat(parts)

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        x, y, amplitude, larmor, gain, log_jac = self.unpack(z)
        return -(self.model.log_joint(x, y, amplitude, larmor, gain) + log_jac)


# ---- 2.–3. NUTS per K and PSIS-LOO -----------------------------------------------------------

@dataclass
class CatalogueFit:
    """The draws of one K: ``params`` name → ``(chain, draw, K)``, ``gain`` ``(chain,
    draw)`` or ``None``, ``log_likelihood`` ``(chain, draw, pixel)``."""

    sources: int
    params: dict
    gain: "np.ndarray | None"
    log_likelihood: np.ndarray
    stats: dict

    def idata(self) -> az.InferenceData:
        posterior = dict(self.params) | ({"gain": self.gain} if self.gain is not None else {})
        return az.from_dict(posterior=posterior,
                            log_likelihood={"spectrum": self.log_likelihood})


@dataclass
class CatalogueResult:
    """The chosen fit, every sampled candidate's fit, the LOO comparison, and the K + 1
    candidate's log-likelihood gain at its mode where that gain screened it out (else
    ``None``)."""

    chosen: CatalogueFit
    candidates: dict
    comparison: pd.DataFrame
    model: PointSourceModel
    wall_time_s: float
    messages: list = field(default_factory=list)
    screened_gain: "float | None" = None


@dataclass
class Candidate:
    """One K ready to sample: its coordinates and the whitening at its mode."""

    coords: CatalogueCoordinates
    whitened: Whitened

    @classmethod
    def from_starts(cls, model: PointSourceModel, starts: list) -> "Candidate":
        """K = ``len(starts)`` sources of ``model`` from ``starts`` ``(x, y, a, ω)``."""
        coords = CatalogueCoordinates(model.with_sources(len(starts)))
        x, y, a, w = (torch.tensor(v, dtype=torch.float64) for v in zip(*starts, strict=True))
        start = coords.pack(x, y, a, w, 1.0 if coords.model.gain_latent else None)
        return cls(coords, Whitened.find(coords, start))

    def at_mode(self) -> tuple:
        """``(x, y, a, ω, g)`` at the mode, sources ``(K,)`` (g = 1 where it is fixed)."""
        with torch.no_grad():
            x, y, a, w, gain, _ = self.coords.unpack(self.whitened.mode)
        return x, y, a, w, 1.0 if gain is None else float(gain)

    def mode_starts(self) -> list[tuple[float, float, float, float]]:
        """The mode's sources as starts ``(x, y, a, ω)``."""
        return list(zip(*(v.tolist() for v in self.at_mode()[:4]), strict=True))

    def mode_log_likelihood(self) -> float:
        """The log-likelihood at the mode."""
        with torch.no_grad():
            return float(self.coords.model.log_likelihood(*self.at_mode()))


def _chain(task: tuple) -> tuple:
    """One NUTS chain of one candidate: ``(u (draw, d), diverging (draw,), step size)``."""
    candidate, seed, chain, draws, warmup, show = task
    result = whitened_nuts(candidate.coords, candidate.whitened, seed, 1, warmup, draws,
                           MAX_TREE_DEPTH, first_chain=chain, show=show)
    return result.samples["u"][0], result.diverging[0], float(result.step_size[0])


def _single_thread() -> None:
    torch.set_num_threads(1)


def default_jobs() -> int:
    """The CPU cores this process may use (1 inside a daemonic process, which cannot start
    others: a Dask worker's, for one)."""
    if multiprocessing.current_process().daemon:
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)


def sample_candidates(candidates: dict, seed: int, draws: int, chains: int, warmup: int,
                      jobs: "int | None" = None) -> dict:
    """NUTS draws of every candidate, ``{K: CatalogueFit}``.  The ``chains × len(candidates)``
    chains are independent (chain c of every K is seeded by ``seed · 1000 + c``), so they run
    on ``jobs`` processes (default :func:`default_jobs`), largest K first, and the draws do
    not depend on ``jobs``."""
    jobs = default_jobs() if jobs is None else int(jobs)
    order = [(k, c) for k in sorted(candidates, reverse=True) for c in range(chains)]
    parallel = jobs > 1 and len(order) > 1 and default_jobs() > 1
    show = False if parallel else None                  # no Pyro bars from the children
    tasks = [(candidates[k], seed, c, draws, warmup, show) for k, c in order]
    if parallel:
        bar = progress_bar(len(tasks), desc="catalogue chains", unit="chain")
        # fork where there is one (no re-import of the caller's script; each child runs
        # torch on one thread, as a DataLoader worker does), else spawn
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=context,
                                 initializer=_single_thread) as pool:
            results = []
            for result in pool.map(_chain, tasks):
                results.append(result)
                if bar is not None:
                    bar.update()
        if bar is not None:
            bar.close()
    else:
        results = [_chain(task) for task in tasks]
    fits = {}
    for k in candidates:
        mine = [r for (kk, _), r in zip(order, results, strict=True) if kk == k]
        u = torch.as_tensor(np.stack([r[0] for r in mine]))
        stats = dict(candidates[k].whitened.stats) | {
            "chains": chains, "warmup": warmup,
            "mean_step_size": float(np.mean([r[2] for r in mine]))}
        fits[k] = _fit_of(candidates[k].coords, candidates[k].whitened.to_z(u), stats,
                          np.stack([r[1] for r in mine]))
    return fits


def _fit_of(coords: CatalogueCoordinates, z: torch.Tensor, stats: dict,
            diverging: np.ndarray) -> CatalogueFit:
    """The draws z ``(chain, draw, d)`` as a :class:`CatalogueFit`, with every draw's
    pointwise log-likelihood."""
    model = coords.model
    with torch.no_grad():
        x, y, a, w, gain, _ = coords.unpack(z)
        flat = [v.reshape(-1, v.shape[-1]) for v in (x, y, a, w)]
        gains = gain.reshape(-1).tolist() if gain is not None else [1.0] * len(flat[0])
        loglik = torch.stack([model.pointwise_log_likelihood(*v, g).reshape(-1)
                              for *v, g in zip(*flat, gains, strict=True)])
    stats = stats | {"diverging": diverging, "divergences": int(diverging.sum())}
    params = dict(zip(PARAMETERS, (v.numpy() for v in (x, y, a, w)), strict=True))
    return CatalogueFit(model.sources, params, None if gain is None else gain.numpy(),
                        loglik.reshape(*x.shape[:2], -1).numpy(), stats)


def _residual_peak(model: PointSourceModel, starts: list, gain: float, larmor: torch.Tensor,
                   spacing: float) -> tuple[float, float, float, float]:
    """A new source's start where the sources ``starts`` leave the largest noise-map
    residual."""
    x, y, a, w = (torch.tensor(v, dtype=torch.float64) for v in zip(*starts, strict=True))
    with torch.no_grad():
        residual = (model.observed - model.with_sources(len(starts)).mean(x, y, a, w, gain)
                    ).sum(-3)
    iy, ix = np.unravel_index(int(residual.argmax()), residual.shape)
    unit = model.with_sources(1).mean(torch.tensor([ix * spacing]), torch.tensor([iy * spacing]),
                                      torch.ones(1, dtype=torch.float64),
                                      larmor[iy, ix].reshape(1)).sum(-3)
    amplitude = max(float(residual[iy, ix] / unit[iy, ix]), 1e-3 * model.amplitude_mean)
    return ix * spacing, iy * spacing, amplitude / gain, float(larmor[iy, ix])


def fit_catalogue(problem: InverseProblem, sigma, gain_sd: "float | None" = None,
                  sources: "int | None" = None, seed: int = 0, draws: int = 200,
                  chains: int = 2, warmup: int = 200, jobs: "int | None" = None
                  ) -> CatalogueResult:
    """The catalogue of one measurement (module docstring); ``sigma`` a number or a
    per-pixel map ``(ny, nx)``; ``jobs`` processes for the NUTS chains (default: the cores)."""
    if sources is not None and sources < 1:
        raise ParameterError(f"--sources {sources}", "use 1 or more sources, or leave it out "
                                                     "to count the peaks")
    if jobs is not None and jobs < 1:
        raise ParameterError(f"--jobs {jobs}", "use 1 or more processes, or leave it out to "
                                               "use the CPU cores")
    start_time = time.perf_counter()
    larmor = spectral_larmor(problem)
    starts = detect_peaks(problem, float(torch.as_tensor(sigma).median()), larmor=larmor)
    messages = []
    if not starts:
        raise NvbayesError("no source stands out of the noise in this measurement",
                           "check the spectrum, or give --sources K to fit K sources anyway")
    if sources is not None:
        while len(starts) < sources:
            starts.append(starts[-1])
        starts = starts[:sources]
    level = uniform_level(problem)
    amplitude_mean = level * problem.shape[0] * problem.shape[1] / len(starts)
    model = PointSourceModel(problem.freqs, problem.linewidth, problem.spacing,
                             problem.standoff, problem.shape, sigma, problem.band,
                             len(starts), amplitude_mean, gain_sd,
                             problem.observed(dtype=torch.float64), units=problem.units,
                             nv_axis=problem.nv_axis, pixel_mask=problem.pixel_mask())
    k = len(starts)
    candidates = {k: Candidate.from_starts(model, starts)}
    if k > 1:
        candidates[k - 1] = Candidate.from_starts(model, starts[:-1])
    base = candidates[k]
    extra = _residual_peak(model, base.mode_starts(), base.at_mode()[4], larmor,
                           problem.spacing)
    plus = Candidate.from_starts(model, base.mode_starts() + [extra])
    gain = plus.mode_log_likelihood() - base.mode_log_likelihood()
    screened = gain if gain < SCREEN_NATS else None
    if screened is None:
        candidates[k + 1] = plus
    else:
        messages.append(f"K={k + 1} not sampled: its extra source raises the log-likelihood at "
                        f"the mode by {gain:.1f} nats, less than a detection "
                        f"({SCREEN_NATS:g} nats)")
    fits = sample_candidates(candidates, seed, draws, chains, warmup, jobs)
    comparison, unreliable = compare_candidates(fits)
    best = choose_sources(comparison)
    if unreliable:
        messages.append(f"PSIS-LOO: Pareto k above {PARETO_K_MAX} on {unreliable} pixels where "
                        f"the fit varies; the comparison there is approximate")
    return CatalogueResult(fits[best], fits, comparison, model.with_sources(best),
                           time.perf_counter() - start_time, messages, screened)


def compare_candidates(fits: dict) -> tuple[pd.DataFrame, int]:
    """:func:`arviz.compare` of the candidates' PSIS-LOO (index ``"K=k"``), and the number of
    pixels, over all candidates, with Pareto k above :data:`PARETO_K_MAX` among those whose
    log-likelihood varies over the draws."""
    loo, unreliable = {}, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, f in sorted(fits.items()):
            loo[f"K={k}"] = az.loo(f.idata(), pointwise=True)
            varies = np.ptp(f.log_likelihood.reshape(-1, f.log_likelihood.shape[-1]), 0) > 0
            unreliable += int((loo[f"K={k}"].pareto_k.values[varies] > PARETO_K_MAX).sum())
        if len(loo) == 1:                        # K₀ = 1 with K₀ + 1 screened out
            (name, one), = loo.items()
            return pd.DataFrame({"rank": [0], "elpd_loo": [one.elpd_loo], "p_loo": [one.p_loo],
                                 "elpd_diff": [0.0], "weight": [1.0], "se": [one.se],
                                 "dse": [0.0]}, index=[name]), unreliable
        return az.compare(loo, ic="loo"), unreliable


def choose_sources(comparison: pd.DataFrame, rule: float = LOO_SE_RULE,
                   nats: float = LOO_NATS) -> int:
    """The smallest K (index ``"K=k"``) whose ``elpd_diff`` is within ``rule × dse`` and
    within ``nats`` of the best."""
    bound = np.minimum(rule * comparison["dse"].fillna(0.0), nats)
    close = comparison[comparison["elpd_diff"] <= bound]
    return min(int(str(name).split("=")[1]) for name in close.index)


def source_table(fit: CatalogueFit, level: float = 0.9) -> pd.DataFrame:
    """One row per source: each parameter's mean with ``_sd``, ``_lo`` and ``_hi`` (the
    central ``level`` interval)."""
    rows = []
    q = ((1 - level) / 2, (1 + level) / 2)
    for k in range(fit.sources):
        row = {"source": k}
        for name in PARAMETERS:
            values = fit.params[name][..., k].reshape(-1)
            lo, hi = np.quantile(values, q)
            row |= {name: values.mean(), f"{name}_sd": values.std(ddof=1),
                    f"{name}_lo": lo, f"{name}_hi": hi}
        rows.append(row)
    return pd.DataFrame(rows)


def catalogue_dataset(result: CatalogueResult, level: float = 0.9) -> xr.Dataset:
    """``catalogue.nc``: the chosen K's draws per source, and the LOO comparison."""
    fit = result.chosen
    dims = ("chain", "draw", "source")
    units = {"x_nm": "nm", "y_nm": "nm", "amplitude": "fluctuators", "larmor_ghz": "GHz"}
    ds = xr.Dataset({name: (dims, fit.params[name], {"units": units[name]})
                     for name in PARAMETERS})
    if fit.gain is not None:
        ds["gain"] = (("chain", "draw"), fit.gain)
    table = result.comparison
    ds = ds.assign_coords(candidate=[str(i) for i in table.index])
    for column in ("rank", "elpd_loo", "p_loo", "elpd_diff", "weight", "se", "dse"):
        if column in table:
            ds[f"loo_{column}"] = ("candidate", table[column].to_numpy(dtype=float))
    ds.attrs = {"schema": "nvbayes.catalogue/1", "sources": fit.sources,
                "interval_level": level, "divergences": int(fit.stats["diverging"].sum()),
                "description": "K point sources (continuous position, amplitude, Larmor "
                               "frequency) through the direct source-side sum, sampled by "
                               "NUTS; K chosen by PSIS-LOO over pixels (arviz.compare)"}
    if result.screened_gain is not None:
        # K + 1 was screened out by its log-likelihood gain at the mode (not sampled)
        ds.attrs["screened_candidate"] = f"K={max(result.candidates) + 1}"
        ds.attrs["screened_loglik_gain"] = float(result.screened_gain)
    return ds


def rasterized(model: PointSourceModel, fit: CatalogueFit) -> tuple[np.ndarray, ...]:
    """Maps of every draw, ``(chain, draw, ny, nx)``: ρ (each amplitude shared bilinearly
    among the four pixels around its position), ω_L (the frequency of the source that
    dominates each pixel's noise) and the predicted noise map ``Σ_ω S``."""
    x, y, a, w = (torch.as_tensor(fit.params[p]) for p in PARAMETERS)
    gain = torch.ones(x.shape[:2], dtype=torch.float64) if fit.gain is None else \
        torch.as_tensor(fit.gain)
    ny, nx = model.shape
    fx, fy = (x / model.spacing).clamp(0, nx - 1), (y / model.spacing).clamp(0, ny - 1)
    ix0, iy0 = fx.floor().long().clamp(max=nx - 2), fy.floor().long().clamp(max=ny - 2)
    tx, ty = fx - ix0, fy - iy0
    rho = torch.zeros(*x.shape[:2], ny * nx, dtype=torch.float64)
    for dy, dx, weight in ((0, 0, (1 - ty) * (1 - tx)), (0, 1, (1 - ty) * tx),
                           (1, 0, ty * (1 - tx)), (1, 1, ty * tx)):
        rho.scatter_add_(-1, (iy0 + dy) * nx + ix0 + dx, a * weight)
    larmor, noise = [], []
    with torch.no_grad():
        for c in range(x.shape[0]):
            kernel = model.kernel(x[c], y[c]) * a[c][..., None, None]       # (draw, K, ny, nx)
            larmor.append(torch.gather(w[c][..., None, None].expand_as(kernel), 1,
                                       kernel.argmax(1, keepdim=True))[:, 0])
            # Σ_ω S = g Σ_k a_k c P(r − s_k) Σ_ω L(ω; ω_k), on the whole grid
            lines = model.lorentzian_weights(torch.ones_like(w[c]), w[c]).sum(-1)
            noise.append(gain[c][:, None, None] * torch.einsum("dk,dkyx->dyx", lines, kernel))
    return (rho.reshape(*x.shape[:2], ny, nx).numpy(), torch.stack(larmor).numpy(),
            torch.stack(noise).numpy())


__all__ = ["Candidate", "CatalogueCoordinates", "CatalogueFit", "CatalogueResult",
           "LOO_NATS", "PARAMETERS", "SCREEN_NATS", "catalogue_dataset", "choose_sources",
           "compare_candidates", "default_jobs", "fit_catalogue",
           "fit_catalogue_draws", "rasterized",
           "sample_candidates", "source_table"]


def fit_catalogue_draws(problem: InverseProblem, spec=None, operator: str = "F2",
                        seed: int = 0, draws: int = 200, chains: int = 2, warmup: int = 200,
                        gain: str = "auto", sources: "int | None" = None,
                        jobs: "int | None" = None) -> PosteriorDraws:
    """The catalogue as the fit workflow's :class:`~nvbayes.inference.draws.PosteriorDraws`:
    the rasterized maps of every draw, and ``tables["catalogue"]`` (:func:`catalogue_dataset`)
    and ``frames["catalogue"]`` (:func:`source_table`).  ``spec`` and ``operator`` are not
    used: the catalogue is its own model, with F3's physics.  Where the gain is latent the
    spectrum is divided by its unit scale first, as for the generative pixel fits."""
    problem, gain_sd, scale = resolve_gain(problem, gain)
    sigma = problem.sigma()
    result = fit_catalogue(problem, sigma, gain_sd, sources, seed, draws, chains, warmup, jobs)
    rho, larmor, noise = rasterized(result.model, result.chosen)
    fit = result.chosen
    draw_stats = {"diverging": fit.stats["diverging"]}
    if fit.gain is not None:
        draw_stats["gain"] = fit.gain
    stats = {"likelihood": "catalogue", "sources": fit.sources,
             "noise_sigma": float(sigma.mean()),
             "spectrum_divided_by": scale,
             "divergences": int(fit.stats["diverging"].sum()),
             "candidates": ", ".join(str(k) for k in sorted(result.candidates))}
    return PosteriorDraws(rho=rho, larmor=larmor, noise_map=noise, draw_stats=draw_stats,
                          stats=stats, history={}, wall_time_s=result.wall_time_s,
                          messages=result.messages,
                          tables={"catalogue": catalogue_dataset(result)},
                          frames={"catalogue": source_table(fit)})
