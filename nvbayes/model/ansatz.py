"""The Gaussian-ansatz relaxometry model (paper §5.5, appendix E.8) as a Pyro model.

For NVs ``i = 1 … n`` at depths ``d_i`` under a spin density ``ρ(r) = A exp(−|r|²/2σg²)``
centred under each NV, the model is

    log10 A  ~ Uniform(a₀, a₁)                    (A in m⁻²)
    σg       ~ LogUniform(s₀, s₁)                 (nm; uniform in ln σg, a scale prior)
    d_i      ~ Normal(μ_d, s_d) truncated to d > 0   (nm; the SRIM prior 14 ± 5 nm)
    ln Γ_i   ~ Normal(ln Γ_op(A, σg, d_i, B_i), s_i)

with ``Γ_op`` the rate of :func:`nvbayes.physics.relaxation.relaxation_rate` under F1 or F2
(a log-normal likelihood on Γ_Ru) and ``s_i`` the relative uncertainty of the measured rate,
floored at ``min_log_sd``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution

from ..physics.relaxation import GaussianDensity, SpinBath, check_operator, relaxation_rate

NM = 1e-9


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


class LogUniform(dist.TransformedDistribution):
    """``ln X ~ Uniform(ln low, ln high)``: density ``1 / (x ln(high/low))`` on [low, high].

    The scale-invariant prior of a positive length: each decade gets the same mass.
    """

    arg_constraints = {"low": constraints.positive, "high": constraints.positive}

    def __init__(self, low, high, validate_args=None):
        self.low, self.high = torch.broadcast_tensors(torch.as_tensor(low),
                                                      torch.as_tensor(high))
        base = dist.Uniform(torch.log(self.low), torch.log(self.high))
        super().__init__(base, [dist.transforms.ExpTransform()], validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.interval(self.low, self.high)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        return LogUniform(self.low.expand(shape), self.high.expand(shape))


@dataclass(frozen=True)
class GaussianAnsatz:
    """Priors, the spin bath and the operator of the α-RuCl3 model; see the module docstring.

    ``log10_amplitude`` and ``sigma_g_nm`` are the (low, high) bounds of the priors.
    """

    bath: SpinBath
    operator: str
    log10_amplitude: tuple[float, float]
    sigma_g_nm: tuple[float, float]
    depth_mean_nm: float
    depth_sd_nm: float
    min_log_sd: float

    def __post_init__(self):
        object.__setattr__(self, "operator", check_operator(self.operator))

    def rates(self, log10_amplitude, sigma_g_nm, depth_nm, field_gauss) -> torch.Tensor:
        """Γ_Ru in s⁻¹; arguments broadcast (e.g. ``(..., 1)`` against ``(n_nv,)``)."""
        source = GaussianDensity(10.0 ** log10_amplitude, sigma_g_nm * NM)
        return relaxation_rate(source, depth_nm * NM, self.operator, self.bath, field_gauss)

    def log_sd(self, relative_error: torch.Tensor) -> torch.Tensor:
        """The standard deviation of ln Γ: the relative error, floored."""
        return relative_error.clamp(min=self.min_log_sd)

    def model(self, field_gauss: torch.Tensor, relative_error: torch.Tensor,
              log_rate: "torch.Tensor | None" = None) -> None:
        """The Pyro model; all tensors are ``(n_nv,)`` float64, ``log_rate`` is ln Γ_Ru."""
        dtype = field_gauss.dtype
        lo, hi = (torch.tensor(v, dtype=dtype) for v in self.log10_amplitude)
        log10_amplitude = pyro.sample("log10_amplitude", dist.Uniform(lo, hi))
        lo, hi = (torch.tensor(v, dtype=dtype) for v in self.sigma_g_nm)
        sigma_g = pyro.sample("sigma_g", LogUniform(lo, hi))
        with pyro.plate("nv", field_gauss.shape[-1]):
            depth = pyro.sample("depth", PositiveNormal(
                torch.tensor(self.depth_mean_nm, dtype=dtype),
                torch.tensor(self.depth_sd_nm, dtype=dtype)))
            rate = self.rates(log10_amplitude, sigma_g, depth, field_gauss)
            pyro.sample("log_rate_ru", dist.Normal(torch.log(rate), self.log_sd(relative_error)),
                        obs=log_rate)


#: Latent sites of :meth:`GaussianAnsatz.model`, with their units.
ANSATZ_SITES = {"log10_amplitude": "log10(m-2)", "sigma_g": "nm", "depth": "nm"}

__all__ = ["ANSATZ_SITES", "GaussianAnsatz", "LogUniform", "PositiveNormal"]
