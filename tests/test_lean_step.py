"""The lean Adam step against the definitions it replaces at every step.

* the stage potential (:class:`~nvbayes.inference.objective.StagePotential`) against a Pyro
  trace of the stage's model, loss and gradient, in float64, for the paper's and the robust
  objectives, the nuisance model, the calibrated likelihood and a batch of measurements;
* the neural field (grid encoding, constant columns folded into the bias, the skip layer
  without a concatenated input) against the encoding concatenated and multiplied as
  written in appendix D.1;
* 100 steps of the solver against a loop written here from the traced model, PyTorch's own
  gradient clipping and its single-tensor AdamW.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
import xarray as xr

from nvbayes.data.realism import Realism
from nvbayes.data.scenes import SimulationSettings, simulate
from nvbayes.data.spec import NuisanceSpec, load_spec, with_nuisance
from nvbayes.fields import AnnealedFourierFeatures, NeuralField, pixel_coordinates
from nvbayes.fields.encoding import GridEncoding
from nvbayes.inference.gradient import solve_gradient
from nvbayes.inference.map import build_field, solver_problem
from nvbayes.inference.map import with_nuisance as field_with_nuisance
from nvbayes.inference.objective import StagePotential, stage_objective, traced_objective
from nvbayes.inference.recorder import Recorder
from nvbayes.inference.schedule import annealing_progress, cosine_lr
from nvbayes.model.problem import InverseProblem
from nvbayes.physics.geometry import Grid

N = 16


def small_spec(protocol=None, steps=100, **optimizer):
    spec = load_spec("netmy-fast", protocol)
    return dataclasses.replace(
        spec, field=dataclasses.replace(spec.field, width=16, octaves=6),
        optimizer=dataclasses.replace(spec.optimizer, **optimizer),
        stages=tuple(dataclasses.replace(s, steps=steps) for s in spec.stages))


def measurement(seed=3, realism=None):
    settings = SimulationSettings(grid=Grid(N), **({"realism": realism} if realism else {}))
    return simulate("few/medium", seed, settings)


def stage_pair(problem, spec, stage, seed=0, instances=None, **objective):
    """``(model, guide, field)`` of ``stage`` in float64, the field seeded."""
    work, start, _, spec = solver_problem(problem, spec)
    torch.manual_seed(seed)
    field = build_field(spec, work, instances=instances)
    if instances is not None:
        field.reset_parameters(range(seed, seed + instances))
    field = field_with_nuisance(field, spec, work, start, instances).double()
    model, guide = stage_objective(work, spec, stage, "F2", field, **objective)
    return model, guide, field


def loss_and_gradient(evaluate, field, beta):
    field.zero_grad(set_to_none=True)
    loss, terms = evaluate(beta)
    loss.sum().backward()
    grads = torch.cat([p.grad.flatten() for p in field.parameters()])
    return loss.detach(), {k: v.detach() for k, v in terms.items()}, grads


def assert_potential_is_the_trace(model, guide, field, beta):
    lean = loss_and_gradient(StagePotential(model, guide), field, beta)
    traced = loss_and_gradient(lambda b: traced_objective(model, guide, b), field, beta)
    assert set(lean[1]) == set(traced[1])
    torch.testing.assert_close(lean[0], traced[0], rtol=1e-6, atol=0)
    for name in traced[1]:
        torch.testing.assert_close(lean[1][name], traced[1][name], rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(lean[2], traced[2], rtol=1e-6, atol=1e-9 * traced[2].abs().max())


@pytest.mark.parametrize("protocol", ["paper", "robust"])
@pytest.mark.parametrize("stage_index", [0, 1])
def test_potential_equals_the_traced_model(protocol, stage_index):
    """Both stages of both protocols (the paper's ε = 1e-10 runs the log map in float64)."""
    spec = small_spec(protocol)
    problem = InverseProblem.from_measurement(measurement())
    model, guide, field = stage_pair(problem, spec, spec.stages[stage_index])
    assert_potential_is_the_trace(model, guide, field, 2.5)


@pytest.mark.parametrize("fit", ["joint", "profile"])
@pytest.mark.parametrize("names", ["background,standoff,gain", "standoff"])
def test_potential_equals_the_traced_model_with_nuisances(names, fit):
    """The nuisance sites and their prior factors, fitted jointly or held at their estimates
    (a held background is subtracted from the data, not a site: the potential must not add
    it to the prediction again)."""
    data = measurement(realism=Realism(background=0.3, standoff_error=0.2))
    spec = with_nuisance(small_spec(), NuisanceSpec(
        **{n: True for n in names.split(",")}, background_fit=fit, standoff_fit=fit))
    problem = InverseProblem.from_measurement(data)
    model, guide, field = stage_pair(problem, spec, spec.stages[1])
    assert model.nuisance is not None
    assert_potential_is_the_trace(model, guide, field, 6.0)


def test_potential_equals_the_traced_model_for_the_calibrated_likelihood():
    data = measurement()
    spec = small_spec()
    problem = InverseProblem.from_measurement(data)
    sigma = float(data["noise_sigma"])
    model, guide, field = stage_pair(problem, spec, spec.stages[1], noise_sigma=sigma)
    assert "normalized_noise_map" in model.sigma
    assert_potential_is_the_trace(model, guide, field, 6.0)


def test_potential_equals_the_traced_model_for_a_batch():
    """Three measurements in one plate, each its own loss."""
    stack = xr.concat([measurement(s) for s in (1, 2, 3)], "sample")
    spec = small_spec()
    problem = InverseProblem.from_measurement(stack)
    model, guide, field = stage_pair(problem, spec, spec.stages[0], instances=3)
    loss = StagePotential(model, guide)(1.5)[0]
    assert loss.shape == (3,)
    assert_potential_is_the_trace(model, guide, field, 1.5)


# ---- the field ---------------------------------------------------------------------------

def written_out(field: NeuralField, coords: torch.Tensor, beta: float) -> torch.Tensor:
    """Appendix D.1 as written: the whole encoding, concatenated at the skip layer."""
    encoded = field.encoding(coords, beta)
    h = encoded
    for i, layer in enumerate(field.hidden, start=1):
        if i == field.skip_layer and i > 1:
            h = torch.cat([h, encoded], dim=-1)
        h = torch.tanh(F.linear(h, layer.weight[0], layer.bias[0]))
    if field.skip_layer == field.depth:
        h = torch.cat([h, encoded], dim=-1)
    return F.linear(h, field.readout.weight[0], field.readout.bias[0])


@pytest.mark.parametrize("skip_layer", [3, 4, 6])
@pytest.mark.parametrize("beta", [0.0, 2.7, 6.0])
def test_field_equals_the_written_out_network(skip_layer, beta):
    torch.manual_seed(1)
    field = NeuralField((1.5, 2.5), octaves=6, directions=4, width=16, skip_layer=skip_layer,
                        init="default").double()
    coords = pixel_coordinates(32, dtype=torch.float64)
    expected = written_out(field, coords, beta)
    torch.testing.assert_close(field.raw(coords, beta), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("grid, constant", [(32, 30), (64, 26)])
def test_grid_encoding_finds_the_constant_columns(grid, constant):
    """K = 12, four directions: on pixel centres the top octaves of the two axes are constant
    (sin 2^k π x = 0, cos = ±1 once 2^k reaches the grid; at 32² also cos 2^4 π x = 0):
    30 of 98 columns at 32², 26 at 64²; the table equals the encoding at every β."""
    encoding = AnnealedFourierFeatures(12, 2.0, 4)
    coords = pixel_coordinates(grid, dtype=torch.float64)
    table = GridEncoding(encoding, coords)
    assert table.out_features == 98 and table.constant_index.numel() == constant
    flat = coords.reshape(-1, 2)
    for beta in (0.0, 4.5, 12.0):
        torch.testing.assert_close(table(beta), encoding(flat, beta), rtol=0, atol=1e-11)
    betas = torch.tensor([1.0, 7.5], dtype=torch.float64)
    torch.testing.assert_close(table(betas), encoding(flat.unsqueeze(0), betas.reshape(2, 1, 1)),
                               rtol=0, atol=1e-11)


# ---- the solver ----------------------------------------------------------------------------

def reference_losses(problem, spec, seed):
    """The loop as first written: a Pyro trace each step, ``clip_grad_norm_``, and
    single-tensor AdamW; the loss of every step."""
    model_field = stage_pair(problem, spec, spec.stages[0], seed)[2]
    losses = []
    for stage in spec.stages:
        model, guide = stage_objective(solver_problem(problem, spec)[0], spec, stage, "F2",
                                       model_field)
        optimizer = torch.optim.AdamW(model_field.parameters(), lr=stage.lr,
                                      weight_decay=spec.optimizer.weight_decay, foreach=False)
        for t in range(stage.steps):
            beta = annealing_progress(t, stage.steps, spec.field.octaves, stage.anneal)
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(t, stage.steps, stage.lr,
                                        spec.optimizer.final_lr_fraction)
            loss, _ = traced_objective(model, guide, beta)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model_field.parameters(), spec.optimizer.grad_clip)
            optimizer.step()
            losses.append(float(loss.detach()))
    return torch.tensor(losses, dtype=torch.float64)


def test_solver_follows_the_traced_loop_for_100_steps():
    """Fifty steps of each stage, float64: every step's loss within 1e-5 (relative)."""
    spec = small_spec(steps=50)
    problem = InverseProblem.from_measurement(measurement())
    expected = reference_losses(problem, spec, seed=5)
    work = solver_problem(problem, spec)[0]
    field = stage_pair(problem, spec, spec.stages[0], 5)[2]
    recorder = Recorder(spec.total_steps, False)
    assert solve_gradient(field, work, spec, "F2", recorder) == []
    got = torch.as_tensor(recorder.history()["loss"])
    assert got.shape == expected.shape == (100,)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)
