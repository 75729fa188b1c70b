"""Batched MAP fits: B measurements in one optimization loop, each on its own trajectory.

Tolerances: float64 batched against float64 single fits at 1e-5 relative on the final density
(the issue's bound; measured here about 1e-15); float32 at 1e-4.
"""

import dataclasses

import numpy as np
import pytest
import torch
import xarray as xr

from nvbayes.cli import main
from nvbayes.data.scenes import SimulationSettings, simulate
from nvbayes.data.spec import StoppingSpec, load_spec, spec_from_dict
from nvbayes.fields import NeuralField, pixel_coordinates
from nvbayes.inference.map import fit_batch, fit_map
from nvbayes.inference.stopping import ConvergenceMonitor
from nvbayes.model.problem import InverseProblem
from nvbayes.physics.geometry import Grid

SETTINGS = SimulationSettings(grid=Grid(32))
SCENES = (("few/far", 1), ("medium/medium", 2), ("many/close", 3))


def tiny_spec(steps=40, window=0, rel_tol=1e-3, grad_clip=1.0, guard_every=25):
    """netmy-fast's objective and curriculum (the paper protocol) on a narrow field and short
    stages."""
    spec = load_spec("netmy-fast", "paper")
    return dataclasses.replace(
        spec, field=dataclasses.replace(spec.field, width=16, octaves=6),
        optimizer=dataclasses.replace(spec.optimizer, grad_clip=grad_clip,
                                      guard_every=guard_every),
        stages=tuple(dataclasses.replace(s, steps=steps) for s in spec.stages),
        stopping=StoppingSpec(window=window, rel_tol=rel_tol))


@pytest.fixture(scope="module")
def measurements():
    return [simulate(scene, seed, SETTINGS) for scene, seed in SCENES]


def stacked(measurements):
    return InverseProblem.from_measurement(xr.concat(measurements, "sample"))


def test_a_slice_of_a_stack_keeps_each_measurement_with_its_sigma(measurements):
    stack = stacked(measurements)
    sub = stack.instance(slice(1, 3))
    assert sub.batch == 2
    np.testing.assert_array_equal(sub.spectrum, stack.spectrum[1:3])
    np.testing.assert_array_equal(sub.noise_sigma, np.asarray(stack.noise_sigma)[1:3])
    for i in (1, 2):       # the slice's instances are the stack's, bit for bit
        np.testing.assert_array_equal(sub.instance(i - 1).spectrum, stack.instance(i).spectrum)
        assert sub.instance(i - 1).noise_sigma == stack.instance(i).noise_sigma
    np.testing.assert_array_equal(sub.rescaled(sub.unit_scale()).noise_sigma,
                                  np.asarray(sub.noise_sigma) / sub.unit_scale())


def single_fits(measurements, spec, seeds, dtype):
    return [fit_map(InverseProblem.from_measurement(m), spec, "F2", seed=s, show=False,
                    dtype=dtype) for m, s in zip(measurements, seeds, strict=True)]


def assert_same_density(batched, singles, rtol):
    for b, s in zip(batched, singles, strict=True):
        assert b.rho.shape == s.rho.shape == (32, 32)
        assert np.abs(b.rho - s.rho).max() <= rtol * np.abs(s.rho).max()
        assert b.stats["steps"] == s.stats["steps"]
        np.testing.assert_allclose(b.history["loss"], s.history["loss"], rtol=rtol)


def test_batch_of_three_in_float64_equals_three_single_fits(measurements):
    """The issue's test: B = 3 in float64 gives each measurement its own run to 1e-5.  The
    clip limit is set low enough to bind, and early stopping ends the stages at different
    steps for different measurements, so both act per measurement."""
    spec = tiny_spec(steps=50, window=10, rel_tol=5e-3, grad_clip=0.05)
    seeds = [0, 1, 2]
    batched = fit_batch(stacked(measurements), spec, "F2", seeds=seeds, show=False,
                        dtype=torch.float64)
    singles = single_fits(measurements, spec, seeds, torch.float64)
    assert_same_density(batched, singles, 1e-5)
    assert len({r.stats["steps"] for r in singles}) > 1          # stopped at different steps
    assert all((r.history["grad_norm"] > 0.05).any() for r in singles)   # clipping binds
    assert all(r.stats["batch_size"] == 3 for r in batched)


def test_float32_batch_equals_single_fits_to_round_off(measurements):
    spec = tiny_spec(steps=30)
    batched = fit_batch(stacked(measurements[:2]), spec, "F2", seeds=[4, 4], show=False)
    singles = single_fits(measurements[:2], spec, [4, 4], torch.float32)
    assert_same_density(batched, singles, 1e-4)


@pytest.mark.parametrize("guard_every, kept", [(1, 5), (4, 4)])
def test_a_diverging_measurement_stops_alone(measurements, monkeypatch, guard_every, kept):
    """Measurement 1's field output turns NaN from its 6th step on: that fit is flagged
    diverged and holds its state at the guard's last check before it (checks every step:
    after step 5; every 4 steps: after step 4); the others are untouched."""
    import nvbayes.inference.map as map_module

    build = map_module.build_field
    calls = []

    def poison(module, inputs, output):
        if torch.is_grad_enabled():            # the training steps, not the final maps
            calls.append(1)
            if len(calls) > 5:
                output = output.clone()
                output[1] = float("nan")
        return output

    def build_poisoned(*args, **kwargs):
        field = build(*args, **kwargs)
        field.readout.register_forward_hook(poison)
        return field

    monkeypatch.setattr(map_module, "build_field", build_poisoned)
    spec = tiny_spec(steps=20, guard_every=guard_every)
    batched = fit_batch(stacked(measurements), spec, "F2", seeds=[0, 1, 2], show=False,
                        dtype=torch.float64)
    monkeypatch.setattr(map_module, "build_field", build)
    assert [r.diverged for r in batched] == [False, True, False]
    assert batched[1].stats["steps"] == kept and "measurement 1" in batched[1].messages[0]
    assert np.isfinite(batched[1].rho).all()
    singles = single_fits([measurements[0], measurements[2]], spec, [0, 2], torch.float64)
    assert_same_density([batched[0], batched[2]], singles, 1e-5)


def test_early_stopping_ends_each_stage_after_the_window():
    """With a tolerance no fit can meet the stage runs in full; with one every fit meets at
    once, each stage ends at its first eligible step, t = window."""
    monitor = ConvergenceMonitor(StoppingSpec(window=3, rel_tol=0.1), instances=2)
    losses = [[10.0, 10.0], [9.0, 9.99], [8.0, 9.98], [7.0, 9.97], [6.9, 9.96], [6.8, 9.95]]
    stops = [monitor.update(torch.tensor(row, dtype=torch.float64)).tolist() for row in losses]
    # step 3: (10 − 7)/10 = 0.3 and (10 − 9.97)/10 = 0.003; step 5: (8 − 6.8)/8 = 0.15
    assert stops[:3] == [[False, False]] * 3
    assert stops[3] == [False, True] and stops[5] == [False, True]
    off = ConvergenceMonitor(StoppingSpec(window=0), instances=1)
    assert not any(off.update(torch.tensor([1.0])).item() for _ in range(10))


@pytest.mark.parametrize("rel_tol, expected", [(1e3, 2 * (5 + 1)), (1e-12, 2 * 30)])
def test_early_stopping_step_counts(measurements, rel_tol, expected):
    spec = tiny_spec(steps=30, window=5, rel_tol=rel_tol)
    result = fit_map(InverseProblem.from_measurement(measurements[0]), spec, "F2", show=False)
    assert result.stats["steps"] == expected
    assert len(result.history["loss"]) == expected


def test_stopping_table_is_validated():
    base = {"name": "m", "stages": [{"steps": 5, "lr": 1e-3, "weights": {"log_mse": 1.0}}]}
    spec = spec_from_dict(base | {"stopping": {"window": 50, "rel_tol": 1e-4}})
    assert spec.stopping == StoppingSpec(50, 1e-4)
    assert spec_from_dict(spec.to_dict()) == spec
    for bad in ({"window": -1}, {"rel_tol": 0}, {"patience": 3}):
        with pytest.raises(Exception, match="stopping"):
            spec_from_dict(base | {"stopping": bad})
    with pytest.raises(Exception, match="Adam"):
        spec_from_dict(base | {"stopping": {"window": 5}, "field": {"kind": "pixels"},
                              "optimizer": {"name": "lbfgs"}})


def test_instances_start_where_single_fields_start():
    coords = pixel_coordinates(8, dtype=torch.float64)
    field = NeuralField((1.5, 2.5), width=16, depth=4, instances=3).double()
    field.reset_parameters([7, 8, 9])
    rho, larmor = field(coords, 3.0)
    assert rho.shape == larmor.shape == (3, 8, 8)
    betas = torch.tensor([3.0, 1.0, 6.0], dtype=torch.float64)
    rho_b, _ = field(coords, betas)
    for i, seed in enumerate((7, 8, 9)):
        torch.manual_seed(seed)
        single = NeuralField((1.5, 2.5), width=16, depth=4).double()
        torch.testing.assert_close(rho[i], single(coords, 3.0)[0], rtol=1e-12, atol=0)
        torch.testing.assert_close(rho_b[i], single(coords, float(betas[i]))[0],
                                   rtol=1e-12, atol=0)


def test_bf16_mixed_precision_stays_close_to_fp32():
    """The paper's field in bf16 autocast: the density within 3 % of fp32 (bf16 keeps 8
    significant bits, about 0.4 % per product), the output dtype unchanged."""
    coords = pixel_coordinates(32)
    torch.manual_seed(0)
    field = NeuralField((1.5, 2.5))
    rho32, _ = field(coords, 12.0)
    field.precision = "bf16"
    rho16, _ = field(coords, 12.0)
    assert rho16.dtype == torch.float32
    assert ((rho16 - rho32).norm() / rho32.norm()) < 3e-2


def test_cli_fits_every_sample_into_one_folder(tmp_path, measurements, capsys):
    data = tmp_path / "set.nc"
    from nvbayes.data.io import write_netcdf

    write_netcdf(xr.concat(measurements[:2], "sample"), data)
    spec_file = tmp_path / "tiny.toml"
    from nvbayes.data.io import toml_dumps

    spec_file.write_text(toml_dumps({k: v for k, v in tiny_spec(steps=15).to_dict().items()
                                     if v is not None}))
    out = tmp_path / "fits"
    assert main(["fit", str(data), "--model", str(spec_file), "--batch", "2",
                 "--out", str(out)]) == 0
    table = (out / "fits.csv").read_text().splitlines()
    assert table[0].startswith("sample,wall_time_s") and len(table) == 3
    single = tmp_path / "one"
    assert main(["fit", str(data), "--model", str(spec_file), "--sample", "1",
                 "--out", str(single)]) == 0
    from nvbayes.results.run import Run

    a, b = Run.load(out / "sample0001"), Run.load(single)
    np.testing.assert_allclose(a.idata.posterior["rho"].values, b.idata.posterior["rho"].values,
                               rtol=1e-4, atol=1e-6 * float(b.idata.posterior["rho"].max()))
    assert a.config["run"]["batch_size"] == 2 and b.config["run"]["batch_size"] == 1
    capsys.readouterr()
    for bad in (["--samples", "0-x"], ["--samples", "7"], ["--sample", "0", "--samples", "1"],
                ["--precision", "fp16"], ["--batch", "0"]):
        assert main(["fit", str(data), "--model", str(spec_file), "--out",
                     str(tmp_path / "bad")] + bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("nvbayes: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
