"""Book-keeping shared by the MAP solvers: the per-step history, the progress bar, and the
NaN guard's snapshot of the last finite state."""

from __future__ import annotations

import numpy as np
import torch

from ..progress import progress_bar
from ..spec import LOSS_TERMS

#: History columns every solver writes; solvers may add their own after these.
COLUMNS = ("loss",) + LOSS_TERMS + ("grad_norm", "lr", "beta", "stage")


class Recorder:
    """Rows of ``COLUMNS + extra`` for at most ``total`` steps, and a progress bar.

    A row costs one device-to-host copy (the tensors are stacked first).
    """

    def __init__(self, total: int, show: "bool | None" = None, extra: tuple = ()):
        self.columns = COLUMNS + tuple(extra)
        self.rows = torch.full((total, len(self.columns)), float("nan"), dtype=torch.float64)
        self.count = 0
        self.diverged = False
        self.bar = progress_bar(total, "fit", "step", show)

    def record(self, loss: torch.Tensor, terms: dict, grad_norm: torch.Tensor, **values) -> None:
        """One row: the loss, its terms (0 where inactive), the gradient norm and ``values``
        (floats or 0-d tensors, by column name)."""
        zero = loss.new_zeros(())
        tensors = [loss] + [terms.get(n, zero) for n in LOSS_TERMS] + [grad_norm]
        row = self.rows[self.count]
        row[: len(tensors)] = torch.stack([t.detach().to(loss.dtype) for t in tensors]).to(
            "cpu", torch.float64)
        for name, value in values.items():
            row[self.columns.index(name)] = float(value)
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)
            if self.count % 25 == 1:
                self.bar.set_postfix(stage=int(values.get("stage", 1)),
                                     loss=f"{float(row[0]):.4g}")

    def diverge(self, total: int) -> str:
        """Flag the fit as diverged; the message that says so."""
        self.diverged = True
        return (f"the fit diverged (non-finite loss or gradient) at step {self.count} of "
                f"{total}; the run holds the last finite state")

    def close(self) -> dict[str, np.ndarray]:
        """Close the bar; the history as ``name → (steps,)`` arrays."""
        if self.bar is not None:
            self.bar.close()
        rows = self.rows[: self.count].numpy()
        return {name: rows[:, i] for i, name in enumerate(self.columns)}

    @property
    def final_loss(self) -> float:
        return float(self.rows[self.count - 1, 0]) if self.count else float("nan")


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
