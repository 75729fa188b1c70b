"""The deterministic steps of appendix E.8: implied depths, power-law slopes, landscape.

Every step takes a rate convention (:mod:`nvbayes.physics.conventions`): ``physical``
(default) or ``paper``; every dataset it returns names it in ``attrs["convention"]``.

Step 1 (:func:`implied_depths`): solve ``Γ_op(d*) = Γ_Ru`` for each NV with the flake at the
crystallographic density (a disc of ``sheet_radius_nm`` per layer).
Step 2 (:func:`slope_analysis`): with ``Γ_int ∝ d^-α``, an operator whose rate falls as
``d^-n`` predicts ``Γ_Ru ∝ Γ_int^(n/α)``; compare with the slope measured across the NVs.
Step 4 (:func:`landscape`): the log-MSE ``L(log10 A, σg)`` of the Gaussian ansatz on a grid,
its minimum and the condition number of its Hessian there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from nvbayes import __version__
from nvbayes.data.rucl3 import SCHEMA, SPECTRAL_SCHEMA, SYNTHETIC_NOTE, validate_nv_data
from nvbayes.data.rucl3_spec import AnsatzSpec
from nvbayes.errors import ParameterError
from nvbayes.physics.conventions import PAPER_EXPONENTS, check_convention
from nvbayes.physics.operators import check_inversion_operator
from nvbayes.physics.relaxation import depth_exponent

from .ansatz import GaussianAnsatz
from .spectral import SpectralModel

#: Depth search range of step 1, nm.
DEPTH_RANGE_NM = (0.1, 1.0e4)


def ansatz_model(spec: AnsatzSpec, operator: str, convention: str = "physical") -> GaussianAnsatz:
    """The Pyro model of ``spec`` under ``operator`` (F1 or F2) and ``convention``."""
    p = spec.prior
    return GaussianAnsatz(convention=spec.rates(convention), operator=operator,
                          log10_amplitude=p.log10_amplitude, sigma_g_nm=p.sigma_g_nm,
                          depth_mean_nm=p.depth_mean_nm, depth_sd_nm=p.depth_sd_nm,
                          min_log_sd=spec.likelihood.min_log_sd)


def sheet_rate(spec: AnsatzSpec, depth_nm, operator: str, field_gauss=0.0,
               convention: str = "physical") -> np.ndarray:
    """Γ in s⁻¹ of the step-1 flake at ``depth_nm`` under ``operator`` and ``convention``."""
    rates = spec.rates(convention)
    with torch.no_grad():
        return rates.sheet(torch.as_tensor(np.asarray(depth_nm, dtype=float)), operator,
                           torch.as_tensor(np.asarray(field_gauss, dtype=float))).numpy()


def implied_depths(spec: AnsatzSpec, data: xr.Dataset, operator: str,
                   convention: str = "physical") -> np.ndarray:
    """d* in nm per NV with ``Γ_sheet(d*) = Γ_Ru`` (NaN where no depth in range solves it).

    Γ of the sheet falls monotonically with depth under both operators, so bisection in
    ``ln d`` over :data:`DEPTH_RANGE_NM` finds the unique root when one exists.
    """
    target = np.asarray(data["gamma_ru"].values, dtype=float)
    field = np.asarray(data["field_gauss"].values, dtype=float)
    lo = np.full_like(target, math.log(DEPTH_RANGE_NM[0]))
    hi = np.full_like(target, math.log(DEPTH_RANGE_NM[1]))
    rates = spec.rates(convention)                  # built once for the whole bisection
    field_t = torch.as_tensor(field)

    def rate(log_depth):
        with torch.no_grad():
            return rates.sheet(torch.as_tensor(np.exp(log_depth)), operator, field_t).numpy()

    rate_lo, rate_hi = rate(lo), rate(hi)
    solvable = (rate_lo >= target) & (rate_hi <= target)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        above = rate(mid) > target
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    return np.where(solvable, np.exp(0.5 * (lo + hi)), np.nan)


def depth_table(spec: AnsatzSpec, data: xr.Dataset, operators=("F2", "F1"),
                convention: str = "physical") -> xr.Dataset:
    """Step 1 for every operator: d*, whether it falls in the window, and the point rates."""
    convention = check_convention(convention)
    window = spec.protocol.depth_window_nm
    out = xr.Dataset(coords={"nv": data["nv"].values, "operator": list(operators)})
    depths = np.stack([implied_depths(spec, data, op, convention) for op in operators])
    inside = (depths >= window[0]) & (depths <= window[1])
    point = spec.protocol.point_depth_nm
    out["implied_depth"] = (("operator", "nv"), depths,
                            {"units": "nm", "long_name": "implied NV depth d*",
                             "note": "NaN: no depth in "
                                     f"{DEPTH_RANGE_NM[0]:g}-{DEPTH_RANGE_NM[1]:g} nm solves it"})
    out["in_window"] = (("operator", "nv"), inside,
                        {"long_name": f"d* in [{window[0]:g}, {window[1]:g}] nm"})
    out["n_in_window"] = ("operator", inside.sum(1).astype(int))
    out["n_solved"] = ("operator", np.isfinite(depths).sum(1).astype(int))
    field = float(np.median(data["field_gauss"].values))
    rates = [float(sheet_rate(spec, point, op, field, convention)) for op in operators]
    out["point_rate"] = ("operator", rates,
                         {"units": "s-1", "long_name": f"sheet rate at d = {point:g} nm",
                          "field_gauss": field})
    out["gamma_ru"] = data["gamma_ru"]
    out.attrs.update(depth_window_nm=list(window), point_depth_nm=point,
                     convention=convention, rates=spec.rates(convention).describe(),
                     sheet_radius_nm=spec.constants.sheet_radius_nm,
                     spin_density_m2=spec.constants.spin_density_m2,
                     moment_bohr=spec.constants.moment_bohr)
    return out


# --------------------------------------------------------------------------------------------
# Step 2: slopes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slope:
    """A slope with its standard error."""

    value: float
    error: float


def measured_slope(data: xr.Dataset) -> "Slope | None":
    """Least-squares slope of ``ln Γ_Ru`` against ``ln Γ_bare`` across NVs, or None.

    The standard error is the ordinary least-squares one, from the scatter of the residuals
    (needs at least three NVs).
    """
    if "gamma_bare" not in data or data.sizes["nv"] < 3:
        return None
    x = np.log(np.asarray(data["gamma_bare"].values, dtype=float))
    y = np.log(np.asarray(data["gamma_ru"].values, dtype=float))
    xc = x - x.mean()
    sxx = float((xc**2).sum())
    if sxx == 0:
        return None
    b = float((xc * (y - y.mean())).sum() / sxx)
    residual = y - y.mean() - b * xc
    se = math.sqrt(float((residual**2).sum()) / (len(x) - 2) / sxx)
    return Slope(b, se)


def slope_analysis(spec: AnsatzSpec, data: xr.Dataset, operators=("F2", "F1"),
                   convention: str = "physical") -> xr.Dataset:
    """Predicted internal-rate slopes ``n/α`` against the measured one.

    ``exponent_paper`` is the paper's n (4 for F2, 2 for F1); ``exponent_model`` the local
    exponent ``−d ln Γ/d ln d`` of the flake's rate at the point depth in ``convention``.
    """
    convention = check_convention(convention)
    rates = spec.rates(convention)
    p = spec.protocol
    measured = measured_slope(data)
    source = "data" if measured is not None else "paper (the data have no gamma_bare)"
    if measured is None:
        measured = Slope(p.measured_slope, p.measured_slope_err)
    paper_n = np.array([float(PAPER_EXPONENTS[check_inversion_operator(op)])
                        for op in operators])
    field = float(np.median(data["field_gauss"].values))
    model_n = np.array([depth_exponent(lambda d, op=op: rates.sheet(d, op, field),
                                       p.point_depth_nm) for op in operators])

    def predicted(n):
        return n / p.alpha, n * p.alpha_err / p.alpha**2

    out = xr.Dataset(coords={"operator": list(operators)})
    for name, n in (("paper", paper_n), ("model", model_n)):
        value, err = predicted(n)
        z = (measured.value - value) / np.hypot(err, measured.error)
        out[f"exponent_{name}"] = ("operator", n, {
            "long_name": f"depth exponent n of Gamma_Ru ~ d^-n ({name})"})
        out[f"slope_{name}"] = ("operator", value,
                                {"long_name": f"predicted slope n/alpha ({name})"})
        out[f"slope_{name}_err"] = ("operator", err)
        out[f"z_{name}"] = ("operator", z, {"long_name": "(measured - predicted) / combined sd"})
    out.attrs.update(measured_slope=measured.value, measured_slope_err=measured.error,
                     measured_source=source, alpha=p.alpha, alpha_err=p.alpha_err,
                     convention=convention, rates=rates.describe(),
                     exponent_depth_nm=p.point_depth_nm)
    return out


# --------------------------------------------------------------------------------------------
# Step 4: the loss landscape
# --------------------------------------------------------------------------------------------


#: Where the landscape takes its fixed depths from (:func:`landscape_depths`).
DEPTH_SOURCES = ("auto", "true")


def landscape_depths(spec: AnsatzSpec, data: xr.Dataset,
                     source: str = "auto") -> tuple[np.ndarray, str]:
    """Fixed NV depths for the landscape, and where they come from.

    ``auto``: ``depth_nm`` of the data if given; else from the internal rates through
    ``Γ_int ∝ d^-α`` with their geometric mean at the SRIM prior mean; else the prior mean for
    every NV.  ``true``: the true depths of a synthetic set (``depth_true_nm``).
    """
    mean = spec.prior.depth_mean_nm
    if source not in DEPTH_SOURCES:
        raise ParameterError(f"unknown depth source {source!r}",
                             f"use one of {', '.join(DEPTH_SOURCES)}")
    if source == "true":
        if "depth_true_nm" not in data:
            raise ParameterError("the data have no true depths (depth_true_nm)",
                                 "use --depths auto, or a synthetic set")
        return np.asarray(data["depth_true_nm"].values, dtype=float), "true depths (synthetic)"
    if "depth_nm" in data:
        return np.asarray(data["depth_nm"].values, dtype=float), "depth_nm of the data"
    if "gamma_bare" in data:
        g = np.asarray(data["gamma_bare"].values, dtype=float)
        ratio = g / np.exp(np.log(g).mean())
        return (mean * ratio ** (-1.0 / spec.protocol.alpha),
                f"internal rates, Gamma_int ~ d^-alpha, geometric mean {mean:g} nm")
    return np.full(data.sizes["nv"], mean), f"SRIM prior mean {mean:g} nm for every NV"


def _log_mse(model, log_rate, depth, field, log10_amplitude, sigma):
    pred = torch.log(model.rates(log10_amplitude[..., None], sigma[..., None], depth, field))
    return ((pred - log_rate) ** 2).mean(-1)


#: A Hessian eigenvalue below this fraction of the largest is at round-off (the Hessian is
#: exact to about 1e-13 relative: float64 autograd through a quadrature converged that far),
#: and the Hessian is then reported rank-deficient rather than given a condition number.
ROUNDOFF = 1e-10
#: The two coordinate systems of the landscape's Hessian: ``log`` (log10 A, log10 σg), which
#: does not depend on the unit of σg and is the headline, and ``paper`` (log10 A, σg in nm),
#: the axes of the paper's Figure 5.
HESSIAN_AXES = {"log": "log10 A in log10(m-2), log10(sigma_g / nm)",
                "paper": "log10 A in log10(m-2), sigma_g in nm"}


def conditioning(hessian: torch.Tensor) -> dict:
    """Eigenvalues, the softest direction, ``κ = λ_max/λ_min`` and what kind of point it is.

    ``rank_deficient`` when ``|λ_min| ≤ ROUNDOFF · λ_max``: κ is then not a number the model
    has (it is round-off), and is reported as infinite, with ``soft_direction`` its null
    direction.  ``indefinite`` when ``λ_min`` is clearly negative: not a minimum (a point on
    the prior box's edge), κ again infinite.
    """
    eig, vec = torch.linalg.eigh(0.5 * (hessian + hessian.T))
    eig, vec = eig.numpy(), vec.numpy()
    soft = vec[:, 0] * np.sign(vec[np.argmax(np.abs(vec[:, 0])), 0])
    deficient = bool(abs(eig[0]) <= ROUNDOFF * eig[-1])
    indefinite = bool(eig[0] < 0 and not deficient)
    kappa = math.inf if deficient or indefinite else float(eig[-1] / eig[0])
    return {"eigenvalues": eig, "soft_direction": soft, "condition_number": kappa,
            "rank_deficient": deficient, "indefinite": indefinite}


def landscape(spec: AnsatzSpec, data: xr.Dataset, operator: str,
              grid: "int | None" = None, depths: str = "auto",
              convention: str = "physical") -> xr.Dataset:
    """``L(log10 A, σg) = mean_i (ln Γ_pred,i − ln Γ_Ru,i)²`` on a grid over the prior box.

    The grid minimum is refined by Newton steps (with backtracking) inside the box; the
    Hessian there is analysed (:func:`conditioning`) in both :data:`HESSIAN_AXES`.
    """
    convention = check_convention(convention)
    n = int(grid or spec.inference.landscape_grid)
    if n < 3:
        raise ParameterError(f"landscape grid {n} is too small", "use --grid 3 or more")
    model = ansatz_model(spec, operator, convention)
    depths, depth_source = landscape_depths(spec, data, depths)
    depth = torch.as_tensor(depths)
    field = torch.as_tensor(np.asarray(data["field_gauss"].values, dtype=float))
    log_rate = torch.log(torch.as_tensor(np.asarray(data["gamma_ru"].values, dtype=float)))
    a_box, s_box = spec.prior.log10_amplitude, spec.prior.sigma_g_nm
    amps = torch.linspace(*a_box, n, dtype=torch.float64)
    sigmas = torch.linspace(*s_box, n, dtype=torch.float64)
    with torch.no_grad():
        loss = torch.stack([_log_mse(model, log_rate, depth, field, amps,
                                     torch.full_like(amps, float(s))) for s in sigmas], dim=1)
    i, j = np.unravel_index(int(torch.argmin(loss)), loss.shape)

    def objective(theta):
        return _log_mse(model, log_rate, depth, field, theta[0], theta[1])

    theta = torch.tensor([float(amps[i]), float(sigmas[j])], dtype=torch.float64)
    lower = torch.tensor([a_box[0], s_box[0]], dtype=torch.float64)
    upper = torch.tensor([a_box[1], s_box[1]], dtype=torch.float64)
    theta = _newton(objective, theta, lower, upper)
    log_theta = torch.stack([theta[0], torch.log10(theta[1])])
    hessians = {
        "log": torch.autograd.functional.hessian(
            lambda t: objective(torch.stack([t[0], 10.0 ** t[1]])), log_theta).detach(),
        "paper": torch.autograd.functional.hessian(objective, theta).detach()}
    analysed = {k: conditioning(h) for k, h in hessians.items()}
    axes = list(HESSIAN_AXES)

    def stack(key):
        return np.stack([np.asarray(analysed[k][key]) for k in axes])

    interior = bool(torch.all((theta > lower) & (theta < upper)))
    rates = spec.rates(convention)
    return xr.Dataset(
        {"log_mse": (("log10_amplitude", "sigma_g"), loss.numpy(),
                     {"long_name": "mean squared error of ln Gamma_Ru"}),
         "minimum": ("parameter", theta.numpy(), {"long_name": "(log10 A, sigma_g in nm)"}),
         "hessian": (("axes", "row", "column"), np.stack([hessians[k].numpy() for k in axes])),
         "eigenvalues": (("axes", "eigen"), stack("eigenvalues")),
         "soft_direction": (("axes", "row"), stack("soft_direction"), {
             "long_name": "unit eigenvector of the smallest eigenvalue (the valley; the null "
                          "direction when rank-deficient)"}),
         "condition_number": ("axes", stack("condition_number"), {
             "long_name": "lambda_max / lambda_min of the Hessian at the minimum (inf: "
                          "rank-deficient)"}),
         "rank_deficient": ("axes", stack("rank_deficient").astype(int), {
             "long_name": f"|lambda_min| <= {ROUNDOFF:g} lambda_max (round-off)"}),
         "indefinite": ("axes", stack("indefinite").astype(int), {
             "long_name": "lambda_min < 0: not a minimum (on the prior box's edge)"}),
         "depth": ("nv", depths, {"units": "nm", "source": depth_source}),
         "minimum_loss": ((), float(objective(theta))),
         "minimum_interior": ((), int(interior))},
        coords={"operator": check_inversion_operator(operator),
                "log10_amplitude": ("log10_amplitude", amps.numpy(), {"units": "log10(m-2)"}),
                "sigma_g": ("sigma_g", sigmas.numpy(), {"units": "nm"}),
                "parameter": ["log10_amplitude", "sigma_g"],
                "axes": ("axes", axes, {"meaning": "; ".join(
                    f"{k}: {v}" for k, v in HESSIAN_AXES.items())}),
                "row": ["log10_amplitude", "sigma_coordinate"],
                "column": ["log10_amplitude", "sigma_coordinate"], "nv": data["nv"].values},
        attrs={"depth_source": depth_source, "convention": convention,
               "rates": rates.describe(), "roundoff": ROUNDOFF})


def _newton(objective, theta, lower, upper, iterations: int = 100):
    """Damped Newton (gradient steps where the Hessian is not positive) inside a box."""
    theta = theta.clone()
    value = float(objective(theta))
    for _ in range(iterations):
        t = theta.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(t), t)
        hess = torch.autograd.functional.hessian(objective, theta)
        try:
            step = -torch.linalg.solve(hess, grad)
            if float(step @ grad) >= 0:
                raise RuntimeError
        except RuntimeError:
            step = -grad
        accepted = False
        for scale in 0.5 ** torch.arange(30, dtype=torch.float64):
            trial = torch.minimum(torch.maximum(theta + scale * step, lower), upper)
            trial_value = float(objective(trial))
            if trial_value < value:
                accepted = True
                break
        if not accepted:
            break
        converged = abs(value - trial_value) <= 1e-15 * max(1.0, abs(value))
        theta, value = trial, trial_value
        if converged:
            break
    return theta.detach()


def synthetic_data(spec: AnsatzSpec, operator: "str | None" = None,
                   seed: "int | None" = None, convention: str = "physical") -> xr.Dataset:
    """A per-NV set generated from the model at the constants of ``spec.synthetic``.

    Depths are drawn from the SRIM prior (truncated to d > 0), Γ_Ru is the model's rate with
    log-normal scatter, and the internal rate follows ``Γ_int ∝ d^-α`` with the same scatter.
    """
    syn = spec.synthetic
    operator = operator or syn.operator
    seed = syn.seed if seed is None else int(seed)
    rng = np.random.default_rng(seed)
    n = len(syn.labels)
    depths = np.empty(n)
    for i in range(n):
        d = -1.0
        while d <= 0:
            d = rng.normal(spec.prior.depth_mean_nm, spec.prior.depth_sd_nm)
        depths[i] = d
    field = np.full(n, syn.field_gauss)
    convention = check_convention(convention)
    model = ansatz_model(spec, operator, convention)
    with torch.no_grad():
        rate = model.rates(torch.tensor(syn.log10_amplitude, dtype=torch.float64),
                           torch.tensor(syn.sigma_g_nm, dtype=torch.float64),
                           torch.as_tensor(depths), torch.as_tensor(field)).numpy()
    rel = syn.relative_error
    gamma_ru = rate * np.exp(rel * rng.standard_normal(n))
    internal = syn.internal_rate_per_s * (depths / spec.prior.depth_mean_nm) ** -spec.protocol.alpha
    gamma_bare = internal * np.exp(rel * rng.standard_normal(n))
    data = xr.Dataset(
        {"field_gauss": ("nv", field),
         "gamma_bare": ("nv", gamma_bare), "gamma_bare_err": ("nv", rel * gamma_bare),
         "gamma_ru": ("nv", gamma_ru), "gamma_ru_err": ("nv", rel * gamma_ru),
         "depth_true_nm": ("nv", depths)},
        coords={"nv": list(syn.labels)},
        attrs={"schema": SCHEMA, "synthetic": 1, "source": f"rucl3-synthetic-{operator}-seed{seed}"
               + ("" if convention == "physical" else f"-{convention}"),
               "true_operator": operator, "true_log10_amplitude": syn.log10_amplitude,
               "true_sigma_g_nm": syn.sigma_g_nm, "convention": convention,
               "description": (
                   f"{SYNTHETIC_NOTE}. Gaussian ansatz under {operator} "
                   f"({model.convention.describe()}) at log10 A = "
                   f"{syn.log10_amplitude:.4f}, sigma_g = {syn.sigma_g_nm:g} nm, depths from "
                   f"the SRIM prior {spec.prior.depth_mean_nm:g} +- {spec.prior.depth_sd_nm:g} "
                   f"nm, {rel:.0%} log-normal scatter, internal rate "
                   f"{syn.internal_rate_per_s:g} s-1 at {spec.prior.depth_mean_nm:g} nm with "
                   f"alpha = {spec.protocol.alpha:g}; nvbayes {__version__}")})
    return validate_nv_data(data, "synthetic data")


def spectral_model(spec: AnsatzSpec, data: xr.Dataset) -> SpectralModel:
    """The step-3 model of ``spec``, referenced to the first field of ``data``."""
    sp = spec.spectral
    return SpectralModel(log10_tau_c_ns=sp.log10_tau_c_ns, log10_rate=sp.log10_rate,
                         min_log_sd=sp.min_log_sd,
                         reference_field_gauss=float(data["field_gauss"].values[0]))


def synthetic_spectral(spec: AnsatzSpec, seed: "int | None" = None,
                       fields_gauss=None) -> xr.Dataset:
    """A step-3 set: the physical flake (F2) at ``synthetic_depth_nm`` under the bath of
    ``[constants]``, at ``fields_gauss`` (default: the paper's calibration fields), with
    log-normal scatter of ``synthetic_relative_error``."""
    sp = spec.spectral
    seed = sp.synthetic_seed if seed is None else int(seed)
    fields = np.asarray(spec.constants.calibration_fields_gauss if fields_gauss is None
                        else fields_gauss, dtype=float)
    rng = np.random.default_rng(seed)
    rates = spec.rates("physical")
    with torch.no_grad():
        rate = rates.sheet(sp.synthetic_depth_nm, "F2", torch.as_tensor(fields)).numpy()
    rel = sp.synthetic_relative_error
    gamma = rate * np.exp(rel * rng.standard_normal(len(fields)))
    tau = spec.constants.tau_c_ns
    data = xr.Dataset(
        {"field_gauss": ("measurement", fields), "gamma_ru": ("measurement", gamma),
         "gamma_ru_err": ("measurement", rel * gamma)},
        coords={"measurement": [f"B{b:g}G" for b in fields]},
        attrs={"schema": SPECTRAL_SCHEMA, "synthetic": 1, "nv": "NV-synthetic",
               "source": f"rucl3-spectral-synthetic-seed{seed}", "convention": "physical",
               "true_tau_c_ns": tau,
               "description": (
                   f"{SYNTHETIC_NOTE}. One NV at {sp.synthetic_depth_nm:g} nm under the "
                   f"flake (F2, {rates.describe()}), tau_c = {tau:g} ns, {rel:.0%} log-normal "
                   f"scatter; nvbayes {__version__}")})
    return validate_nv_data(data, "synthetic data", "measurement")


__all__ = ["DEPTH_RANGE_NM", "DEPTH_SOURCES", "HESSIAN_AXES", "ROUNDOFF", "Slope",
           "ansatz_model", "conditioning", "depth_table", "implied_depths", "landscape",
           "landscape_depths", "measured_slope", "sheet_rate", "slope_analysis",
           "spectral_model", "synthetic_data", "synthetic_spectral"]
