"""User-facing errors.

Every mistake a user can make (a missing file, a wrong schema, NaN in a spectrum, an unknown
scene class, an impossible parameter) raises a subclass of :class:`NvbayesError`.  The message
names the problem, the ``hint`` says how to fix it; the command line prints both on one line
and exits with status 2.
"""

from __future__ import annotations


class NvbayesError(ValueError):
    """A problem with the user's input, with a hint on how to fix it."""

    def __init__(self, problem: str, hint: str = ""):
        self.problem = problem
        self.hint = hint
        super().__init__(f"{problem}; {hint}" if hint else problem)


class MeasurementError(NvbayesError):
    """A measurement file or dataset that does not follow ``nvbayes.measurement/1``."""


class ParameterError(NvbayesError):
    """A physical or numerical parameter outside its allowed range."""


class SceneError(NvbayesError):
    """An unknown scene class or a scene that cannot be placed on the grid."""
