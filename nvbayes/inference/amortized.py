"""Amortized inference: a trained supervised network as a method (``--model unet-sl``).

A fit is one forward pass: the spectrum divided by its peak ``c``
(:func:`~nvbayes.data.trained.input_scale`) goes through the U-Net, ``c · ρ̂`` is put back in the
measurement's units, and the energy-ratio scale correction follows, as after every other
method (paper Eq. 30).  The prediction therefore does not depend on the unit the spectrum is
written in.  Masked pixels read 0 at the input (:class:`~nvbayes.model.problem.InverseProblem`
zeroes them), which the networks never saw in training: a masked measurement is fitted, but
off the training distribution.
"""

from __future__ import annotations

import functools

import torch

from nvbayes.data.trained import check_geometry, geometry, input_scale, read_model_file
from nvbayes.fields.unet import UNet
from nvbayes.model.problem import InverseProblem, check_inversion_operator

from .scale import HOMOGENEITY, scale_correction


@functools.lru_cache(maxsize=8)
def load_network(path: str, sha256: str) -> tuple[UNet, dict]:
    """The generator of a model file in float32 eval mode, and its record (cached by path
    and digest: a benchmark loads each file once per process)."""
    record = read_model_file(path)
    spec, geo = record["spec"], record["input"]
    net = UNet(len(geo["freqs"]), tuple(geo["shape"]), tuple(geo["larmor_band_ghz"]),
               tuple(spec.channels), spec.fourier_octaves)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v
                         for k, v in record["state"].items()})
    return net.eval(), record


def problem_geometry(problem: InverseProblem) -> dict:
    """The :func:`~nvbayes.data.trained.geometry` of one measurement."""
    return geometry(problem.freqs, problem.shape, problem.spacing, problem.standoff,
                    problem.linewidth, problem.band, problem.nv_axis)


def check_trained(spec, problem: InverseProblem) -> tuple[UNet, dict]:
    """The network of a trained spec, after checking that ``problem`` has its geometry."""
    net, record = load_network(spec.field.path, spec.field.sha256)
    check_geometry(record["input"], problem_geometry(problem), f"model {spec.name}")
    return net, record


def predict(net: UNet, spectrum: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ρ̂, ω̂_L)`` ``(B, ny, nx)`` of spectra ``(B, n_freq, ny, nx)`` in their own units."""
    c = input_scale(spectrum)
    with torch.no_grad():
        rho, larmor = net(spectrum / c)
    return rho * c[..., 0], larmor


def fit_trained(problem: InverseProblem, spec, operator: str = "F2", device: str = "cpu"
                ) -> tuple:
    """``(ρ, ω_L, S_pred, stats)`` of one measurement by a trained model, ρ scale-corrected,
    as numpy (:func:`nvbayes.inference.map.fit_map` wraps them in its result)."""
    operator = check_inversion_operator(operator)
    net = check_trained(spec, problem)[0].to(device)
    observed = problem.observed(dtype=torch.float32, device=device)
    rho, larmor = predict(net, observed.unsqueeze(0))
    rho, larmor = rho[0].to(torch.float64), larmor[0].to(torch.float64)
    predicted = problem.operator(operator)(rho, larmor)
    mask = problem.pixel_mask(device=device)
    stats = scale_correction(observed.to(torch.float64), predicted, operator, mask)
    alpha = stats["scale_correction"]
    stats.update(steps=0, diverged=0, final_loss=float("nan"))
    return ((alpha * rho).cpu().numpy(), larmor.cpu().numpy(),
            (alpha ** HOMOGENEITY[operator] * predicted).cpu().numpy(), stats)


__all__ = ["check_trained", "fit_trained", "load_network", "predict", "problem_geometry"]
