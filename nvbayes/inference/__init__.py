"""Inference: from a model and a measurement to point estimates or posteriors."""

from .map import FieldGuide, MapResult, fit_map, traced_objective
from .scale import scale_correction

__all__ = ["FieldGuide", "MapResult", "fit_map", "scale_correction", "traced_objective"]
