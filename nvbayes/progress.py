"""Progress bars that show on a terminal and stay quiet in CI and in pipes."""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def show_progress() -> bool:
    """True when standard error is a terminal and the ``CI`` variable is unset or false."""
    ci = os.environ.get("CI", "").strip().lower()
    return sys.stderr.isatty() and ci in ("", "0", "false", "no")


def progress(iterable: Iterable[T], total: "int | None" = None, desc: str = "") -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm bar when :func:`show_progress`, else return it unchanged."""
    if not show_progress():
        return iterable
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)


def progress_bar(total: int, desc: str = "", unit: str = "it", show: "bool | None" = None):
    """A manually updated tqdm bar (with an ETA), or ``None`` where bars stay quiet.

    ``show`` overrides :func:`show_progress` when given.
    """
    if not (show_progress() if show is None else show):
        return None
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
