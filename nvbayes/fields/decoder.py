"""The Deep Decoder: an untrained convolutional generator as the density (Heckel & Hand).

A fixed random input ``z`` ``(c₀, s, s)`` with ``s = max(2, ⌈n / 2^L⌉)`` passes through ``L``
stages; stage ``i`` is a 1×1 convolution to ``channels[i]`` channels and an upsampling
(bilinear by default) to ``max(4, ⌈n / 2^(L−1−i)⌉)`` pixels per side, followed, except after
the last
stage, by a ReLU and a per-channel normalization (batch norm over the pixels of the one image,
with learned scale and shift).  On a rectangular ``ny × nx`` grid each side follows the rule
with its own n.  The floors matter only on grids smaller than 2^(L+1): there a
normalization over 1 or 4 pixels would zero or whiten its stage (on a 32² grid the first
stage was constant and the fits jumped between losses of 0.2 and 8).

The last stage has one channel ``o`` and the density is ``ρ = c · softplus(o)`` with the fixed
unit ``c`` (``level``), which keeps the network's output of order 1 whatever the density's
scale.  With the paper's ``channels = [128, 128, 128, 128, 1]`` and n = 64 the
input is 2 × 2.

The paper clamps ``o`` at 0 instead of the softplus.  With the clamp every fit we tried on a
few/far scene (F1 and F2; uniform or random read-out; with and without ℓ1) drove the outputs
below 0 one after another until ρ ≡ 0, within 90–270 steps, where a clamped pixel gets no
gradient back and the max-normalized noise map is undefined; the softplus cannot die.

Uniform start: the last convolution's weights are 0 and its bias is ``log(e − 1)``, so the
first density is exactly ``c`` everywhere; every layer receives gradient from the second step
on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nvbayes.physics.geometry import coarsen

from .base import Density
from .pixels import _factor, grid_shape


class DeepDecoder(Density):
    """``forward(coords (my, mx, 2)) → ρ (my, mx)``, generated at ``size`` ``(ny, nx)`` (or
    ``n``) and block-averaged."""

    def __init__(self, size: "int | tuple[int, int]", channels=(128, 128, 128, 128, 1),
                 level: float = 1.0, upsample: str = "bilinear"):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        stages = len(channels)
        self.size = grid_shape(size)
        self.level = float(level)
        self.upsample = upsample
        self.sizes = [tuple(max(4, math.ceil(n / 2 ** (stages - 1 - i))) for n in self.size)
                      for i in range(stages)]
        self.sizes[-1] = self.size
        first = [max(2, math.ceil(n / 2 ** stages)) for n in self.size]
        self.register_buffer("input", torch.randn(1, channels[0], *first))
        convs, norms = [], []
        fan_in = channels[0]
        for i, width in enumerate(channels):
            convs.append(nn.Conv2d(fan_in, width, kernel_size=1))
            if i < stages - 1:
                norms.append(nn.BatchNorm2d(width))
            fan_in = width
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(norms)
        with torch.no_grad():
            self.convs[-1].weight.zero_()
            self.convs[-1].bias.fill_(math.log(math.e - 1.0))

    def image(self) -> torch.Tensor:
        """The generated density ``(ny, nx)``."""
        h = self.input
        for i, conv in enumerate(self.convs):
            h = conv(h)
            mode = {"mode": self.upsample}
            if self.upsample == "bilinear":
                mode["align_corners"] = False
            h = F.interpolate(h, size=self.sizes[i], **mode)
            if i < len(self.norms):
                h = self.norms[i](torch.relu(h))
        return self.level * F.softplus(h[0, 0])

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return coarsen(self.image(), _factor(self.size, coords))
