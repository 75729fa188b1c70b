"""The Gaussian-ansatz relaxometry model (paper §5.5, appendix E.8) as a Pyro model.

For NVs ``i = 1 … n`` at depths ``d_i`` under a spin density ``ρ(r) = A exp(−|r|²/2σg²)``
centred under each NV, the model is

    log10 A  ~ Uniform(a₀, a₁)                    (A in m⁻²)
    ln σg    ~ Uniform(ln s₀, ln s₁)              (σg in nm: a log-uniform scale prior)
    d_i      ~ Normal(μ_d, s_d) truncated to d > 0   (nm; the SRIM prior 14 ± 5 nm)
    ln Γ_i   ~ Normal(ln Γ_op(A, σg, d_i, B_i), s_i)

with ``Γ_op`` the Gaussian rate of a convention of :mod:`nvbayes.physics.conventions` (the
physical one or the paper's) under F1 or F2 (a log-normal likelihood on Γ_Ru) and ``s_i``
the relative uncertainty of the measured rate, floored at ``min_log_sd``.

Sampling reparameterization.  The rate sees (A, σg) mostly through one combination: for
σg ≪ d only the number of spins ``2πAσg²`` matters, for σg ≫ d F2 sees only A and F1 only
A/σg.  The posterior is then a bent, narrow ridge in (log10 A, σg) that NUTS crosses badly.
The model therefore samples ``log10_scale = log10 A + log10 q(σg)`` with
``q(σg) = Γ_op(A = 1, σg, d₀)^{1/p}`` (``p = 1`` for F2, whose rate is linear in A, and
``p = 2`` for F1, quadratic), the rate of a unit Gaussian at the prior-mean depth ``d₀``.
``(ln σg, log10_scale) → (ln σg, log10 A)`` is a shear with unit Jacobian, so a uniform
``log10_scale`` on a box that contains every image, times the indicator of
``log10 A ∈ [a₀, a₁]`` (a ``pyro.factor``), is exactly the prior above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution

from nvbayes.physics.conventions import PaperRates, PhysicalRates
from nvbayes.physics.operators import check_inversion_operator


class PositiveNormal(TorchDistribution):
    """``Normal(loc, scale)`` truncated to ``(0, ∞)``.

    ``p(x) = N(x; μ, s) / Φ(μ/s)`` for ``x > 0``; samples by the inverse CDF,
    ``x = μ + s Φ⁻¹(Φ(−μ/s) + u (1 − Φ(−μ/s)))``, ``u ~ U(0, 1)``.
    Batch shape: the broadcast shape of ``loc`` and ``scale``.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.positive
    has_rsample = True

    def __init__(self, loc, scale, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(torch.as_tensor(loc),
                                                       torch.as_tensor(scale))
        self._normal = torch.distributions.Normal(self.loc, self.scale)
        super().__init__(self.loc.shape, validate_args=validate_args)

    @property
    def _lower_cdf(self) -> torch.Tensor:
        return self._normal.cdf(torch.zeros_like(self.loc))

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        return PositiveNormal(self.loc.expand(shape), self.scale.expand(shape))

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        lower = self._lower_cdf.expand(shape)
        u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
        p = (lower + u * (1 - lower)).clamp(max=1 - 1e-15)
        return self._normal.icdf(p).clamp(min=torch.finfo(self.loc.dtype).tiny)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return self._normal.log_prob(value) - torch.log1p(-self._lower_cdf)

    @property
    def mean(self):
        alpha = -self.loc / self.scale
        pdf = torch.exp(-0.5 * alpha**2) / math.sqrt(2 * math.pi)
        return self.loc + self.scale * pdf / (1 - self._lower_cdf)


@dataclass(frozen=True)
class GaussianAnsatz:
    """Priors, the rate convention and the operator of the α-RuCl3 model; see the module
    docstring.

    ``log10_amplitude`` and ``sigma_g_nm`` are the (low, high) bounds of the priors.
    """

    convention: "PhysicalRates | PaperRates"
    operator: str
    log10_amplitude: tuple[float, float]
    sigma_g_nm: tuple[float, float]
    depth_mean_nm: float
    depth_sd_nm: float
    min_log_sd: float

    def __post_init__(self):
        object.__setattr__(self, "operator", check_inversion_operator(self.operator))
        grid = torch.exp(torch.linspace(math.log(self.sigma_g_nm[0]),
                                        math.log(self.sigma_g_nm[1]), 2001,
                                        dtype=torch.float64))
        factor = self.log10_factor(grid)
        box = (self.log10_amplitude[0] + float(factor.min()) - 0.01,
               self.log10_amplitude[1] + float(factor.max()) + 0.01)
        object.__setattr__(self, "_scale_box", box)

    def log10_factor(self, sigma_g_nm) -> torch.Tensor:
        """``log10 q(σg)`` of the sampling reparameterization (module docstring)."""
        rate = self.convention.gaussian(1.0, sigma_g_nm, self.depth_mean_nm, self.operator)
        return torch.log10(rate) / (2.0 if self.operator == "F1" else 1.0)

    def initial_values(self, generator: torch.Generator, n_nv: int) -> dict:
        """A random starting point of the sampled sites inside the prior's support.

        ``ln σg`` uniform on its range, ``log10 A`` uniform on the middle half of its box and
        the depths from their prior, so that every chain starts at a finite density.
        """
        def uniform(lo, hi):
            return lo + (hi - lo) * torch.rand((), generator=generator, dtype=torch.float64)

        log_sigma = uniform(*(math.log(v) for v in self.sigma_g_nm))
        a0, a1 = self.log10_amplitude
        log10_amplitude = uniform(a0 + (a1 - a0) / 4, a1 - (a1 - a0) / 4)
        depth = PositiveNormal(torch.tensor(self.depth_mean_nm, dtype=torch.float64),
                               torch.tensor(self.depth_sd_nm, dtype=torch.float64))
        u = torch.rand(n_nv, generator=generator, dtype=torch.float64)
        lower = depth._lower_cdf
        depths = depth._normal.icdf(lower + u * (1 - lower))
        return {"log_sigma_g": log_sigma,
                "log10_scale": log10_amplitude + self.log10_factor(torch.exp(log_sigma)),
                "depth": depths}

    def physical(self, latent: dict) -> dict:
        """``log10_amplitude``, ``sigma_g`` and ``depth`` from the sampled sites."""
        log_sigma = torch.as_tensor(latent["log_sigma_g"])
        sigma = torch.exp(log_sigma)
        return {"log10_amplitude": torch.as_tensor(latent["log10_scale"])
                - self.log10_factor(sigma),
                "sigma_g": sigma, "depth": torch.as_tensor(latent["depth"])}

    def rates(self, log10_amplitude, sigma_g_nm, depth_nm, field_gauss) -> torch.Tensor:
        """Γ_Ru in s⁻¹; arguments broadcast (e.g. ``(..., 1)`` against ``(n_nv,)``)."""
        return self.convention.gaussian(10.0 ** log10_amplitude, sigma_g_nm, depth_nm,
                                        self.operator, field_gauss)

    def log_sd(self, relative_error: torch.Tensor) -> torch.Tensor:
        """The standard deviation of ln Γ: the relative error, floored."""
        return relative_error.clamp(min=self.min_log_sd)

    def model(self, field_gauss: torch.Tensor, relative_error: torch.Tensor,
              log_rate: "torch.Tensor | None" = None) -> None:
        """The Pyro model; all tensors are ``(n_nv,)`` float64, ``log_rate`` is ln Γ_Ru."""
        dtype = field_gauss.dtype
        lo, hi = (torch.tensor(math.log(v), dtype=dtype) for v in self.sigma_g_nm)
        log_sigma = pyro.sample("log_sigma_g", dist.Uniform(lo, hi))
        sigma_g = torch.exp(log_sigma)
        lo, hi = (torch.tensor(v, dtype=dtype) for v in self._scale_box)
        log10_scale = pyro.sample("log10_scale", dist.Uniform(lo, hi))
        log10_amplitude = log10_scale - self.log10_factor(sigma_g)
        inside = (log10_amplitude >= self.log10_amplitude[0]) & (
            log10_amplitude <= self.log10_amplitude[1])
        pyro.factor("amplitude_prior_box", torch.where(
            inside, torch.zeros_like(log10_amplitude), torch.full_like(log10_amplitude,
                                                                       -math.inf)))
        with pyro.plate("nv", field_gauss.shape[-1]):
            depth = pyro.sample("depth", PositiveNormal(
                torch.tensor(self.depth_mean_nm, dtype=dtype),
                torch.tensor(self.depth_sd_nm, dtype=dtype)))
            rate = self.rates(log10_amplitude, sigma_g, depth, field_gauss)
            pyro.sample("log_rate_ru", dist.Normal(torch.log(rate), self.log_sd(relative_error)),
                        obs=log_rate)


#: Physical parameters of the model (see :meth:`GaussianAnsatz.physical`), with their units.
ANSATZ_SITES = {"log10_amplitude": "log10(m-2)", "sigma_g": "nm", "depth": "nm"}

__all__ = ["ANSATZ_SITES", "GaussianAnsatz", "PositiveNormal"]
