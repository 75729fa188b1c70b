"""nvbayes: probabilistic inference for NV-centre noise sensing (the NeTMY paper).

``nvbayes.fit(measurement, model="netmy", method="map", ...)`` fits one measurement and
returns a :class:`nvbayes.results.run.Run`; ``nvbayes.fit_samples(data, ..., batch=8)`` fits
the samples of a data set in batches, one run each; the command line is ``nvbayes`` (see
``nvbayes --help``).  The layers, from physics up to the command line, are described in
``docs/architecture.md``.

Importing ``nvbayes`` loads nothing heavy: ``fit`` and ``fit_samples`` load torch and Pyro on
first use, so ``nvbayes --help`` answers at once.

>>> import nvbayes
>>> run = nvbayes.fit("runs/scene.nc", model="netmy-fast")      # doctest: +SKIP
>>> run.save("runs/scene-netmy-fast")                            # doctest: +SKIP
"""

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nvbayes")
except PackageNotFoundError:          # a source tree that was never installed
    __version__ = "0+unknown"

#: Public names loaded on first use, and the module that defines each.
_LAZY = {"fit": "nvbayes.workflows.fit", "fit_samples": "nvbayes.workflows.fit"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nvbayes' has no attribute {name!r}")


__all__ = ["__version__", "fit", "fit_samples"]
