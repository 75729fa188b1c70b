"""The NeTMY objective as a Pyro model (paper Eq. 6 with the weights of Table 7).

Latent sites ``rho`` (ρ ≥ 0) and ``larmor`` (ω_L, GHz), both ``(ny, nx)`` with flat
(improper) base measures; everything else is a named term of the negative log joint::

    −log p(ρ, ω_L, S_obs) = λ_D·D + λ_N·R_nm + λ_ρ·R_ds + λ_s‖ρ‖₁ + λ_1‖ρ‖₁ + λ_2‖ρ‖₂²
                            + λ_TV·TV(ρ) + λ_sh·R_sh + const

* ``log_mse``: the log noise map as a Gaussian likelihood,
  ``ℓ_obs(r) ~ Normal(ℓ_pred(r), σ_D)`` with ``σ_D² = |Ω| / (2 λ_D)``, so its negative log
  density is ``λ_D · D`` plus the Gaussian normalizer ``|Ω| log(σ_D √(2π))``;
* ``noise_map``: likewise for the mean-normalized noise maps, ``λ_N · R_nm``;
* ``sparsity`` and ``l1``: the two L1 entries of Table 7, each an exponential prior on ρ ≥ 0
  (a Laplace prior restricted to the half line) up to its constant;
* ``l2``: the Tikhonov term of the free-density baseline, a half-normal prior on ρ ≥ 0 up to
  its constant;
* ``tv``, ``direct_density``, ``spectrum_shape``, ``energy``: ``pyro.factor`` terms.

A weight of 0 removes its site.  The terms are in :mod:`nvbayes.model.losses`; the operator is
any :class:`nvbayes.physics.ForwardOperator` (F1 or F2 for inversion).

``reduction="mean"`` divides ``‖ρ‖₁``, ``‖ρ‖₂²`` and TV by the pixel count, so that their pull
does not grow with the grid while the data terms (pixel means) do not.  Where ε < 1e-6 (the
paper's 1e-10), the operator and the log map are evaluated in float64 whatever the field's
dtype: float32 round-off of the convolution is about 1e-7 of the peak, far above such an ε,
and would set the log target of every dim pixel.

Calibrated likelihood (``noise_sigma`` given, for posterior inference): the paper's σ_D and
σ_N follow from loss weights, not from the measurement, so they set a MAP objective but not
honest posterior widths.  With the sensor noise σ of the spectrum (per frequency and pixel)
the two weighted noise-map terms give way to one Gaussian observation of the max-normalized
noise map with the noise the measurement carries::

    N̂_obs(r) ~ Normal(N̂_pred(r), σ_N̂),      σ_N̂ = σ √n_freq / max_r N_obs(r)

(``N = Σ_ω S`` sums n_freq independent readouts; the observed maximum is treated as exact).
That term, like the paper's, is blind to the scale of ρ, which leaves the posterior free to
drift along ρ → cρ.  The total power fixes that gauge as the energy-ratio correction does, now
as an observation with its own noise::

    E_obs ~ Normal(E_pred, σ √(n_freq n_pixels)),      E = Σ_{ω,r} S

The remaining terms (priors and regularizers) keep their weights.

Independent measurements: an observed spectrum ``(B, n_freq, ny, nx)`` makes every site
``B`` conditionally independent copies inside ``pyro.plate("measurements", B)``, so the
negative log joint is a sum over measurements and each measurement's terms stay apart.
"""

from __future__ import annotations

import contextlib
import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from nvbayes.data.spec import LossWeights, NuisanceSpec
from nvbayes.model import losses
from nvbayes.model.nuisance import (
    PRIOR_TERMS,
    NuisanceModel,
    apply_nuisance,
    background_map,
    noise_map_with_nuisance,
)
from nvbayes.physics.noise_map import (
    LOG_EPS,
    log_map,
    log_noise_map,
    masked_max,
    noise_map,
    normalized_noise_map,
)

#: Sites whose negative log density is the loss term itself (no Gaussian normalizer).
FACTOR_TERMS = ("direct_density", "sparsity", "l1", "l2", "tv", "spectrum_shape", "energy",
                *PRIOR_TERMS)
#: Sites that are Gaussian observations of a map.
GAUSSIAN_TERMS = ("log_mse", "noise_map", "normalized_noise_map", "total_power")
#: The weighted data terms that a calibrated likelihood replaces.
WEIGHTED_DATA_TERMS = ("log_mse", "noise_map")


class NoiseSpectrumModel:
    """``model()``: the Pyro model of one observed spectrum ``(n_freq, ny, nx)``.

    Parameters
    ----------
    operator : the forward operator (its grid must match ``observed``).
    observed : the measured spectrum ``(n_freq, ny, nx)``, or ``(B, n_freq, ny, nx)`` for B
        independent measurements.
    weights : the loss weights of this stage.
    log_eps : ε inside the log map of D (the paper's 1e-10), a number or a tensor ``(B,)``,
        one per measurement (the noise floor).
    noise_sigma : the sensor noise σ of one readout (spectrum units; a number or a map
        ``(ny, nx)``) for the calibrated likelihood of one measurement (see the module
        docstring); ``None``: the paper's weighted terms.
    reduction : ``"sum"`` (the paper) or ``"mean"`` over pixels for ℓ1, ℓ2 and TV.
    mask : bool ``(ny, nx)``, the pixels whose data enter the likelihood (default all); the
        data terms run over these alone, the priors on ρ over every pixel.
    nuisance : the lab's nuisances the forward model carries (:mod:`nvbayes.model.nuisance`),
        with ``standoff_nm`` the recorded standoff; default none (the paper's model).  With a
        background, ``R_ds`` compares ρ² with the observed noise map less the background.
    """

    #: Below this ε the operator and the log map run in float64.
    PRECISE_BELOW = 1e-6

    def __init__(self, operator, observed: torch.Tensor, weights: LossWeights,
                 log_eps: "float | torch.Tensor" = LOG_EPS,
                 noise_sigma: "float | torch.Tensor | None" = None, reduction: str = "sum",
                 mask: "torch.Tensor | None" = None,
                 nuisance: NuisanceSpec = NuisanceSpec(), standoff_nm: float = 20.0):
        if observed.dim() not in (3, 4):
            raise ValueError("observed spectrum must be (n_freq, ny, nx) or (B, n_freq, ny, nx), "
                             f"got {tuple(observed.shape)}")
        self.operator = operator
        self.weights = weights
        self.observed = observed
        self.shape = tuple(observed.shape[-2:])
        self.batch = tuple(observed.shape[:-3])
        self.mask = None if mask is None else torch.as_tensor(mask, dtype=torch.bool,
                                                              device=observed.device)
        if self.mask is not None and tuple(self.mask.shape) != self.shape:
            raise ValueError(f"mask {tuple(self.mask.shape)} does not match the grid {self.shape}")
        n_pixels = self.shape[0] * self.shape[1] if mask is None else int(self.mask.sum())
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be sum or mean, got {reduction!r}")
        self.pixel_divisor = float(self.shape[0] * self.shape[1]) if reduction == "mean" else 1.0
        self.nuisance = (NuisanceModel(nuisance, standoff_nm, self.shape, self.batch,
                                       self.pixel_divisor) if nuisance.any else None)
        self.log_eps = (log_eps.detach().to(torch.float64) if isinstance(log_eps, torch.Tensor)
                        else float(log_eps))
        self.precise = float(torch.as_tensor(self.log_eps).min()) < self.PRECISE_BELOW
        self.log_map_obs = log_noise_map(observed.to(torch.float64), self.log_eps, self.mask
                                         ).to(observed.dtype)
        self.noise_map_obs = losses.mean_normalized(noise_map(observed), self.mask)
        self.shape_weights = losses.spectrum_shape_weights(observed, self.mask)
        self.shape_obs = losses.frequency_normalized(observed)
        self.energy_obs = losses.total_power(observed, self.mask)
        self.sigma = {}
        for name in WEIGHTED_DATA_TERMS:
            w = getattr(weights, name)
            if w > 0 and noise_sigma is None:
                self.sigma[name] = math.sqrt(n_pixels / (2.0 * w))
        log_scale = {name: n_pixels * math.log(s) for name, s in self.sigma.items()}
        if noise_sigma is not None:
            if self.batch:
                raise ValueError("the calibrated likelihood takes one measurement")
            sigma = torch.as_tensor(noise_sigma, dtype=torch.float64)
            if not bool((sigma > 0).all()):
                raise ValueError(f"noise_sigma must be > 0, got {noise_sigma}")
            sigma = torch.broadcast_to(sigma, self.shape)
            used = (torch.ones(self.shape, dtype=torch.bool) if self.mask is None
                    else self.mask.cpu())
            n_obs = noise_map(observed)
            peak = float(masked_max(n_obs, self.mask))
            self.normalized_obs = n_obs / peak
            scale = (sigma * math.sqrt(observed.shape[-3]) / peak).to(observed)
            self.sigma["normalized_noise_map"] = scale
            log_scale["normalized_noise_map"] = float(torch.log(scale.cpu())[used].sum())
            self.total_obs = losses.total_power(observed, self.mask)
            total = math.sqrt(observed.shape[-3] * float((sigma[used] ** 2).sum()))
            self.sigma["total_power"] = total
            log_scale["total_power"] = math.log(total)
        self.normalizer = {name: log_scale[name] + (1 if name == "total_power" else n_pixels)
                           * 0.5 * math.log(2 * math.pi) for name in self.sigma}

    def _latent(self, name: str, support) -> torch.Tensor:
        base = dist.ImproperUniform(support, batch_shape=torch.Size(self.batch),
                                    event_shape=torch.Size(self.shape))
        return pyro.sample(name, base)

    def _plate(self):
        if not self.batch:
            return contextlib.nullcontext()
        return pyro.plate("measurements", self.batch[0], dim=-1)

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        """Sample sites in order; returns the predicted noise map ``N = Σ_ω S``,
        ``(..., ny, nx)`` (every term but the spectrum-shape one reads the spectrum through
        it).

        Extra arguments (the guide's) are ignored.
        """
        with self._plate():
            return self._sites()

    def _sites(self) -> torch.Tensor:
        rho = self._latent("rho", constraints.nonnegative)
        larmor = self._latent("larmor", constraints.real)
        nuisance = self.nuisance.sample() if self.nuisance is not None else {}
        exact, noise, spectrum = self._predict(rho, larmor, nuisance)
        for name, (loc, obs) in self._observations(rho, exact, noise).items():
            normal = (dist.Normal(loc, self.sigma[name]) if name == "total_power"
                      else self._map_normal(loc, name))
            pyro.sample(name, normal, obs=obs)
        for name, value in self._factors(rho, noise, spectrum, nuisance).items():
            pyro.factor(name, -value)
        return noise

    def potential(self, rho: torch.Tensor, larmor: torch.Tensor,
                  nuisance: "dict | None" = None) -> dict[str, torch.Tensor]:
        """The terms of :meth:`loss_terms` at ``(ρ, ω_L)`` and the nuisance values, computed
        without a Pyro trace: what a trace of this model with those values at its latent
        sites gives, for a solver that evaluates the objective thousands of times.

        ``rho``, ``larmor`` ``(*batch, ny, nx)``; nuisance values as the guide's sites (those
        that are not sites of this model, a background held at its estimate, are ignored as
        a trace ignores them).
        """
        sites = () if self.nuisance is None else self.nuisance.sites
        nuisance = {name: v for name, v in (nuisance or {}).items() if name in sites}
        exact, noise, spectrum = self._predict(rho, larmor, nuisance)
        terms = {name: self._half_square(name, (obs - loc) / self.sigma[name])
                 for name, (loc, obs) in self._observations(rho, exact, noise).items()}
        terms |= self._factors(rho, noise, spectrum, nuisance)
        if self.nuisance is not None:
            terms |= self.nuisance.prior_terms(nuisance)
        return {name: terms[name] for name in GAUSSIAN_TERMS + FACTOR_TERMS if name in terms}

    def _predict(self, rho: torch.Tensor, larmor: torch.Tensor, nuisance: dict
                 ) -> tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]:
        """``(exact, noise, spectrum)``: the predicted noise map ``N = Σ_ω S``, in float64
        where ε is below :attr:`PRECISE_BELOW` (else the same tensor twice) and in ρ's dtype,
        and the predicted spectrum where a term reads it (the spectrum-shape term; else
        ``None``: the operator sums its Lorentzian alone, :meth:`~nvbayes.physics.
        operators.ForwardOperator.noise_map`)."""
        if self.precise:
            rho_, larmor_ = rho.to(torch.float64), larmor.to(torch.float64)
        else:
            rho_, larmor_ = rho, larmor
        spectrum = None
        if self.weights.spectrum_shape > 0:
            spectrum = apply_nuisance(self.operator, rho_, larmor_, nuisance)
            exact = noise_map(spectrum)
            spectrum = spectrum.to(rho.dtype)
        else:
            exact = noise_map_with_nuisance(self.operator, rho_, larmor_, nuisance)
        return exact, exact.to(rho.dtype), spectrum

    def _observations(self, rho: torch.Tensor, exact: torch.Tensor, noise: torch.Tensor
                      ) -> dict[str, tuple]:
        """The Gaussian observations, name → ``(loc, observed)``, in site order, from the
        predicted noise map (``exact``: in float64 where ε asks for it)."""
        mask, out = self.mask, {}
        if "normalized_noise_map" in self.sigma:
            out["normalized_noise_map"] = (normalized_noise_map(noise, mask),
                                           self.normalized_obs)
            out["total_power"] = (losses.map_total(noise, mask), self.total_obs)
        if "log_mse" in self.sigma:
            out["log_mse"] = (log_map(normalized_noise_map(exact, mask), self.log_eps
                                      ).to(rho.dtype), self.log_map_obs)
        if "noise_map" in self.sigma:
            out["noise_map"] = (losses.mean_normalized(noise, mask), self.noise_map_obs)
        return out

    def _factors(self, rho: torch.Tensor, noise: torch.Tensor,
                 spectrum: "torch.Tensor | None", nuisance: dict) -> dict[str, torch.Tensor]:
        """The factor terms (each its negative log factor, weight included), in site order."""
        w, mask, per, out = self.weights, self.mask, self.pixel_divisor, {}
        if w.direct_density > 0:
            target = self.noise_map_obs
            if "background" in nuisance:
                flat = background_map(nuisance["background"].detach(), self.shape)
                less = self.observed - flat.to(self.observed.dtype).unsqueeze(-3)
                target = losses.mean_normalized(noise_map(less), mask)
            out["direct_density"] = w.direct_density * losses.density_map_mse(rho, target, mask)
        l1 = losses.l1_norm(rho) / per if w.sparsity > 0 or w.l1 > 0 else None
        if w.sparsity > 0:
            out["sparsity"] = w.sparsity * l1
        if w.l1 > 0:
            out["l1"] = w.l1 * l1
        if w.l2 > 0:
            out["l2"] = w.l2 * losses.l2_norm(rho) / per
        if w.tv > 0:
            out["tv"] = w.tv * losses.anisotropic_tv(rho) / per
        if w.energy > 0:
            out["energy"] = w.energy * losses.log_ratio_squared(losses.map_total(noise, mask),
                                                                self.energy_obs)
        if w.spectrum_shape > 0:
            out["spectrum_shape"] = w.spectrum_shape * losses.shape_mse(
                spectrum, self.shape_obs, self.shape_weights)
        return out

    def _map_normal(self, loc: torch.Tensor, name: str) -> dist.Distribution:
        """A Gaussian observation of a map ``(..., ny, nx)``; masked pixels carry no density."""
        normal = dist.Normal(loc, self.sigma[name])
        if self.mask is not None:
            normal = normal.mask(self.mask)
        return normal.to_event(2)

    def loss_terms(self, trace) -> dict[str, torch.Tensor]:
        """The weighted loss terms of a model trace (log probabilities computed), by name, each
        of the measurements' batch shape (``()`` for one measurement).

        Their sum is the negative log joint minus the Gaussian normalizers.  A Gaussian term is
        computed as ``½ Σ ((obs − loc) / σ)²`` from its site rather than as ``−log p −
        normalizer``: in float32 that difference would lose the term's low digits to the
        normalizer (about 2·10⁴ on a 64² grid), which a line search cannot afford.
        """
        terms = {}
        for name in GAUSSIAN_TERMS:
            if name in trace.nodes:
                site = trace.nodes[name]
                normal = site["fn"]
                while not isinstance(normal, dist.Normal):
                    normal = normal.base_dist
                terms[name] = self._half_square(name, (site["value"] - normal.loc)
                                                / normal.scale)
        for name in FACTOR_TERMS:
            if name in trace.nodes:
                terms[name] = -trace.nodes[name]["log_prob"]
        return terms

    def _half_square(self, name: str, z: torch.Tensor) -> torch.Tensor:
        """``½ Σ z²`` of a Gaussian term's standardized residuals (over the mask's pixels;
        ``total_power`` is one number per measurement)."""
        z2 = z * z
        if name == "total_power":
            return 0.5 * z2
        if self.mask is not None:
            z2 = z2 * self.mask.to(z2.dtype)
        return 0.5 * z2.sum(dim=(-2, -1))

    @property
    def constant(self) -> float:
        """Σ of the Gaussian normalizers (per measurement): negative log joint − Σ loss
        terms."""
        return float(sum(self.normalizer.values()))
