"""MAP inference: a Delta guide holding a neural field, fitted by the NeTMY curriculum.

For each stage of the specification (paper Table 6) the measurement and the operator are
coarsened by the stage's ``downsample``; the same field (parameters carried over) is evaluated
on that stage's pixel grid.  Each step minimizes the Pyro model's negative log joint under the
Delta guide (Trace_ELBO with a point-mass guide), with AdamW, global gradient-norm clipping and
a cosine learning rate per stage, while β of the Fourier annealing rises from 0 to K.  After
the last stage the energy-ratio scale correction (:mod:`.scale`) is applied.

NaN guard: the parameters of the last step with a finite loss are kept; a non-finite loss or
gradient restores them and ends the fit early, flagged ``diverged`` in the result.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from ..fields import NeuralField, pixel_coordinates
from ..model.netmy import NoiseSpectrumModel
from ..model.problem import InverseProblem, check_inversion_operator
from ..progress import show_progress
from ..spec import LOSS_TERMS, ModelSpec
from .scale import HOMOGENEITY, scale_correction
from .schedule import annealing_progress, cosine_lr


class FieldGuide:
    """Pyro guide ``guide(beta)``: Delta sites ``rho`` and ``larmor`` at the field's output.

    ``coords`` ``(n, n, 2)`` fixes the pixel grid of the stage.
    """

    def __init__(self, field: NeuralField, coords: torch.Tensor):
        self.field = field
        self.coords = coords

    def __call__(self, beta: float, *args, **kwargs):
        pyro.module("field", self.field)
        rho, larmor = self.field(self.coords, beta)
        pyro.sample("rho", dist.Delta(rho, event_dim=2))
        pyro.sample("larmor", dist.Delta(larmor, event_dim=2))
        return rho, larmor


def traced_objective(model: NoiseSpectrumModel, guide: FieldGuide, beta: float):
    """``(loss, terms)``: the negative log joint minus its constant, and its named terms.

    The loss is ``−log p(ρ, ω_L, S_obs) + log q(ρ, ω_L)`` with the guide's draws replayed in
    the model, as Trace_ELBO computes it; a Delta guide has ``log q = 0``.
    """
    # a NaN here is the NaN guard's business (fit_map), not an exception or a warning
    with pyro.validation_enabled(False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Encountered NaN")
        guide_trace = poutine.trace(guide).get_trace(beta)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(beta)
        model_trace.compute_log_prob()
        guide_trace.compute_log_prob()
    terms = model.loss_terms(model_trace)
    log_q = sum(site["log_prob_sum"] for site in guide_trace.nodes.values()
                if site["type"] == "sample")
    loss = torch.stack(list(terms.values())).sum() + log_q
    return loss, terms


@dataclass
class MapResult:
    """What a MAP fit returns: maps on the measurement grid and the per-step history."""

    rho: np.ndarray                 # (n, n), scale-corrected
    larmor: np.ndarray              # (n, n), GHz; 0 off the predicted support
    predicted: np.ndarray           # (n_freq, n, n), spectrum of (rho, larmor)
    stats: dict                     # scale_correction, energy_obs, energy_pred, loss, ...
    history: dict                   # name → (steps,) array
    wall_time_s: float
    diverged: bool = False
    messages: list = field(default_factory=list)
    field: "NeuralField | None" = None   # the fitted field itself (not saved with a run)


def build_field(spec: ModelSpec, band: tuple[float, float]) -> NeuralField:
    f = spec.field
    return NeuralField(band, octaves=f.octaves, base=f.base, width=f.width, depth=f.depth,
                       skip_layer=f.skip_layer, support_threshold=f.support_threshold,
                       off_support=f.off_support)


def fit_map(problem: InverseProblem, spec: ModelSpec, operator: str = "F2", seed: int = 0,
            device: str = "cpu", show: "bool | None" = None) -> MapResult:
    """Fit ``problem`` by the curriculum of ``spec``; see the module docstring."""
    operator = check_inversion_operator(operator)
    start = time.perf_counter()
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    device = torch.device(device)
    net = build_field(spec, problem.band).to(device)
    params = list(net.parameters())
    snapshot = [p.detach().clone() for p in params]
    opt = spec.optimizer
    octaves = spec.field.octaves
    total = spec.total_steps
    columns = ("loss",) + LOSS_TERMS + ("grad_norm", "lr", "beta", "stage")
    history = torch.full((total, len(columns)), float("nan"), dtype=torch.float64)
    bar = _progress_bar(total, show)
    step_index, diverged, messages = 0, False, []
    for stage_no, stage in enumerate(spec.stages, start=1):
        model = NoiseSpectrumModel(problem.operator(operator, stage.downsample),
                                   problem.observed(stage.downsample, device=device),
                                   stage.weights, spec.log_eps)
        guide = FieldGuide(net, pixel_coordinates(problem.n // stage.downsample,
                                                  device=device))
        optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=opt.weight_decay)
        for t in range(stage.steps):
            beta = annealing_progress(t, stage.steps, octaves)
            lr = cosine_lr(t, stage.steps, stage.lr, opt.final_lr_fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, terms = traced_objective(model, guide, beta)
            if not torch.isfinite(loss):
                diverged = True
                break
            for s, p in zip(snapshot, params, strict=True):
                s.copy_(p.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, opt.grad_clip)
            if not torch.isfinite(grad_norm):
                diverged = True
                break
            optimizer.step()
            row = [loss.detach()] + [terms[n].detach() if n in terms else loss.new_zeros(())
                                     for n in LOSS_TERMS] + [grad_norm.detach()]
            history[step_index, : len(row)] = torch.stack(row).to("cpu", torch.float64)
            history[step_index, len(row):] = torch.tensor([lr, beta, stage_no])
            step_index += 1
            if bar is not None:
                bar.update(1)
                if t % 25 == 0:
                    bar.set_postfix(stage=stage_no, loss=f"{loss.item():.4g}")
        if diverged:
            with torch.no_grad():
                for s, p in zip(snapshot, params, strict=True):
                    p.copy_(s)
            messages.append(f"the fit diverged (non-finite loss or gradient) at step "
                            f"{step_index} of {total}; the run holds the last finite state")
            break
    if bar is not None:
        bar.close()
    rho, larmor, predicted, stats = _final_maps(net, problem, operator, octaves, device)
    history = history[:step_index].numpy()
    stats.update(steps=step_index, diverged=int(diverged),
                 final_loss=float(history[-1, 0]) if step_index else float("nan"))
    return MapResult(rho=rho, larmor=larmor, predicted=predicted, stats=stats,
                     history={name: history[:, i] for i, name in enumerate(columns)},
                     wall_time_s=time.perf_counter() - start, diverged=diverged,
                     messages=messages, field=net)


def _final_maps(net: NeuralField, problem: InverseProblem, operator: str, octaves: int,
                device) -> tuple:
    """``(ρ, ω_L, S_pred, stats)`` on the full grid at β = K, scale-corrected, as numpy."""
    coords = pixel_coordinates(problem.n, device=device)
    with torch.no_grad():
        rho, larmor = net(coords, float(octaves))
        rho, larmor = rho.to(torch.float64), larmor.to(torch.float64)
        predicted = problem.operator(operator)(rho, larmor)
        observed = problem.observed(dtype=torch.float64, device=device)
        stats = scale_correction(observed, predicted, operator)
        alpha = stats["scale_correction"]
    return ((alpha * rho).cpu().numpy(), larmor.cpu().numpy(),
            (alpha ** HOMOGENEITY[operator] * predicted).cpu().numpy(), stats)


def _progress_bar(total: int, show: "bool | None"):
    if not (show_progress() if show is None else show):
        return None
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc="fit", file=sys.stderr, dynamic_ncols=True)
