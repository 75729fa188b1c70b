"""The generative likelihood: the measured spectrum as the simulator produces it.

Where :class:`~nvbayes.model.netmy.NoiseSpectrumModel` observes summaries of the data (the
max-normalized noise map and the total power), this model observes every readout value, with
the noise the simulator puts on it (:func:`~nvbayes.data.scenes.add_sensor_noise`)::

    g        ~ LogNormal(0, s_g)                    the gain; or g = 1 where units are known
    ρ(r)     ~ Exponential(mean m)                  every pixel, independently, or (sparse)
    ρ(r)     ~ (1 − π) Exponential(mean ε) + π Exponential(mean μ)
    ω_L(r)   ~ Uniform(ω_min, ω_max)                on the pixels of ``larmor_mask``
    ω_L(r)   = ``larmor_fill``(r)                   elsewhere (no signal to infer it from)
    S(ω, r)  ~ Normal(g · F(ρ, ω_L)(ω, r), σ(r))    every (ω, r) independently

The sparse prior (``source_fraction`` π given) says what a scene of a few point sources on a
dark background is: a fraction π of the pixels hold a source of mean amplitude μ, the rest
lie within ε of zero, with ε = :data:`SPIKE_FRACTION` · m and μ = (m − (1 − π) ε) / π, so
that the prior mean is m either way.  Under the exponential prior every background pixel
may hold about m, and a source's window sums that freedom: its mass interval widens beyond
what the data leave open when the background is in truth dark.

Shapes: ρ and ω_L maps ``(ny, nx)``, the spectrum ``(n_freq, ny, nx)``, σ a number or a
per-pixel map ``(ny, nx)``.  The site ``larmor`` holds the ``k`` masked pixels in row-major
order, ``(k,)``; :meth:`GenerativeSpectrumModel.larmor_map` scatters them into the map.

The prior is proper, so the model can be run forwards (:meth:`simulate`): that is what
simulation-based calibration needs.  :meth:`log_joint` is the same log density written out
directly (no Pyro trace), for the samplers' inner loop; the tests hold the two equal.
"""

from __future__ import annotations

import functools
import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

#: ``0.5 log(2π)``.
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
#: The sparse prior's background mean ε as a fraction of the prior mean m.
SPIKE_FRACTION = 0.01


class GenerativeSpectrumModel:
    """``model()``: the Pyro model of one spectrum under the generative likelihood.

    Parameters
    ----------
    operator : F1 or F2 (any :class:`~nvbayes.physics.operators.ForwardOperator`).
    shape : the map shape ``(ny, nx)``.
    sigma : the sensor noise σ of one readout, a number or a map ``(ny, nx)``.
    band : the Larmor band ``(ω_min, ω_max)`` in GHz, the support of ω_L's prior.
    rho_mean : m, the prior mean of ρ per pixel (spectrum units over the operator's).
    gain_sd : s_g of the gain's log-normal prior; ``None`` fixes the gain at 1.
    larmor_mask : bool ``(ny, nx)``, the pixels whose ω_L is latent (default all).
    larmor_fill : ω_L on the other pixels, a number or ``(ny, nx)`` (default band centre).
    observed : the spectrum ``(n_freq, ny, nx)``; ``None`` simulates it.
    source_fraction : π of the sparse prior, in (0, 1); ``None`` for the exponential prior.
    pixel_mask : bool ``(ny, nx)``, the pixels whose readouts are observed (default all); the
        spectrum of the others is left out of the likelihood.
    """

    def __init__(self, operator, shape: tuple[int, int], sigma, band: tuple[float, float],
                 rho_mean: float, gain_sd: "float | None" = None,
                 larmor_mask: "torch.Tensor | None" = None, larmor_fill=None,
                 observed: "torch.Tensor | None" = None, dtype=torch.float64,
                 source_fraction: "float | None" = None, pixel_mask=None):
        if not rho_mean > 0:
            raise ValueError(f"rho_mean must be > 0, got {rho_mean}")
        if source_fraction is not None and not 0 < source_fraction < 1:
            raise ValueError(f"source_fraction must be in (0, 1), got {source_fraction}")
        if gain_sd is not None and not gain_sd > 0:
            raise ValueError(f"gain_sd must be > 0 or None, got {gain_sd}")
        self.operator = operator
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.sigma = torch.as_tensor(sigma, dtype=dtype)
        if not bool((self.sigma > 0).all()):
            raise ValueError("sigma must be > 0 everywhere")
        self.low, self.high = float(band[0]), float(band[1])
        self.rho_mean = float(rho_mean)
        self.source_fraction = None if source_fraction is None else float(source_fraction)
        self.gain_sd = None if gain_sd is None else float(gain_sd)
        mask = (torch.ones(self.shape, dtype=torch.bool) if larmor_mask is None
                else torch.as_tensor(larmor_mask, dtype=torch.bool))
        self.larmor_index = torch.nonzero(mask.reshape(-1), as_tuple=True)[0]
        fill = 0.5 * (self.low + self.high) if larmor_fill is None else larmor_fill
        self.larmor_fill = torch.broadcast_to(torch.as_tensor(fill, dtype=dtype),
                                              self.shape).clone()
        self.observed = None if observed is None else torch.as_tensor(observed, dtype=dtype)
        self.pixel_mask = (None if pixel_mask is None
                           else torch.as_tensor(pixel_mask, dtype=torch.bool))

    @property
    def n_larmor(self) -> int:
        """k, the number of pixels whose ω_L is latent."""
        return int(self.larmor_index.numel())

    @property
    def gain_latent(self) -> bool:
        return self.gain_sd is not None

    @property
    def sparse(self) -> bool:
        return self.source_fraction is not None

    @functools.cached_property
    def mixture(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The sparse prior's log weights ``(log(1 − π), log π)`` and means ``(ε, μ)``."""
        p, m = self.source_fraction, self.rho_mean
        spike = SPIKE_FRACTION * m
        slab = (m - (1 - p) * spike) / p
        t = dict(dtype=self.dtype)
        return (torch.tensor([math.log1p(-p), math.log(p)], **t),
                torch.tensor([spike, slab], **t))

    def rho_prior(self) -> dist.Distribution:
        """ρ's prior, event shape ``(ny, nx)``."""
        t = dict(dtype=self.dtype)
        if not self.sparse:
            return dist.Exponential(torch.full(self.shape, 1.0 / self.rho_mean, **t)).to_event(2)
        log_w, means = self.mixture
        weights = dist.Categorical(logits=log_w.expand(*self.shape, 2))
        return dist.MixtureSameFamily(weights, dist.Exponential(
            (1.0 / means).expand(*self.shape, 2))).to_event(2)

    def rho_log_prior(self, rho: torch.Tensor) -> torch.Tensor:
        """``log p(ρ)`` written out (ρ ≥ 0), summed over the map ``(..., ny, nx)``."""
        if not self.sparse:
            pixels = rho.shape[-1] * rho.shape[-2]
            return -pixels * math.log(self.rho_mean) - rho.sum((-2, -1)) / self.rho_mean
        log_w, means = self.mixture
        terms = log_w - torch.log(means) - rho[..., None] / means    # (..., ny, nx, 2)
        return torch.logsumexp(terms, -1).sum((-2, -1))

    def larmor_map(self, values: torch.Tensor) -> torch.Tensor:
        """ω_L ``(..., ny, nx)`` from the latent values ``(..., k)`` and the fill."""
        batch = values.shape[:-1]
        flat = self.larmor_fill.reshape(-1).expand(*batch, -1).clone()
        flat = flat.index_copy(-1, self.larmor_index, values)
        return flat.reshape(*batch, *self.shape)

    def mean(self, rho: torch.Tensor, larmor_values: torch.Tensor,
             gain: "torch.Tensor | float" = 1.0) -> torch.Tensor:
        """``g · F(ρ, ω_L)``, ``(..., n_freq, ny, nx)``."""
        predicted = self.operator(rho, self.larmor_map(larmor_values))
        gain = torch.as_tensor(gain, dtype=predicted.dtype)
        return gain.reshape(gain.shape + (1, 1, 1)) * predicted

    # ---- the Pyro model ------------------------------------------------------------------

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        """Sample the sites ``gain`` (when latent), ``rho``, ``larmor`` and ``spectrum``."""
        t = dict(dtype=self.dtype)
        gain = 1.0
        if self.gain_latent:
            gain = pyro.sample("gain", dist.LogNormal(torch.zeros((), **t),
                                                      torch.tensor(self.gain_sd, **t)))
        rho = pyro.sample("rho", self.rho_prior())
        low = torch.full((self.n_larmor,), self.low, **t)
        larmor = pyro.sample("larmor", dist.Uniform(low, self.high).to_event(1))
        loc = self.mean(rho, larmor, gain)
        scale = torch.broadcast_to(self.sigma, loc.shape)
        readout = dist.Normal(loc, scale)
        if self.pixel_mask is not None:
            readout = readout.mask(self.pixel_mask)
        pyro.sample("spectrum", readout.to_event(3), obs=self.observed)
        return loc

    def log_joint(self, rho: torch.Tensor, larmor_values: torch.Tensor,
                  gain: "torch.Tensor | None" = None) -> torch.Tensor:
        """``log p(g, ρ, ω_L, S_obs)``, written out (ρ ≥ 0 and ω_L in the band assumed)."""
        observed = self.observed
        n_freq = observed.shape[-3]
        total = self.rho_log_prior(rho) - self.n_larmor * math.log(self.high - self.low)
        g = 1.0
        if self.gain_latent:
            g = gain
            log_g = torch.log(gain)
            total = total - log_g - math.log(self.gain_sd) - _HALF_LOG_2PI \
                - 0.5 * (log_g / self.gain_sd) ** 2
        residual = (observed - self.mean(rho, larmor_values, g)) / self.sigma
        square = residual * residual
        log_sigma = torch.log(torch.broadcast_to(self.sigma, self.shape))
        pixels = self.shape[0] * self.shape[1]
        if self.pixel_mask is not None:
            square = square * self.pixel_mask
            log_sigma = log_sigma * self.pixel_mask
            pixels = int(self.pixel_mask.sum())
        return (total - 0.5 * square.sum() - log_sigma.sum() * n_freq
                - pixels * n_freq * _HALF_LOG_2PI)

    # ---- forwards ------------------------------------------------------------------------

    def simulate(self, seed: int) -> dict:
        """One draw of every site from the prior and the likelihood, by running the Pyro
        model forwards with ``observed`` cleared: ``{"rho", "larmor", "gain"?, "spectrum"}``
        (``larmor`` the ``(k,)`` latent values)."""
        saved, self.observed = self.observed, None
        try:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                trace = poutine.trace(self).get_trace()
        finally:
            self.observed = saved
        return {name: site["value"].detach() for name, site in trace.nodes.items()
                if site["type"] == "sample"}

    def conditioned(self, observed: torch.Tensor) -> "GenerativeSpectrumModel":
        """The same model with ``observed`` as its data."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.observed = torch.as_tensor(observed, dtype=self.dtype)
        return other


__all__ = ["GenerativeSpectrumModel", "SPIKE_FRACTION"]
