"""The package's contracts: the command line starts without the numerical stack, the library
never touches the user's matplotlib backend, and each concept has one implementation that the
others share (fields' hooks, the method registry, the metric registry, the cell store, the run
folder, settings validation)."""

import ast
import math
import pathlib
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import xarray as xr

import nvbayes
from nvbayes.cli import COMMANDS, build_parser, main
from nvbayes.data.validation import build, interval, positive
from nvbayes.errors import NvbayesError, ParameterError
from nvbayes.fields import (
    DeepDecoder,
    Density,
    DensityField,
    Field,
    GaussianSplats,
    LarmorMap,
    NeuralField,
    PixelDensity,
)
from nvbayes.inference.methods import METHODS, infer
from nvbayes.metrics import MAP_METRICS, METRICS, evaluate
from nvbayes.results.store import CellStore, replaceable_folder, stored_settings

PACKAGE = pathlib.Path(nvbayes.__file__).parent
HEAVY = ("torch", "pyro", "arviz", "matplotlib", "xarray", "scipy")


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout


def test_the_command_line_starts_without_the_numerical_stack():
    loaded = _run("import sys, nvbayes.cli\n"
                  f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    assert loaded.strip() == "[]"


def test_help_lists_every_command_and_each_command_builds_its_parser(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    for name in COMMANDS:
        assert main([name, "--help"]) == 0
        assert capsys.readouterr().out.startswith(f"usage: nvbayes {name}")


def test_no_imports_inside_functions_outside_the_command_line():
    """Imports sit at the top of every library module (the CLI loads commands on demand, the
    root package loads ``fit`` on first use, and the Dask executor loads ``distributed``, an
    optional dependency, through importlib)."""
    inner = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner += [f"{path.name}:{sub.lineno}" for sub in ast.walk(node)
                          if isinstance(sub, (ast.Import, ast.ImportFrom))]
    assert inner == []


def test_the_library_leaves_the_matplotlib_backend_and_pyplot_alone():
    """The user's backend survives every figure module, and figures are not registered with
    pyplot (ArviZ imports pyplot itself; nvbayes never calls it)."""
    out = _run("import matplotlib\n"
               "matplotlib.use('svg')\n"
               "import sys, numpy as np, xarray as xr\n"
               "from nvbayes.figures import imaging, benchmark, diagnostics, rucl3\n"
               "from nvbayes.figures.imaging import plot_hessian_spectrum\n"
               "h = xr.Dataset({'eigenvalue': ('mode', np.geomspace(1, 1e4, 50)),\n"
               "  'spatial_frequency': ('mode', np.linspace(0, 0.1, 50)),\n"
               "  'sampled_transfer': ('k_axis', np.linspace(1, 0, 8)),\n"
               "  'continuum_transfer': ('k_axis', np.linspace(1, 0, 8))},\n"
               "  coords={'k_axis': np.linspace(0, 0.1, 8)},\n"
               "  attrs={'condition_number': 1e4, 'standoff_nm': 20.0, 'spacing_nm': 20.0,\n"
               "         'decay_per_standoff': 1.0})\n"
               "fig = plot_hessian_spectrum(h)\n"
               "import matplotlib.pyplot as plt\n"
               "print(matplotlib.get_backend(), len(plt.get_fignums()), type(fig).__name__)")
    assert out.split() == ["svg", "0", "Figure"]


# ---- fields: one protocol, no-op hooks ------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: NeuralField((1.5, 2.5), width=8, depth=4, octaves=2),
    lambda: DensityField(PixelDensity(8), LarmorMap(8, (1.5, 2.5))),
    lambda: DensityField(GaussianSplats(count=4), LarmorMap(8, (1.5, 2.5))),
    lambda: DensityField(DeepDecoder(8, channels=(4, 4, 1)), LarmorMap(8, (1.5, 2.5))),
])
def test_every_field_offers_the_solver_hooks(make):
    field = make()
    assert isinstance(field, Field)
    groups = field.param_groups()
    grouped = [p for g in groups for p in g["params"]]
    assert sorted(map(id, grouped)) == sorted(id(p) for p in field.parameters())
    assert all(g.get("lr_scale", 1.0) > 0 for g in groups)
    field.observe_gradients()
    assert field.densify(1) is False or isinstance(field, DensityField)
    field.project_()


def test_default_hooks_do_nothing_and_the_free_density_projects():
    class Ramp(Density):
        def __init__(self):
            super().__init__()
            self.v = torch.nn.Parameter(torch.linspace(-1, 1, 9).reshape(3, 3))

        def forward(self, coords):
            return self.v

    ramp = Ramp()
    before = ramp.v.detach().clone()
    ramp.project_()
    ramp.observe_gradients()
    assert ramp.densify(5) is False and ramp.instances is None
    assert torch.equal(ramp.v, before)
    assert ramp.param_groups() == [{"params": [ramp.v], "lr_scale": 1.0}]
    free = PixelDensity(3)
    with torch.no_grad():
        free.values.copy_(before)
    DensityField(free, LarmorMap(3, (1.5, 2.5))).project_()
    assert torch.equal(free.values, before.clamp(min=0))


# ---- the method registry --------------------------------------------------------------------


def test_the_fit_command_offers_exactly_the_registered_methods():
    fit = build_parser("fit")._subparsers._group_actions[0].choices["fit"]
    method = next(a for a in fit._actions if a.dest == "method")
    assert tuple(method.choices) == tuple(METHODS) == ("map", "svi", "laplace", "nuts",
                                                       "catalogue")
    assert METHODS["map"].draws is None
    assert all(METHODS[m].draws >= 2 for m in ("svi", "laplace", "nuts", "catalogue"))


def test_infer_takes_the_registry_defaults(monkeypatch):
    seen = {}

    def fake(problem, spec, operator, **kw):
        seen.update(kw)
        return "result"

    monkeypatch.setitem(METHODS, "nuts", METHODS["nuts"].__class__(
        **{**METHODS["nuts"].__dict__, "fit": fake}))
    assert infer(None, None, method="nuts", operator="F2", likelihood="noise-map") == "result"
    assert (seen["draws"], seen["chains"], seen["warmup"]) == (300, 2, 1000)
    with pytest.raises(ParameterError, match="draws must be >= 2"):
        infer(None, None, method="nuts", operator="F2", draws=1)
    with pytest.raises(ParameterError, match="unknown method"):
        infer(None, None, method="mcmc", operator="F2")


# ---- the metric registry --------------------------------------------------------------------


def test_every_score_is_registered_with_a_unit_and_a_direction():
    rng = np.random.default_rng(0)
    truth = np.zeros((16, 16))
    truth[4, 5] = truth[11, 10] = 1.0
    noise = rng.uniform(0.1, 1.0, (16, 16))
    scores = evaluate(truth + 0.01 * rng.random((16, 16)), truth,
                      np.full((16, 16), 2.0), np.full((16, 16), 2.1), noise, 2.0 * noise)
    assert set(scores) <= set(METRICS) and set(MAP_METRICS) <= set(scores)
    for name in scores:
        assert METRICS[name].better in (-1, 0, 1) and METRICS[name].units
    assert METRICS["larmor_mae"].units == "GHz" and METRICS["hungarian_f1"].better == 1


# ---- the cell store and the folder guards ---------------------------------------------------


def test_cell_store_round_trips_and_retries_failed_cells(tmp_path):
    store = CellStore(tmp_path)
    ds = xr.Dataset({"rho": (("y", "x"), np.arange(6.0).reshape(2, 3))},
                    attrs={"error": "", "swd": 0.25})
    assert store.read("a") is None and not store.has("a")
    store.write("a", ds)
    xr.testing.assert_identical(store.read("a"), ds)
    assert store.has("a") and store.done("a")
    store.write("b", ds.assign_attrs(error="ValueError: boom"))
    assert store.has("b") and not store.done("b")


def test_folder_guards_refuse_foreign_folders(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(NvbayesError, match="is not a run folder"):
        replaceable_folder(tmp_path / "mine", "config.toml", "run")
    assert replaceable_folder(tmp_path / "new", "config.toml") == tmp_path / "new"
    with pytest.raises(NvbayesError, match="is not a benchmark folder"):
        stored_settings(tmp_path / "mine", "benchmark.toml", "benchmark")
    assert stored_settings(tmp_path / "new", "benchmark.toml", "benchmark") is None
    (tmp_path / "mine" / "benchmark.toml").write_text("[benchmark]\nthreads = 1\n")
    assert stored_settings(tmp_path / "mine", "benchmark.toml", "x") == {
        "benchmark": {"threads": 1}}


# ---- settings validation --------------------------------------------------------------------


@dataclass(frozen=True)
class _Box:
    width: float
    label: str = "box"

    def __post_init__(self):
        positive("width", self.width)


def test_settings_tables_are_built_or_refused_in_one_line():
    assert build(_Box, {"width": 2.0}, "t") == _Box(2.0)
    with pytest.raises(ParameterError, match="unknown key\\(s\\) depth"):
        build(_Box, {"width": 1.0, "depth": 3}, "t")
    with pytest.raises(ParameterError, match="missing key\\(s\\) label"):
        build(_Box, {"width": 1.0}, "t", exact=True)
    with pytest.raises(ParameterError, match="must be a positive number"):
        build(_Box, {"width": -1.0}, "t")
    with pytest.raises(ParameterError, match="is missing"):
        build(_Box, None, "t")
    for bad in (0, math.nan, math.inf, True, "2"):
        with pytest.raises(ParameterError):
            positive("x", bad)
    assert interval("band", [1.5, 2.5]) == (1.5, 2.5)
    with pytest.raises(ParameterError, match="not an interval"):
        interval("band", [2.5, 1.5])
