"""What a lab's measurement has and the paper's generator does not: the nuisances of real data.

A :class:`Realism` names each nuisance and its level; every one is off by default, and with
all of them off the simulator is the paper's generator, bit for bit.  With ``a_s``, ``p_s``,
``ω_s`` the amplitude, in-plane position and Larmor frequency of spin s, ``z(r)`` the NV depth
under readout pixel r, ``g(r)`` the pixel's gain and ``b(r)`` the intrinsic background:

    S_clean(ω, r) = g(r) · Σ_s a_s P(r − p_s; z(r)) L(ω; ω_s)  +  b(r)
    S(ω, r)       = S_clean(ω, r) + ξ(ω, r) · √(σ_read² + k · S_clean(ω, r)),   ξ ~ N(0, 1)

* **amplitudes** uniform in ``[amplitude_min, 1]`` (the paper's generator: [0.5, 1]);
* **positions**: ``continuous`` moves each source off its pixel centre by a uniform offset
  within the pixel; ``cloud_nm`` makes each source a cloud of :data:`CLOUD_SPINS` spins with
  Gaussian offsets of that standard deviation, sharing its amplitude and Larmor frequency;
* **standoff**: the true standoff is the recorded one times ``1 + standoff_error``, and
  ``depth_spread_nm`` adds a white per-pixel depth offset of that standard deviation
  (implantation straggle);
* **background** ``b(r) = level · peak · (½ + ½ u(r))``: flat in frequency, smooth in space
  (``u`` a Gaussian random field of correlation length a sixth of the window, scaled to
  [0, 1]); ``level`` is its maximum relative to the peak of the sample's own spectrum;
* **gain** ``g(r) = 1 + gain_spread · η(r)``, η white standard normal;
* **shot noise**: photon noise whose variance grows with the signal, ``k = shot² · max S``,
  so its standard deviation at the brightest readout is ``shot × max S``; the read noise
  ``σ_read`` stays the generator's (``noise × (max − min)`` of the clean spectrum);
* ``record_sigma = False``: the file does not state σ (a lab's file does not).

The scene (positions, amplitudes, Larmor frequencies) and the standard normals ξ of the sensor
noise come from the generator's own stream, as without nuisances, so a scene with nuisances is
the same scene as without them; the nuisances themselves are drawn from a second stream of
the same seed.  The units are those of the recorded geometry: a unit source at the *recorded*
standoff peaks at 1 (normalized units), whatever the true standoff is.

Every nuisance is written to the measurement as truth (``*_true``), never read by a fit.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from nvbayes.errors import SceneError
from nvbayes.physics.kernels import power_kernel
from nvbayes.physics.units import as_units

#: Spins in one extended source (``cloud_nm > 0``).
CLOUD_SPINS = 8
#: Correlation length of the background's random field, as a fraction of the window side.
BACKGROUND_CORRELATION = 1.0 / 6.0
#: Seed-stream key of the nuisance draws (the scene and the sensor noise use the seed alone).
NUISANCE_STREAM = 0x1AB
#: No pixel's depth goes below this fraction of the true standoff.
_MIN_DEPTH_FRACTION = 0.25


@dataclass(frozen=True)
class Realism:
    """The nuisances of a simulated measurement (module docstring); all off by default.

    Parameters
    ----------
    amplitude_min : lower end of the amplitude range, relative to the brightest (0.5).
    continuous : positions anywhere in the pixel, not on its centre.
    cloud_nm : standard deviation of an extended source's spin cloud, nm (0: point sources).
    standoff_error : relative error of the recorded standoff, ``z_true = z_rec (1 + e)``.
    depth_spread_nm : standard deviation of the per-pixel depth, nm.
    background : maximum of the intrinsic background relative to the sample's peak.
    gain_spread : standard deviation of the per-pixel gain (relative).
    shot_noise : photon-noise standard deviation at the peak, relative to the peak.
    record_sigma : whether the file records the noise σ.
    """

    amplitude_min: float = 0.5
    continuous: bool = False
    cloud_nm: float = 0.0
    standoff_error: float = 0.0
    depth_spread_nm: float = 0.0
    background: float = 0.0
    gain_spread: float = 0.0
    shot_noise: float = 0.0
    record_sigma: bool = True

    def __post_init__(self):
        if not 0.0 < self.amplitude_min <= 1.0:
            raise SceneError(f"the amplitude range's lower end must be in (0, 1], got "
                             f"{self.amplitude_min}", "pass e.g. --amplitude-min 0.3")
        if not self.standoff_error > -0.75:
            raise SceneError(f"a standoff error of {self.standoff_error} leaves no standoff",
                             "pass --standoff-error above -0.75, e.g. 0.2")
        for name in ("cloud_nm", "depth_spread_nm", "background", "gain_spread",
                     "shot_noise"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                flag = "--" + name.replace("_nm", "").replace("_", "-")
                raise SceneError(f"{name} must be >= 0, got {value}",
                                 f"pass {flag} 0 (off) or a positive level")

    @property
    def off(self) -> bool:
        """Whether this is the paper's generator (no nuisance at all)."""
        return self == Realism()

    def describe(self) -> str:
        """The nuisances that are on, as ``name=value`` pairs (``"off"`` for none)."""
        base = Realism()
        parts = [f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                 if getattr(self, f.name) != getattr(base, f.name)]
        return ", ".join(parts) or "off"


#: Typical lab levels of every nuisance (``--realism lab``).
LAB = Realism(amplitude_min=0.3, continuous=True, cloud_nm=4.0, standoff_error=0.2,
              depth_spread_nm=1.0, background=0.3, gain_spread=0.03, shot_noise=0.01,
              record_sigma=False)

#: Each nuisance by name: the fields it sets to their :data:`LAB` level.
NUISANCES = {
    "amplitudes": ("amplitude_min",),
    "positions": ("continuous", "cloud_nm"),
    "standoff": ("standoff_error", "depth_spread_nm"),
    "background": ("background",),
    "gain": ("gain_spread",),
    "noise": ("shot_noise", "record_sigma"),
}


def parse_realism(text: str) -> Realism:
    """``"off"``, ``"lab"`` (every nuisance at its lab level), or a comma list of nuisance
    names (:data:`NUISANCES`), each at its lab level and the others off."""
    key = str(text).strip().lower()
    if key in ("off", "", "none"):
        return Realism()
    if key == "lab":
        return LAB
    names = [n.strip() for n in key.split(",") if n.strip()]
    unknown = [n for n in names if n not in NUISANCES]
    if unknown:
        raise SceneError(f"unknown nuisance {unknown[0]!r} in --realism {text!r}",
                         f"use off, lab, or a comma list of {', '.join(NUISANCES)}")
    fields = {f: getattr(LAB, f) for n in names for f in NUISANCES[n]}
    return Realism(**fields)


@dataclass(frozen=True)
class LabTruth:
    """One simulated lab measurement and its nuisances' truth (module docstring).

    ``spectrum`` and ``clean`` ``(n_freq, ny, nx)``; ``rho`` ``(ny, nx)`` each source's
    amplitude on the pixel nearest its centre; ``larmor`` ``(ny, nx)`` the frequency of the
    source dominating each pixel's noise; ``sources`` ``(k, 4)``: y and x (nm) of the
    centroid of its spins (what the data can locate: a cloud's drawn centre sits about
    ``cloud_nm / √8`` from it; the centre itself for a point source), amplitude, Larmor
    (GHz); ``depth``, ``gain``, ``background`` ``(ny, nx)``; ``standoff`` the true
    global standoff (nm); ``read_sigma`` σ_read and ``shot`` k of the noise model.
    """

    spectrum: np.ndarray
    clean: np.ndarray
    rho: np.ndarray
    larmor: np.ndarray
    sources: np.ndarray
    depth: np.ndarray
    gain: np.ndarray
    background: np.ndarray
    standoff: float
    read_sigma: float
    shot: float

    def noise_sigma(self) -> float:
        """The root-mean-square σ of one readout over the whole spectrum."""
        return float(np.sqrt(self.read_sigma ** 2 + self.shot * self.clean.mean()))


def smooth_field(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A Gaussian random field of correlation length :data:`BACKGROUND_CORRELATION` × the
    window side, scaled to [0, 1]: ``(ny, nx)``."""
    width = BACKGROUND_CORRELATION * max(shape)
    field = gaussian_filter(rng.standard_normal(shape), width, mode="reflect")
    span = field.max() - field.min()
    return (field - field.min()) / span if span > 0 else np.full(shape, 0.5)


def spin_positions(positions_px: np.ndarray, spacing: float, realism: Realism,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(centres (k, 2), spins (k, m, 2))`` in nm: each source's centre (off its pixel
    centre when ``continuous``) and its ``m`` spins (1, or :data:`CLOUD_SPINS` in a
    cloud)."""
    centres = positions_px.astype(np.float64) * spacing
    if realism.continuous:
        centres = centres + rng.uniform(-0.5, 0.5, size=centres.shape) * spacing
    if realism.cloud_nm > 0:
        spins = centres[:, None, :] + rng.normal(0.0, realism.cloud_nm,
                                                 size=(len(centres), CLOUD_SPINS, 2))
    else:
        spins = centres[:, None, :]
    return centres, spins


def source_powers(spins: np.ndarray, shape: tuple[int, int], spacing: float,
                  depth: np.ndarray, nv_axis, units: str, recorded_standoff: float
                  ) -> np.ndarray:
    """``(k, ny, nx)``: each source's power at every readout pixel, summed over its spins
    (each spin weighted 1 / m), in the units of the recorded geometry."""
    units = as_units(units)
    scale = units.power_scale(recorded_standoff)
    ny, nx = shape
    y = torch.arange(ny, dtype=torch.float64) * units.length(spacing)
    x = torch.arange(nx, dtype=torch.float64) * units.length(spacing)
    z = torch.from_numpy(depth).to(torch.float64) * units.length(1.0)
    k, m, _ = spins.shape
    at = torch.from_numpy(spins.reshape(k * m, 2)) * units.length(1.0)
    out = np.empty((k, ny, nx))
    for s in range(k):
        dy = y[None, :, None] - at[s * m:(s + 1) * m, 0, None, None]
        dx = x[None, None, :] - at[s * m:(s + 1) * m, 1, None, None]
        dy, dx = torch.broadcast_tensors(dy, dx.expand(m, ny, nx))
        power = power_kernel(dx, dy, z[None], nv_axis)
        out[s] = (scale * power.mean(0)).numpy()
    return out


def render(positions_px: np.ndarray, amplitudes: np.ndarray, larmor: np.ndarray,
           shape: tuple[int, int], spacing: float, standoff: float, freqs: np.ndarray,
           linewidth: float, noise: float, realism: Realism, nv_axis, units: str,
           rng: np.random.Generator, nuisance_rng: np.random.Generator) -> LabTruth:
    """Simulate one lab measurement of the sources at ``positions_px`` (integer pixel
    indices ``(k, 2)``) with the nuisances of ``realism``; ``rng`` draws the sensor noise
    (as the paper's generator does), ``nuisance_rng`` everything else."""
    ny, nx = shape
    centres, spins = spin_positions(positions_px, spacing, realism, nuisance_rng)
    true_standoff = standoff * (1.0 + realism.standoff_error)
    depth = np.full(shape, true_standoff)
    if realism.depth_spread_nm > 0:
        depth = depth + realism.depth_spread_nm * nuisance_rng.standard_normal(shape)
        depth = np.maximum(depth, _MIN_DEPTH_FRACTION * true_standoff)
    gain = np.ones(shape)
    if realism.gain_spread > 0:
        gain = 1.0 + realism.gain_spread * nuisance_rng.standard_normal(shape)
    field = smooth_field(shape, nuisance_rng) if realism.background > 0 else None
    power = source_powers(spins, shape, spacing, depth, nv_axis, units, standoff)
    detuning = freqs[None, :] - larmor[:, None]
    lorentz = linewidth ** 2 / (detuning ** 2 + linewidth ** 2)            # (k, n_freq)
    signal = np.einsum("s,sf,syx->fyx", amplitudes, lorentz, power) * gain
    background = (np.zeros(shape) if field is None
                  else realism.background * signal.max() * (0.5 + 0.5 * field))
    clean = signal + background[None]
    read_sigma = noise * float(clean.max() - clean.min())
    shot = realism.shot_noise ** 2 * float(clean.max())
    sigma = np.sqrt(read_sigma ** 2 + shot * np.clip(clean, 0.0, None))
    spectrum = clean + rng.normal(0.0, 1.0, size=clean.shape) * sigma
    nearest = np.clip(np.rint(centres / spacing).astype(np.int64), 0, [ny - 1, nx - 1])
    rho = np.zeros(shape)
    np.add.at(rho, (nearest[:, 0], nearest[:, 1]), amplitudes)
    larmor_map = larmor[np.argmax(amplitudes[:, None, None] * power, axis=0)]
    sources = np.column_stack([spins.mean(axis=1), amplitudes, larmor])
    return LabTruth(spectrum, clean, rho, larmor_map, sources, depth, gain, background,
                    true_standoff, read_sigma, shot)
