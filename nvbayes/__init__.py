"""nvbayes: probabilistic inference for NV-centre noise sensing (the NeTMY paper)."""

__version__ = "0.1.0"
