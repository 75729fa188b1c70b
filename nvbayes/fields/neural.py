"""The NeTMY coordinate neural field (paper section 4.1, appendix D.1, Table 5).

``f_θ(x) = Heads(MLP_θ(γ_β(x)))``: annealed Fourier features and an MLP of ``depth`` fully
connected layers, the last a linear read-out to three channels ``(h_ρ, g, h_ω)`` and the others
of width ``width`` with tanh; the encoded input is concatenated again to the input of layer
``skip_layer``.  With the paper's ``K = 12``, width 320, depth 6 and the skip at layer 3 the
field has 444 163 parameters, the "≈ 4.5 × 10⁵" of Table 5 (which is how "6 layers" is read:
five hidden layers and the read-out).

Independent instances: ``NeuralField(..., instances=B)`` holds B separate networks, their
weights stacked along a leading axis, for fitting B measurements in one loop (every layer is
one batched matrix product).  Instance ``i`` initialized with seed ``s_i``
(:meth:`NeuralField.reset_parameters`) starts where a single field seeded ``s_i`` starts.
"""

from __future__ import annotations

import contextlib
import math
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from .base import Field
from .encoding import AnnealedFourierFeatures, GridEncoding
from .heads import SUPPORT_THRESHOLD, density_head, larmor_head, support_mask

#: Larmor values off the predicted support.
OFF_SUPPORT = ("zero", "centre")
#: Matrix-product precisions: ``fp32`` (the parameters' dtype) or ``bf16`` (mixed precision:
#: the MLP's products and tanh in bfloat16 under autocast, the parameters, the heads, the
#: operator and the loss in the parameters' dtype).
PRECISIONS = ("fp32", "bf16")
def bf16_instructions(device: "str | torch.device" = "cpu") -> tuple[str, ...]:
    """The bfloat16 matrix instructions ``device`` has: on a CPU ``avx512_bf16`` and
    ``amx_bf16`` (AMX tiles) where PyTorch detects them, on a CUDA device ``tensor cores``
    from compute capability 8 (Ampere); ``()`` where bf16 products would be emulated."""
    device = torch.device(device)
    if device.type == "cuda":
        major = torch.cuda.get_device_capability(device)[0] if torch.cuda.is_available() else 0
        return ("tensor cores",) if major >= 8 else ()
    found = []
    for name, probe in (("avx512_bf16", "_is_avx512_bf16_supported"),
                        ("amx_bf16", "_is_amx_tile_supported")):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            found.append(name)
    return tuple(found)


#: Shift of the scale channels: ``softplus(0 − 3) ≈ 0.049`` at a zero output.
SCALE_SHIFT = 3.0


class StackedLinear(nn.Module):
    """``y = x Wᵀ + b`` for ``I`` independent layers: weight ``(I, out, in)``, bias ``(I, out)``.

    ``instances=None`` is one ordinary layer (``I = 1``) applied to ``x`` of shape
    ``(..., in)``; otherwise ``x`` is ``(I, P, in)`` and the result ``(I, P, out)``.
    """

    def __init__(self, fan_in: int, fan_out: int, instances: "int | None" = None):
        super().__init__()
        self.instances = instances
        count = 1 if instances is None else int(instances)
        self.weight = nn.Parameter(torch.empty(count, fan_out, fan_in))
        self.bias = nn.Parameter(torch.empty(count, fan_out))
        self.reset_parameters()

    def reset_parameters(self, index: int = 0, generator: "torch.Generator | None" = None):
        """Instance ``index`` from ``U(−1/√in, 1/√in)`` (PyTorch's default for a linear layer),
        weight first, drawing from ``generator`` (default: the global generator)."""
        bound = 1.0 / math.sqrt(self.weight.shape[-1])
        with torch.no_grad():
            for p in (self.weight, self.bias):
                values = torch.empty(p.shape[1:], dtype=torch.float32)
                values.uniform_(-bound, bound, generator=generator)
                p[index].copy_(values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.instances is None:
            return F.linear(x, self.weight[0], self.bias[0])
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))

    def forward_encoded(self, grid: GridEncoding, encoded: tuple,
                        h: "torch.Tensor | None" = None) -> torch.Tensor:
        """The layer on the input ``[h, γ]`` (``γ`` alone without ``h``), ``γ`` given by
        ``grid`` as ``encoded = (varying, constant)`` (:meth:`GridEncoding.split`): the
        product runs over the varying columns, the constant ones enter through the bias
        (``b + W_c c``), and no concatenated input is built.

        Without instances ``h`` is ``(P, n_h)`` and ``varying`` ``(P, E_v)``; with instances
        ``(I, P, n_h)`` and ``(P, E_v)`` or ``(I, P, E_v)``.
        """
        varying, constant = encoded
        start = 0 if h is None else h.shape[-1]
        if self.instances is None:
            w = self.weight[0]
            bias = self.bias[0]
            if constant.shape[-1]:
                bias = torch.addmv(bias, w[:, start + grid.constant_index], constant)
            out = torch.addmm(bias, varying, w[:, start + grid.varying_index].T)
            return out if h is None else torch.addmm(out, h, w[:, :start].T)
        w = self.weight
        bias = self.bias
        if constant.shape[-1]:
            w_c = w[..., start + grid.constant_index]                 # (I, out, E_c)
            bias = bias + (w_c * constant.to(w_c.dtype).unsqueeze(-2)).sum(-1)
        w_v = w[..., start + grid.varying_index]                      # (I, out, E_v)
        varying = varying.expand(self.weight.shape[0], *varying.shape[-2:])
        out = torch.baddbmm(bias.unsqueeze(1), varying, w_v.transpose(1, 2))
        return out if h is None else torch.baddbmm(out, h, w[:, :, :start].transpose(1, 2))


class NeuralField(Field):
    """Coordinates → ``ρ, ω_L``.

    Without ``instances``: coordinates ``(..., ny, nx, 2)`` → ``ρ, ω_L`` each ``(..., ny, nx)``.
    With ``instances=B``: coordinates ``(ny, nx, 2)`` (shared) → each ``(B, ny, nx)``.

    Parameters
    ----------
    band : Larmor band ``(ω_min, ω_max)`` in GHz.
    octaves, base, directions : the Fourier encoding (K, its ratio and the number of
        projection directions; the paper's are the two axes).
    width, depth : hidden width; number of linear layers, read-out included (≥ 2).
    skip_layer : 1-based index of the layer whose input gets the encoding again
        (0 or 1 disables the skip).
    support_threshold : τ of the Larmor support mask.
    off_support : the Larmor value where the mask is 0: ``"zero"`` (the paper's Eq. 26) or
        ``"centre"`` (the band centre, so that readout pixels beside a source keep an
        in-band Lorentzian under F1/F2; no gradient reaches ``h_ω`` there either way).
    annealed : ``False`` switches every octave fully on from the first step (β ignored,
        ``γ_K`` throughout): the "−annealed PE" row of the paper's Table 3.
    gate : ``False`` drops the gate, ``ρ = softplus(h_ρ)``: the "−gate" row of Table 3
        (the gate channel is still computed and simply unused).
    instances : number of independent networks (``None``: one, with no instance axis).
    precision : ``"fp32"`` or ``"bf16"`` (see :data:`PRECISIONS`).
    scales : add two read-out channels ``(s_ρ, s_ω)`` for the positive scale fields of a
        variational posterior (:meth:`variational`); :meth:`forward` is unchanged.
    init : ``"default"`` (PyTorch's uniform draws, the paper's) or ``"uniform"``: the same
        draws, then every bias set to 0 and the read-out weights multiplied by
        ``readout_scale``, so the field starts near the uniform density
        ``softplus(0) σ(0) ≈ 0.35`` with no random blobs for the fit to undo.
    """

    def __init__(self, band: tuple[float, float], octaves: int = 12, base: float = 2.0,
                 directions: int = 2, width: int = 320, depth: int = 6, skip_layer: int = 3,
                 support_threshold: float = SUPPORT_THRESHOLD, off_support: str = "zero",
                 annealed: bool = True, gate: bool = True, instances: "int | None" = None,
                 precision: str = "fp32", scales: bool = False, init: str = "default",
                 readout_scale: float = 0.01):
        super().__init__()
        if init not in ("default", "uniform"):
            raise ValueError(f"init must be default or uniform, got {init!r}")
        self.init = init
        self.readout_scale = float(readout_scale)
        self.scales = bool(scales)
        self.annealed = bool(annealed)
        self.gate = bool(gate)
        if off_support not in OFF_SUPPORT:
            raise ValueError(f"off_support must be one of {OFF_SUPPORT}, got {off_support!r}")
        self.off_support = off_support
        if depth < 2 or width < 1:
            raise ValueError(f"need depth >= 2 and width >= 1, got {depth}, {width}")
        if not 0 <= skip_layer <= depth:
            raise ValueError(f"skip_layer must lie in [0, depth], got {skip_layer}")
        if instances is not None and instances < 1:
            raise ValueError(f"instances must be >= 1, got {instances}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.instances = None if instances is None else int(instances)
        self.band = (float(band[0]), float(band[1]))
        self.support_threshold = float(support_threshold)
        self.skip_layer = int(skip_layer)
        self.encoding = AnnealedFourierFeatures(octaves, base, directions)
        enc = self.encoding.out_features
        layers = []
        for i in range(1, depth):
            fan_in = enc if i == 1 else width
            if i == self.skip_layer and i > 1:
                fan_in += enc
            layers.append(StackedLinear(fan_in, width, self.instances))
        self.hidden = nn.ModuleList(layers)
        self.readout = StackedLinear(width + (enc if self.skip_layer == depth else 0),
                                     5 if self.scales else 3, self.instances)
        self.depth = int(depth)
        self._grids: list = []
        self._shape_start()

    @torch.no_grad()
    def _shape_start(self) -> None:
        """Apply ``init = "uniform"`` to the drawn weights (no effect for ``default``)."""
        if self.init != "uniform":
            return
        for layer in (*self.hidden, self.readout):
            layer.bias.zero_()
        self.readout.weight.mul_(self.readout_scale)

    def reset_parameters(self, seeds) -> None:
        """Draw instance ``i``'s weights from a generator seeded ``seeds[i]``, layer by layer,
        exactly as a single field built after ``torch.manual_seed(seeds[i])`` draws them."""
        seeds = list(seeds)
        if len(seeds) != (self.instances or 1):
            raise ValueError(f"need {self.instances or 1} seeds, got {len(seeds)}")
        for i, seed in enumerate(seeds):
            generator = torch.Generator().manual_seed(int(seed))
            for layer in (*self.hidden, self.readout):
                layer.reset_parameters(i, generator)
        self._shape_start()

    def _autocast(self, device: torch.device):
        if self.precision == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def raw(self, coords: torch.Tensor, beta: "float | torch.Tensor") -> torch.Tensor:
        """The output channels ``(h_ρ, g, h_ω)`` (and ``(s_ρ, s_ω)`` with scales) stacked
        last: ``(..., 3)`` or ``(..., 5)``.

        With instances, ``beta`` may be a tensor ``(B,)``, one progress per instance.
        """
        beta = beta if self.annealed else float(self.encoding.octaves)
        grid = self.grid_encoding(coords)
        if isinstance(beta, torch.Tensor) and beta.dim() > 0:
            beta = beta.reshape(-1)
        encoded = grid.split(beta)
        with self._autocast(coords.device):
            h = None
            for i, layer in enumerate(self.hidden, start=1):
                if i == 1 or (i == self.skip_layer and i > 1):
                    h = layer.forward_encoded(grid, encoded, h)
                else:
                    h = layer(h)
                h = h.tanh_()
            if self.skip_layer == self.depth:
                out = self.readout.forward_encoded(grid, encoded, h)
            else:
                out = self.readout(h)
        out = out.to(coords.dtype)
        if self.instances is not None:
            return out.reshape(self.instances, *coords.shape[:-1], out.shape[-1])
        return out.reshape(*coords.shape[:-1], out.shape[-1])

    def grid_encoding(self, coords: torch.Tensor) -> GridEncoding:
        """The :class:`GridEncoding` of ``coords``, kept while the solver holds the same
        tensor (one per stage); the last two are kept."""
        for ref, version, grid in self._grids:
            if ref() is coords and coords._version == version:
                return grid
        grid = GridEncoding(self.encoding, coords)
        self._grids = [(weakref.ref(coords), coords._version, grid)] + self._grids[:1]
        return grid

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_grids"] = []          # weak references do not pickle; rebuilt on demand
        return state

    def forward(self, coords: torch.Tensor, beta: "float | torch.Tensor"
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ρ, ω_L)``: the gated density and the support-masked Larmor field (GHz)."""
        return self._heads(self.raw(coords, beta))[:2]

    def variational(self, coords: torch.Tensor, beta: "float | torch.Tensor") -> dict:
        """The location and scale fields of a variational posterior (``scales=True``).

        ``rho``, ``larmor`` and ``mask`` as :meth:`forward` (the location), ``larmor_logit``
        ``h_ω`` (``ω_band = ω_min + (ω_max − ω_min) σ(h_ω)``), and the positive scales
        ``rho_scale = softplus(s_ρ − 3)`` (of log ρ) and ``larmor_scale = softplus(s_ω − 3)``
        (of h_ω); the shift starts them near 0.05, close to the MAP's point mass.
        """
        if not self.scales:
            raise ValueError("this field was built without scale channels (scales=False)")
        channels = self.raw(coords, beta)
        rho, larmor, mask = self._heads(channels)
        return {"rho": rho, "larmor": larmor, "mask": mask,
                "larmor_logit": channels[..., 2],
                "rho_scale": F.softplus(channels[..., 3] - SCALE_SHIFT),
                "larmor_scale": F.softplus(channels[..., 4] - SCALE_SHIFT)}

    def _heads(self, channels: torch.Tensor):
        if self.gate:
            rho = density_head(channels[..., 0], channels[..., 1])
        else:
            rho = F.softplus(channels[..., 0])
        mask = support_mask(rho, self.support_threshold)
        larmor = torch.where(mask > 0, larmor_head(channels[..., 2], self.band),
                             self.off_support_value)
        return rho, larmor, mask

    @property
    def off_support_value(self) -> float:
        """ω_L where the support mask is 0 (GHz)."""
        return 0.5 * (self.band[0] + self.band[1]) if self.off_support == "centre" else 0.0

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.parameters()) // (self.instances or 1)
        return (f"band={self.band}, skip_layer={self.skip_layer}, annealed={self.annealed}, "
                f"gate={self.gate}, instances={self.instances}, precision={self.precision}, "
                f"parameters per instance={n}")
