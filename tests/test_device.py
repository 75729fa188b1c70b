"""The operators on an accelerator agree with the CPU (skipped where CUDA is absent).

Tolerances: float64 on the GPU against float64 on the CPU at 1e-12 relative (cuFFT and
pocketfft round differently); float32 on the GPU against float64 at 1e-5.
"""

import pytest
import torch

from nvbayes.physics import make_operator, readout_frequencies, relative_error
from nvbayes.physics.kernels import kernel_spectrum
from nvbayes.physics.noise_map import log_mse

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

N = 32
FREQS = readout_frequencies(n_freq=20)


def inputs(dtype=torch.float64, batch=(3,)):
    g = torch.Generator().manual_seed(0)
    rho = torch.rand(*batch, N, N, generator=g, dtype=torch.float64)
    rho[rho < 0.8] = 0.0
    larmor = 1.5 + torch.rand(*batch, N, N, generator=g, dtype=torch.float64)
    return rho.to(dtype), larmor.to(dtype)


@pytest.mark.parametrize("name", ["F1", "F2", "F3"])
def test_gpu_spectrum_equals_cpu(name):
    op = make_operator(name, FREQS, 0.5, 20.0, 20.0)
    rho, larmor = inputs()
    cpu = op(rho, larmor)
    gpu = op(rho.cuda(), larmor.cuda())
    assert gpu.device.type == "cuda" and gpu.shape == (3, len(FREQS), N, N)
    assert relative_error(gpu.cpu(), cpu).max() < 1e-12


@pytest.mark.parametrize("name", ["F1", "F2"])
def test_gpu_float32_gradient_matches_cpu_float64(name):
    op = make_operator(name, FREQS, 0.5, 20.0, 20.0)
    rho64, larmor64 = inputs(batch=())
    observed = op(*inputs(batch=(), dtype=torch.float64)).roll(3, -1)
    grads = []
    for dtype, device in ((torch.float64, "cpu"), (torch.float32, "cuda")):
        rho = (rho64 + 0.1).to(device=device, dtype=dtype).detach().requires_grad_()
        larmor = larmor64.to(device=device, dtype=dtype).detach().requires_grad_()
        log_mse(op(rho, larmor), observed.to(device=device, dtype=dtype)).backward()
        grads.append((rho.grad.double().cpu(), larmor.grad.double().cpu()))
    for cpu, gpu in zip(grads[0], grads[1], strict=True):
        assert (gpu - cpu).norm() / cpu.norm() < 1e-4


def test_kernel_cache_holds_one_entry_per_device():
    kernel_spectrum.cache_clear()
    op = make_operator("F2", FREQS, 0.5, 20.0, 20.0)
    rho, larmor = inputs(batch=())
    op(rho, larmor)
    op(rho.cuda(), larmor.cuda())
    op(rho.cuda(), larmor.cuda())
    info = kernel_spectrum.cache_info()
    assert info.currsize == 2 and info.hits == 1


def test_map_fit_on_cuda_starts_where_the_cpu_fit_starts():
    """A short MAP fit with --device cuda: same first loss as on the CPU (same seed and
    initialization), finite maps, and the run lands on the CPU side for saving."""
    import dataclasses

    pytest.importorskip("pyro")   # the device image may lack it; see scripts/device-check.sh
    from nvbayes.data.scenes import SimulationSettings, simulate
    from nvbayes.data.spec import load_spec
    from nvbayes.inference import fit_map
    from nvbayes.model.problem import InverseProblem
    from nvbayes.physics.geometry import Grid

    spec = load_spec("netmy-fast")
    spec = dataclasses.replace(spec, stages=tuple(dataclasses.replace(s, steps=20)
                                                  for s in spec.stages))
    problem = InverseProblem.from_measurement(simulate("few/far", 3,
                                                       SimulationSettings(grid=Grid(32))))
    cpu = fit_map(problem, spec, "F2", seed=0, device="cpu", show=False)
    gpu = fit_map(problem, spec, "F2", seed=0, device="cuda", show=False)
    assert abs(gpu.history["loss"][0] - cpu.history["loss"][0]) < 1e-4 * abs(cpu.history["loss"][0])
    assert gpu.rho.shape == (32, 32) and torch.isfinite(torch.as_tensor(gpu.rho)).all()


def test_batched_fit_on_cuda_equals_the_cpu_fit_in_float64():
    """B = 2 measurements in one loop on the GPU: the final densities of the CPU's batched fit
    to 1e-6 relative (float64 on both; cuFFT and pocketfft round differently), and bf16 mixed
    precision on the GPU within 5 % of it."""
    import dataclasses

    import numpy as np
    import xarray as xr

    pytest.importorskip("pyro")
    from nvbayes.data.scenes import SimulationSettings, simulate
    from nvbayes.data.spec import load_spec
    from nvbayes.inference.map import fit_batch
    from nvbayes.model.problem import InverseProblem
    from nvbayes.physics.geometry import Grid

    spec = load_spec("netmy-fast")
    spec = dataclasses.replace(spec, stages=tuple(dataclasses.replace(s, steps=25)
                                                  for s in spec.stages))
    settings = SimulationSettings(grid=Grid(32))
    problem = InverseProblem.from_measurement(xr.concat(
        [simulate("few/far", 3, settings), simulate("many/medium", 4, settings)], "sample"))
    cpu = fit_batch(problem, spec, "F2", seeds=[0, 1], show=False, dtype=torch.float64)
    gpu = fit_batch(problem, spec, "F2", seeds=[0, 1], show=False, dtype=torch.float64,
                    device="cuda")
    mixed = fit_batch(problem, spec, "F2", seeds=[0, 1], show=False, device="cuda",
                      precision="bf16")
    for c, g, m in zip(cpu, gpu, mixed, strict=True):
        assert np.linalg.norm(g.rho - c.rho) <= 1e-6 * np.linalg.norm(c.rho)
        assert np.linalg.norm(m.rho - c.rho) <= 5e-2 * np.linalg.norm(c.rho)
