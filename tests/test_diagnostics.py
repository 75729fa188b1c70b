"""``nvbayes diagnose``: the centre-collapse mechanism of section 5.3 and appendix E.5.

The issue's three facts (the F2 iter-0 gradient of an off-centre scene peaks at the grid
centre; NeTMY's realized first step is less centred than that gradient; the barrier curve ends
at the losses of its two end densities), then the pieces underneath them: the rings, the
parameterization kernel G_θ = J Jᵀ (symmetric, positive semidefinite, and the first-order
step of Lemma 2), the step budget, the ADMM settings, and the command line.
"""

import dataclasses
from copy import deepcopy

import numpy as np
import pytest
import torch
import xarray as xr

from nvbayes.cli import main
from nvbayes.data.io import measurement_dataset, toml_dumps, write_netcdf
from nvbayes.data.scenes import Scene, SimulationSettings, simulate_spectrum
from nvbayes.data.spec import load_spec
from nvbayes.fields import pixel_coordinates
from nvbayes.inference.map import build_field, fit_map, fresh_start, uniform_level
from nvbayes.metrics import centre_to_outer_ratio, ring_masks
from nvbayes.model.problem import InverseProblem
from nvbayes.physics.geometry import Grid
from nvbayes.physics.noise_map import log_mse
from nvbayes.workflows.diagnose.budget import admm_settings, budgeted
from nvbayes.workflows.diagnose.geometry import (
    CENTRE_TOLERANCE_PX,
    barrier,
    data_fidelity,
    distance_from_centre,
    fidelity_gradient,
    path_losses,
    peak_location,
    uniform_start,
)
from nvbayes.workflows.diagnose.update import first_step, parameter_kernel

N = 32
#: Sources in the outer part of the window, none within 8 px of the centre.
OFF_CENTRE = np.array([(4, 25), (7, 20), (11, 27), (25, 5)])


def off_centre(samples: int = 1, n: int = N, operator: str = "F3"):
    """A clean measurement (or a stack of ``samples`` with shifted amplitudes) of the
    off-centre scene."""
    settings = SimulationSettings(grid=Grid(n), operator=operator, noise=0.0)
    out = []
    for k in range(samples):
        amplitudes = np.array([0.9, 0.6, 0.8, 0.7]) * (1.0 - 0.1 * k)
        scene = Scene(settings.grid, "medium/far", OFF_CENTRE * n // N, amplitudes,
                      np.array([1.8, 2.0, 2.2, 2.1]))
        spectrum = simulate_spectrum(scene, operator, settings.linewidth, settings.freqs())
        out.append(measurement_dataset(
            spectrum, settings.freqs().numpy(), settings.grid.coords,
            standoff_nm=settings.grid.standoff, linewidth_ghz=settings.linewidth,
            larmor_band_ghz=settings.band, operator=operator, noise=0.0, units="normalized",
            rho_true=scene.density(), larmor_true=scene.larmor_field(),
            scene_class="medium/far", seed=k))
    return out[0] if samples == 1 else xr.concat(out, "sample")


@pytest.fixture(scope="module")
def problem():
    return InverseProblem.from_measurement(off_centre())


@pytest.fixture(scope="module")
def uniform(problem):
    return uniform_start(problem, uniform_level(problem))


# ----------------------------------------------------------------------------- the issue


def test_f2_iter0_gradient_peaks_at_the_grid_centre_not_at_a_source(problem, uniform):
    g = fidelity_gradient(problem, "F2", *uniform)
    peak = peak_location(g)
    assert distance_from_centre(peak, N) <= CENTRE_TOLERANCE_PX
    assert np.min(np.hypot(*(OFF_CENTRE - np.array(peak)).T)) > 8
    # the paper's signature: the centre disk outweighs the outer ring many times over
    assert centre_to_outer_ratio(g) > 5.0


def test_the_centre_spike_is_the_max_normalization_coupling(problem, uniform):
    """With max N_pred held constant (no P3) the F2 gradient has no centre spike: the spike
    is the peak coupling at the argmax of the uniform prediction, which sits at the centre."""
    fixed = fidelity_gradient(problem, "F2", *uniform, fixed_peak=True)
    # the value of D is the same either way
    assert float(data_fidelity(problem, "F2", *uniform, fixed_peak=True)) == pytest.approx(
        float(data_fidelity(problem, "F2", *uniform)), rel=1e-12)
    assert centre_to_outer_ratio(fixed) < 2.0
    assert centre_to_outer_ratio(fidelity_gradient(problem, "F2", *uniform)) > 5.0


def test_netmy_first_step_is_less_centred_than_the_raw_gradient(problem, uniform):
    raw = fidelity_gradient(problem, "F2", *uniform)
    step = first_step(problem, load_spec("netmy"), "F2", seed=0, gradient=raw)
    assert step.delta_ratio < centre_to_outer_ratio(raw)
    # the start's kernel G_θ spreads the raw gradient's centre spike
    assert centre_to_outer_ratio(step.uniform_filtered) < centre_to_outer_ratio(raw)
    assert np.abs(step.delta).max() > 0


@pytest.mark.parametrize("operator", ("F1", "F2"))
def test_barrier_curve_ends_at_the_losses_of_its_end_densities(problem, operator):
    """The curve is evaluated as one batch of densities; the ends alone, by the operator and
    log_mse directly.  Batched and single FFTs round differently (about 1e-12 relative in
    float64, depending on torch's thread count), hence rel = 1e-9."""
    truth = off_centre()
    rho_true, larmor = truth["rho_true"].values, truth["larmor_true"].values
    rng = np.random.default_rng(0)
    rho_collapse = np.zeros((N, N))
    rho_collapse[14:18, 14:18] = 1.0 + rng.random((4, 4))
    ts = np.linspace(0.0, 1.0, 11)
    curve = path_losses(problem, operator, rho_collapse, rho_true, larmor, ts)
    observed = problem.observed(dtype=torch.float64)
    op = problem.operator(operator)
    w = torch.as_tensor(larmor)
    ends = [float(log_mse(op(torch.as_tensor(r), w), observed)) for r in (rho_collapse,
                                                                          rho_true)]
    assert curve[0] == pytest.approx(ends[0], rel=1e-9)
    assert curve[-1] == pytest.approx(ends[1], rel=1e-9)
    mid = data_fidelity(problem, operator, torch.as_tensor(0.7 * rho_collapse + 0.3 * rho_true),
                        w)
    assert curve[3] == pytest.approx(float(mid), rel=1e-9)


# ----------------------------------------------------------------------------- rings and peaks


def test_rings_are_disjoint_and_the_ratio_reads_them():
    for n in (16, 32, 64):
        centre, outer = ring_masks(n)
        assert not (centre & outer).any() and centre.any() and outer.any()
        assert centre_to_outer_ratio(np.ones((n, n))) == pytest.approx(1.0, abs=1e-15)
        image = np.where(centre, 5.0, 1.0)
        assert centre_to_outer_ratio(image) == pytest.approx(5.0)
        assert centre_to_outer_ratio(-3.0 * image) == pytest.approx(5.0)   # |g|, scale-free
    assert centre_to_outer_ratio(np.where(ring_masks(32)[1], 4.0, 1.0)) == pytest.approx(0.25)


def test_barrier_summary_of_known_curves():
    ts = np.linspace(0, 1, 5)
    s = barrier(ts, [2.0, 3.0, 2.5, 1.0, 0.5])
    assert s == {"height": 1.0, "relative_height": 1.5, "position": 0.25, "monotone": False}
    s = barrier(ts, [2.0, 1.5, 1.5, 1.0, 0.5])
    assert s["height"] == 0.0 and s["position"] == 0.0 and s["monotone"]


# ----------------------------------------------------------------------------- G_θ = J Jᵀ


@pytest.fixture(scope="module")
def small_field():
    spec = load_spec("netmy-fast")
    problem = InverseProblem.from_measurement(off_centre(n=16))
    fresh_start(3)
    return build_field(spec, problem).to(torch.float64), pixel_coordinates(16,
                                                                           dtype=torch.float64)


def test_parameter_kernel_is_symmetric_and_positive_semidefinite(small_field):
    field, coords = small_field
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(16, 16, generator=gen, dtype=torch.float64) for _ in range(2))
    beta = 2.0
    ga, gb = (parameter_kernel(field, beta, v, coords, coords) for v in (a, b))
    assert float((a * gb).sum()) == pytest.approx(float((ga * b).sum()), rel=1e-9)
    assert float((a * ga).sum()) > 0 and float((b * gb).sum()) > 0


def test_a_small_plain_gradient_step_moves_the_density_by_minus_eta_g_theta(small_field):
    """Lemma 2 to first order: θ ← θ − η Jᵀ g moves ρ by −η J Jᵀ g + O(η²)."""
    field, coords = small_field
    beta = 2.0
    g = torch.randn(16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    predicted = parameter_kernel(field, beta, g, coords, coords)
    moved = {}
    for eta in (1e-4, 2e-4):
        copy = deepcopy(field)
        params = list(copy.parameters())
        grads = torch.autograd.grad(copy(coords, beta)[0], params, grad_outputs=g,
                                    allow_unused=True)
        with torch.no_grad():
            rho0 = copy(coords, beta)[0]
            for p, d in zip(params, grads, strict=True):
                if d is not None:
                    p.sub_(eta * d)
            moved[eta] = (copy(coords, beta)[0] - rho0) / -eta
    err1 = float((moved[1e-4] - predicted).norm() / predicted.norm())
    err2 = float((moved[2e-4] - predicted).norm() / predicted.norm())
    assert err1 < 1e-2
    assert err2 == pytest.approx(2 * err1, rel=0.2)      # the O(η) remainder


def test_first_step_starts_where_the_fit_starts(problem):
    """The first step's loss at θ₀ is the first loss a float64 fit of the same model
    records, and the realized update is one Adam step of the learning rate's size."""
    spec = load_spec("netmy-fast")
    short = dataclasses.replace(spec, stages=tuple(dataclasses.replace(s, steps=3)
                                                   for s in spec.stages))
    step = first_step(problem, short, "F2", seed=2)
    fit = fit_map(problem, short, "F2", seed=2, show=False, dtype=torch.float64)
    assert step.loss == pytest.approx(float(fit.history["loss"][0]), rel=1e-10)
    assert step.beta == pytest.approx(float(fit.history["beta"][0]))
    assert step.lr == pytest.approx(float(fit.history["lr"][0]))


def test_first_step_refuses_free_pixels(problem):
    with pytest.raises(ValueError, match="parameterized"):
        first_step(problem, load_spec("tikhonov"))


# ----------------------------------------------------------------------------- budget and sweep


def test_budget_rescales_stages_in_proportion():
    spec = budgeted(load_spec("netmy"), 200)
    assert [s.steps for s in spec.stages] == [60, 140]
    assert budgeted(load_spec("tikhonov"), 200).total_steps == 200
    assert budgeted(load_spec("netmy"), 2).total_steps == 2
    with pytest.raises(ValueError):
        budgeted(load_spec("netmy"), 1)


def test_admm_sweep_has_eight_distinct_settings_with_one_data_term_each():
    settings = admm_settings(load_spec("admm"))
    assert len(settings) == 8
    signatures = set()
    for spec in settings.values():
        w = spec.stages[0].weights
        assert (w.log_mse > 0) != (w.noise_map > 0)
        signatures.add((w.log_mse, w.noise_map, w.tv, spec.admm.shrinkage))
    assert len(signatures) == 8
    with pytest.raises(ValueError):
        admm_settings(load_spec("tikhonov"))


# ----------------------------------------------------------------------------- command line


def tiny_admm(folder):
    spec = load_spec("admm").to_dict()
    spec["name"] = "admm"
    spec["admm"]["inner_steps"] = 3
    spec["stages"][0]["steps"] = 6
    path = folder / "admm.toml"
    path.write_text(toml_dumps(spec))
    return path


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_diagnose_writes_the_folder(tmp_path, capsys):
    data = tmp_path / "scene.nc"
    write_netcdf(off_centre(samples=2, n=16), data)
    out = tmp_path / "diag"
    code, stdout, _ = run_cli(["diagnose", data, "--models",
                               f"netmy,tikhonov,{tiny_admm(tmp_path)}", "--preset", "fast",
                               "--budget", "4", "--out", out], capsys)
    assert code == 0
    for name in ("diagnostics.nc", "diagnostics.md", "iter0_gradient.png", "first_step.png",
                 "energy_barrier.png", "centre_mass.png", "admm_sweep.png"):
        assert (out / name).is_file(), name
    ds = xr.load_dataset(out / "diagnostics.nc")
    assert ds.attrs["schema"] == "nvbayes.diagnostics/1"
    assert list(ds["method"].values) == ["netmy", "tikhonov", "admm"]
    assert ds.sizes["sweep_sample"] == 2 and ds.sizes["setting"] == 8
    assert np.isfinite(ds["sweep_centre_mass"].values).all()
    assert ds.attrs["collapse_method"] in ("tikhonov", "admm")
    # the barrier's start is the collapsed fit, its end the truth
    assert ds["barrier_loss"].sel(t=1.0).values == pytest.approx(
        [float(data_fidelity(InverseProblem.from_measurement(off_centre(n=16)), op,
                             torch.as_tensor(ds["rho_true"].values),
                             torch.as_tensor(off_centre(n=16)["larmor_true"].values),
                             ds.attrs["log_eps"]))
         for op in ("F1", "F2")], rel=1e-9)
    assert ds.attrs["protocol"] == "robust"      # the default: ε at the noise floor
    assert "18.29" in stdout and "0.553" in stdout


@pytest.mark.parametrize("extra, problem_text", [
    (["--budget", "1"], "--budget 1"),
    (["--sweep-samples", "5"], "sweep sample 5"),
    (["--sweep-samples", "x"], "--sweep-samples"),
    (["--log-eps", "0"], "--log-eps"),
    (["--sample", "7"], "sample 7"),
    (["--models", "nope"], "unknown method"),
    (["--seed", "-1"], "seed"),
])
def test_diagnose_bad_input_is_one_line_exit_2_and_no_folder(tmp_path, capsys, extra,
                                                             problem_text):
    data = tmp_path / "scene.nc"
    write_netcdf(off_centre(samples=2, n=16), data)
    out = tmp_path / "diag"
    code, stdout, err = run_cli(["diagnose", data, "--out", out, *extra], capsys)
    assert code == 2
    assert err.count("\n") == 1 and problem_text in err and "Traceback" not in err
    assert not out.exists()


def test_diagnose_refuses_a_foreign_folder(tmp_path, capsys):
    data = tmp_path / "scene.nc"
    write_netcdf(off_centre(n=16), data)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = run_cli(["diagnose", data, "--out", out], capsys)
    assert code == 2 and "not a diagnostics folder" in err
    assert (out / "notes.txt").read_text() == "keep me"
