"""Point sources in a measurement by the peaks of a non-negative MAP of its noise map.

The non-negative least-squares MAP of the noise map under F2 with ω_L at each pixel's
spectral estimate ω̂ (:func:`~nvbayes.inference.pixel_posterior.spectral_larmor`)::

    ρ̂ = argmin_{ρ ≥ 0} ‖c (P ∗ ρ) − N_obs‖²,    c(r) = Σ_ω L(ω; ω̂(r))        (FISTA)

and its local maxima (3 × 3) whose 3 × 3 mass exceeds :data:`DETECTION_SNR` times the
amplitude noise of a lone source.  Each peak gives a start ``(x_nm, y_nm, amplitude,
larmor_ghz)``: the 3 × 3 centroid, the 3 × 3 mass and ω̂ at the peak.  (The deconvolution
amplifies the noise and a maximum over the window selects its largest excursions, so the
threshold is also at least :data:`NOISE_PEAK_FACTOR` times the median mass of the local
maxima, most of which are noise.)  The source catalogue starts from these peaks; the sparse
pixel prior takes its source fraction from their count.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as tnf

from nvbayes.model.problem import InverseProblem

from .pixel_posterior import spectral_larmor

#: A peak is a source when its 3 × 3 mass exceeds this many amplitude noise sds.
DETECTION_SNR = 5.0
NOISE_PEAK_FACTOR = 10.0
#: Most peaks returned.
MAX_SOURCES = 24
FISTA_STEPS = 400


def nnls_density(problem: InverseProblem, larmor: torch.Tensor,
                 steps: int = FISTA_STEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-negative least-squares fit of the noise map, ``argmin_{ρ ≥ 0} ‖c (P ∗ ρ) −
    N_obs‖²`` by FISTA; returns ρ̂ ``(ny, nx)`` and ``‖A e‖`` of a unit source at the centre."""
    operator = problem.operator("F2")
    observed = problem.observed(dtype=torch.float64).sum(-3)
    weight = operator(torch.ones_like(larmor), larmor).sum(-3) / operator.source_power(
        torch.ones_like(larmor))
    if problem.mask is not None:                     # masked pixels leave the residual
        weight = weight * problem.pixel_mask()

    def forward(rho):
        return weight * operator.source_power(rho)

    vector = torch.ones_like(larmor)
    for _ in range(30):                              # power iteration for ‖A‖² (A = Aᵀ-ish)
        vector = _adjoint(forward, forward(vector), larmor)
        vector = vector / vector.norm()
    lipschitz = float(_adjoint(forward, forward(vector), larmor).norm()) * 1.1
    rho = previous = torch.zeros_like(larmor)
    for step in range(steps):
        point = rho + (step - 1) / (step + 2) * (rho - previous) if step else rho
        gradient = _adjoint(forward, forward(point) - observed, larmor)
        previous, rho = rho, (point - gradient / lipschitz).clamp(min=0.0)
    unit = torch.zeros_like(larmor)
    unit[problem.shape[0] // 2, problem.shape[1] // 2] = 1.0
    return rho, forward(unit).norm()


def _adjoint(forward, residual: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``Aᵀ r`` by autograd of the linear map ``forward``."""
    x = torch.zeros_like(like, requires_grad=True)
    (grad,) = torch.autograd.grad(forward(x), x, grad_outputs=residual)
    return grad


def detect_peaks(problem: InverseProblem, sigma: float, snr: float = DETECTION_SNR,
                 larmor: "torch.Tensor | None" = None
                 ) -> list[tuple[float, float, float, float]]:
    """Starts ``(x_nm, y_nm, amplitude, larmor_ghz)`` of the peaks of the NNLS MAP, brightest
    first (module docstring); ``larmor`` the spectral ω̂ map when the caller has it."""
    larmor = spectral_larmor(problem) if larmor is None else larmor
    rho, unit_norm = nnls_density(problem, larmor)
    noise = sigma * problem.freqs.size ** 0.5 / float(unit_norm)
    padded = tnf.pad(rho[None, None], (1, 1, 1, 1))
    local_max = tnf.max_pool2d(padded, 3, stride=1)[0, 0]
    mass = tnf.avg_pool2d(padded, 3, stride=1)[0, 0] * 9
    peaks = (rho >= local_max) & (rho > 0)
    threshold = max(snr * noise, NOISE_PEAK_FACTOR * float(mass[peaks].median()))
    candidates = torch.nonzero(peaks & (mass > threshold))
    starts = []
    ycoords, xcoords = (np.arange(n) * problem.spacing for n in problem.shape)
    for iy, ix in candidates.tolist():
        ys, xs = slice(max(iy - 1, 0), iy + 2), slice(max(ix - 1, 0), ix + 2)
        patch = rho[ys, xs].numpy()
        gx, gy = np.meshgrid(xcoords[xs], ycoords[ys])
        total = patch.sum()
        starts.append((float((patch * gx).sum() / total), float((patch * gy).sum() / total),
                       float(total), float(larmor[iy, ix])))
    starts.sort(key=lambda s: -s[2])
    return starts[:MAX_SOURCES]


__all__ = ["DETECTION_SNR", "MAX_SOURCES", "detect_peaks", "nnls_density"]
