"""The NeTMY objective as a Pyro model: each term by hand, their sum as the negative log joint."""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from nvbayes.data.spec import LossWeights, load_spec
from nvbayes.fields import NeuralField, pixel_coordinates
from nvbayes.inference.objective import FieldGuide, traced_objective
from nvbayes.inference.scale import scale_correction
from nvbayes.inference.schedule import annealing_progress, cosine_lr
from nvbayes.model import losses
from nvbayes.model.netmy import NoiseSpectrumModel
from nvbayes.physics import make_operator, readout_frequencies
from nvbayes.physics.geometry import coarsen

FREQS = readout_frequencies((1.5, 2.5), 0.5, 12)
PAPER_STAGE_1 = LossWeights(log_mse=2.0, noise_map=0.5, direct_density=0.1, sparsity=1e-2,
                            l1=1e-3, tv=1e-3)


def f2(n=8):
    return make_operator("F2", FREQS, 0.5, 20.0, 20.0)


def hand_case(n=8):
    """A two-source truth observed under F2, and a different candidate (ρ, ω_L)."""
    rho_obs = torch.zeros(n, n, dtype=torch.float64)
    rho_obs[2, 3], rho_obs[5, 5] = 1.0, 0.6
    observed = f2()(rho_obs, 2.1)
    rho = torch.full((n, n), 0.05, dtype=torch.float64)
    rho[2, 2], rho[6, 5] = 0.8, 0.4
    larmor = torch.linspace(1.6, 2.4, n * n, dtype=torch.float64).reshape(n, n)
    return observed, rho, larmor


def by_hand(observed, rho, larmor, w: LossWeights):
    """The paper's terms written out in numpy, independent of nvbayes.model.losses."""
    s_obs = observed.numpy()
    s_pred = f2()(rho, larmor).numpy()
    r = rho.numpy()
    n_obs, n_pred = s_obs.sum(0), s_pred.sum(0)
    ell = lambda n: np.log10(np.clip(n / n.max(), 0, None) + 1e-10)  # noqa: E731
    d = np.mean((ell(n_pred) - ell(n_obs)) ** 2)
    r_nm = np.mean((n_pred / n_pred.mean() - n_obs / n_obs.mean()) ** 2)
    r_ds = np.mean((r ** 2 / np.mean(r ** 2) - n_obs / n_obs.mean()) ** 2)
    l1 = np.abs(r).sum()
    tv = np.abs(np.diff(r, axis=0)).sum() + np.abs(np.diff(r, axis=1)).sum()
    return {"log_mse": w.log_mse * d, "noise_map": w.noise_map * r_nm,
            "direct_density": w.direct_density * r_ds, "sparsity": w.sparsity * l1,
            "l1": w.l1 * l1, "tv": w.tv * tv}


def model_trace(model, rho, larmor):
    conditioned = poutine.condition(model, data={"rho": rho, "larmor": larmor})
    trace = poutine.trace(conditioned).get_trace()
    trace.compute_log_prob()
    return trace


def test_negative_log_joint_is_the_sum_of_the_paper_terms():
    observed, rho, larmor = hand_case()
    model = NoiseSpectrumModel(f2(), observed, PAPER_STAGE_1)
    trace = model_trace(model, rho, larmor)
    nlj = -float(trace.log_prob_sum())
    expected = by_hand(observed, rho, larmor, PAPER_STAGE_1)
    # Gaussian normalizers: |Ω| (log σ + ½ log 2π) with σ² = |Ω| / (2 λ) for D and R_nm
    n = rho.numel()
    const = sum(n * (0.5 * math.log(n / (2 * lam)) + 0.5 * math.log(2 * math.pi))
                for lam in (PAPER_STAGE_1.log_mse, PAPER_STAGE_1.noise_map))
    assert math.isclose(nlj, sum(expected.values()) + const, rel_tol=1e-12)
    assert math.isclose(model.constant, const, rel_tol=1e-12)
    terms = model.loss_terms(trace)
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert math.isclose(float(terms[name]), value, rel_tol=1e-10, abs_tol=1e-14), name


def test_a_zero_weight_removes_its_site():
    observed, rho, larmor = hand_case()
    model = NoiseSpectrumModel(f2(), observed, LossWeights(noise_map=1.0))
    trace = model_trace(model, rho, larmor)
    sites = {n for n, s in trace.nodes.items() if s["type"] == "sample"}
    assert sites == {"rho", "larmor", "noise_map"}


def test_objective_equals_pyro_trace_elbo_with_the_delta_guide():
    observed, _, _ = hand_case()
    torch.manual_seed(0)
    field = NeuralField((1.5, 2.5), width=16, depth=3).double()
    weights = PAPER_STAGE_1.__class__(**{**PAPER_STAGE_1.__dict__, "spectrum_shape": 0.7})
    model = NoiseSpectrumModel(f2(), observed, weights)
    guide = FieldGuide(field, pixel_coordinates(8, dtype=torch.float64))
    pyro.clear_param_store()
    ours, terms = traced_objective(model, guide, 3.0)
    elbo = Trace_ELBO().differentiable_loss(model, guide, 3.0)
    assert math.isclose(ours.item() + model.constant, elbo.item(), rel_tol=1e-12)
    assert "spectrum_shape" in terms
    g_ours = torch.autograd.grad(ours, list(field.parameters()))
    g_elbo = torch.autograd.grad(Trace_ELBO().differentiable_loss(model, guide, 3.0),
                                 list(field.parameters()))
    for a, b in zip(g_ours, g_elbo, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# ---- the terms themselves -------------------------------------------------------------------


def test_noise_map_terms_are_invariant_to_the_scale_of_either_spectrum():
    observed, rho, larmor = hand_case()
    pred = f2()(rho, larmor)
    for fn in (losses.noise_map_mse, losses.log_mse):
        base = fn(pred, observed)
        torch.testing.assert_close(fn(7.0 * pred, 0.2 * observed), base, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(losses.direct_density_mse(3.0 * rho, observed),
                               losses.direct_density_mse(rho, observed))


def test_tv_and_l1_of_an_interior_spike():
    rho = torch.zeros(5, 5, dtype=torch.float64)
    rho[2, 2] = 1.5
    assert float(losses.anisotropic_tv(rho)) == 4 * 1.5      # four unit-step edges
    assert float(losses.l1_norm(-rho)) == 1.5
    ramp = torch.arange(4.0, dtype=torch.float64).expand(4, 4)  # x-ramp: 3 steps of 1 per row
    assert float(losses.anisotropic_tv(ramp)) == 4 * 3


def test_spectrum_shape_sees_larmor_and_not_the_density():
    observed, rho, _ = hand_case()
    # the observation is F2 of a different density at ω_L = 2.1 everywhere: same shape
    same_larmor = f2()(rho, 2.1)
    assert float(losses.spectrum_shape_mse(same_larmor, observed)) < 1e-24
    shifted = f2()(rho, 1.7)
    assert float(losses.spectrum_shape_mse(shifted, observed)) > 1e-3
    # larmor enters only where the weights are nonzero
    w = torch.zeros(8, 8, dtype=torch.float64)
    w[2, 3] = 1.0
    larmor = torch.full((8, 8), 1.7, dtype=torch.float64)
    larmor[2, 3] = 2.1
    assert float(losses.spectrum_shape_mse(f2()(rho, larmor), observed, w)) < 1e-24


# ---- scale correction, schedules, coarsening ------------------------------------------------


@pytest.mark.parametrize("name", ["F2", "F1"])
def test_energy_ratio_recovers_the_scale_in_the_noiseless_limit(name):
    op = make_operator(name, FREQS, 0.5, 20.0, 20.0)
    truth = torch.zeros(8, 8, dtype=torch.float64)
    truth[3, 4], truth[6, 1] = 1.0, 0.5
    observed = op(truth, 2.0)
    estimate = truth / 37.0          # right shape, wrong scale
    alpha = scale_correction(observed, op(estimate, 2.0), name)["scale_correction"]
    assert math.isclose(alpha, 37.0, rel_tol=1e-12)
    torch.testing.assert_close(alpha * estimate, truth)
    torch.testing.assert_close(op(alpha * estimate, 2.0).sum(), observed.sum())


def test_schedules_follow_table_6():
    assert cosine_lr(0, 3000, 1e-3, 0.01) == 1e-3
    assert math.isclose(cosine_lr(3000, 3000, 1e-3, 0.01), 1e-5)
    assert math.isclose(cosine_lr(1500, 3000, 1e-3, 0.01), 1e-3 * (0.01 + 0.99 * 0.5))
    assert annealing_progress(2999, 3000, 12) == 12.0
    assert annealing_progress(0, 3000, 12) == 12 / 3000
    spec = load_spec("netmy", "paper")
    assert [(s.downsample, s.steps, s.lr) for s in spec.stages] == [(2, 3000, 1e-3),
                                                                   (1, 7000, 5e-4)]
    w1, w2 = (s.weights for s in spec.stages)
    assert (w1.log_mse, w1.noise_map, w1.direct_density, w1.sparsity, w1.l1, w1.tv) == (
        2.0, 0.5, 0.1, 1e-2, 1e-3, 1e-3)
    assert (w2.log_mse, w2.noise_map) == (0.5, 2.0)         # R_nm primary in stage 2
    assert spec.optimizer.weight_decay == 1e-4 and spec.optimizer.grad_clip == 1.0


def test_coarsening_is_a_block_mean():
    x = torch.arange(2 * 4 * 4, dtype=torch.float64).reshape(2, 4, 4)
    c = coarsen(x, 2)
    assert c.shape == (2, 2, 2)
    assert float(c[0, 0, 0]) == (0 + 1 + 4 + 5) / 4
    torch.testing.assert_close(c.sum() * 4, x.sum())


def test_spectrum_shape_ignores_noise_only_pixels_and_keeps_gradients_finite():
    observed, rho, larmor = hand_case()
    noisy = observed.clone()
    noisy[:, 0, 0] = -1e-3                    # a pixel whose measured power is negative
    larmor = larmor.clone().requires_grad_(True)
    value = losses.spectrum_shape_mse(f2()(rho, larmor), noisy)
    (grad,) = torch.autograd.grad(value, larmor)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert float(grad[0, 0]) == 0.0           # weight 0 there: no pull on ω_L
    assert float(grad.abs().sum()) > 0
