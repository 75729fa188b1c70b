"""The supervised reconstructors of the paper's appendix E.2: a U-Net from a spectrum to
(ρ, ω_L), its Fourier-feature hybrid, and the PatchGAN discriminator of the GAN baseline.

U-Net (paper: four levels, channels 32, 64, 128, 256, instance normalization, a pixelwise
softplus output)::

    x (B, C_in, ny, nx) ─► [conv3×3 ─ IN ─ ReLU] × 2 at 32 ─► max-pool 2 ─► … at 64, 128
                         ─► 256 (bottom) ─► up-conv 2×2 + skip ─► [conv3×3 ─ IN ─ ReLU] × 2
                         ─► 1×1 conv ─► (h_ρ, h_ω)
    ρ   = softplus(h_ρ)                                  (B, ny, nx), ≥ 0
    ω_L = ω_min + (ω_max − ω_min) σ(h_ω)                 (B, ny, nx), GHz, inside the band

``C_in`` is the number of readout frequencies; the hybrid (``fourier_octaves > 0``) appends the
NeTMY encoding γ(r) of the pixel coordinates (``2 + 4K`` channels, every band switched on) to
the input, the same for every measurement.  ny and nx must be multiples of 8 (three poolings).
The paper leaves the activation, pooling and up-sampling open; these are the original U-Net's
(ReLU, max-pooling, transposed convolutions) and the instance norms carry a learned scale.

PatchGAN (the GAN's discriminator, pix2pix-style, conditional): ``concat(x, ρ)`` through
4×4 convolutions of stride 2, 2, 1 with 64, 128, 256 channels (LeakyReLU 0.2, instance norm
after the first) and a last 4×4 convolution to one logit per patch, ``(B, 1, ny/4 − 2, nx/4 −
2)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .encoding import AnnealedFourierFeatures, pixel_coordinates
from .heads import larmor_head

#: The paper's U-Net widths (appendix E.2).
CHANNELS = (32, 64, 128, 256)
#: The PatchGAN's widths.
PATCH_CHANNELS = (64, 128, 256)


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.InstanceNorm2d(c_out, affine=True),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.InstanceNorm2d(c_out, affine=True),
        nn.ReLU(inplace=True))


class UNet(nn.Module):
    """``(B, n_freq, ny, nx)`` spectra → ``(ρ, ω_L)``, each ``(B, ny, nx)``.

    Parameters
    ----------
    n_freq : input channels (readout frequencies).
    shape : the grid ``(ny, nx)``, multiples of 8.
    band : the Larmor band ``(ω_min, ω_max)`` in GHz.
    channels : the widths of the levels, top to bottom.
    fourier_octaves : K of the coordinate encoding appended to the input (0: none).
    """

    def __init__(self, n_freq: int, shape: tuple[int, int], band: tuple[float, float],
                 channels: tuple[int, ...] = CHANNELS, fourier_octaves: int = 0):
        super().__init__()
        levels = len(channels)
        if any(int(s) % 2 ** (levels - 1) for s in shape):
            raise ValueError(f"a {levels}-level U-Net needs sides divisible by "
                             f"{2 ** (levels - 1)}, got {tuple(shape)}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.band = (float(band[0]), float(band[1]))
        self.n_freq = int(n_freq)
        self.fourier_octaves = int(fourier_octaves)
        extra = 0
        if self.fourier_octaves > 0:
            encoding = AnnealedFourierFeatures(self.fourier_octaves)
            features = encoding(pixel_coordinates(self.shape, dtype=torch.float64),
                                float(self.fourier_octaves))        # (ny, nx, 2 + 4K)
            self.register_buffer("features", features.permute(2, 0, 1).float(),
                                 persistent=False)
            extra = encoding.out_features
        self.in_channels = self.n_freq + extra
        self.down = nn.ModuleList()
        c = self.in_channels
        for width in channels:
            self.down.append(_double_conv(c, width))
            c = width
        self.up, self.merge = nn.ModuleList(), nn.ModuleList()
        for width in reversed(channels[:-1]):
            self.up.append(nn.ConvTranspose2d(c, width, 2, stride=2))
            self.merge.append(_double_conv(2 * width, width))
            c = width
        self.out = nn.Conv2d(c, 2, 1)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The network's input: ``x`` with the coordinate features appended (hybrid)."""
        if self.fourier_octaves == 0:
            return x
        features = self.features.to(x).expand(x.shape[0], -1, -1, -1)
        return torch.cat([x, features], dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.inputs(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h)
            if i < len(self.down) - 1:
                skips.append(h)
                h = F.max_pool2d(h, 2)
        for up, merge in zip(self.up, self.merge, strict=True):
            h = merge(torch.cat([up(h), skips.pop()], dim=1))
        h = self.out(h)
        return F.softplus(h[:, 0]), larmor_head(h[:, 1], self.band)


class PatchDiscriminator(nn.Module):
    """``(B, n_freq, ny, nx)`` spectra and ``(B, ny, nx)`` densities → patch logits."""

    def __init__(self, n_freq: int, channels: tuple[int, ...] = PATCH_CHANNELS):
        super().__init__()
        layers: list[nn.Module] = []
        c = n_freq + 1
        for i, width in enumerate(channels):
            stride = 2 if i < len(channels) - 1 else 1
            layers.append(nn.Conv2d(c, width, 4, stride=stride, padding=1))
            if i > 0:
                layers.append(nn.InstanceNorm2d(width, affine=True))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c = width
        layers.append(nn.Conv2d(c, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, rho.unsqueeze(1)], dim=1))


__all__ = ["CHANNELS", "PATCH_CHANNELS", "PatchDiscriminator", "UNet"]
