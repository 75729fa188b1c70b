"""The NeTMY coordinate neural field (paper section 4.1, appendix D.1, Table 5).

``f_θ(x) = Heads(MLP_θ(γ_β(x)))``: annealed Fourier features and an MLP of ``depth`` fully
connected layers, the last a linear read-out to three channels ``(h_ρ, g, h_ω)`` and the others
of width ``width`` with tanh; the encoded input is concatenated again to the input of layer
``skip_layer``.  With the paper's ``K = 12``, width 320, depth 6 and the skip at layer 3 the
field has 444 163 parameters, the "≈ 4.5 × 10⁵" of Table 5 (which is how "6 layers" is read:
five hidden layers and the read-out).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .encoding import AnnealedFourierFeatures
from .heads import SUPPORT_THRESHOLD, density_head, larmor_head, support_mask

#: Larmor values off the predicted support.
OFF_SUPPORT = ("zero", "centre")


class NeuralField(nn.Module):
    """Coordinates ``(..., ny, nx, 2)`` → ``ρ, ω_L`` each ``(..., ny, nx)``.

    Parameters
    ----------
    band : Larmor band ``(ω_min, ω_max)`` in GHz.
    octaves, base : the Fourier encoding (K and its ratio).
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
    """

    def __init__(self, band: tuple[float, float], octaves: int = 12, base: float = 2.0,
                 width: int = 320, depth: int = 6, skip_layer: int = 3,
                 support_threshold: float = SUPPORT_THRESHOLD, off_support: str = "zero",
                 annealed: bool = True, gate: bool = True):
        super().__init__()
        self.annealed = bool(annealed)
        self.gate = bool(gate)
        if off_support not in OFF_SUPPORT:
            raise ValueError(f"off_support must be one of {OFF_SUPPORT}, got {off_support!r}")
        self.off_support = off_support
        if depth < 2 or width < 1:
            raise ValueError(f"need depth >= 2 and width >= 1, got {depth}, {width}")
        if not 0 <= skip_layer <= depth:
            raise ValueError(f"skip_layer must lie in [0, depth], got {skip_layer}")
        self.band = (float(band[0]), float(band[1]))
        self.support_threshold = float(support_threshold)
        self.skip_layer = int(skip_layer)
        self.encoding = AnnealedFourierFeatures(octaves, base)
        enc = self.encoding.out_features
        layers = []
        for i in range(1, depth):
            fan_in = enc if i == 1 else width
            if i == self.skip_layer and i > 1:
                fan_in += enc
            layers.append(nn.Linear(fan_in, width))
        self.hidden = nn.ModuleList(layers)
        self.readout = nn.Linear(width + (enc if self.skip_layer == depth else 0), 3)
        self.depth = int(depth)

    def raw(self, coords: torch.Tensor, beta: float) -> torch.Tensor:
        """The three output channels ``(h_ρ, g, h_ω)`` stacked last: ``(..., 3)``."""
        encoded = self.encoding(coords, beta if self.annealed else self.encoding.octaves)
        h = encoded
        for i, layer in enumerate(self.hidden, start=1):
            if i == self.skip_layer and i > 1:
                h = torch.cat([h, encoded], dim=-1)
            h = torch.tanh(layer(h))
        if self.skip_layer == self.depth:
            h = torch.cat([h, encoded], dim=-1)
        return self.readout(h)

    def forward(self, coords: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ρ, ω_L)``: the gated density and the support-masked Larmor field (GHz)."""
        channels = self.raw(coords, beta)
        if self.gate:
            rho = density_head(channels[..., 0], channels[..., 1])
        else:
            rho = F.softplus(channels[..., 0])
        mask = support_mask(rho, self.support_threshold)
        larmor = mask * larmor_head(channels[..., 2], self.band)
        if self.off_support == "centre":
            larmor = larmor + (1.0 - mask) * (0.5 * (self.band[0] + self.band[1]))
        return rho, larmor

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return (f"band={self.band}, skip_layer={self.skip_layer}, annealed={self.annealed}, "
                f"gate={self.gate}, parameters={n}")
