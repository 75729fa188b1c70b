"""The source catalogue: K point sources with continuous positions, through the exact
source-side physics.

Each source k has a position ``s_k = (x_k, y_k)`` in nm (continuous; the pixel centres sit at
``i · spacing``), an amplitude ``a_k`` (fluctuators) and its own Larmor frequency ``ω_k``.
The spectrum is the direct sum of F3 (no readout-side Lorentzian, no FFT, no pixel grid for
the sources)::

    x_k, y_k ~ Uniform(−dx/2, (n − 1/2) dx)          the window, per axis
    a_k      ~ Exponential(mean m_a)
    ω_k      ~ Uniform(ω_min, ω_max)
    g        ~ LogNormal(0, s_g)                      or g = 1 where units are known
    S(ω, r)  ~ Normal(g Σ_k a_k c P(r − s_k) L(ω; ω_k), σ(r))

with ``P`` the power kernel of :mod:`nvbayes.physics.kernels` and ``c`` its unit constant
(:meth:`~nvbayes.physics.units.Units.power_scale`).  With every source on a pixel centre this
is :class:`~nvbayes.physics.operators.DirectOperator` (the tests hold the two equal).

Shapes: positions, amplitudes and frequencies ``(K,)``; the spectrum ``(n_freq, ny, nx)``;
σ a number or ``(ny, nx)``.

Speed: each source is summed over the ``(2R + 1)²`` pixels around it (``patch_radius`` R,
default 6 standoffs), where P has fallen below 10⁻⁵ of its peak; ``patch_radius=None`` sums
every pixel.  The log-likelihood needs no ``(n_freq, ny, nx)`` array: with ``A_k(r) = a_k c
P(r − s_k)`` and ``L_k(ω) = L(ω; ω_k)`` the spectrum is ``g Σ_k L_k(ω) A_k(r)``, so with
weights ``w = 1/σ²``::

    Σ w (S_obs − g S)² = Σ w S_obs²
                         + g² Σ_kl (Σ_ω L_k L_l) (Σ_r w A_k A_l)      (K × K Gram matrices)
                         − 2 g Σ_k Σ_r A_k(r) Σ_ω L_k(ω) w S_obs(ω, r)

in a handful of tensor operations: two small matrix products with the K sources' maps
``A_k`` on the grid, whose gradient NUTS pays for once per leapfrog step.  For the z-axis
NV with all three channels the kernel is the closed form ``P = (|R|² + 3 z0²) / |R|⁸``.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from nvbayes.physics.kernels import AXES, Z_AXIS, power_kernel, power_kernel_closed_form
from nvbayes.physics.units import as_units

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class PointSourceModel:
    """``model()``: the Pyro model of a spectrum made by ``sources`` point sources.

    Parameters
    ----------
    freqs : readout frequencies ``(n_freq,)``, GHz.
    linewidth : Lorentzian linewidth, GHz.
    spacing, standoff : pixel spacing and NV standoff, nm.
    shape : ``(ny, nx)``.
    sigma : the noise σ per readout, a number or ``(ny, nx)``.
    band : the Larmor band, GHz.
    sources : K ≥ 1.
    amplitude_mean : m_a, the prior mean of an amplitude.
    gain_sd : the gain's log-normal sd; ``None`` fixes it at 1.
    pixel_mask : bool ``(ny, nx)``, the pixels whose readouts enter the likelihood (default
        all): the others get weight w = 0.
    observed : the spectrum ``(n_freq, ny, nx)``, or ``None`` to simulate.
    """

    def __init__(self, freqs, linewidth: float, spacing: float, standoff: float,
                 shape: tuple[int, int], sigma, band: tuple[float, float], sources: int,
                 amplitude_mean: float, gain_sd: "float | None" = None, observed=None,
                 units="normalized", nv_axis=Z_AXIS, channels=AXES,
                 patch_radius: "int | None" = -1, pixel_mask=None):
        if int(sources) < 1:
            raise ValueError(f"a catalogue needs at least one source, got {sources}")
        if not amplitude_mean > 0:
            raise ValueError(f"amplitude_mean must be > 0, got {amplitude_mean}")
        t = dict(dtype=torch.float64)
        freqs = (freqs.detach() if isinstance(freqs, torch.Tensor)
                 else torch.from_numpy(np.array(freqs, dtype=np.float64)))
        self.freqs = freqs.to(torch.float64).reshape(-1)
        self.linewidth = float(linewidth)
        self.spacing, self.standoff = float(spacing), float(standoff)
        self.shape = tuple(int(s) for s in shape)
        self.sigma = torch.as_tensor(sigma, **t)
        self.low, self.high = float(band[0]), float(band[1])
        self.sources = int(sources)
        self.amplitude_mean = float(amplitude_mean)
        self.gain_sd = None if gain_sd is None else float(gain_sd)
        self.observed = None if observed is None else torch.as_tensor(observed, **t)
        self.units = as_units(units)
        self.nv_axis, self.channels = nv_axis, tuple(channels)
        self._closed_form = (tuple(float(v) for v in nv_axis) == Z_AXIS
                             and sorted(self.channels) == sorted(AXES))
        ny, nx = self.shape
        self.window = ((-0.5 * spacing, (nx - 0.5) * spacing),
                       (-0.5 * spacing, (ny - 0.5) * spacing))
        self._x = torch.arange(nx, **t) * spacing
        self._y = torch.arange(ny, **t) * spacing
        if patch_radius == -1:
            patch_radius = int(math.ceil(6 * standoff / spacing))
        self.patch_radius = patch_radius
        used = (torch.ones(self.shape, dtype=torch.bool) if pixel_mask is None
                else torch.as_tensor(pixel_mask, dtype=torch.bool))
        self.pixel_mask = None if pixel_mask is None else used
        precision = 1.0 / torch.broadcast_to(self.sigma ** 2, self.shape)
        self._weights = torch.where(used, precision, 0.0)     # w = 1/σ², 0 off the mask
        if self.observed is not None:
            n_freq = self.freqs.numel()
            self._base = torch.where(
                used, -0.5 * (self.observed ** 2 * self._weights).sum(-3)
                + n_freq * (0.5 * torch.log(precision) - _HALF_LOG_2PI), 0.0)
            self._weighted = (self.observed * self._weights).reshape(n_freq, -1)  # w S_obs

    @property
    def gain_latent(self) -> bool:
        return self.gain_sd is not None

    def kernel(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``c P(r − s_k)`` of each source at every pixel, ``(..., K, ny, nx)``."""
        dx = (self._x - x[..., None]).unsqueeze(-2)                 # (..., K, 1, nx)
        dy = (self._y - y[..., None]).unsqueeze(-1)                 # (..., K, ny, 1)
        dx, dy = torch.broadcast_tensors(dx, dy)
        return self._power(dx, dy)

    def _power(self, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
        length = self.units.length(1.0)
        scale = self.units.power_scale(self.standoff)
        z0 = self.units.length(self.standoff)
        if self._closed_form:
            return scale * power_kernel_closed_form(dx * length, dy * length, z0)
        return scale * power_kernel(dx * length, dy * length, z0, self.nv_axis, self.channels)

    def lorentzian_weights(self, amplitude, larmor) -> torch.Tensor:
        """``a_k L(ω; ω_k)`` with ``L = γ² / ((ω − ω_k)² + γ²)``, ``(..., K, n_freq)``."""
        gamma = self.linewidth
        detuning = self.freqs - larmor[..., None]                     # (K, n_freq)
        return amplitude[..., None] * gamma ** 2 / (detuning * detuning + gamma ** 2)

    def mean(self, x, y, amplitude, larmor, gain=1.0) -> torch.Tensor:
        """``g Σ_k a_k c P(r − s_k) L(ω; ω_k)``, ``(n_freq, ny, nx)`` (sources ``(K,)``)."""
        weights = self.lorentzian_weights(amplitude, larmor)
        ny, nx = self.shape
        if self.patch_radius is None:
            spectrum = torch.einsum("kf,kyx->fyx", weights, self.kernel(x, y))
        else:
            flat, power = self._patches(x, y)
            values = torch.einsum("kf,kp->fkp", weights, power).reshape(weights.shape[-1], -1)
            spectrum = torch.zeros(weights.shape[-1], ny * nx, dtype=values.dtype)
            spectrum = spectrum.index_add(1, flat.reshape(-1), values).reshape(-1, ny, nx)
        return torch.as_tensor(gain, dtype=spectrum.dtype) * spectrum

    def _patches(self, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat pixel indices ``(K, P)`` of each source's patch and ``c P`` there (0 on the
        patch's pixels outside the window)."""
        ny, nx = self.shape
        r = self.patch_radius
        offsets = torch.arange(-r, r + 1)
        cx = torch.round(x.detach() / self.spacing).long()[:, None] + offsets    # (K, 2r+1)
        cy = torch.round(y.detach() / self.spacing).long()[:, None] + offsets
        inside = (((cx >= 0) & (cx < nx))[:, None, :] & ((cy >= 0) & (cy < ny))[:, :, None])
        px, py = cx.clamp(0, nx - 1), cy.clamp(0, ny - 1)
        dx = (px * self.spacing - x[:, None])[:, None, :]
        dy = (py * self.spacing - y[:, None])[:, :, None]
        power = self._power(*torch.broadcast_tensors(dx, dy)) * inside
        flat = py[:, :, None] * nx + px[:, None, :]
        return flat.reshape(len(x), -1), power.reshape(len(x), -1)

    def pointwise_log_likelihood(self, x, y, amplitude, larmor, gain=1.0) -> torch.Tensor:
        """``Σ_ω log Normal(S_obs; g S, σ)`` per pixel, ``(ny, nx)``: PSIS-LOO's points."""
        predicted = self.mean(x, y, amplitude, larmor, gain)
        change = (predicted * predicted - 2.0 * predicted * self.observed) * self._weights
        return self._base - 0.5 * change.sum(-3)

    def log_likelihood(self, x, y, amplitude, larmor, gain=1.0) -> torch.Tensor:
        """``Σ_{ω,r} log Normal(S_obs; g S, σ)``: the sum of :meth:`pointwise_log_likelihood`,
        by the Gram-matrix form of the module docstring."""
        if self.patch_radius is None:
            return self.pointwise_log_likelihood(x, y, amplitude, larmor, gain).sum()
        flat, power = self._patches(x, y)                               # (K, P)
        sources = amplitude[..., None] * power                          # A_k on its patch
        lorentz = self.lorentzian_weights(torch.ones_like(amplitude), larmor)   # (K, n_freq)
        dense = torch.zeros(len(flat), self._weights.numel(), dtype=sources.dtype)
        dense = dense.scatter_add(1, flat, sources)                     # (K, ny nx)
        gram = (dense * self._weights.reshape(-1)) @ dense.T
        square = ((lorentz @ lorentz.T) * gram).sum()
        cross = (dense * (lorentz @ self._weighted)).sum()
        g = torch.as_tensor(gain, dtype=sources.dtype)
        return self._base.sum() - 0.5 * (g * g * square - 2.0 * g * cross)

    def log_prior(self, x, y, amplitude, larmor, gain=None) -> torch.Tensor:
        """The log prior density of one draw (inside the supports)."""
        (x_lo, x_hi), (y_lo, y_hi) = self.window
        k = self.sources
        total = -k * (math.log(x_hi - x_lo) + math.log(y_hi - y_lo)
                      + math.log(self.high - self.low) + math.log(self.amplitude_mean))
        total = total - amplitude.sum(-1) / self.amplitude_mean
        if self.gain_latent:
            log_g = torch.log(gain)
            total = total - log_g - math.log(self.gain_sd) - _HALF_LOG_2PI \
                - 0.5 * (log_g / self.gain_sd) ** 2
        return total

    def log_joint(self, x, y, amplitude, larmor, gain=None) -> torch.Tensor:
        g = gain if self.gain_latent else 1.0
        return (self.log_prior(x, y, amplitude, larmor, gain)
                + self.log_likelihood(x, y, amplitude, larmor, g))

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        """Sample ``gain`` (when latent), ``x``, ``y``, ``amplitude``, ``larmor`` (each
        ``(K,)``) and ``spectrum``."""
        t = dict(dtype=torch.float64)
        k = self.sources
        gain = 1.0
        if self.gain_latent:
            gain = pyro.sample("gain", dist.LogNormal(torch.zeros((), **t),
                                                      torch.tensor(self.gain_sd, **t)))
        (x_lo, x_hi), (y_lo, y_hi) = self.window
        x = pyro.sample("x", dist.Uniform(torch.full((k,), x_lo, **t), x_hi).to_event(1))
        y = pyro.sample("y", dist.Uniform(torch.full((k,), y_lo, **t), y_hi).to_event(1))
        rate = torch.full((k,), 1.0 / self.amplitude_mean, **t)
        amplitude = pyro.sample("amplitude", dist.Exponential(rate).to_event(1))
        larmor = pyro.sample("larmor", dist.Uniform(torch.full((k,), self.low, **t),
                                                    self.high).to_event(1))
        loc = self.mean(x, y, amplitude, larmor, gain)
        readout = dist.Normal(loc, torch.broadcast_to(self.sigma, loc.shape))
        if self.pixel_mask is not None:
            readout = readout.mask(self.pixel_mask)
        pyro.sample("spectrum", readout.to_event(3), obs=self.observed)
        return loc

    def with_sources(self, sources: int) -> "PointSourceModel":
        """The same model with another K."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.sources = int(sources)
        return other


__all__ = ["PointSourceModel"]
