"""Supervised training of the U-Net baselines on simulated pairs (paper appendix E.2, E.7).

One epoch visits the training pairs once, in an order drawn from ``(seed, epoch)`` alone, in
batches of ``spec.batch_size``; each batch takes one Adam step of the generator on

    L = L_pix + w_phys · L_phys [+ λ_adv · BCE(D(x, ρ̂), 1)]

(:mod:`nvbayes.data.trained`) and, for the GAN, one Adam step of the PatchGAN on
``½ [BCE(D(x, ρ), 1) + BCE(D(x, ρ̂), 0)]`` first.  After each epoch the validation pairs are
scored with ``L_pix + w_phys · L_phys`` (never the adversarial term, so the four models'
validation curves compare) and ``on_epoch(state)`` is called with everything a resumed
training needs; :func:`train` started from that state continues to the same weights as an
uninterrupted run (no dropout, seeded order, Adam's moments in the state).

Shapes: ``x`` and ``spectrum`` ``(N, n_freq, ny, nx)`` (the input ``S / c``), ``rho`` and
``larmor`` ``(N, ny, nx)`` (the targets ``ρ / c`` and ω_L in GHz).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from nvbayes.data.trained import SupervisedSpec
from nvbayes.fields.unet import PatchDiscriminator, UNet

#: The columns of a training history, one value per epoch.
HISTORY = ("train_loss", "val_loss", "val_pixel", "val_physics", "wall_s")


@dataclass
class Pairs:
    """Training or validation pairs: inputs, targets and the operator of L_phys."""

    x: torch.Tensor           # (N, n_freq, ny, nx), S / c
    rho: torch.Tensor         # (N, ny, nx), ρ / c
    larmor: torch.Tensor      # (N, ny, nx), GHz

    def __len__(self) -> int:
        return self.x.shape[0]


def build_networks(spec: SupervisedSpec, n_freq: int, shape, band, seed: int):
    """The generator (and the GAN's discriminator, else ``None``), initialized from ``seed``."""
    torch.manual_seed(seed)
    net = UNet(n_freq, shape, band, tuple(spec.channels), spec.fourier_octaves)
    disc = PatchDiscriminator(n_freq) if spec.adversarial > 0 else None
    return net, disc


def losses(net: UNet, batch: tuple, operator, band, physics: float,
           residual: "bool | None" = None) -> dict:
    """``pixel``, ``physics`` (its mean square, unweighted) and ``total`` of a batch; the F2
    residual is computed where ``residual`` (default: where its weight ``physics`` is not 0),
    else ``physics`` reads 0."""
    x, rho, larmor = batch
    rho_hat, larmor_hat = net(x)
    width = band[1] - band[0]
    pixel = F.mse_loss(rho_hat, rho) + F.mse_loss((larmor_hat - larmor) / width,
                                                  torch.zeros_like(larmor))
    if physics > 0 if residual is None else residual:
        phys = F.mse_loss(operator(rho_hat, larmor_hat), x)
    else:
        phys = torch.zeros((), dtype=x.dtype)
    return {"pixel": pixel, "physics": phys, "total": pixel + physics * phys,
            "rho_hat": rho_hat}


def epoch_order(count: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of epoch ``epoch``: a function of ``(seed, epoch)`` alone."""
    generator = torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))
    return torch.randperm(count, generator=generator)


def evaluate_pairs(net: UNet, pairs: Pairs, operator, band, physics: float,
                   batch_size: int) -> dict:
    """Mean ``pixel``, ``physics`` and ``total`` over ``pairs`` (weighted by batch size)."""
    sums = {"pixel": 0.0, "physics": 0.0, "total": 0.0}
    net.eval()
    with torch.no_grad():
        for lo in range(0, len(pairs), batch_size):
            batch = (pairs.x[lo:lo + batch_size], pairs.rho[lo:lo + batch_size],
                     pairs.larmor[lo:lo + batch_size])
            out = losses(net, batch, operator, band, physics, residual=True)
            size = batch[0].shape[0]
            for key in sums:
                sums[key] += float(out[key]) * size
    net.train()
    return {k: v / len(pairs) for k, v in sums.items()}


def train(spec: SupervisedSpec, train_pairs: Pairs, val_pairs: Pairs, operator,
          band: tuple[float, float], seed: int = 0, state: "dict | None" = None,
          on_epoch: "Callable[[dict], None] | None" = None, progress=None) -> dict:
    """Train ``spec``'s networks; returns the final state (``net``, ``disc``, ``history``,
    ``epoch`` = epochs done).  ``state`` resumes a training from its ``on_epoch`` state;
    ``progress`` (a bar with ``update``/``set_postfix``) is advanced once per epoch."""
    n_freq, shape = train_pairs.x.shape[1], tuple(train_pairs.x.shape[-2:])
    net, disc = build_networks(spec, n_freq, shape, band, seed)
    opt = torch.optim.Adam(net.parameters(), lr=spec.lr)
    disc_opt = torch.optim.Adam(disc.parameters(), lr=spec.lr) if disc is not None else None
    history = {k: [] for k in HISTORY}
    done = 0
    if state is not None:
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        if disc is not None:
            disc.load_state_dict(state["disc"])
            disc_opt.load_state_dict(state["disc_opt"])
        history = {k: list(v) for k, v in state["history"].items()}
        done = int(state["epoch"])
        if progress is not None:
            progress.update(done)
    for epoch in range(done, spec.epochs):
        start = time.perf_counter()
        order = epoch_order(len(train_pairs), seed, epoch)
        total, seen = 0.0, 0
        for lo in range(0, len(order), spec.batch_size):
            index = order[lo:lo + spec.batch_size]
            batch = (train_pairs.x[index], train_pairs.rho[index], train_pairs.larmor[index])
            out = losses(net, batch, operator, band, spec.physics)
            loss = out["total"]
            if disc is not None:
                real = disc(batch[0], batch[1])
                fake = disc(batch[0], out["rho_hat"].detach())
                d_loss = 0.5 * (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                                + F.binary_cross_entropy_with_logits(fake,
                                                                     torch.zeros_like(fake)))
                disc_opt.zero_grad()
                d_loss.backward()
                disc_opt.step()
                judged = disc(batch[0], out["rho_hat"])
                loss = loss + spec.adversarial * F.binary_cross_entropy_with_logits(
                    judged, torch.ones_like(judged))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"{spec.name}: the training loss is {float(loss)} "
                                         f"at epoch {epoch + 1}")
            total += float(out["total"].detach()) * len(index)
            seen += len(index)
        val = evaluate_pairs(net, val_pairs, operator, band, spec.physics, spec.batch_size)
        for key, value in (("train_loss", total / seen), ("val_loss", val["total"]),
                           ("val_pixel", val["pixel"]), ("val_physics", val["physics"]),
                           ("wall_s", time.perf_counter() - start)):
            history[key].append(value)
        state = {"epoch": epoch + 1, "net": net.state_dict(), "opt": opt.state_dict(),
                 "history": history}
        if disc is not None:
            state |= {"disc": disc.state_dict(), "disc_opt": disc_opt.state_dict()}
        if progress is not None:
            progress.update(1)
            progress.set_postfix(val=f"{val['total']:.3g}")
        if on_epoch is not None:
            on_epoch(state)
    return {"epoch": spec.epochs, "net": net, "disc": disc, "history": history}


__all__ = ["HISTORY", "Pairs", "build_networks", "epoch_order", "evaluate_pairs", "losses",
           "train"]
