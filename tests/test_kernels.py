"""Dipolar kernels: closed forms, tensor algebra, grid symmetries and the kernel cache.

Tolerances: two float64 evaluations of the same formula agree to 1e-12 relative.
"""

import pytest
import torch

from nvbayes.physics import (
    green_tensor,
    kernel_spectrum,
    kernel_table,
    nv_field_kernel,
    power_kernel,
    power_kernel_closed_form,
    scalar_kernel,
)
from nvbayes.physics.kernels import cached_spectrum

Z0 = 20.0


def offsets(n=9, spacing=13.0):
    d = torch.arange(-n, n + 1, dtype=torch.float64) * spacing
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    return dx, dy


def test_green_tensor_is_symmetric_and_traceless():
    """g_ia = g_ai and Σ_i g_ii = 0 (the field of a dipole is divergence-free)."""
    dx, dy = offsets()
    g = green_tensor(dx, dy, Z0)
    torch.testing.assert_close(g, g.transpose(-1, -2), rtol=0, atol=0)
    trace = g.diagonal(dim1=-2, dim2=-1).sum(-1)
    assert trace.abs().max() <= 1e-12 * g.abs().max()


def test_power_kernel_closed_form_equals_tensor_channel_sum():
    """P = Σ_a g_az² from the full tensor equals (|R|² + 3 z0²)/|R|⁸."""
    dx, dy = offsets()
    from_tensor = (green_tensor(dx, dy, Z0)[..., :, 2] ** 2).sum(-1)
    closed = power_kernel_closed_form(dx, dy, Z0)
    torch.testing.assert_close(from_tensor, closed, rtol=1e-12, atol=0)
    torch.testing.assert_close(power_kernel(dx, dy, Z0), closed, rtol=1e-12, atol=0)


def test_field_kernel_is_the_tensor_contracted_with_the_nv_axis():
    dx, dy = offsets()
    axis = torch.tensor([0.3, -0.5, 0.81], dtype=torch.float64)
    axis = axis / axis.norm()
    expected = torch.einsum("i,...ia->...a", axis, green_tensor(dx, dy, Z0))
    torch.testing.assert_close(nv_field_kernel(dx, dy, Z0, axis.tolist()), expected,
                               rtol=1e-12, atol=1e-20)


def test_scalar_kernel_is_gzz_for_a_z_axis_nv():
    dx, dy = offsets()
    r2 = dx * dx + dy * dy + Z0 * Z0
    torch.testing.assert_close(scalar_kernel(dx, dy, Z0), (3 * Z0**2 - r2) / r2**2.5,
                               rtol=1e-12, atol=0)


def test_power_kernel_on_axis_and_its_channels():
    """Directly above a source only g_zz survives: P = (2/z0³)² = 4/z0⁶."""
    zero = torch.zeros(1, dtype=torch.float64)
    assert power_kernel(zero, zero, Z0).item() == pytest.approx(4 / Z0**6, rel=1e-14)
    dx, dy = offsets()
    channels = sum(power_kernel(dx, dy, Z0, channels=(c,)) for c in "xyz")
    torch.testing.assert_close(channels, power_kernel(dx, dy, Z0), rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", ["power", "scalar"])
@pytest.mark.parametrize("symmetry", ["x->-x", "y->-y", "x<->y"])
def test_kernel_tables_are_symmetric(kind, symmetry):
    table = kernel_table(kind, (12, 12), 20.0, Z0)
    moved = {"x->-x": table.flip(-1), "y->-y": table.flip(-2),
             "x<->y": table.transpose(-1, -2)}[symmetry]
    torch.testing.assert_close(moved, table, rtol=1e-14, atol=0)


def test_power_kernel_falls_monotonically_with_distance():
    d = torch.linspace(0, 200, 101, dtype=torch.float64)
    p = power_kernel_closed_form(d, torch.zeros_like(d), Z0)
    assert (p.diff() < 0).all()


def test_kernel_cache_is_keyed_by_grid_standoff_and_dtype():
    kernel_spectrum.cache_clear()
    like64 = torch.zeros(1, dtype=torch.float64)
    like32 = torch.zeros(1, dtype=torch.float32)
    args = ("power", (8, 8), 20.0, 20.0, "normalized", (0.0, 0.0, 1.0), ("x", "y", "z"))
    a = cached_spectrum(*args, like64)
    assert cached_spectrum(*args, like64) is a
    assert kernel_spectrum.cache_info().hits == 1
    b = cached_spectrum(*args, like32)
    assert b.dtype == torch.complex64 and a.dtype == torch.complex128
    c = cached_spectrum("power", (8, 8), 20.0, 30.0, "normalized", (0.0, 0.0, 1.0),
                        ("x", "y", "z"), like64)
    d = cached_spectrum("power", (16, 16), 20.0, 20.0, "normalized", (0.0, 0.0, 1.0),
                        ("x", "y", "z"), like64)
    assert c is not a and not torch.equal(c, a)
    assert d.shape != a.shape
    assert kernel_spectrum.cache_info().currsize == 4
