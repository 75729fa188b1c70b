"""A lab's nuisances in the forward model: background, standoff and gain, defined once.

With ``F`` the inversion operator (F1 or F2) at standoff ``z``, ``γ(r)`` the log gain and
``b(r)`` the intrinsic background::

    S(ω, r) = e^{γ(r)} · F(ρ, ω_L; z)(ω, r) + b(r)

* ``background`` ``b``: flat in frequency (the NV's own relaxation: phonons, surface spins)
  and smooth in space: bilinear on an ``m × m`` grid of non-negative values spanning the
  window (``align_corners``: the grid's corners sit on the corner pixels);
* ``standoff`` ``z``: the NV plane's height, prior ``Normal(z_recorded, sd)``; the spectrum
  stays in the units of the recorded standoff (:class:`~nvbayes.physics.operators.
  FactorizedOperator`);
* ``gain`` ``γ``: per pixel, prior ``Normal(0, gain_sd)`` on each.

Pyro sites ``background`` ``(..., m, m)`` (only where it is fitted jointly: a background
held at its estimate is subtracted from the data before the fit), ``standoff`` ``(...)``
and ``gain`` ``(..., ny, nx)``, improper flat base measures on their supports; the priors
are the factors ``standoff_prior`` and ``gain_prior``, divided by the model's pixel divisor like the
regularizers of ρ (so that under ``reduction = "mean"`` they weigh against pixel-mean data
terms as the ℓ1 and TV terms do).  :func:`apply_nuisance` is the forward model itself, for
the Pyro model and for the final maps alike.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from nvbayes.data.spec import NuisanceSpec

#: Event dimensions of each nuisance site (background and gain are maps, the standoff one
#: number per measurement).
EVENT_DIMS = {"background": 2, "standoff": 0, "gain": 2}
#: Prior factors of the nuisance sites (negative log densities, the model's loss terms).
PRIOR_TERMS = ("standoff_prior", "gain_prior")


def background_map(grid: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of ``grid (..., m, m)`` onto ``shape`` → ``(..., ny, nx)``."""
    lead = grid.shape[:-2]
    flat = grid.reshape(-1, 1, *grid.shape[-2:])
    up = torch.nn.functional.interpolate(flat, size=tuple(shape), mode="bilinear",
                                         align_corners=True)
    return up.reshape(*lead, *shape)


def apply_nuisance(operator, rho: torch.Tensor, larmor: torch.Tensor,
                   values: dict) -> torch.Tensor:
    """``e^γ F(ρ, ω_L; z) + b`` with the nuisances in ``values`` (absent ones are the
    recorded geometry: z recorded, γ = 0, b = 0) → ``(..., n_freq, ny, nx)``."""
    standoff = values.get("standoff")
    signal = (operator(rho, larmor) if standoff is None
              else operator(rho, larmor, standoff.to(rho.dtype)))
    if "gain" in values:
        signal = signal * torch.exp(values["gain"]).to(signal.dtype).unsqueeze(-3)
    if "background" in values:
        flat = background_map(values["background"].to(signal.dtype), signal.shape[-2:])
        signal = signal + flat.unsqueeze(-3)
    return signal


def noise_map_with_nuisance(operator, rho: torch.Tensor, larmor: torch.Tensor,
                            values: dict) -> torch.Tensor:
    """``Σ_ω`` of :func:`apply_nuisance`, ``e^γ N(ρ, ω_L; z) + n_freq · b`` →
    ``(..., ny, nx)``, from the operator's own noise map (no spectrum is formed)."""
    standoff = values.get("standoff")
    noise = (operator.noise_map(rho, larmor) if standoff is None
             else operator.noise_map(rho, larmor, standoff.to(rho.dtype)))
    if "gain" in values:
        noise = noise * torch.exp(values["gain"]).to(noise.dtype)
    if "background" in values:
        flat = background_map(values["background"].to(noise.dtype), noise.shape[-2:])
        noise = noise + operator.n_freq * flat
    return noise


class NuisanceModel:
    """The nuisance sites of one model (module docstring).

    Parameters
    ----------
    spec : which nuisances, with their priors.
    standoff_nm : the recorded standoff (the prior's centre).
    shape : the stage grid ``(ny, nx)``; batch : the measurements' batch shape.
    pixel_divisor : the model's divisor of the regularizers (1, or the pixel count).
    """

    def __init__(self, spec: NuisanceSpec, standoff_nm: float, shape: tuple[int, int],
                 batch: tuple = (), pixel_divisor: float = 1.0):
        self.spec = spec
        self.standoff_nm = float(standoff_nm)
        self.shape = tuple(shape)
        self.batch = torch.Size(batch)
        self.divisor = float(pixel_divisor)

    def _latent(self, name: str, support, event: tuple) -> torch.Tensor:
        return pyro.sample(name, dist.ImproperUniform(support, batch_shape=self.batch,
                                                      event_shape=torch.Size(event)))

    @property
    def sites(self) -> tuple[str, ...]:
        """The nuisances that are latent sites of the model: a background held at its
        estimate (``profile``) is not one (the data are given less it)."""
        return tuple(n for n in self.spec.names
                     if not (n == "background" and n in self.spec.fixed))

    def sample(self) -> dict:
        """The nuisance sites and their prior factors, inside the caller's plate."""
        spec, values = self.spec, {}
        if "background" in self.sites:
            m = spec.background_grid
            values["background"] = self._latent("background", constraints.nonnegative, (m, m))
        if spec.standoff:
            values["standoff"] = self._latent("standoff", constraints.positive, ())
        if spec.gain:
            values["gain"] = self._latent("gain", constraints.real, self.shape)
        for name, value in self.prior_terms(values).items():
            pyro.factor(name, -value)
        return values

    def prior_terms(self, values: dict) -> dict:
        """The prior factors' negative log densities at the nuisance ``values``, by name."""
        spec, out = self.spec, {}
        if "standoff" in values:
            sd = spec.standoff_sd(self.standoff_nm)
            out["standoff_prior"] = (0.5 * ((values["standoff"] - self.standoff_nm) / sd) ** 2
                                     / self.divisor)
        if "gain" in values:
            out["gain_prior"] = (0.5 * ((values["gain"] / spec.gain_sd) ** 2).sum((-2, -1))
                                 / self.divisor)
        return out


__all__ = ["EVENT_DIMS", "NuisanceModel", "PRIOR_TERMS", "apply_nuisance", "background_map",
           "noise_map_with_nuisance"]
