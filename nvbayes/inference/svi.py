"""SVI with the NeTMY neural field as a variational guide.

The field (``NeuralField(..., scales=True)``) returns, at every pixel, a location and a
positive scale for ρ and for ω_L on the predicted support::

    q(ρ(r))   = LogNormal(log ρ̄(r), s_ρ(r))                     ρ̄ the gated density
    q(ω_L(r)) = ω_min + (ω_max − ω_min) σ(h),  h ~ Normal(h̄_ω(r), s_ω(r))   on the support
    ω_L(r)    = the field's off-support value                     off it (a point mass)

all pixels independent given the field's weights θ (mean field in pixel space, correlated
through θ).  The ELBO ``E_q[log p(ρ, ω_L, S_obs) − log q(ρ, ω_L)]`` is estimated with one
reparameterized draw per step and maximized over θ by the MAP's solver and curriculum
(stages, learning rates, Fourier annealing, clipping, NaN guard; :mod:`.gradient`), under the
calibrated likelihood of :class:`~nvbayes.model.NoiseSpectrumModel` with the sensor noise
estimated from the spectrum itself (:func:`~nvbayes.physics.noise_map.sensor_noise_sigma`).
After the last stage, ``draws`` draws at the final β are gauge-fixed (:mod:`.draws`).
"""

from __future__ import annotations

import time

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution

from nvbayes.data.spec import ModelSpec
from nvbayes.fields import Field, pixel_coordinates
from nvbayes.model.problem import InverseProblem, check_inversion_operator

from .draws import PosteriorDraws, gauge_fixed
from .gradient import solve_gradient
from .map import build_field, final_beta, fresh_start
from .pixel_posterior import calibrated_sigma
from .recorder import Recorder

DRAWS = 200
#: History columns of the calibrated likelihood's terms.
CALIBRATED_TERMS = ("normalized_noise_map", "total_power")
_TINY = 1e-30
_EDGE = 1e-7


class SupportLarmor(TorchDistribution):
    """ω_L over a ``(ny, nx)`` map: logit-normal in the band where ``mask`` is 1, the fixed
    ``fill`` elsewhere.

    ``ω = ω_min + w σ(h)``, ``h ~ Normal(loc, scale)``, ``w = ω_max − ω_min``, so on the
    support ``log q(ω) = log N(h; loc, scale) − log(w σ(h)(1 − σ(h)))``; the fixed pixels
    contribute 0 (a point mass, the same in the model's support).
    """

    arg_constraints = {}
    support = constraints.real
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, mask: torch.Tensor,
                 band: tuple[float, float], fill: float, validate_args=None):
        self.loc, self.scale, self.mask = loc, scale, mask
        self.low, self.width = float(band[0]), float(band[1] - band[0])
        self.fill = float(fill)
        super().__init__(loc.shape[:-2], loc.shape[-2:], validate_args=validate_args)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        omega = self.low + self.width * torch.sigmoid(self.loc + self.scale * eps)
        return self.mask * omega + (1.0 - self.mask) * self.fill

    def log_prob(self, value):
        y = ((value - self.low) / self.width).clamp(_EDGE, 1.0 - _EDGE)
        h = torch.log(y) - torch.log1p(-y)
        density = (dist.Normal(self.loc, self.scale).log_prob(h)
                   - torch.log(self.width * y * (1.0 - y)))
        return (self.mask * density).sum(dim=(-2, -1))


class VariationalFieldGuide:
    """Pyro guide ``guide(beta)``: the sites ``rho`` and ``larmor`` drawn from the field's
    location and scale fields on the stage's pixel grid ``coords`` ``(n, n, 2)``."""

    def __init__(self, field: Field, coords: torch.Tensor):
        self.field = field
        self.coords = coords

    def distributions(self, beta) -> tuple[dist.Distribution, SupportLarmor]:
        out = self.field.variational(self.coords, beta)
        q_rho = dist.LogNormal(torch.log(out["rho"] + _TINY), out["rho_scale"]).to_event(2)
        q_larmor = SupportLarmor(out["larmor_logit"], out["larmor_scale"], out["mask"],
                                 self.field.band, self.field.off_support_value)
        return q_rho, q_larmor

    def __call__(self, beta: float, *args, **kwargs):
        pyro.module("field", self.field)
        q_rho, q_larmor = self.distributions(beta)
        rho = pyro.sample("rho", q_rho)
        larmor = pyro.sample("larmor", q_larmor)
        return rho, larmor


def fit_svi(problem: InverseProblem, spec: ModelSpec, operator: str = "F2", seed: int = 0,
            device: str = "cpu", show: "bool | None" = None, draws: int = DRAWS,
            dtype: torch.dtype = torch.float32) -> PosteriorDraws:
    """Fit the variational posterior of one measurement and draw from it (module
    docstring).  ``spec`` must name the neural field with Adam/AdamW stages."""
    if problem.batch is not None:
        raise ValueError("fit_svi takes one measurement")
    if spec.field.kind != "neural" or spec.solver != "gradient":
        raise ValueError(f"SVI needs the neural field with Adam/AdamW; {spec.name} has a "
                         f"{spec.field.kind} field and the {spec.solver} solver")
    operator = check_inversion_operator(operator)
    start = time.perf_counter()
    fresh_start(seed)
    device = torch.device(device)
    sigma = calibrated_sigma(problem)
    net = build_field(spec, problem, scales=True).to(device, dtype)
    recorder = Recorder(spec.total_steps, show, CALIBRATED_TERMS)
    messages = solve_gradient(net, problem, spec, operator, recorder,
                              guide_type=VariationalFieldGuide, noise_sigma=sigma)
    recorder.close()
    beta = final_beta(recorder, spec, 0)
    guide = VariationalFieldGuide(net, pixel_coordinates(problem.shape, dtype=dtype, device=device))
    with torch.no_grad():
        q_rho, q_larmor = guide.distributions(beta)
        rho = q_rho.sample((1, draws))
        larmor = q_larmor.sample((1, draws))
    rho, larmor, nmap, alpha = gauge_fixed(problem, operator, rho, larmor)
    stats = {"noise_sigma": float(torch.as_tensor(sigma).mean()), "steps": recorder.steps(0),
             "final_loss": recorder.last("loss", 0), "diverged": int(bool(recorder.diverged[0]))}
    return PosteriorDraws(rho=rho, larmor=larmor, noise_map=nmap,
                          draw_stats={"scale_correction": alpha}, stats=stats,
                          history=recorder.history(0), wall_time_s=time.perf_counter() - start,
                          messages=list(messages))


__all__ = ["DRAWS", "SupportLarmor", "VariationalFieldGuide", "fit_svi"]
