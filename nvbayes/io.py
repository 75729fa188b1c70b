"""Measurements in and out, for scripts: the public names of :mod:`nvbayes.data.io` and
:mod:`nvbayes.data.lab` in one place.

>>> import numpy as np
>>> from nvbayes.io import from_arrays
>>> data = from_arrays(np.ones((4, 3, 5)), np.linspace(1.0, 3.0, 4), spacing_nm=20.0,
...                    standoff_nm=20.0, linewidth_ghz=0.5)
>>> dict(data.sizes)
{'freq': 4, 'y': 3, 'x': 5}
"""

from nvbayes.data.io import read_measurement, validate_measurement, write_netcdf
from nvbayes.data.lab import FORMATS, from_arrays, lab_measurement, read_arrays

__all__ = ["FORMATS", "from_arrays", "lab_measurement", "read_arrays", "read_measurement",
           "validate_measurement", "write_netcdf"]
