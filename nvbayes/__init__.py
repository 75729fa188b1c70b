"""nvbayes: probabilistic inference for NV-centre noise sensing (the NeTMY paper).

``nvbayes.fit(measurement, model="netmy", method="map", ...)`` fits one measurement and
returns a :class:`nvbayes.run.Run`; ``nvbayes.fit_samples(data, ..., batch=8)`` fits the
samples of a data set in batches, one run each; the command line is ``nvbayes`` (see
``nvbayes --help``).
"""

__version__ = "0.1.0"


def fit(*args, **kwargs):
    """Fit one measurement; see :func:`nvbayes.api.fit`."""
    from .api import fit as _fit

    return _fit(*args, **kwargs)


def fit_samples(*args, **kwargs):
    """Fit several samples in batches; see :func:`nvbayes.api.fit_samples`."""
    from .api import fit_samples as _fit_samples

    return _fit_samples(*args, **kwargs)


__all__ = ["__version__", "fit", "fit_samples"]
