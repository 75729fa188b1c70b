"""Scene classes and simulated measurements: every class keeps its promises, seeds reproduce."""

import numpy as np
import pytest
import torch

from nvbayes.data.scenes import (
    ALL_CLASSES,
    AMPLITUDE_RANGE,
    COUNTS,
    MARGIN_STANDOFFS,
    PAPER_CLASSES,
    SEPARATIONS,
    SimulationSettings,
    dataset_plan,
    expand_classes,
    sample_scene,
    simulate,
    simulate_dataset,
)
from nvbayes.errors import SceneError
from nvbayes.physics import DirectOperator, Grid, power_kernel_closed_form

SEEDS = range(12)


@pytest.mark.parametrize("name", ALL_CLASSES)
def test_scenes_respect_count_separation_margin_amplitude_and_band(name):
    count, sep = name.split("/")
    lo_n, hi_n = COUNTS[count]
    lo_d, hi_d = SEPARATIONS[sep]
    grid = Grid()
    for seed in SEEDS:
        scene = sample_scene(name, seed, grid, band=(1.5, 2.5))
        k = len(scene.positions)
        assert lo_n <= k <= hi_n
        assert len(np.unique(scene.positions, axis=0)) == k
        nn = scene.nearest_neighbour_standoffs()
        if k > 1:
            assert (nn >= lo_d).all() and (nn < hi_d).all(), (seed, nn)
        # margin: ≥ 3 z0 from the outermost pixel centres on every side
        edge = np.minimum(scene.positions, grid.n - 1 - scene.positions) * grid.spacing
        assert (edge >= MARGIN_STANDOFFS * grid.standoff - 1e-9).all()
        assert ((scene.amplitudes >= AMPLITUDE_RANGE[0])
                & (scene.amplitudes <= AMPLITUDE_RANGE[1])).all()
        assert ((scene.larmor >= 1.5) & (scene.larmor <= 2.5)).all()


def test_density_and_larmor_field_of_a_scene():
    scene = sample_scene("medium/medium", 4)
    rho, larmor = scene.density(), scene.larmor_field()
    iy, ix = scene.positions.T
    np.testing.assert_array_equal(rho[iy, ix], scene.amplitudes)
    assert np.count_nonzero(rho) == len(scene.amplitudes)
    # on the support the field is each source's own frequency (it dominates its own pixel)
    np.testing.assert_array_equal(larmor[iy, ix], scene.larmor)
    # elsewhere it is the frequency of the source with the largest ρ P at that pixel
    y, x = 0, 0
    d = (np.array([y, x]) - scene.positions) * scene.grid.spacing
    power = power_kernel_closed_form(torch.from_numpy(d[:, 1].astype(float)),
                                     torch.from_numpy(d[:, 0].astype(float)), 20.0).numpy()
    assert larmor[y, x] == scene.larmor[np.argmax(scene.amplitudes * power)]


def test_noiseless_simulation_is_f3_of_the_truth():
    settings = SimulationSettings(grid=Grid(32), noise=0.0)
    data = simulate("few/far", 7, settings)
    f3 = DirectOperator(data.freq.values, 0.5, 20.0, 20.0)
    expected = f3(torch.from_numpy(data.rho_true.values), torch.from_numpy(data.larmor_true.values))
    np.testing.assert_array_equal(data.spectrum.values, expected.numpy())


def test_sensor_noise_has_the_requested_level():
    clean = simulate("many/close", 2, SimulationSettings(noise=0.0)).spectrum.values
    noisy = simulate("many/close", 2, SimulationSettings(noise=0.02)).spectrum.values
    residual = noisy - clean
    sigma = 0.02 * (clean.max() - clean.min())
    assert residual.std() == pytest.approx(sigma, rel=0.01)
    assert abs(residual.mean()) < 0.01 * sigma


def test_same_seed_gives_the_same_measurement_and_another_seed_does_not():
    a = simulate("medium/far", 3)
    b = simulate("medium/far", 3)
    c = simulate("medium/far", 4)
    assert a.identical(b)
    assert not np.array_equal(a.rho_true.values, c.rho_true.values)


def test_dataset_sample_i_regenerates_alone():
    settings = SimulationSettings(grid=Grid(32), n_freq=8)
    plan = dataset_plan(["few/far", "medium/close"], samples=5, seed=10)
    assert plan == [("few/far", 10), ("medium/close", 11), ("few/far", 12),
                    ("medium/close", 13), ("few/far", 14)]
    data = simulate_dataset(plan, settings)
    assert data.spectrum.dims == ("sample", "freq", "y", "x")
    one = simulate("medium/close", 13, settings)
    np.testing.assert_array_equal(data.spectrum.values[3], one.spectrum.values)
    assert str(data.scene_class.values[3]) == "medium/close" and int(data.seed.values[3]) == 13


def test_expand_classes():
    assert expand_classes("all") == list(PAPER_CLASSES)
    assert len(PAPER_CLASSES) == 8 and "many/medium" not in PAPER_CLASSES
    assert expand_classes("Few/Far, many/close") == ["few/far", "many/close"]
    with pytest.raises(SceneError, match="unknown scene class"):
        expand_classes("few/near")


def test_impossible_scenes_are_refused():
    with pytest.raises(SceneError, match="3 standoffs"):
        sample_scene("few/far", 0, Grid(6))
    with pytest.raises(SceneError, match="cannot place"):
        sample_scene("many/far", 0, Grid(16))
