"""The source catalogue fit (``nvbayes fit --method catalogue``): K point sources by NUTS, K
chosen by PSIS-LOO.

1. **Peaks of a MAP fit.**  The non-negative least-squares MAP of the noise map under F2 with
   ω_L at each pixel's spectral estimate, ``N_obs(r) ≈ c(r) (P ∗ ρ)(r)``, ``c(r) = Σ_ω L(ω;
   ω̂(r))`` (FISTA, ρ ≥ 0), and its local maxima (3 × 3) whose 3 × 3 mass exceeds
   :data:`DETECTION_SNR` times the amplitude noise of a lone source.  Each peak gives a start:
   the 3 × 3 centroid (nm), the 3 × 3 mass, ω̂ at the peak.  (The NNLS deconvolution
   amplifies the noise and a maximum over the window selects its largest excursions, so the
   threshold is also at least :data:`NOISE_PEAK_FACTOR` times the median mass of the local
   maxima, most of which are noise.)  K₀ = the number of peaks (or
   ``sources`` when given).
2. **Each K of K₀ − 1, K₀, K₀ + 1**: the :class:`~nvbayes.model.catalogue.PointSourceModel`
   in unconstrained coordinates (logit position in the window, log of ``b = a g``, logit ω in
   the band, log g), its mode and whitening, and NUTS on the whitened potential
   (:func:`~nvbayes.inference.generative.whitened_draws`).  K₀ − 1 starts without the faintest
   peak; K₀ + 1 adds a source where the K₀ fit leaves the largest noise-map residual.
3. **PSIS-LOO** over pixels (each pixel's Σ_ω log-likelihood is one point) by
   :func:`arviz.compare`; the catalogue is the smallest K whose expected log predictive
   density is within both :data:`LOO_SE_RULE` standard errors of the difference (``dse``)
   and :data:`LOO_NATS` of the best one.  A source the data do not ask for changes the elpd by
   a nat or two and its position then wanders over the window; a missing source costs
   thousands of nats, but concentrated on a few pixels, so that its ``dse`` (√n times the
   spread of the pointwise differences) is as large as the difference itself: hence both
   bounds.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as tnf
import xarray as xr

from nvbayes.errors import NvbayesError, ParameterError
from nvbayes.model.catalogue import PointSourceModel
from nvbayes.model.problem import InverseProblem

from .draws import PosteriorDraws
from .generative import resolve_gain, whitened_draws
from .map import uniform_level
from .pixel_posterior import spectral_larmor

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

#: A peak is a source when its 3 × 3 mass exceeds this many amplitude noise sds.
DETECTION_SNR = 5.0
NOISE_PEAK_FACTOR = 10.0
#: K is the smallest candidate with elpd_diff ≤ this many dse of the best, and ≤ LOO_NATS.
LOO_SE_RULE = 2.0
LOO_NATS = 4.0
#: NUTS's tree depth for the catalogue (a superfluous source has flat directions).
MAX_TREE_DEPTH = 8
#: Most sources a catalogue starts with.
MAX_SOURCES = 24
FISTA_STEPS = 400
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


# ---- 1. peaks of a MAP fit -------------------------------------------------------------------

def nnls_density(problem: InverseProblem, larmor: torch.Tensor,
                 steps: int = FISTA_STEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-negative least-squares fit of the noise map, ``argmin_{ρ ≥ 0} ‖c (P ∗ ρ) −
    N_obs‖²`` by FISTA; returns ρ̂ ``(n, n)`` and ``‖A e‖`` of a unit source at the centre."""
    operator = problem.operator("F2")
    observed = problem.observed(dtype=torch.float64).sum(-3)
    weight = operator(torch.ones_like(larmor), larmor).sum(-3) / operator.source_power(
        torch.ones_like(larmor))

    def forward(rho):
        return weight * operator.source_power(rho)

    vector = torch.ones_like(larmor)
    for _ in range(30):                              # power iteration for ‖A‖² (A = Aᵀ-ish)
        vector = _adjoint(forward, forward(vector), larmor)
        vector = vector / vector.norm()
    lipschitz = float(_adjoint(forward, forward(vector), larmor).norm()) * 1.1
    rho = previous = torch.zeros_like(larmor)
    for step in range(steps):
        point = rho + (step - 1) / (step + 2) * (rho - previous) if step else rho
        gradient = _adjoint(forward, forward(point) - observed, larmor)
        previous, rho = rho, (point - gradient / lipschitz).clamp(min=0.0)
    unit = torch.zeros_like(larmor)
    unit[problem.n // 2, problem.n // 2] = 1.0
    return rho, forward(unit).norm()


def _adjoint(forward, residual: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``Aᵀ r`` by autograd of the linear map ``forward``."""
    x = torch.zeros_like(like, requires_grad=True)
    (grad,) = torch.autograd.grad(forward(x), x, grad_outputs=residual)
    return grad


def detect_peaks(problem: InverseProblem, sigma: float,
                 snr: float = DETECTION_SNR) -> list[tuple[float, float, float, float]]:
    """Starts ``(x_nm, y_nm, amplitude, larmor_ghz)`` of the peaks of the NNLS MAP, brightest
    first (module docstring)."""
    larmor = spectral_larmor(problem)
    rho, unit_norm = nnls_density(problem, larmor)
    noise = sigma * problem.freqs.size ** 0.5 / float(unit_norm)
    padded = tnf.pad(rho[None, None], (1, 1, 1, 1))
    local_max = tnf.max_pool2d(padded, 3, stride=1)[0, 0]
    mass = tnf.avg_pool2d(padded, 3, stride=1)[0, 0] * 9
    peaks = (rho >= local_max) & (rho > 0)
    threshold = max(snr * noise, NOISE_PEAK_FACTOR * float(mass[peaks].median()))
    candidates = torch.nonzero(peaks & (mass > threshold))
    starts = []
    coords = np.arange(problem.n) * problem.spacing
    for iy, ix in candidates.tolist():
        ys, xs = slice(max(iy - 1, 0), iy + 2), slice(max(ix - 1, 0), ix + 2)
        patch = rho[ys, xs].numpy()
        gx, gy = np.meshgrid(coords[xs], coords[ys])
        total = patch.sum()
        starts.append((float((patch * gx).sum() / total), float((patch * gy).sum() / total),
                       float(total), float(larmor[iy, ix])))
    starts.sort(key=lambda s: -s[2])
    return starts[:MAX_SOURCES]


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

    def mean_start(self) -> list[tuple[float, float, float, float]]:
        means = [self.params[p].mean((0, 1)) for p in PARAMETERS]
        return [tuple(float(m[k]) for m in means) for k in range(self.sources)]


@dataclass
class CatalogueResult:
    """The chosen fit, every candidate's fit and the LOO comparison."""

    chosen: CatalogueFit
    candidates: dict
    comparison: pd.DataFrame
    model: PointSourceModel
    wall_time_s: float
    messages: list = field(default_factory=list)


def fit_sources(model: PointSourceModel, starts: list, seed: int, draws: int, chains: int,
                warmup: int) -> CatalogueFit:
    """NUTS on the whitened potential of ``model`` (K = ``len(starts)``) from ``starts``."""
    model = model.with_sources(len(starts))
    coords = CatalogueCoordinates(model)
    x, y, a, w = (torch.tensor(v, dtype=torch.float64) for v in zip(*starts, strict=True))
    start = coords.pack(x, y, a, w, 1.0 if model.gain_latent else None)
    z, stats, diverging = whitened_draws(coords, start, "nuts", seed, draws, chains, warmup,
                                         max_tree_depth=MAX_TREE_DEPTH)
    with torch.no_grad():
        x, y, a, w, gain, _ = coords.unpack(z)
        g = gain if gain is not None else 1.0
        loglik = torch.stack([model.pointwise_log_likelihood(*v, gi).reshape(-1) for *v, gi in
                              zip(x.reshape(-1, x.shape[-1]), y.reshape(-1, x.shape[-1]),
                                  a.reshape(-1, x.shape[-1]), w.reshape(-1, x.shape[-1]),
                                  (g.reshape(-1) if gain is not None
                                   else [1.0] * x.shape[0] * x.shape[1]), strict=True)])
    stats["diverging"] = diverging
    params = dict(zip(PARAMETERS, (v.numpy() for v in (x, y, a, w)), strict=True))
    return CatalogueFit(len(starts), params, None if gain is None else gain.numpy(),
                        loglik.reshape(*x.shape[:2], -1).numpy(), stats)


def _residual_peak(model: PointSourceModel, fit: CatalogueFit, larmor: torch.Tensor,
                   spacing: float) -> tuple[float, float, float, float]:
    """A new source's start where the fit's mean leaves the largest noise-map residual."""
    means = [torch.as_tensor(fit.params[p].mean((0, 1))) for p in PARAMETERS]
    gain = 1.0 if fit.gain is None else float(fit.gain.mean())
    with torch.no_grad():
        residual = (model.observed - model.with_sources(fit.sources).mean(*means, gain)).sum(-3)
    iy, ix = np.unravel_index(int(residual.argmax()), residual.shape)
    unit = model.with_sources(1).mean(torch.tensor([ix * spacing]), torch.tensor([iy * spacing]),
                                      torch.ones(1, dtype=torch.float64),
                                      larmor[iy, ix].reshape(1)).sum(-3)
    amplitude = max(float(residual[iy, ix] / unit[iy, ix]), 1e-3 * model.amplitude_mean)
    return ix * spacing, iy * spacing, amplitude / gain, float(larmor[iy, ix])


def fit_catalogue(problem: InverseProblem, sigma, gain_sd: "float | None" = None,
                  sources: "int | None" = None, seed: int = 0, draws: int = 200,
                  chains: int = 2, warmup: int = 200) -> CatalogueResult:
    """The catalogue of one measurement (module docstring); ``sigma`` a number or a
    per-pixel map ``(n, n)``."""
    if sources is not None and sources < 1:
        raise ParameterError(f"--sources {sources}", "use 1 or more sources, or leave it out "
                                                     "to count the peaks")
    start_time = time.perf_counter()
    starts = detect_peaks(problem, float(torch.as_tensor(sigma).median()))
    messages = []
    if not starts:
        raise NvbayesError("no source stands out of the noise in this measurement",
                           "check the spectrum, or give --sources K to fit K sources anyway")
    if sources is not None:
        while len(starts) < sources:
            starts.append(starts[-1])
        starts = starts[:sources]
    level = uniform_level(problem)
    amplitude_mean = level * problem.n ** 2 / len(starts)
    model = PointSourceModel(problem.freqs, problem.linewidth, problem.spacing,
                             problem.standoff, (problem.n, problem.n), sigma, problem.band,
                             len(starts), amplitude_mean, gain_sd,
                             problem.observed(dtype=torch.float64), units=problem.units)
    larmor = spectral_larmor(problem)
    fits = {len(starts): fit_sources(model, starts, seed, draws, chains, warmup)}
    if len(starts) > 1:
        fits[len(starts) - 1] = fit_sources(model, starts[:-1], seed, draws, chains, warmup)
    base = fits[len(starts)]
    extra = _residual_peak(model, base, larmor, problem.spacing)
    fits[len(starts) + 1] = fit_sources(model, base.mean_start() + [extra], seed, draws,
                                        chains, warmup)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        comparison = az.compare({f"K={k}": f.idata() for k, f in sorted(fits.items())},
                                ic="loo")
    best = choose_sources(comparison)
    if comparison.get("warning") is not None and bool(comparison["warning"].any()):
        messages.append("PSIS-LOO: some Pareto k above 0.7; the comparison is approximate")
    return CatalogueResult(fits[best], fits, comparison, model.with_sources(best),
                           time.perf_counter() - start_time, messages)


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
            one = model.with_sources(x.shape[-1])
            noise.append(torch.stack([g * one.mean(*v).sum(-3) for *v, g in zip(
                x[c], y[c], a[c], w[c], gain[c], strict=True)]))
    return (rho.reshape(*x.shape[:2], ny, nx).numpy(), torch.stack(larmor).numpy(),
            torch.stack(noise).numpy())


__all__ = ["CatalogueCoordinates", "CatalogueFit", "CatalogueResult", "DETECTION_SNR",
           "PARAMETERS", "catalogue_dataset", "choose_sources", "detect_peaks", "fit_catalogue",
           "fit_catalogue_draws", "fit_sources",
           "nnls_density", "rasterized", "source_table"]


def fit_catalogue_draws(problem: InverseProblem, spec=None, operator: str = "F2",
                        seed: int = 0, draws: int = 200, chains: int = 2, warmup: int = 200,
                        gain: str = "auto", sources: "int | None" = None) -> PosteriorDraws:
    """The catalogue as the fit workflow's :class:`~nvbayes.inference.draws.PosteriorDraws`:
    the rasterized maps of every draw, and ``tables["catalogue"]`` (:func:`catalogue_dataset`)
    and ``frames["catalogue"]`` (:func:`source_table`).  ``spec`` and ``operator`` are not
    used: the catalogue is its own model, with F3's physics.  Where the gain is latent the
    spectrum is divided by its unit scale first, as for the generative pixel fits."""
    problem, gain_sd, scale = resolve_gain(problem, gain)
    sigma = problem.sigma()
    result = fit_catalogue(problem, sigma, gain_sd, sources, seed, draws, chains, warmup)
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
