"""Figures, on matplotlib's object-oriented API: every function builds its own ``Figure``
(never through pyplot), or draws into the ``ax=`` it is given and returns it, so nothing here
registers figures with pyplot or changes the user's backend.

:mod:`.imaging` (measurements, runs, posteriors, coverage), :mod:`.benchmark`,
:mod:`.diagnostics` (section 5.3) and :mod:`.rucl3` (α-RuCl3).
"""

from __future__ import annotations

from matplotlib.figure import Figure

from nvbayes.data.io import write_with
from nvbayes.results.run import FIGURE_DPI

#: Keyword arguments of ``Figure.subplots`` (the rest go to ``Figure``).
_SUBPLOT_KEYS = ("sharex", "sharey", "squeeze", "width_ratios", "height_ratios",
                 "subplot_kw", "gridspec_kw")


def subplots(nrows: int = 1, ncols: int = 1, **kwargs):
    """``(Figure, axes)`` as ``pyplot.subplots`` gives them, without pyplot: the figure is
    not registered with any backend and is freed with its last reference."""
    grid = {k: kwargs.pop(k) for k in _SUBPLOT_KEYS if k in kwargs}
    fig = Figure(**kwargs)
    return fig, fig.subplots(nrows, ncols, **grid)


def new_axes(ax=None, figsize=(7, 5)):
    """``ax``, or the single axes of a new constrained-layout figure of ``figsize``."""
    return ax if ax is not None else subplots(figsize=figsize, layout="constrained")[1]


def save_figure(fig: Figure, path, dpi: int = FIGURE_DPI) -> None:
    """Write ``fig`` as PNG atomically."""
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


__all__ = ["Figure", "new_axes", "save_figure", "subplots"]
