"""nvbayes: probabilistic inference for NV-centre noise sensing (the NeTMY paper).

``nvbayes.fit(measurement, model="netmy", method="map", ...)`` fits one measurement and
returns a :class:`nvbayes.run.Run`; the command line is ``nvbayes`` (see ``nvbayes --help``).
"""

__version__ = "0.1.0"


def fit(*args, **kwargs):
    """Fit one measurement; see :func:`nvbayes.api.fit`."""
    from .api import fit as _fit

    return _fit(*args, **kwargs)


__all__ = ["__version__", "fit"]
