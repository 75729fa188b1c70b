"""Posteriors under the generative likelihood: Laplace, SVI and NUTS on one set of coordinates.

The model is :class:`~nvbayes.model.generative.GenerativeSpectrumModel` on the free pixel
grid.  All three methods work in the same unconstrained coordinates ``z`` and the same
whitening of them:

    z = (v, h, λ)      ρ = (s · softplus(v / s)) / g,   ω_L = ω_min + w σ(h),   g = e^λ

(λ only where the gain is latent; s = m / 5, a fifth of the prior mean, so that background
pixels and bright ones have comparable widths in v; ``ρ g`` is what the data see, so with v
carrying it the gain's ridge ``g ρ = const`` is a straight line along λ).  The energy is
``U(z) = −log p(ρ, ω_L, g, S_obs) − log |∂(ρ, ω_L, g)/∂z|``.

1. the mode ẑ of U by L-BFGS, from ρ at the prior mean and ω_L at each pixel's profile
   estimate (:func:`~nvbayes.inference.pixel_posterior.spectral_larmor`);
2. the exact Hessian H of U at ẑ, ``H = V diag(λ) Vᵀ``, and the whitening
   ``z = ẑ + T u``, ``T = V diag(λ^(-1/2)) Vᵀ`` (eigenvalues ≤ 0 floored at the smallest
   positive one), under which the Laplace posterior is ``u ~ N(0, I)``;
3. ``laplace``: u drawn from N(0, I); ``svi``: Pyro SVI of a full-rank Gaussian guide over u
   (:class:`pyro.infer.autoguide.AutoMultivariateNormal`, started at N(0, I)), which corrects
   the Laplace approximation where U is not quadratic (positivity, the flat ω_L of dim
   pixels); ``nuts``: Pyro's NUTS on ``U(ẑ + T u)`` with a diagonal mass matrix.

Every draw is mapped back through the transforms, so ρ ≥ 0 and ω_L stays in the band exactly;
nothing is clipped and no scale correction is applied: where the gain is known the data fix
ρ's scale, and where it is latent its uncertainty is part of the posterior.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as tnf
from pyro.distributions import constraints
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal
from pyro.infer.autoguide.initialization import init_to_value

from nvbayes.errors import NvbayesError, ParameterError
from nvbayes.model.generative import GenerativeSpectrumModel
from nvbayes.model.problem import InverseProblem

from .draws import PosteriorDraws
from .laplace import HessianGaussian
from .map import uniform_level
from .nuts import run_nuts
from .peaks import detect_peaks
from .pixel_posterior import NUTS_MAX_SIDE, exact_hessian, spectral_larmor

#: The methods that have a generative form.
GENERATIVE_METHODS = ("laplace", "svi", "nuts")
#: Likelihoods of the sampling methods: the generative one (default) and the noise-map one.
LIKELIHOODS = ("generative", "noise-map")
#: The gain's prior sd (log units) where it is latent; the modes of ``--gain``.
GAIN_SD = 0.5
GAIN_MODES = ("auto", "fixed", "latent")
#: ρ's priors (:class:`~nvbayes.model.generative.GenerativeSpectrumModel`).
RHO_PRIORS = ("exponential", "sparse")
SVI_STEPS = 1500
#: s / m, the softplus scale of ρ's coordinate over the prior mean.
_SOFTPLUS_FRACTION = 0.2


@dataclass(frozen=True)
class Priors:
    """The generative model's prior settings: ``rho_mean`` m (``None``: the energy-matched
    uniform level of the data), ``gain_sd`` (``None``: gain fixed at 1), whether ω_L is
    latent at ``"all"`` pixels or only where the noise map shows ``"signal"`` (above 3 σ of
    its own noise), and ρ's prior, ``"exponential"`` or ``"sparse"``
    (:class:`~nvbayes.model.generative.GenerativeSpectrumModel`) with its ``source_fraction``
    π (``None``: the peaks :func:`~nvbayes.inference.peaks.detect_peaks` counts, over the
    pixels)."""

    rho_mean: "float | None" = None
    gain_sd: "float | None" = None
    larmor: str = "all"
    rho_prior: str = "exponential"
    source_fraction: "float | None" = None

    def __post_init__(self):
        if self.rho_prior not in RHO_PRIORS:
            raise ParameterError(f"unknown rho prior {self.rho_prior!r}",
                                 f"use --rho-prior {' or '.join(RHO_PRIORS)}")
        if self.source_fraction is not None and not 0 < self.source_fraction < 1:
            raise ParameterError(f"source fraction {self.source_fraction}",
                                 "use a fraction of the pixels in (0, 1)")
        if self.rho_mean is not None and not self.rho_mean > 0:
            raise ParameterError(f"--rho-mean {self.rho_mean}", "use a prior mean > 0")
        if self.gain_sd is not None and not self.gain_sd > 0:
            raise ParameterError(f"gain sd {self.gain_sd}", "use a gain prior sd > 0")
        if self.larmor not in ("all", "signal"):
            raise ParameterError(f"larmor support {self.larmor!r}", "use all or signal")


class Coordinates:
    """The map ``z ↔ (ρ, ω_L values, g)`` of the module docstring and the energy ``U(z)``."""

    def __init__(self, model: GenerativeSpectrumModel):
        self.model = model
        self.n_rho = model.shape[0] * model.shape[1]
        self.k = model.n_larmor
        self.size = self.n_rho + self.k + (1 if model.gain_latent else 0)
        self.softness = _SOFTPLUS_FRACTION * model.rho_mean
        self.width = model.high - model.low

    def unpack(self, z: torch.Tensor) -> tuple:
        """``(ρ (..., ny, nx), ω values (..., k), g (...) or None, log|J| (...))``."""
        s, m = self.softness, self.model
        v = z[..., :self.n_rho]
        h = z[..., self.n_rho:self.n_rho + self.k]
        scaled = s * tnf.softplus(v / s)
        log_jac = tnf.logsigmoid(v / s).sum(-1)
        log_jac = log_jac + (np.log(self.width) + tnf.logsigmoid(h)
                             + tnf.logsigmoid(-h)).sum(-1)
        gain = None
        if m.gain_latent:
            log_g = z[..., -1]
            gain = torch.exp(log_g)
            scaled = scaled / gain[..., None]
            log_jac = log_jac - (self.n_rho - 1) * log_g
        rho = scaled.reshape(*z.shape[:-1], *m.shape)
        return rho, m.low + self.width * torch.sigmoid(h), gain, log_jac

    def pack(self, rho: torch.Tensor, larmor_values: torch.Tensor,
             gain: "float | None" = None) -> torch.Tensor:
        """The inverse of :meth:`unpack` (ρ floored at 1e-6 m, ω_L pulled 1e-6 w inside)."""
        s = self.softness
        g = 1.0 if gain is None else float(gain)
        a = (rho.reshape(-1) * g).clamp(min=1e-6 * self.model.rho_mean)
        v = a + s * torch.log(-torch.expm1(-a / s))          # softplus⁻¹(a/s)·s
        y = ((larmor_values - self.model.low) / self.width).clamp(1e-6, 1 - 1e-6)
        parts = [v, torch.log(y) - torch.log1p(-y)]
        if self.model.gain_latent:
            parts.append(torch.tensor([np.log(g)], dtype=v.dtype))
        return torch.cat(parts)

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        rho, larmor, gain, log_jac = self.unpack(z)
        return -(self.model.log_joint(rho, larmor, gain) + log_jac)


def resolve_gain(problem, gain: str = "auto") -> tuple:
    """``(problem, gain_sd, scale)`` for ``--gain``: ``fixed`` → ``gain_sd = None`` (g = 1),
    ``latent`` → :data:`GAIN_SD`; ``auto`` → fixed where the spectrum's scale is absolute
    (``problem.absolute``), latent where it is arbitrary.  With the gain latent the problem
    comes back divided by its unit scale (``scale``; else 1), so that the gain's prior,
    centred at 1, and the result do not depend on the unit the spectrum is written in."""
    if gain not in GAIN_MODES:
        raise ParameterError(f"unknown gain mode {gain!r}", f"use --gain {'|'.join(GAIN_MODES)}")
    if gain == "auto":
        gain = "fixed" if problem.absolute else "latent"
    if gain == "fixed":
        return problem, None, 1.0
    scale = float(problem.unit_scale())
    return problem.rescaled(scale), GAIN_SD, scale


def signal_mask(problem: InverseProblem, sigma: torch.Tensor, threshold: float = 3.0
                ) -> torch.Tensor:
    """Pixels whose noise map ``N = Σ_ω S`` exceeds ``threshold`` times its noise
    ``σ √n_freq``: where the spectrum can tell ω_L at all."""
    observed = problem.observed(dtype=torch.float64)
    return observed.sum(-3) > threshold * sigma * observed.shape[-3] ** 0.5


def generative_model(problem: InverseProblem, operator: str, priors: Priors,
                     sigma: "torch.Tensor | None" = None) -> GenerativeSpectrumModel:
    """The generative model of ``problem`` (σ from the problem unless given)."""
    sigma = problem.sigma() if sigma is None else sigma
    mask = signal_mask(problem, sigma) if priors.larmor == "signal" else None
    rho_mean = priors.rho_mean if priors.rho_mean is not None else uniform_level(problem,
                                                                                 operator)
    fill = spectral_larmor(problem)
    fraction = None
    if priors.rho_prior == "sparse":
        fraction = priors.source_fraction
        if fraction is None:
            peaks = len(detect_peaks(problem, float(torch.as_tensor(sigma).median()),
                                     larmor=fill))
            fraction = max(peaks, 1) / (problem.shape[0] * problem.shape[1])
    return GenerativeSpectrumModel(problem.operator(operator), problem.shape, sigma,
                                   problem.band, rho_mean, priors.gain_sd, mask, fill,
                                   problem.observed(dtype=torch.float64),
                                   source_fraction=fraction, pixel_mask=problem.pixel_mask())


@dataclass
class GenerativeDraws:
    """Draws ``(chain, draw, ...)`` of ρ, ω_L (maps), g (``None`` when fixed), with the
    fit's statistics."""

    rho: np.ndarray
    larmor: np.ndarray
    gain: "np.ndarray | None"
    lp: np.ndarray                   # log p(ρ, ω_L, g, S_obs) of each draw
    stats: dict
    diverging: "np.ndarray | None" = None


#: Above this many coordinates the mode is polished by more L-BFGS rounds, not Newton steps
#: (each Newton step is a Hessian and its eigen-decomposition).
NEWTON_MAX = 1500


def find_mode(coords: Coordinates, start: torch.Tensor, lbfgs_steps: int = 300,
              newton_steps: int = 50) -> torch.Tensor:
    """ẑ, the minimum of U: L-BFGS (strong Wolfe) from ``start``, then damped Newton steps
    with the exact Hessian (eigenvalues floored at 1e-8 of the largest, step halved until U
    falls) until the Newton decrement ``½ gᵀ H⁻¹ g`` is below 1e-10.

    U is ill-conditioned (κ ~ 10⁵: the power kernel smooths ρ), which L-BFGS crosses slowly;
    near the mode Newton's quadratic convergence finishes in a few steps.  Above
    :data:`NEWTON_MAX` coordinates, L-BFGS rounds run until one changes U by < 1e-10 of it."""
    large = coords.size > NEWTON_MAX
    if large:
        lbfgs_steps, newton_steps = 20 * lbfgs_steps, 0
    z = start.detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([z], lr=1.0, max_iter=lbfgs_steps, tolerance_grad=1e-10,
                                  tolerance_change=1e-14, history_size=50,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        value = coords.energy(z)
        value.backward()
        return value

    value = float(optimizer.step(closure).detach())
    for _ in range(20 if large else 0):
        previous, value = value, float(optimizer.step(closure).detach())
        if not np.isfinite(value) or abs(previous - value) <= 1e-10 * abs(value):
            break
    z = z.detach()
    value = float(coords.energy(z))
    for _ in range(newton_steps):
        if not np.isfinite(value):
            break
        x = z.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(coords.energy(x), x)
        eigenvalues, modes = torch.linalg.eigh(exact_hessian(coords.energy, z))
        curvature = eigenvalues.clamp(min=1e-8 * float(eigenvalues.abs().max()))
        step = -modes @ ((modes.T @ grad) / curvature)
        if 0.5 * float(-(grad @ step)) < 1e-10:
            break
        for _ in range(30):
            trial = z + step
            trial_value = float(coords.energy(trial))
            if trial_value <= value:
                z, value = trial, trial_value
                break
            step = 0.5 * step
        else:
            break
    if not np.isfinite(value):
        raise NvbayesError("the posterior mode search diverged (non-finite energy)",
                           "check the measurement for NaN or extreme values")
    return z


def whitening(coords: Coordinates, mode: torch.Tensor) -> tuple[torch.Tensor, HessianGaussian]:
    """``T = V diag(λ^(-1/2)) Vᵀ``, the symmetric inverse square root of the exact Hessian of U
    at the mode, and its Gaussian.  (Any ``V diag(λ^(-1/2)) Q`` with Q orthogonal whitens;
    the symmetric one is unique, so the same u gives the same z however the eigensolver
    picks the vectors of (nearly) equal eigenvalues.)"""
    gaussian = HessianGaussian.of(exact_hessian(coords.energy, mode))
    floor = gaussian.eigenvalues[gaussian.eigenvalues > 0].min()
    curvature = torch.where(gaussian.eigenvalues > 0, gaussian.eigenvalues, floor)
    return (gaussian.modes * curvature.rsqrt()) @ gaussian.modes.T, gaussian


@dataclass
class Whitened:
    """The mode ẑ of U and its whitening ``z = ẑ + T u`` (``mode`` ``(d,)``, ``transform``
    ``(d, d)``), with the statistics of finding them."""

    mode: torch.Tensor
    transform: torch.Tensor
    stats: dict

    @classmethod
    def find(cls, coords, start: torch.Tensor) -> "Whitened":
        """ẑ by :func:`find_mode` from ``start``, and T by :func:`whitening`."""
        t0 = time.perf_counter()
        mode = find_mode(coords, start)
        transform, gaussian = whitening(coords, mode)
        return cls(mode, transform, {"condition_number": gaussian.condition_number,
                                     "nonpositive_eigenvalues": gaussian.nonpositive,
                                     "mode_time_s": time.perf_counter() - t0})

    def to_z(self, u: torch.Tensor) -> torch.Tensor:
        """``ẑ + T u`` for u ``(..., d)``."""
        return self.mode + u @ self.transform.T


def whitened_nuts(coords, whitened: Whitened, seed: int = 0, chains: int = 2,
                  warmup: int = 300, draws: int = 200, max_tree_depth: int = 10,
                  first_chain: int = 0, show: "bool | None" = None):
    """Pyro NUTS on ``U(ẑ + T u)`` (diagonal mass matrix), from u ~ N(0, 0.1² I) per chain:
    the :class:`~nvbayes.inference.nuts.McmcResult` of u (``first_chain`` and ``show`` as in
    :func:`~nvbayes.inference.nuts.run_nuts`)."""
    return run_nuts(None, potential_fn=lambda p: coords.energy(whitened.to_z(p["u"])),
                    chains=chains, warmup=warmup, draws=draws, seed=seed, full_mass=False,
                    max_tree_depth=max_tree_depth, first_chain=first_chain, show=show,
                    initial_values=lambda g: {"u": 0.1 * torch.randn(
                        coords.size, generator=g, dtype=torch.float64)})


def whitened_draws(coords, start: torch.Tensor, method: str, seed: int = 0,
                   draws: int = 200, chains: int = 2, warmup: int = 300,
                   svi_steps: int = SVI_STEPS, max_tree_depth: int = 10
                   ) -> tuple[torch.Tensor, dict, "np.ndarray | None"]:
    """The engine of every posterior here: the mode of ``coords.energy`` from ``start``, its
    whitening, then ``method``'s draws of z, ``(chain, draw, size)``; with the fit's
    statistics and NUTS's divergence flags (``None`` for the others)."""
    if method not in GENERATIVE_METHODS:
        raise ParameterError(f"unknown method {method!r}",
                             f"use one of {', '.join(GENERATIVE_METHODS)}")
    whitened = Whitened.find(coords, start)
    stats = dict(whitened.stats)
    diverging = None
    if method == "laplace":
        generator = torch.Generator().manual_seed(seed)
        u = torch.randn(1, draws, coords.size, generator=generator, dtype=torch.float64)
    elif method == "svi":
        u, stats["final_elbo"] = _svi(coords, whitened.to_z, seed, draws, svi_steps)
    else:
        result = whitened_nuts(coords, whitened, seed, chains, warmup, draws, max_tree_depth)
        u = torch.as_tensor(result.samples["u"])
        diverging = result.diverging
        stats |= {"chains": chains, "warmup": warmup,
                  "divergences": int(result.diverging.sum()),
                  "mean_step_size": float(np.mean(result.step_size))}
    with torch.no_grad():
        return whitened.to_z(u), stats, diverging


def sample_generative(model: GenerativeSpectrumModel, method: str, seed: int = 0,
                      draws: int = 200, chains: int = 2, warmup: int = 300,
                      start_larmor: "torch.Tensor | None" = None,
                      svi_steps: int = SVI_STEPS) -> GenerativeDraws:
    """Draw from the posterior of ``model`` (its ``observed`` set) by ``method``."""
    t0 = time.perf_counter()
    coords = Coordinates(model)
    larmor0 = (model.larmor_fill.reshape(-1)[model.larmor_index] if start_larmor is None
               else start_larmor)
    rho0 = torch.full(model.shape, model.rho_mean, dtype=torch.float64)
    start = coords.pack(rho0, larmor0, 1.0 if model.gain_latent else None)
    z, stats, diverging = whitened_draws(coords, start, method, seed, draws, chains, warmup,
                                         svi_steps)
    stats |= {"likelihood": "generative", "rho_mean": model.rho_mean,
              "latent_larmor_pixels": model.n_larmor,
              "gain_sd": model.gain_sd if model.gain_latent else 0.0,
              "rho_prior": "sparse" if model.sparse else "exponential",
              "source_fraction": model.source_fraction or 0.0}
    with torch.no_grad():
        rho, larmor, gain, _ = coords.unpack(z)
        larmor_map = model.larmor_map(larmor)
        flat = [t.reshape(-1, *t.shape[2:]) for t in (rho, larmor)]
        gains = gain.reshape(-1) if gain is not None else [None] * flat[0].shape[0]
        lp = torch.stack([model.log_joint(r, w, g) for r, w, g in
                          zip(*flat, gains, strict=True)])
    stats["wall_time_s"] = time.perf_counter() - t0
    return GenerativeDraws(rho=rho.numpy(), larmor=larmor_map.numpy(),
                           gain=None if gain is None else gain.numpy(),
                           lp=lp.reshape(rho.shape[:2]).numpy(), stats=stats,
                           diverging=diverging)


def _svi(coords: Coordinates, to_z, seed: int, draws: int, steps: int):
    """A full-rank Gaussian guide over the whitened u, fitted by SVI; ``(1, draws, d)``."""
    size = coords.size

    def model():
        u = pyro.sample("u", dist.ImproperUniform(constraints.real, (), (size,)))
        pyro.factor("energy", -coords.energy(to_z(u)))

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    zero = torch.zeros(size, dtype=torch.float64)
    guide = AutoMultivariateNormal(model, init_loc_fn=init_to_value(values={"u": zero}),
                                   init_scale=1.0)
    optim = pyro.optim.ClippedAdam({"lr": 0.01, "lrd": 0.1 ** (1 / steps)})
    svi = SVI(model, guide, optim, Trace_ELBO(num_particles=1))
    loss = float("nan")
    for _ in range(steps):
        loss = svi.step()
    if not np.isfinite(loss):
        raise NvbayesError("SVI diverged (non-finite ELBO)", "use --method laplace or nuts")
    with torch.no_grad():
        u = guide.get_posterior().sample((draws,))
    return u.reshape(1, draws, size), -float(loss)


def fit_generative(problem: InverseProblem, method: str, operator: str = "F2", seed: int = 0,
                   draws: int = 200, chains: int = 2, warmup: int = 300,
                   priors: Priors = Priors()) -> PosteriorDraws:
    """One measurement's posterior under the generative likelihood, as the fit workflow's
    :class:`~nvbayes.inference.draws.PosteriorDraws` (``draw_stats`` holds the gain where it
    is latent, and NUTS's divergences)."""
    if method == "nuts" and max(problem.shape) > NUTS_MAX_SIDE:
        raise ParameterError(f"NUTS samples the free grid up to {NUTS_MAX_SIDE}x"
                             f"{NUTS_MAX_SIDE} pixels, this measurement is "
                             f"{problem.shape[0]}x{problem.shape[1]}",
                             "use --method svi or laplace, or a smaller grid")
    start = time.perf_counter()
    model = generative_model(problem, operator, priors)
    result = sample_generative(model, method, seed=seed, draws=draws, chains=chains,
                               warmup=warmup)
    rho = torch.as_tensor(result.rho)
    gain = 1.0 if result.gain is None else torch.as_tensor(result.gain)
    with torch.no_grad():
        flat_rho = rho.reshape(-1, *rho.shape[-2:])
        flat_larmor = torch.as_tensor(result.larmor).reshape(flat_rho.shape)
        noise = torch.stack([model.operator(r, w).sum(-3) for r, w in
                             zip(flat_rho, flat_larmor, strict=True)]).reshape(rho.shape)
        noise = (torch.as_tensor(gain)[..., None, None] * noise).numpy()
    draw_stats = {"lp": result.lp}
    if result.gain is not None:
        draw_stats["gain"] = result.gain
    if result.diverging is not None:
        draw_stats["diverging"] = result.diverging
    stats = result.stats | {"noise_sigma": float(torch.as_tensor(model.sigma).mean())}
    return PosteriorDraws(rho=result.rho, larmor=result.larmor, noise_map=noise,
                          draw_stats=draw_stats, stats=stats, history={},
                          wall_time_s=time.perf_counter() - start)


__all__ = ["Coordinates", "GAIN_MODES", "GAIN_SD", "GENERATIVE_METHODS", "GenerativeDraws",
           "LIKELIHOODS", "Priors", "RHO_PRIORS", "find_mode", "fit_generative", "generative_model",
           "Whitened", "resolve_gain", "sample_generative", "signal_mask", "whitened_draws",
           "whitened_nuts", "whitening"]
