"""The residual table of a run (``residuals.nc``): what the observed spectrum says about the
fit's prediction, with the noise estimated from the observed spectrum itself.

σ of every readout is the read-plus-shot model ``σ² = a + k S``
(:mod:`nvbayes.physics.noise_model`) fitted to the observed spectrum, evaluated at the
spectrum smoothed over neighbouring readouts; where the spectrum has too few readouts or
pixels for that fit, the white σ of :func:`~nvbayes.physics.noise_map.sensor_noise_sigma`
(``k = 0``).  A run with a predicted spectrum (MAP) compares spectra; a sampling run, which
keeps the predicted noise map of every draw, compares the observed noise map ``Σ_ω S`` with
the posterior mean of the predicted one, ``σ_N = √(Σ_ω σ²)``.  The statistics and findings
are :mod:`nvbayes.physics.residuals`'.

``residuals.nc``: ``pixel_mean (y, x)``, the mean standardized residual of every pixel over
the readouts (NaN on unused pixels), and for spectra ``freq_mean (freq)``, that of every
readout over the pixels; attributes: every :class:`~nvbayes.physics.residuals.ResidualSummary`
number, the noise model (``read_variance``, ``shot_slope`` and their standard errors),
``compared`` (``spectrum`` or ``noise map``) and ``findings`` (one line each, newline
separated; empty when the residuals look like noise).
"""

from __future__ import annotations

import torch
import xarray as xr

from nvbayes.data.io import SPATIAL
from nvbayes.errors import NvbayesError
from nvbayes.physics.noise_map import sensor_noise_sigma
from nvbayes.physics.noise_model import ORDER, AffineNoise, affine_noise_model, affine_sigma
from nvbayes.physics.residuals import findings, profiles, summarize

#: The file stem of the table in a run folder (``residuals.nc``).
RESIDUALS = "residuals"


def observed_noise(spectrum: torch.Tensor, mask: "torch.Tensor | None",
                   freqs: torch.Tensor) -> tuple[AffineNoise, str]:
    """``(model, how)``: the read-plus-shot model of ``spectrum`` ``(n_freq, ny, nx)``, or the
    white σ where the spectrum is too small for it (``how`` says which)."""
    if spectrum.shape[0] >= ORDER + 3:
        try:
            return affine_noise_model(spectrum, mask, freqs), "affine noise model"
        except NvbayesError:
            pass
    clean = torch.nan_to_num(spectrum) if mask is None else \
        torch.where(mask, torch.nan_to_num(spectrum), 0.0)
    sigma = float(sensor_noise_sigma(clean, mask, freqs))
    return AffineNoise(sigma ** 2, 0.0), "white sensor noise"


def residual_table(observed: xr.DataArray, mask: "xr.DataArray | None",
                   predicted: "xr.DataArray | None" = None,
                   predicted_noise_map: "xr.DataArray | None" = None) -> "xr.Dataset | None":
    """The residual table of one fit: ``observed`` ``(freq, y, x)``, its ``mask`` ``(y, x)``
    (or ``None``), and the prediction, a spectrum ``(freq, y, x)`` or else a noise map
    ``(y, x)``.  ``None`` where nothing can be said (fewer than three readouts, or no finite
    residual)."""
    if observed.sizes["freq"] < 3 or (predicted is None and predicted_noise_map is None):
        return None
    spectrum = torch.tensor(observed.values, dtype=torch.float64)
    used = None if mask is None else torch.as_tensor(mask.values.astype(bool))
    freqs = torch.tensor(observed["freq"].values, dtype=torch.float64)
    noise, how = observed_noise(spectrum, used, freqs)
    sigma = affine_sigma(noise, spectrum)
    if predicted is not None:
        compared = "spectrum"
        pair = (spectrum, torch.as_tensor(predicted.values, dtype=torch.float64), sigma)
    else:
        compared = "noise map"
        pair = (spectrum.sum(0, keepdim=True),
                torch.as_tensor(predicted_noise_map.values, dtype=torch.float64)[None],
                sigma.pow(2).sum(0, keepdim=True).sqrt())
    try:
        summary = summarize(*pair, used, freqs)
        by_freq, by_pixel = profiles(*pair, used)
    except NvbayesError:
        return None
    space = {c: observed[c].values for c in SPATIAL}
    data = {"pixel_mean": (SPATIAL, by_pixel.numpy(), {
        "long_name": "mean standardized residual (obs - pred) / sigma over the readouts",
        "units": "1"})}
    coords = dict(space)
    if compared == "spectrum":
        data["freq_mean"] = ("freq", by_freq.numpy(), {
            "long_name": "mean standardized residual over the used pixels", "units": "1"})
        coords["freq"] = observed["freq"].values
    attrs = {k: (float(v) if isinstance(v, float) else int(v))
             for k, v in summary.to_dict().items()}
    attrs |= {"read_variance": noise.read_variance, "shot_slope": noise.slope,
              "read_variance_se": float(noise.read_variance_se),
              "shot_slope_se": float(noise.slope_se), "sigma_from": how,
              "compared": compared, "findings": "\n".join(findings(summary)),
              "description": "residuals of the fit standardized by the noise estimated from "
                             "the observed spectrum: var = read_variance + shot_slope * S "
                             "(nvbayes.physics.noise_model, .residuals)"}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def run_residuals(run) -> "xr.Dataset | None":
    """:func:`residual_table` of a :class:`~nvbayes.results.run.Run` (its observed spectrum,
    mask and prediction)."""
    observed_data = run.idata.observed_data
    mask = observed_data["mask"] if "mask" in observed_data else None
    predicted = run.predicted
    return residual_table(run.observed, mask, predicted,
                          None if predicted is not None else run.predicted_noise_map)


__all__ = ["RESIDUALS", "observed_noise", "residual_table", "run_residuals"]
