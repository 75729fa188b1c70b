"""Gaussian splats: ρ as a sum of anisotropic Gaussians with adaptive density control.

    ρ(r) = Σ_k a_k exp(−½ Σ_d ((r_d − μ_kd) / σ_kd)²),      a_k = exp(α_k) > 0

with centres ``μ_k`` and per-axis widths ``σ_k = exp(s_k)`` in the ``[−1, 1]²`` coordinates of
:func:`~nvbayes.fields.pixel_coordinates`.  As in 3D Gaussian splatting, each kind of parameter
has its own learning rate (:meth:`GaussianSplats.param_groups`): the base rate for the centres,
``width_lr_scale`` times it for ``s`` and ``amplitude_lr_scale`` times it for ``α`` (5× and
10× by default; 3DGS uses 5× and 50× its position rate, which here let the primitives
collapse onto the centre under F2).  With one rate of 1e-3 for all, Adam could change a
primitive's mass by at most a factor e^0.4 in 400 steps and never switch one off.

The primitives start on a ``⌈√K⌉ × ⌈√K⌉`` lattice with σ = half the lattice spacing and one
amplitude, which renders a density within about 2 % of uniform away from the window's edge.

Densification (appendix E.2, after 3D Gaussian splatting) runs every ``every`` steps from
``start`` to ``stop``, on the mean positional gradient ``g_k = ⟨‖∂L/∂μ_k‖⟩`` since the last
round, in this order:

1. prune: drop primitives with ``a_k < prune_fraction · max a``;
2. merge: fuse pairs whose centres are closer than ``merge_distance`` (mass and centre of mass
   kept);
3. grow: among ``g_k ≥ grad_ratio · mean g``, in order of ``g_k``, a primitive wider than
   ``split_width`` (largest σ) is split into two at ``μ ± σ_max`` along its widest axis with
   σ / 1.6, and a narrower one is cloned, the copy moved half a width down the mean gradient;
   the amplitudes are set so that each operation keeps the primitive's mass.  Growth stops at
   ``max_count`` primitives.

Adapted to the dipolar operator: under F2 the prediction is linear in ρ, so mass-conserving
operations leave the predicted spectrum nearly unchanged at the moment they happen; and
``split_width`` and ``merge_distance`` are set in units of the standoff z0, the scale below
which the kernel cannot tell sources apart (the model files give them in z0 and the builder
converts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .base import Density

_SPLIT_SHRINK = 1.6
#: Variance (pixel²) added to every primitive when rendering, the low-pass filter of 3DGS: a
#: primitive narrower than a pixel could otherwise sit between pixel centres unseen.
LOW_PASS = 0.3


@dataclass(frozen=True)
class DensityControl:
    """When and how the primitives are pruned, merged, split and cloned (coordinate units)."""

    max_count: int = 128
    start: int = 50
    stop: int = 300
    every: int = 50
    grad_ratio: float = 2.0
    split_width: float = 1.0 / 32
    merge_distance: float = 0.5 / 32
    prune_fraction: float = 0.01
    width_lr_scale: float = 5.0
    amplitude_lr_scale: float = 10.0


class GaussianSplats(Density):
    """``count`` Gaussian primitives; ``forward(coords (n, n, 2)) → ρ (n, n)``."""

    def __init__(self, count: int = 64, level: float = 1.0,
                 control: DensityControl = DensityControl()):
        super().__init__()
        self.control = control
        side = math.ceil(math.sqrt(count))
        spacing = 2.0 / side
        axis = (torch.arange(side, dtype=torch.float64) + 0.5) * spacing - 1.0
        yy, xx = torch.meshgrid(axis, axis, indexing="ij")
        means = torch.stack([yy, xx], dim=-1).reshape(-1, 2)[:count]
        widths = torch.full((count, 2), 0.5 * spacing, dtype=torch.float64)
        # the mean of the rendered lattice over the window, per unit amplitude
        unit = 2 * math.pi * widths.prod(-1).sum() / 4.0
        amplitude = torch.full((count,), float(level) / float(unit), dtype=torch.float64)
        self._set(means, widths.log(), amplitude)

    def _set(self, means, log_widths, amplitudes) -> None:
        dtype = torch.get_default_dtype() if means.dtype == torch.float64 else means.dtype
        self.means = nn.Parameter(means.detach().to(dtype).clone())
        self.log_widths = nn.Parameter(log_widths.detach().to(dtype).clone())
        self.log_amplitudes = nn.Parameter(
            amplitudes.detach().clamp(min=1e-30).log().to(dtype).clone())
        self._grad_norm = torch.zeros(len(means), device=means.device)
        self._grad_sum = torch.zeros(len(means), 2, device=means.device)
        self._observed = 0

    @property
    def count(self) -> int:
        return int(self.means.shape[0])

    @property
    def amplitudes(self) -> torch.Tensor:
        return self.log_amplitudes.exp()

    def param_groups(self) -> list[dict]:
        """Optimizer groups with their ``lr_scale`` relative to the base learning rate."""
        c = self.control
        return [{"params": [self.means], "lr_scale": 1.0},
                {"params": [self.log_widths], "lr_scale": c.width_lr_scale},
                {"params": [self.log_amplitudes], "lr_scale": c.amplitude_lr_scale}]

    @torch.no_grad()
    def masses(self) -> torch.Tensor:
        """``2π a σ_y σ_x`` per primitive, the integral of each Gaussian (no gradient)."""
        return 2 * math.pi * self.amplitudes * self.log_widths.exp().prod(-1)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """Render on the pixel centres ``coords`` ``(n, n, 2)`` with the low-pass floor: each
        variance is widened by ``0.3`` pixel² and the amplitude lowered to keep the mass."""
        pixel = 2.0 / max(coords.shape[-3], coords.shape[-2])
        variance = (2 * self.log_widths).exp() + LOW_PASS * pixel ** 2     # (K, 2)
        amplitude = self.amplitudes * ((2 * self.log_widths).exp() / variance).prod(-1).sqrt()
        offset = coords.unsqueeze(-2) - self.means                          # (n, n, K, 2)
        q = (offset.square() / variance).sum(-1)                            # (n, n, K)
        return (torch.exp(-0.5 * q) * amplitude).sum(-1)

    @torch.no_grad()
    def observe_gradients(self) -> None:
        """Accumulate ``‖∂L/∂μ_k‖`` (call after ``backward``)."""
        if self.means.grad is None:
            return
        grad = self.means.grad
        self._grad_norm = self._grad_norm.to(grad.device) + grad.norm(dim=-1)
        self._grad_sum = self._grad_sum.to(grad.device) + grad
        self._observed += 1

    def due(self, step: int) -> bool:
        c = self.control
        return c.start <= step <= c.stop and step > 0 and (step - c.start) % c.every == 0

    @torch.no_grad()
    def densify(self, step: int) -> bool:
        """One densification round if ``step`` is due; ``True`` if the parameters were replaced
        (the optimizer must then be rebuilt)."""
        if not self.due(step) or self._observed == 0:
            return False
        c = self.control
        means = self.means.detach().clone()
        widths = self.log_widths.detach().exp()
        amplitudes = self.amplitudes.detach()
        grads = self._grad_norm / self._observed
        direction = self._grad_sum / self._observed
        keep = amplitudes >= c.prune_fraction * amplitudes.max()
        means, widths, amplitudes = means[keep], widths[keep], amplitudes[keep]
        grads, direction = grads[keep], direction[keep]
        means, widths, amplitudes, grads, direction = _merge(
            means, widths, amplitudes, grads, direction, c.merge_distance)
        means, widths, amplitudes = _grow(means, widths, amplitudes, grads, direction, c)
        self._set(means, widths.log(), amplitudes)
        return True


def _merge(means, widths, amplitudes, grads, direction, distance: float):
    """Fuse pairs closer than ``distance``, heaviest first; mass and centre of mass kept."""
    masses = amplitudes * widths.prod(-1)
    order = torch.argsort(masses, descending=True).tolist()
    alive = torch.ones(len(means), dtype=torch.bool)
    for i in order:
        if not alive[i]:
            continue
        d = (means - means[i]).norm(dim=-1)
        d[i] = float("inf")
        d[~alive] = float("inf")
        j = int(torch.argmin(d))
        if d[j] >= distance:
            continue
        m = masses[i] + masses[j]
        means[i] = (masses[i] * means[i] + masses[j] * means[j]) / m
        widths[i] = (masses[i] * widths[i] + masses[j] * widths[j]) / m
        amplitudes[i] = m / widths[i].prod()
        grads[i] = torch.maximum(grads[i], grads[j])
        direction[i] = direction[i] + direction[j]
        masses[i] = m
        alive[j] = False
    return means[alive], widths[alive], amplitudes[alive], grads[alive], direction[alive]


def _grow(means, widths, amplitudes, grads, direction, c: DensityControl):
    """Split wide and clone narrow high-gradient primitives, up to ``c.max_count`` in all."""
    room = c.max_count - len(means)
    if room <= 0 or len(means) == 0:
        return means, widths, amplitudes
    chosen = torch.nonzero(grads >= c.grad_ratio * grads.mean()).flatten()
    chosen = chosen[torch.argsort(grads[chosen], descending=True)][:room]
    new_means, new_widths, new_amplitudes = [means], [widths], [amplitudes]
    for k in chosen.tolist():
        sigma = widths[k]
        if float(sigma.max()) > c.split_width:
            axis = int(torch.argmax(sigma))
            step = torch.zeros(2, dtype=means.dtype, device=means.device)
            step[axis] = sigma[axis]
            child = sigma / _SPLIT_SHRINK
            amplitude = amplitudes[k] * _SPLIT_SHRINK ** 2 / 2
            means[k] = means[k] + step
            widths[k], amplitudes[k] = child, amplitude
            new_means.append((means[k] - 2 * step)[None])
            new_widths.append(child[None])
            new_amplitudes.append(amplitude[None])
        else:
            amplitudes[k] = amplitudes[k] / 2
            g = direction[k]
            shift = -0.5 * sigma * g / g.norm().clamp(min=1e-30)
            new_means.append((means[k] + shift)[None])
            new_widths.append(sigma[None].clone())
            new_amplitudes.append(amplitudes[k][None].clone())
    return torch.cat(new_means), torch.cat(new_widths), torch.cat(new_amplitudes)
