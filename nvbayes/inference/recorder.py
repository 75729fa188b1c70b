"""Book-keeping shared by the MAP solvers: the per-step history, the progress bar, and the
NaN guard's snapshot of the last finite state."""

from __future__ import annotations

import numpy as np
import torch

from nvbayes.data.spec import LOSS_TERMS
from nvbayes.progress import progress_bar

#: History columns every solver writes; solvers may add their own after these.
COLUMNS = ("loss",) + LOSS_TERMS + ("grad_norm", "lr", "beta", "stage")


class Recorder:
    """Rows of ``COLUMNS + extra`` for at most ``total`` steps of ``instances`` fits run in one
    loop, and a progress bar.

    A row costs one device-to-host copy (the tensors are stacked first).  An instance that is
    not active at a step (stopped early, or diverged) gets no row there: its history is the
    sequence of steps it took, as if it had been fitted alone.
    """

    def __init__(self, total: int, show: "bool | None" = None, extra: tuple = (),
                 instances: int = 1):
        self.columns = COLUMNS + tuple(extra)
        self.extra_terms = set(extra) - set(COLUMNS)    # extra columns filled from ``terms``
        self.instances = int(instances)
        self.rows = torch.full((total, self.instances, len(self.columns)), float("nan"),
                               dtype=torch.float64)
        self.rows[..., 1: 1 + len(LOSS_TERMS)] = 0.0         # a term a stage lacks reads 0
        self._columns_of: dict = {}
        self.active = torch.zeros(total, self.instances, dtype=torch.bool)
        self.count = 0
        self.diverged = torch.zeros(self.instances, dtype=torch.bool)
        self.bar = progress_bar(total, "fit", "step", show)

    def record(self, loss: torch.Tensor, terms: dict, grad_norm: torch.Tensor,
               active: "torch.Tensor | None" = None, **values) -> torch.Tensor:
        """One row per instance: the loss, its terms (0 where inactive; a term named by an
        extra column goes there), the gradient norm (each a number or ``(instances,)``) and
        ``values`` (floats, by column name), for the
        instances in the boolean mask ``active`` (default all).  Returns the losses as a
        float64 CPU tensor ``(instances,)``."""
        names = [n for n in LOSS_TERMS if n in terms]
        parts = ([loss.detach().reshape(-1)] + [terms[n].detach().reshape(-1) for n in names]
                 + [grad_norm.detach().reshape(-1).to(loss.dtype)])
        stacked = torch.stack(torch.broadcast_tensors(*parts), dim=-1).to("cpu", torch.float64)
        row = self.rows[self.count]
        row[:, self._term_columns(tuple(names))] = stacked
        for name, value in values.items():
            row[:, self.columns.index(name)] = float(value)
        for name in self.extra_terms.intersection(terms):
            row[:, self.columns.index(name)] = terms[name].detach().to("cpu", torch.float64)
        self.active[self.count] = True if active is None else active.cpu()
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)
            if self.count % 25 == 1:
                self.bar.set_postfix(stage=int(values.get("stage", 1)),
                                     loss=f"{float(stacked[:, 0].mean()):.4g}")
        return stacked[:, 0]

    def _term_columns(self, names: tuple) -> list[int]:
        """The columns of the loss, the terms ``names`` and the gradient norm; the other
        terms' columns hold 0 (set when the history starts)."""
        if names not in self._columns_of:
            self._columns_of[names] = ([0] + [self.columns.index(n) for n in names]
                                       + [self.columns.index("grad_norm")])
        return self._columns_of[names]

    def finite_since(self, row: int) -> torch.Tensor:
        """Per instance, whether every loss and gradient norm it recorded from history row
        ``row`` on is finite, ``(instances,)`` bool (the NaN guard's check)."""
        rows = self.rows[row: self.count]
        columns = [0, self.columns.index("grad_norm")]
        finite = torch.isfinite(rows[..., columns]).all(dim=-1) | ~self.active[row: self.count]
        return finite.all(dim=0)

    def drop_since(self, row: int, instances: torch.Tensor) -> None:
        """Take the rows from ``row`` on out of the history of ``instances`` (bool mask):
        those steps were rolled back."""
        self.active[row: self.count, instances.cpu()] = False

    def diverge(self, total: int, index: int = 0) -> str:
        """Flag instance ``index`` as diverged; the message that says so."""
        self.diverged[index] = True
        steps = int(self.active[: self.count, index].sum())
        where = f"measurement {index}: " if self.instances > 1 else ""
        return (f"{where}the fit diverged (non-finite loss or gradient) at step {steps} of "
                f"{total}; the run holds the last finite state")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def history(self, index: int = 0) -> dict[str, np.ndarray]:
        """Instance ``index``'s history as ``name → (steps,)`` arrays."""
        keep = self.active[: self.count, index]
        rows = self.rows[: self.count, index][keep].numpy()
        return {name: rows[:, i] for i, name in enumerate(self.columns)}

    def steps(self, index: int = 0) -> int:
        return int(self.active[: self.count, index].sum())

    def last(self, column: str, index: int = 0) -> float:
        """Instance ``index``'s last recorded value of ``column`` (NaN before any step)."""
        keep = self.active[: self.count, index].nonzero()
        if len(keep) == 0:
            return float("nan")
        return float(self.rows[int(keep[-1]), index, self.columns.index(column)])


class Snapshot:
    """A copy of a module's state (parameters and buffers) that the NaN guard restores."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.saved: "dict[str, torch.Tensor] | None" = None

    def save(self) -> None:
        state = self.module.state_dict()
        same = self.saved is not None and self.saved.keys() == state.keys() and all(
            self.saved[k].shape == v.shape for k, v in state.items())
        if not same:
            self.saved = {k: v.detach().clone() for k, v in state.items()}
            return
        for k, v in state.items():
            self.saved[k].copy_(v.detach())

    def restore(self) -> None:
        if self.saved is not None:
            self.module.load_state_dict(self.saved)



def gradient_norm(parameters) -> torch.Tensor:
    """The global 2-norm of the parameters' gradients (0 if none has one)."""
    grads = [p.grad.detach().flatten() for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.cat(grads).norm()
