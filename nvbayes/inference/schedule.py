"""Per-stage schedules of the curriculum (appendix D.2–D.3).

Within a stage of ``T`` steps, step ``t = 0 … T−1`` uses

    β_t  = K · (t + 1) / T                                   (Algorithm 1: β ← K·t/T, t = 1 … T)
    η_t  = η · (f + (1 − f) · (1 + cos(π t / T)) / 2)         cosine from η towards f·η

with ``f`` the final learning-rate fraction (0.01 in the paper).
"""

from __future__ import annotations

import math


def annealing_progress(step: int, steps: int, octaves: int, anneal: bool = True) -> float:
    """β for ``step`` (0-based) of a stage of ``steps`` steps; reaches K at the last step
    (``anneal=False``: K throughout, the stage keeps every octave the last one opened)."""
    return octaves * (step + 1) / steps if anneal else float(octaves)


def cosine_lr(step: int, steps: int, lr: float, final_fraction: float) -> float:
    """Cosine-annealed learning rate, ``lr`` at step 0 and ``final_fraction · lr`` at ``steps``."""
    cos = 0.5 * (1.0 + math.cos(math.pi * step / steps))
    return lr * (final_fraction + (1.0 - final_fraction) * cos)
