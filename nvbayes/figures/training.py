"""The loss curves of a supervised training (``history.nc`` of ``nvbayes train``)."""

from __future__ import annotations

import xarray as xr

from nvbayes.figures import new_axes


def plot_history(history: xr.Dataset, ax=None):
    """Training and validation loss per epoch, on a log scale; returns ``ax``."""
    ax = new_axes(ax, figsize=(6, 4))
    epoch = history["epoch"].values
    ax.plot(epoch, history["train_loss"].values, label="training", color="tab:blue")
    ax.plot(epoch, history["val_loss"].values, label="validation", color="tab:orange")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("L_pix + w_phys L_phys")
    attrs = history.attrs
    ax.set_title(f"{attrs.get('model', '')} trained on {attrs.get('train_set', '')} scenes "
                 f"({attrs.get('pairs', '?')} pairs)")
    ax.legend()
    return ax


__all__ = ["plot_history"]
