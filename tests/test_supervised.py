"""The supervised baselines (paper appendix E.2, E.7): networks, training, model files, fits.

Small networks (channels 4, 8) on 16 × 16 grids keep the suite fast; the checks are the
same facts the paper-sized networks obey.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr

from nvbayes.cli import main
from nvbayes.data.io import read_measurement, write_netcdf
from nvbayes.data.scenes import (
    DENSE_COUNT,
    SimulationSettings,
    allowed_pixels,
    dataset_plan,
    sample_scene,
    simulate,
    simulate_dataset,
)
from nvbayes.data.spec import load_spec, models_dir
from nvbayes.data.trained import SUPERVISED, read_model_file, supervised_spec, write_model_file
from nvbayes.errors import NvbayesError
from nvbayes.fields.unet import PatchDiscriminator, UNet
from nvbayes.inference.amortized import load_network
from nvbayes.inference.map import fit_map
from nvbayes.inference.training import losses, train
from nvbayes.metrics import noise_mse
from nvbayes.model.problem import InverseProblem
from nvbayes.physics.geometry import Grid
from nvbayes.workflows.train import (
    CHECKPOINT,
    pairs_of,
    physics_operator,
    train_model,
    validation_loss,
    validation_pairs,
)

BAND = (1.5, 2.5)
SMALL = {"channels": (4, 8), "pairs": 8, "epochs": 3, "batch_size": 4}
SETTINGS = SimulationSettings(grid=Grid(16), n_freq=12)


def _tiny(name: str, **changes):
    return supervised_spec(name, **(SMALL | changes))


def _train(tmp_path, name="unet-sl", tag="a", **kwargs):
    return train_model(_tiny(name), tmp_path / tag, "dense", seed=kwargs.pop("seed", 0),
                       val_pairs=4, settings=SETTINGS, show=False, **kwargs)


def _weights(path) -> dict:
    return read_model_file(path)["state"]


# ---- networks ----------------------------------------------------------------------------

@pytest.mark.parametrize("octaves", [0, 3])
def test_unet_shapes_softplus_and_band(octaves):
    torch.manual_seed(0)
    net = UNet(12, (16, 24), BAND, channels=(4, 8, 16), fourier_octaves=octaves)
    assert net.in_channels == 12 + (2 + 4 * octaves if octaves else 0)
    raw = {}
    net.out.register_forward_hook(lambda m, i, o: raw.setdefault("h", o))
    rho, larmor = net(torch.randn(3, 12, 16, 24))
    assert rho.shape == larmor.shape == (3, 16, 24)
    torch.testing.assert_close(rho, F.softplus(raw["h"][:, 0]), rtol=0, atol=0)
    assert bool((rho > 0).all())
    assert bool(((larmor > BAND[0]) & (larmor < BAND[1])).all())


def test_unet_refuses_sides_it_cannot_pool():
    with pytest.raises(ValueError, match="divisible by 4"):
        UNet(12, (16, 18), BAND, channels=(4, 8, 16))


def test_patch_discriminator_gives_one_logit_per_patch():
    d = PatchDiscriminator(12, channels=(4, 8, 16))
    out = d(torch.randn(2, 12, 32, 32), torch.rand(2, 32, 32))
    assert out.shape == (2, 1, 32 // 4 - 2, 32 // 4 - 2)


def test_paper_unet_has_the_paper_widths():
    net = UNet(50, (64, 64), BAND)
    widths = [block[0].out_channels for block in net.down]
    assert widths == [32, 64, 128, 256]
    assert all(isinstance(block[1], torch.nn.InstanceNorm2d) for block in net.down)


# ---- training ----------------------------------------------------------------------------

def _batch(seed=0, count=4):
    data = simulate_dataset(dataset_plan(["dense"], samples=count, seed=seed), SETTINGS)
    return pairs_of(data)


@pytest.mark.parametrize("name", list(SUPERVISED))
def test_a_training_step_lowers_the_loss_on_a_fixed_batch(name):
    spec = _tiny(name)
    pairs = _batch()
    torch.manual_seed(0)
    net = UNet(12, (16, 16), BAND, spec.channels, spec.fourier_octaves)
    operator = physics_operator(SETTINGS)
    batch = (pairs.x, pairs.rho, pairs.larmor)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    before = losses(net, batch, operator, BAND, spec.physics)["total"]
    for _ in range(3):
        opt.zero_grad()
        losses(net, batch, operator, BAND, spec.physics)["total"].backward()
        opt.step()
    after = losses(net, batch, operator, BAND, spec.physics)["total"]
    assert float(after.detach()) < float(before.detach())


def test_the_physics_term_is_the_f2_residual():
    pairs = _batch(count=2)
    operator = physics_operator(SETTINGS)
    torch.manual_seed(1)
    net = UNet(12, (16, 16), BAND, (4, 8))
    out = losses(net, (pairs.x, pairs.rho, pairs.larmor), operator, BAND, 1.0)
    with torch.no_grad():
        rho, larmor = net(pairs.x)
        expected = ((operator(rho, larmor) - pairs.x) ** 2).mean()
    torch.testing.assert_close(out["physics"].detach(), expected)
    torch.testing.assert_close(out["total"].detach(), (out["pixel"] + out["physics"]).detach())


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a, b = _weights(_train(tmp_path, tag="a")), _weights(_train(tmp_path, tag="b"))
    c = _weights(_train(tmp_path, tag="c", seed=1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("name", ["unet-sl", "gan-sl-physics"])
def test_a_killed_training_resumes_to_the_same_weights(tmp_path, name):
    whole = _weights(_train(tmp_path, name, tag="whole"))
    stopped = _train(tmp_path, name, tag="resumed", stop_after=1)
    assert stopped.name == CHECKPOINT
    resumed = _weights(_train(tmp_path, name, tag="resumed"))
    assert not (tmp_path / "resumed" / CHECKPOINT).exists()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_a_resumed_training_may_change_its_epoch_count_and_nothing_else(tmp_path):
    def run(epochs, tag, **kwargs):
        return train_model(_tiny("unet-sl", epochs=epochs), tmp_path / tag, "dense",
                           val_pairs=4, settings=SETTINGS, show=False, **kwargs)

    whole = _weights(run(3, "whole"))
    run(2, "longer", stop_after=1)                 # started for 2 epochs, stopped after 1
    longer = _weights(run(3, "longer"))            # then lengthened to 3
    assert all(torch.equal(whole[k], longer[k]) for k in whole)
    assert read_model_file(tmp_path / "longer" / "model.pt")["provenance"]["epochs"] == 3
    run(3, "shorter", stop_after=2)
    with pytest.raises(NvbayesError, match="past --epochs 1"):
        run(1, "shorter")                          # the checkpoint is already past it
    with pytest.raises(NvbayesError, match="finished training of 3 epochs"):
        run(4, "whole")
    with pytest.raises(NvbayesError, match="other settings"):
        train_model(_tiny("unet-sl", epochs=3, lr=2e-3), tmp_path / "whole", "dense",
                    val_pairs=4, settings=SETTINGS, show=False)


def test_train_resumes_from_state_in_memory():
    spec = _tiny("unet-sl-physics")
    pairs, val = _batch(0, 8), _batch(100, 4)
    op = physics_operator(SETTINGS)
    states = []
    full = train(spec, pairs, val, op, BAND, seed=3)
    train(dataclasses.replace(spec, epochs=2), pairs, val, op, BAND, seed=3,
          on_epoch=states.append)
    resumed = train(spec, pairs, val, op, BAND, seed=3, state=states[-1])
    for p, q in zip(full["net"].parameters(), resumed["net"].parameters(), strict=True):
        assert torch.equal(p, q)
    assert resumed["history"]["val_loss"] == full["history"]["val_loss"]


def test_model_file_records_validation_loss_of_its_stored_weights(tmp_path):
    path = _train(tmp_path)
    record = read_model_file(path)
    prov = record["provenance"]
    assert prov["epochs"] == 3 and prov["train_set"] == "dense" and prov["wall_time_s"] > 0
    spec = load_spec(path)
    net = load_network(spec.field.path, spec.field.sha256)[0]
    assert validation_loss(net, prov, validation_pairs(prov, show=False)) == \
        pytest.approx(prov["val_loss"], rel=1e-6)


# ---- model files and fits ----------------------------------------------------------------

def _measurement(tmp_path, grid=16, n_freq=12, name="m.nc"):
    data = simulate("few/far", 5, SimulationSettings(grid=Grid(grid), n_freq=n_freq))
    return write_netcdf(data, tmp_path / name)


def test_fit_is_unit_free_and_matches_the_scale_correction(tmp_path):
    spec = load_spec(_train(tmp_path))
    data = read_measurement(_measurement(tmp_path))
    one = fit_map(InverseProblem.from_measurement(data), spec)
    scaled = data.copy()
    scaled["spectrum"] = data["spectrum"] * 1000.0
    other = fit_map(InverseProblem.from_measurement(scaled), spec)
    np.testing.assert_allclose(other.rho, 1000.0 * one.rho, rtol=1e-5)
    np.testing.assert_allclose(other.larmor, one.larmor, rtol=1e-6)
    # after the correction the prediction carries the observed energy
    assert one.predicted.sum() == pytest.approx(float(data["spectrum"].sum()), rel=1e-6)


def test_wrong_input_shape_is_refused_in_one_line(tmp_path, capsys):
    model = _train(tmp_path)
    data = _measurement(tmp_path, grid=24, name="big.nc")
    out = tmp_path / "run"
    assert main(["fit", str(data), "--model", str(model), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "16 x 16 grid" in err and "24 x 24" in err
    assert not out.exists()
    # a file whose weights do not fit its input table
    record = torch.load(model, weights_only=True)
    record["input"]["freqs"] = record["input"]["freqs"][:-2]
    bad = write_model_file(record, tmp_path / "bad.pt")
    assert main(["fit", str(_measurement(tmp_path)), "--model", str(bad), "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "input channels" in err
    assert not out.exists()


def test_trained_models_give_no_posterior(tmp_path, capsys):
    model = _train(tmp_path)
    assert main(["fit", str(_measurement(tmp_path)), "--model", str(model), "--method",
                 "laplace", "--out", str(tmp_path / "run")]) == 2
    assert "point estimate" in capsys.readouterr().err


# ---- the dense generator and NoiseMSE ----------------------------------------------------

def test_dense_generator_draws_30_to_60_distinct_sources_inside_the_margin():
    grid = Grid(64)
    inside = {tuple(p) for p in allowed_pixels(grid)}
    for seed in range(5):
        scene = sample_scene("dense", seed, grid)
        k = len(scene.positions)
        assert DENSE_COUNT[0] <= k <= DENSE_COUNT[1]
        assert len({tuple(p) for p in scene.positions}) == k
        assert all(tuple(p) in inside for p in scene.positions)
    a, b = sample_scene("dense", 7, grid), sample_scene("dense", 7, grid)
    assert np.array_equal(a.positions, b.positions)


def test_noise_mse_is_zero_for_the_same_map_and_scale_free():
    rng = np.random.default_rng(0)
    n = rng.uniform(0.1, 1.0, (8, 8))
    assert noise_mse(n, 7.0 * n) == pytest.approx(0.0, abs=1e-12)
    # a map 10 x lower on a quarter of the pixels (peak kept): 1 dex² there, mean 1/4
    low, dim = n.copy(), n < np.sort(n.ravel())[16]
    low[dim] /= 10.0
    assert dim.sum() == 16
    assert noise_mse(low, n) == pytest.approx(0.25, rel=1e-8)   # ε = 1e-10 shifts it by < 1e-8
    mask = ~dim
    assert noise_mse(low, n, mask) == pytest.approx(0.0, abs=1e-12)


# ---- shipped weights ---------------------------------------------------------------------

SHIPPED = sorted(models_dir().glob("*.pt"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_weights_reproduce_their_validation_loss(path):
    assert path.stat().st_size <= 5 * 1024 ** 2
    spec = load_spec(path.stem)
    net, record = load_network(spec.field.path, spec.field.sha256)
    prov = record["provenance"]
    loss = validation_loss(net, prov, validation_pairs(prov, show=False))
    assert loss == pytest.approx(prov["val_loss"], rel=1e-5)


def test_models_are_shipped():
    assert {p.stem for p in SHIPPED} >= {
        "unet-sl", "unet-sl-sparse", "hybrid-netmy", "unet-sl-physics", "gan-sl-physics",
        "hybrid-netmy-sparse", "unet-sl-physics-sparse", "gan-sl-physics-sparse"
    }


def test_benchmark_scores_a_trained_model_with_noise_mse(tmp_path):
    model = _train(tmp_path)
    data = simulate_dataset(dataset_plan(["few/far", "medium/far"], samples=2, seed=50),
                            SETTINGS)
    path = write_netcdf(data, tmp_path / "d.nc")
    out = tmp_path / "bench"
    assert main(["benchmark", "--data", str(path), "--models", f"{model},tikhonov",
                 "--operators", "F2", "--seeds", "0", "--out", str(out)]) == 0
    results = xr.open_dataset(out / "results.nc").load()
    assert "a" in results["method"].values.tolist()     # named after its training folder
    values = results["noise_mse"].sel(operator="F2").sel({"method": "a"}).values
    assert np.isfinite(values).all() and (values >= 0).all()


def test_train_command_writes_resumes_and_refuses_in_one_line(tmp_path, capsys):
    out = tmp_path / "t"
    args = ["train", "--model", "unet-sl", "--epochs", "1", "--pairs", "4", "--val-pairs", "2",
            "--grid", "16", "--freqs", "12", "--out", str(out)]
    assert main(args) == 0
    assert {p.name for p in out.iterdir()} == {"settings.toml", "model.pt", "history.nc",
                                               "loss.png"}
    first = (out / "model.pt").read_bytes()
    assert main(args) == 0 and (out / "model.pt").read_bytes() == first   # finished: kept
    capsys.readouterr()
    assert main(args[:-2] + ["--seed", "3", "--out", str(out)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    bad = tmp_path / "bad"
    assert main(args[:-2] + ["--grid", "20", "--out", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "divisible by 8" in err and not bad.exists()
