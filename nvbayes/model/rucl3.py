"""The deterministic steps of appendix E.8: implied depths, power-law slopes, landscape.

Step 1 (:func:`implied_depths`): solve ``Γ_op(d*) = Γ_Ru`` for each NV with a uniform sheet
at the crystallographic density (a disc of ``sheet_radius_nm``).
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
from nvbayes.data.rucl3 import SCHEMA, SYNTHETIC_NOTE, validate_nv_data
from nvbayes.data.rucl3_spec import AnsatzSpec
from nvbayes.errors import ParameterError
from nvbayes.physics.operators import check_inversion_operator
from nvbayes.physics.relaxation import UniformDisc, depth_exponent, relaxation_rate

from .ansatz import GaussianAnsatz

NM = 1e-9
#: Depth search range of step 1, nm.
DEPTH_RANGE_NM = (0.1, 1.0e4)
#: Depth exponents n of Γ ∝ d^-n that the paper assigns to each operator (E.8 step 2).
PAPER_EXPONENTS = {"F2": 4.0, "F1": 2.0}


def ansatz_model(spec: AnsatzSpec, operator: str) -> GaussianAnsatz:
    """The Pyro model of ``spec`` under ``operator`` (F1 or F2)."""
    p = spec.prior
    return GaussianAnsatz(bath=spec.bath, operator=operator,
                          log10_amplitude=p.log10_amplitude, sigma_g_nm=p.sigma_g_nm,
                          depth_mean_nm=p.depth_mean_nm, depth_sd_nm=p.depth_sd_nm,
                          min_log_sd=spec.likelihood.min_log_sd)


def sheet(spec: AnsatzSpec) -> UniformDisc:
    """The uniform sheet of step 1: crystallographic density, radius ``sheet_radius_nm``."""
    c = spec.constants
    return UniformDisc(c.spin_density_m2, c.sheet_radius_nm * NM)


def sheet_rate(spec: AnsatzSpec, depth_nm, operator: str, field_gauss=0.0) -> np.ndarray:
    """Γ in s⁻¹ of the step-1 sheet at ``depth_nm`` under ``operator``."""
    depth = torch.as_tensor(np.asarray(depth_nm, dtype=float)) * NM
    with torch.no_grad():
        return relaxation_rate(sheet(spec), depth, operator, spec.bath,
                               torch.as_tensor(np.asarray(field_gauss, dtype=float))).numpy()


def implied_depths(spec: AnsatzSpec, data: xr.Dataset, operator: str) -> np.ndarray:
    """d* in nm per NV with ``Γ_sheet(d*) = Γ_Ru`` (NaN where no depth in range solves it).

    Γ of the sheet falls monotonically with depth under both operators, so bisection in
    ``ln d`` over :data:`DEPTH_RANGE_NM` finds the unique root when one exists.
    """
    target = np.asarray(data["gamma_ru"].values, dtype=float)
    field = np.asarray(data["field_gauss"].values, dtype=float)
    lo = np.full_like(target, math.log(DEPTH_RANGE_NM[0]))
    hi = np.full_like(target, math.log(DEPTH_RANGE_NM[1]))
    rate_lo = sheet_rate(spec, np.exp(lo), operator, field)
    rate_hi = sheet_rate(spec, np.exp(hi), operator, field)
    solvable = (rate_lo >= target) & (rate_hi <= target)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        above = sheet_rate(spec, np.exp(mid), operator, field) > target
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    return np.where(solvable, np.exp(0.5 * (lo + hi)), np.nan)


def depth_table(spec: AnsatzSpec, data: xr.Dataset, operators=("F2", "F1")) -> xr.Dataset:
    """Step 1 for every operator: d*, whether it falls in the window, and the point rates."""
    window = spec.protocol.depth_window_nm
    out = xr.Dataset(coords={"nv": data["nv"].values, "operator": list(operators)})
    depths = np.stack([implied_depths(spec, data, op) for op in operators])
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
    rates = [float(sheet_rate(spec, point, op, field)) for op in operators]
    out["point_rate"] = ("operator", rates,
                         {"units": "s-1", "long_name": f"sheet rate at d = {point:g} nm",
                          "field_gauss": field})
    out["gamma_ru"] = data["gamma_ru"]
    out.attrs.update(depth_window_nm=list(window), point_depth_nm=point,
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


def slope_analysis(spec: AnsatzSpec, data: xr.Dataset, operators=("F2", "F1")) -> xr.Dataset:
    """Predicted internal-rate slopes ``n/α`` against the measured one."""
    p = spec.protocol
    measured = measured_slope(data)
    source = "data" if measured is not None else "paper (the data have no gamma_bare)"
    if measured is None:
        measured = Slope(p.measured_slope, p.measured_slope_err)
    paper_n = np.array([PAPER_EXPONENTS[check_inversion_operator(op)] for op in operators])
    field = float(np.median(data["field_gauss"].values))
    model_n = np.array([depth_exponent(sheet(spec), p.point_depth_nm * NM, op, spec.bath, field)
                        for op in operators])

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


def landscape(spec: AnsatzSpec, data: xr.Dataset, operator: str,
              grid: "int | None" = None, depths: str = "auto") -> xr.Dataset:
    """``L(log10 A, σg) = mean_i (ln Γ_pred,i − ln Γ_Ru,i)²`` on a grid over the prior box.

    The grid minimum is refined by Newton steps (with backtracking) inside the box, and the
    Hessian there (with respect to log10 A and σg in nm, as the paper's axes) gives
    ``κ = λ_max / λ_min``; ``condition_number_log`` is the same in (log10 A, log10 σg), which
    does not depend on the unit of σg.
    """
    n = int(grid or spec.inference.landscape_grid)
    if n < 3:
        raise ParameterError(f"landscape grid {n} is too small", "use --grid 3 or more")
    model = ansatz_model(spec, operator)
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
    hessian = torch.autograd.functional.hessian(objective, theta).detach()
    eig = torch.linalg.eigvalsh(0.5 * (hessian + hessian.T)).numpy()
    kappa = _condition(eig)
    log_theta = torch.stack([theta[0], torch.log10(theta[1])])
    hessian_log = torch.autograd.functional.hessian(
        lambda t: objective(torch.stack([t[0], 10.0 ** t[1]])), log_theta).detach()
    kappa_log = _condition(torch.linalg.eigvalsh(0.5 * (hessian_log + hessian_log.T)).numpy())
    interior = bool(torch.all((theta > lower) & (theta < upper)))
    return xr.Dataset(
        {"log_mse": (("log10_amplitude", "sigma_g"), loss.numpy(),
                     {"long_name": "mean squared error of ln Gamma_Ru"}),
         "minimum": ("parameter", theta.numpy()),
         "hessian": (("parameter", "parameter2"), hessian.numpy()),
         "eigenvalues": ("eigen", eig),
         "depth": ("nv", depths, {"units": "nm", "source": depth_source}),
         "condition_number": ((), kappa, {"long_name": "lambda_max / lambda_min of the "
                                                       "Hessian at the minimum"}),
         "condition_number_log": ((), kappa_log, {
             "long_name": "condition number in (log10 A, log10 sigma_g)"}),
         "minimum_loss": ((), float(objective(theta))),
         "minimum_interior": ((), int(interior))},
        coords={"operator": check_inversion_operator(operator),
                "log10_amplitude": ("log10_amplitude", amps.numpy(), {"units": "log10(m-2)"}),
                "sigma_g": ("sigma_g", sigmas.numpy(), {"units": "nm"}),
                "parameter": ["log10_amplitude", "sigma_g"],
                "parameter2": ["log10_amplitude", "sigma_g"], "nv": data["nv"].values},
        attrs={"hessian_units": "log10 A in log10(m-2), sigma_g in nm",
               "depth_source": depth_source})


def _condition(eigenvalues: np.ndarray) -> float:
    """``λ_max / λ_min``; infinite when the smallest eigenvalue is not positive."""
    return float(eigenvalues.max() / eigenvalues.min()) if eigenvalues.min() > 0 else math.inf


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
                   seed: "int | None" = None) -> xr.Dataset:
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
    model = ansatz_model(spec, operator)
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
        attrs={"schema": SCHEMA, "synthetic": 1, "source": f"rucl3-synthetic-{operator}-seed{seed}",
               "true_operator": operator, "true_log10_amplitude": syn.log10_amplitude,
               "true_sigma_g_nm": syn.sigma_g_nm,
               "description": (
                   f"{SYNTHETIC_NOTE}. Gaussian ansatz under {operator} at log10 A = "
                   f"{syn.log10_amplitude:.4f}, sigma_g = {syn.sigma_g_nm:g} nm, depths from "
                   f"the SRIM prior {spec.prior.depth_mean_nm:g} +- {spec.prior.depth_sd_nm:g} "
                   f"nm, {rel:.0%} log-normal scatter, internal rate "
                   f"{syn.internal_rate_per_s:g} s-1 at {spec.prior.depth_mean_nm:g} nm with "
                   f"alpha = {spec.protocol.alpha:g}; nvbayes {__version__}")})
    return validate_nv_data(data, "synthetic data")


__all__ = ["DEPTH_RANGE_NM", "DEPTH_SOURCES", "PAPER_EXPONENTS", "Slope", "ansatz_model",
           "depth_table", "implied_depths", "landscape", "landscape_depths", "measured_slope",
           "sheet", "sheet_rate", "slope_analysis", "synthetic_data"]
