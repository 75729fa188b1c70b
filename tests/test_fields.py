"""The neural field of Table 5: shapes, annealing window, heads, support mask and gradients."""

import math

import pytest
import torch

from nvbayes.fields import (
    AnnealedFourierFeatures,
    NeuralField,
    annealing_weights,
    density_head,
    larmor_head,
    pixel_coordinates,
    support_mask,
)

BAND = (1.5, 2.5)


def test_paper_field_has_the_parameter_count_of_table_5():
    field = NeuralField(BAND)   # K = 12, width 320, depth 6, skip at layer 3
    n = sum(p.numel() for p in field.parameters())
    assert n == 444_163                       # "≈ 4.5 × 10⁵"
    assert field.encoding.out_features == 50  # 2 + 2·2·K


@pytest.mark.parametrize("n", [8, 32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_field_output_shapes_and_dtype(n, dtype):
    field = NeuralField(BAND, width=16, depth=4).to(dtype)
    rho, larmor = field(pixel_coordinates(n, dtype=dtype), beta=5.0)
    assert rho.shape == larmor.shape == (n, n)
    assert rho.dtype == larmor.dtype == dtype
    assert field.raw(pixel_coordinates(n, dtype=dtype), 5.0).shape == (n, n, 3)


def test_field_accepts_a_batch_axis():
    field = NeuralField(BAND, width=16, depth=3).double()
    coords = pixel_coordinates(8, dtype=torch.float64)
    rho, _ = field(torch.stack([coords, coords.flip(0)]), 3.0)
    assert rho.shape == (2, 8, 8)
    single, _ = field(coords.flip(0), 3.0)
    torch.testing.assert_close(rho[1], single, rtol=1e-12, atol=1e-12)


def test_pixel_coordinates_are_centres_in_the_unit_square():
    c = pixel_coordinates(4, dtype=torch.float64)
    assert torch.allclose(c[0, :, 1], torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=c.dtype))
    assert torch.equal(c[:, 0, 0], c[0, :, 1])          # (y, x) order, same axis
    # the 32² grid's pixel centres are the means of the 64² centres they cover
    fine, coarse = pixel_coordinates(64, torch.float64), pixel_coordinates(32, torch.float64)
    pooled = fine.reshape(32, 2, 32, 2, 2).mean(dim=(1, 3))
    torch.testing.assert_close(pooled, coarse, rtol=0, atol=1e-14)


def test_annealing_weights_are_0_at_beta_0_and_1_at_beta_k():
    k = 12
    assert torch.equal(annealing_weights(0.0, k), torch.zeros(k, dtype=torch.float64))
    assert torch.equal(annealing_weights(float(k), k), torch.ones(k, dtype=torch.float64))
    w = annealing_weights(2.5, k)
    assert w[0] == w[1] == 1.0 and w[3:].eq(0).all()
    assert math.isclose(float(w[2]), 0.5, abs_tol=1e-15)   # (1 − cos(π/2))/2
    # monotone in β for every band
    betas = torch.linspace(0, k, 97)
    ws = torch.stack([annealing_weights(b, k) for b in betas])
    assert (ws[1:] >= ws[:-1]).all()


def test_encoding_at_beta_0_is_the_raw_coordinates_and_at_k_the_full_fourier_basis():
    enc = AnnealedFourierFeatures(octaves=3).double()
    x = torch.tensor([[0.3, -0.7]], dtype=torch.float64)
    zero = enc(x, 0.0)
    assert torch.equal(zero[..., :2], x) and zero[..., 2:].eq(0).all()
    full = enc(x, 3.0)
    expected_sin = [math.sin(2 ** k * math.pi * v) for v in (0.3, -0.7) for k in range(3)]
    expected_cos = [math.cos(2 ** k * math.pi * v) for v in (0.3, -0.7) for k in range(3)]
    torch.testing.assert_close(full[0, 2:8], torch.tensor(expected_sin, dtype=torch.float64))
    torch.testing.assert_close(full[0, 8:], torch.tensor(expected_cos, dtype=torch.float64))



@pytest.mark.parametrize("directions", [3, 4, 6])
def test_directional_encoding_turns_with_the_plane(directions):
    """Rotating the point by π/M about the centre shifts the M projection directions by one;
    the first takes the last one's features with the projection negated (sin flips, cos
    stays).  M = 2 is the paper's axis encoding, with width 2 + 2·M·K."""
    k = 3
    enc = AnnealedFourierFeatures(octaves=k, directions=directions).double()
    assert enc.out_features == 2 + 2 * directions * k
    alpha = math.pi / directions
    y, x = 0.31, -0.57
    rotated = torch.tensor([[x * math.sin(alpha) + y * math.cos(alpha),
                             x * math.cos(alpha) - y * math.sin(alpha)]], dtype=torch.float64)
    point = torch.tensor([[y, x]], dtype=torch.float64)
    n = directions * k
    sin, cos = (f.reshape(directions, k) for f in enc(point, float(k))[0, 2:].split(n))
    sin_r, cos_r = (f.reshape(directions, k) for f in enc(rotated, float(k))[0, 2:].split(n))
    torch.testing.assert_close(sin_r[1:], sin[:-1], rtol=0, atol=1e-12)
    torch.testing.assert_close(cos_r[1:], cos[:-1], rtol=0, atol=1e-12)
    torch.testing.assert_close(sin_r[0], -sin[-1], rtol=0, atol=1e-12)
    torch.testing.assert_close(cos_r[0], cos[-1], rtol=0, atol=1e-12)
    # the axes are among the directions when M is even: θ = 0 is x, θ = π/2 is y
    if directions % 2 == 0:
        paper = AnnealedFourierFeatures(octaves=k).double()(point, float(k))[0, 2:]
        axis_sin = paper[:2 * k].reshape(2, k)                    # rows (y, x)
        torch.testing.assert_close(sin[0], axis_sin[1], rtol=0, atol=1e-12)
        torch.testing.assert_close(sin[directions // 2], axis_sin[0], rtol=0, atol=1e-12)


def test_directional_field_keeps_its_shapes_and_refuses_one_direction():
    field = NeuralField(BAND, width=16, depth=4, directions=4).double()
    rho, larmor = field(pixel_coordinates(8, dtype=torch.float64), 2.0)
    assert rho.shape == larmor.shape == (8, 8)
    with pytest.raises(ValueError, match="directions"):
        AnnealedFourierFeatures(octaves=3, directions=1)

def test_density_head_is_a_gated_softplus():
    h = torch.tensor([-3.0, 0.0, 2.0], dtype=torch.float64)
    g = torch.tensor([10.0, 0.0, -40.0], dtype=torch.float64)
    rho = density_head(h, g)
    torch.testing.assert_close(rho, torch.log1p(torch.exp(h)) / (1 + torch.exp(-g)))
    assert (rho >= 0).all()
    assert float(rho[2]) < 1e-16     # the gate switches a pixel off without saturating h


def test_larmor_head_maps_into_the_band():
    h = torch.tensor([-50.0, 0.0, 50.0], dtype=torch.float64)
    omega = larmor_head(h, BAND)
    torch.testing.assert_close(omega, torch.tensor([1.5, 2.0, 2.5], dtype=torch.float64))


def test_support_mask_is_the_thresholded_relative_density():
    rho = torch.tensor([[0.0, 0.29], [0.31, 1.0]], dtype=torch.float64, requires_grad=True)
    mask = support_mask(rho, 0.3)
    assert torch.equal(mask, torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64))
    assert not mask.requires_grad
    # per map over a batch
    both = support_mask(torch.stack([rho.detach(), 10 * rho.detach()]), 0.3)
    assert torch.equal(both[0], both[1])


def test_no_gradient_reaches_larmor_off_the_support():
    torch.manual_seed(0)
    raw = (2 * torch.randn(12, 12, 3, dtype=torch.float64)).requires_grad_(True)
    rho = density_head(raw[..., 0], raw[..., 1])
    mask = support_mask(rho, 0.3)
    larmor = mask * larmor_head(raw[..., 2], BAND)
    weights = torch.randn(12, 12, dtype=torch.float64)
    (weights * larmor).sum().backward()
    grad_omega = raw.grad[..., 2]
    assert 0 < mask.sum() < mask.numel()
    assert grad_omega[mask == 0].eq(0).all()
    assert grad_omega[mask == 1].ne(0).all()
    # the mask is a constant: ρ's logits get nothing from the Larmor field
    assert raw.grad[..., :2].eq(0).all()


def test_field_gradients_pass_gradcheck_on_the_density():
    torch.manual_seed(1)
    field = NeuralField(BAND, octaves=3, width=8, depth=3).double()
    coords = pixel_coordinates(4, dtype=torch.float64)
    weight = field.readout.weight.detach().clone().requires_grad_(True)

    def rho_of(w):
        return torch.func.functional_call(field, {"readout.weight": w}, (coords, 2.0))[0]

    assert torch.autograd.gradcheck(rho_of, (weight,), eps=1e-6, atol=1e-6)


def test_bf16_note_only_where_the_host_lacks_bf16_instructions(monkeypatch):
    """The note follows PyTorch's CPU probes: none of avx512_bf16 and AMX → the products are
    emulated and the fit says so; either one → no note.  fp32 never gets one."""
    from nvbayes.fields.neural import bf16_instructions
    from nvbayes.workflows.fit import precision_note

    for avx, amx, expected in ((False, False, ()), (True, False, ("avx512_bf16",)),
                               (True, True, ("avx512_bf16", "amx_bf16"))):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert bf16_instructions("cpu") == expected
        assert (precision_note("cpu", "bf16") is None) == bool(expected)
        assert precision_note("cpu", "fp32") is None
