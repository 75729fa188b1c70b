#!/usr/bin/env bash
# GPU checks of the physics core, for a machine with CUDA and a torch that sees it:
# the device tests, then the F2 step timing on the GPU and on its CPU.  Writes to ${OUT:-runs}.
set -uo pipefail
out=${OUT:-runs}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" \
  | tee -a "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_device.py tests/test_operators.py \
  tests/test_kernels.py 2>&1 | tee "$out/pytest.txt"
python3 - <<'PY' 2>&1 | tee "$out/f2-step.txt"
import statistics, sys
sys.path.insert(0, "benchmarks")
from physics import time_f2_step
for device in ("cuda", "cpu"):
    for n in (32, 64):
        t = time_f2_step(n, 7, device)
        print(f"F2 + log-MSE fwd+bwd {n}x{n}x50 float32 on {device}: median {statistics.median(t):.3f} ms"
              f" ({', '.join(f'{x:.3f}' for x in t)})")
PY
