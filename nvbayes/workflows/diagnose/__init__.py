"""The centre-collapse mechanism (paper section 5.3, appendices C.2–C.3, D.6, E.5).

:mod:`.geometry` (iter-0 gradient, rings, energy barrier), :mod:`.update` (realized first step
and the parameterization kernel), :mod:`.budget` (fixed-budget fits, ADMM sweep) and
:mod:`.report` (``nvbayes diagnose``: the dataset, its table and figures).
"""

from .report import diagnose, write_diagnostics

__all__ = ["diagnose", "write_diagnostics"]
