"""The posterior of the pixel density ρ for a fixed Larmor field, and its Laplace approximation.

Laplace and NUTS judge the density on a free pixel grid, ρ ∈ ℝ₊^(n×n), under the calibrated
likelihood (:class:`~nvbayes.model.NoiseSpectrumModel` with ``noise_sigma``) and the prior terms
of the specification's last stage, with ω_L held at a given map::

    U(ρ) = −log p(ρ | ω_L, S_obs) + const

:func:`negative_log_posterior` builds ``U`` from the Pyro model (the model conditioned on ρ and
ω_L, minus its log joint).  :func:`exact_hessian` differentiates it twice with autograd (a
batched Hessian-vector product per block of unit vectors).

Gauge: the noise-map likelihood is blind to the scale of ρ; the calibrated model's
total-power observation fixes it, so ``U`` has curvature in every direction and its draws sit
on the energy gauge up to the noise of the total power (:mod:`.draws` then removes that
remainder draw by draw).
"""

from __future__ import annotations

import time

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.distributions.transforms import SoftplusTransform
from torch.distributions.transforms import AffineTransform, ComposeTransform

from nvbayes.data.spec import ModelSpec
from nvbayes.errors import ParameterError
from nvbayes.model.netmy import NoiseSpectrumModel
from nvbayes.model.problem import InverseProblem
from nvbayes.physics.kernels import power_kernel_closed_form
from nvbayes.physics.lorentzian import lorentzian
from nvbayes.physics.noise_map import sensor_noise_sigma

from .draws import PosteriorDraws, gauge_fixed
from .laplace import HessianGaussian
from .map import fit_map, uniform_level
from .nuts import run_nuts
from .objective import stage_log_eps

#: Unit vectors per batched Hessian-vector product.
HVP_BLOCK = 256


def calibrated_sigma(problem: InverseProblem) -> "float | torch.Tensor":
    """The measurement's own σ map ``(ny, nx)`` where it records one; else the sensor noise σ
    estimated from the spectrum, floored at 1e-6 of its range."""
    if problem.sigma_map:
        return problem.sigma()
    sigma = float(sensor_noise_sigma(problem.observed(dtype=torch.float64),
                                     problem.pixel_mask(), torch.tensor(problem.freqs)))
    return max(sigma, 1e-6 * float(problem.spectrum.max() - problem.spectrum.min()))


def pixel_model(problem: InverseProblem, spec: ModelSpec, operator: str, larmor: torch.Tensor,
                noise_sigma: float) -> "callable":
    """The Pyro model of ρ alone: the last stage's calibrated model with ``larmor`` observed."""
    stage = spec.stages[-1]
    model = NoiseSpectrumModel(problem.operator(operator),
                               problem.observed(dtype=larmor.dtype, device=larmor.device),
                               stage.weights, stage_log_eps(spec, problem),
                               noise_sigma=noise_sigma, reduction=spec.reduction,
                               mask=problem.pixel_mask(device=larmor.device))
    return poutine.condition(model, data={"larmor": larmor})


def negative_log_posterior(model) -> "callable":
    """``U(ρ) = −log p(ρ, S_obs)`` of a :func:`pixel_model`, for ``ρ`` of shape ``(n, n)``."""
    def energy(rho: torch.Tensor) -> torch.Tensor:
        with pyro.validation_enabled(False):
            trace = poutine.trace(poutine.condition(model, data={"rho": rho})).get_trace()
        return -trace.log_prob_sum()
    return energy


def exact_hessian(energy, rho: torch.Tensor, block: int = HVP_BLOCK) -> torch.Tensor:
    """``∂²U/∂ρ∂ρ`` at ``rho`` ``(n, n)`` as an ``(n², n²)`` matrix, symmetrized.

    One gradient with its graph, then Hessian-vector products against blocks of unit vectors
    (``is_grads_batched``), so the cost is about ``n² / block`` batched backward passes.
    """
    x = rho.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(x), x, create_graph=True)
    size = x.numel()
    eye = torch.eye(size, dtype=x.dtype, device=x.device)
    rows = []
    for lo in range(0, size, block):
        vectors = eye[lo: lo + block].reshape(-1, *x.shape)
        (hv,) = torch.autograd.grad(grad, x, grad_outputs=vectors, retain_graph=True,
                                    is_grads_batched=True)
        rows.append(hv.reshape(len(vectors), size))
    hessian = torch.cat(rows).detach()
    return 0.5 * (hessian + hessian.T)


def spatial_frequency(modes: torch.Tensor, spacing: float) -> np.ndarray:
    """The power-weighted mean |k| (rad/nm) of each mode ``(n², m)`` seen as an n × n image."""
    n = int(round(modes.shape[0] ** 0.5))
    images = modes.T.reshape(-1, n, n)
    power = torch.fft.fft2(images).abs() ** 2
    k = 2 * np.pi * torch.fft.fftfreq(n, d=spacing, dtype=modes.dtype)
    kk = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
    return ((power * kk).sum((-2, -1)) / power.sum((-2, -1))).cpu().numpy()


def sampled_transfer(n: int, spacing: float, standoff: float, k: np.ndarray) -> np.ndarray:
    """``|P̂_d(k)|² / |P̂_d(0)|²`` along the x axis: the squared transfer function of the power
    kernel sampled on the window's pixel offsets (``(2n − 1)²`` of them), for wavenumbers
    ``k`` (rad/nm).

    F2's Gauss–Newton Hessian is ``Aᵀ A`` for a convolution A with this kernel, so away from
    the window's edges its eigenvalues follow this curve.  Appendix C.1's continuum envelope
    ``e^(−2 k z0)`` is what it becomes when the pixels are much finer than z0; at
    ``dx ≈ z0`` the sampled kernel aliases and falls more slowly.
    """
    offsets = np.arange(-(n - 1), n) * spacing
    dx, dy = np.meshgrid(offsets, offsets)
    kernel = power_kernel_closed_form(torch.as_tensor(dx), torch.as_tensor(dy),
                                      standoff).numpy()
    phases = np.exp(-1j * np.outer(k, offsets))                  # (k, offsets along x)
    transfer = np.abs(phases @ kernel.sum(axis=0)) ** 2
    return transfer / transfer[np.argmin(np.abs(k))]


def spectral_larmor(problem: InverseProblem, candidates: int = 401) -> torch.Tensor:
    """Per-pixel ω_L (GHz) from the spectrum's shape alone, ``(n, n)``.

    Under F1 and F2 the spectrum at a readout pixel is ``A(r) L(ω; ω_L(r))``; for each
    candidate centre c in the band the best amplitude is a least-squares fit, and the centre
    with the smallest residual, i.e. the largest ``(S·L_c)² / |L_c|²`` with ``S·L_c > 0``, is
    the profile-likelihood estimate under white noise.
    """
    freqs = torch.tensor(problem.freqs, dtype=torch.float64)
    centres = torch.linspace(problem.band[0], problem.band[1], candidates, dtype=torch.float64)
    templates = lorentzian(freqs, centres[:, None, None], problem.linewidth)[..., 0, 0]
    templates = templates / templates.norm(dim=1, keepdim=True)
    spectrum = torch.as_tensor(problem.spectrum, dtype=torch.float64)
    projections = templates @ spectrum.reshape(spectrum.shape[0], -1)
    score = torch.where(projections > 0, projections ** 2, torch.zeros_like(projections))
    return centres[score.argmax(0)].reshape(spectrum.shape[-2:])




def softplus_scaled(scale: float):
    """``v ↦ ρ = s · softplus(v / s)``: the identity for ρ ≫ s, ``s e^(v/s)`` near 0.

    HMC's coordinates for ρ ≥ 0.  Pyro's default, ``ρ = e^v``, stretches the background
    pixels (ρ near 0, a posterior width set by the noise) over several units of v while the
    bright ones get widths of 10⁻³: one step size cannot serve both.  With s near the
    posterior width of a pixel the two look alike.
    """
    return ComposeTransform([AffineTransform(0.0, 1.0 / scale), SoftplusTransform(),
                             AffineTransform(0.0, scale)])


# ---- the fits ---------------------------------------------------------------------------------

#: Largest grid side NUTS samples (256 pixels).
NUTS_MAX_SIDE = 16


def fit_laplace(problem: InverseProblem, spec: ModelSpec, operator: str = "F2", seed: int = 0,
                device: str = "cpu", show: "bool | None" = None, draws: int = 200,
                precision: str = "fp32") -> PosteriorDraws:
    """The MAP of ``spec``, then the Laplace posterior of the pixel density there.

    At the scale-corrected MAP ρ̂ (ω_L held at the MAP's map), ``H = ∂²U/∂ρ²`` exactly, the
    precision of ``N(ρ̂, H⁻¹)``.  Its eigenvalues λ (ascending), the mean spatial frequency
    of each eigenvector and ``κ = λ_max / λ_min`` over the positive eigenvalues are returned
    in ``extra`` and ``stats``.  Eigenvalues ≤ 0 (a MAP of the neural field need not be a
    minimum of U on the free grid) carry no curvature: draws use the smallest positive
    eigenvalue there, and ``stats`` counts them.  Draws are clipped at ρ = 0 and gauge-fixed.
    """
    start = time.perf_counter()
    result = fit_map(problem, spec, operator, seed=seed, device=device, show=show,
                     precision=precision)
    rho = torch.as_tensor(result.rho, dtype=torch.float64)
    larmor = torch.as_tensor(result.larmor, dtype=torch.float64)
    sigma = calibrated_sigma(problem)
    t0 = time.perf_counter()
    energy = negative_log_posterior(pixel_model(problem, spec, operator, larmor, sigma))
    block = max(16, HVP_BLOCK * 1024 // rho.numel())
    gaussian = HessianGaussian.of(exact_hessian(energy, rho, block=block))
    hessian_time = time.perf_counter() - t0
    generator = torch.Generator().manual_seed(seed)
    rho_draws = gaussian.draws(rho, draws, generator).clamp(min=0.0).unsqueeze(0)
    larmor_draws = larmor.expand(1, draws, *larmor.shape)
    rho_d, larmor_d, nmap, alpha = gauge_fixed(problem, operator, rho_draws, larmor_draws)
    stats = dict(result.stats) | {
        "noise_sigma": float(torch.as_tensor(sigma).mean()),
        "condition_number": gaussian.condition_number,
        "nonpositive_eigenvalues": gaussian.nonpositive,
        "map_time_s": result.wall_time_s, "hessian_time_s": hessian_time}
    extra = {"eigenvalue": gaussian.eigenvalues.cpu().numpy(),
             "spatial_frequency": spatial_frequency(gaussian.modes, problem.spacing)}
    return PosteriorDraws(rho=rho_d, larmor=larmor_d, noise_map=nmap,
                          draw_stats={"scale_correction": alpha}, stats=stats,
                          history=result.history, wall_time_s=time.perf_counter() - start,
                          messages=list(result.messages), extra=extra)


def fit_nuts(problem: InverseProblem, spec: ModelSpec, operator: str = "F2", seed: int = 0,
             chains: int = 2, warmup: int = 300, draws: int = 300,
             target_accept: float = 0.8) -> PosteriorDraws:
    """NUTS on the free grid (side ≤ :data:`NUTS_MAX_SIDE`), the gold standard for SVI and
    Laplace.

    ρ is sampled under U with ω_L held at :func:`spectral_larmor` (the spectrum's own
    per-pixel Lorentzian centres), in the coordinates of :func:`softplus_scaled` at the
    energy-matched uniform density c; chains start at c times ``exp(u)``, u uniform in
    [−½, ½] per pixel, and use a dense mass matrix.  Draws are gauge-fixed; ``draw_stats``
    adds ``diverging``.
    """
    if max(problem.shape) > NUTS_MAX_SIDE:
        raise ParameterError(f"NUTS samples the free grid up to {NUTS_MAX_SIDE}x"
                             f"{NUTS_MAX_SIDE} pixels, this measurement is "
                             f"{problem.shape[0]}x{problem.shape[1]}",
                             "use --method svi or laplace, or a smaller grid")
    start = time.perf_counter()
    larmor = spectral_larmor(problem)
    sigma = calibrated_sigma(problem)
    model = pixel_model(problem, spec, operator, larmor, sigma)
    level = uniform_level(problem)
    shape = problem.shape

    def initial(generator):
        u = torch.rand(shape, generator=generator, dtype=torch.float64) - 0.5
        return {"rho": level * torch.exp(u)}

    result = run_nuts(model, chains=chains, warmup=warmup, draws=draws, seed=seed,
                      target_accept=target_accept, initial_values=initial,
                      max_plate_nesting=0, transforms={"rho": softplus_scaled(level)})
    rho = torch.as_tensor(result.samples["rho"])
    rho_d, larmor_d, nmap, alpha = gauge_fixed(problem, operator, rho,
                                               larmor.expand(*rho.shape))
    stats = {"noise_sigma": float(torch.as_tensor(sigma).mean()), "chains": chains,
             "warmup": warmup,
             "divergences": int(result.diverging.sum()),
             "mean_step_size": float(np.mean(result.step_size))}
    return PosteriorDraws(rho=rho_d, larmor=larmor_d, noise_map=nmap,
                          draw_stats={"scale_correction": alpha,
                                      "diverging": result.diverging},
                          stats=stats, history={}, wall_time_s=time.perf_counter() - start)


__all__ = ["NUTS_MAX_SIDE", "calibrated_sigma", "exact_hessian", "fit_laplace", "fit_nuts",
           "negative_log_posterior", "pixel_model", "sampled_transfer",
           "spatial_frequency", "spectral_larmor"]
