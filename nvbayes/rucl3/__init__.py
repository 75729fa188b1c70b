"""The α-RuCl3 relaxometry workflow (paper §5.5, appendix E.8).

``spec`` reads ``models/rucl3.toml``; ``data`` the per-NV files; ``analysis`` the depth,
slope and landscape steps; ``fit`` samples the Gaussian-ansatz model and writes a run folder;
``figures`` draws them.  Data flow: physics → model → inference → this package → cli.
"""

from .data import load_nv_data, read_nv_data, synthetic_data, write_nv_data
from .spec import AnsatzSpec, load_ansatz

__all__ = ["AnsatzSpec", "load_ansatz", "load_nv_data", "read_nv_data", "synthetic_data",
           "write_nv_data"]
