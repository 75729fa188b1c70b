#!/usr/bin/env bash
# Throughput checks on a CUDA machine (issue 9), in two parts that each fit in one command:
#
#   scripts/device-throughput.sh bench    the paper preset's 512-sample F2 benchmark
#                                         (8 classes x 64, data by F3), batched, bf16
#   scripts/device-throughput.sh checks   GPU tests, benchmarks/throughput.py on cuda, and
#                                         fp32 against bf16 at the paper preset
#
# Python packages the image lacks travel as wheels in .whl (see the device README); results go
# to ${OUT:-runs}.  BENCH_LIMIT (s) bounds the benchmark; it is resumable, and on a timeout the
# report is written from the cells finished so far.  PER_CLASS, PRESET, DEVICE, BATCH and
# PRECISION override the benchmark's settings (e.g. for a dry run on a CPU).
set -uo pipefail
out=${OUT:-runs}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, pyro, arviz, netCDF4; print('torch', torch.__version__, \
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA', 'pyro', pyro.__version__, 'arviz', arviz.__version__)" \
  | tee -a "$out/gpu.txt" || exit 1

case "${1:-bench}" in
bench)
  folder=runs/gpu-paper-512
  args=(--classes all --per-class "${PER_CLASS:-64}" --models netmy --preset "${PRESET:-paper}"
        --operators F2 --seeds 0 --device "${DEVICE:-cuda}" --batch "${BATCH:-128}"
        --precision "${PRECISION:-bf16}" --out "$folder")
  start=$(date +%s)
  timeout "${BENCH_LIMIT:-470}" python3 -m nvbayes.cli benchmark "${args[@]}" 2>&1 \
    | tee "$out/bench.log"
  echo "benchmark wall time: $(( $(date +%s) - start )) s" | tee -a "$out/bench.log"
  if [ ! -f "$folder/summary.md" ]; then
    python3 -m nvbayes.cli benchmark "${args[@]}" --report-only 2>&1 | tee -a "$out/bench.log"
  fi
  cp "$folder/summary.md" "$folder/results.nc" "$folder/benchmark.toml" "$out/" 2>/dev/null
  ;;
checks)
  python3 -m pytest -q -p no:cacheprovider tests/test_device.py tests/test_batched.py 2>&1 \
    | tee "$out/pytest.txt"
  # the command line end to end on the GPU: a data set of 4, fitted as one batch in bf16
  python3 -m nvbayes.cli simulate --classes all --samples 4 --out runs/gpu-set.nc &&
    python3 -m nvbayes.cli fit runs/gpu-set.nc --model netmy-fast --device cuda \
      --precision bf16 --batch 4 --out runs/gpu-fits 2>&1 | tee "$out/cli.txt" &&
    cat runs/gpu-fits/fits.csv | tee -a "$out/cli.txt"
  python3 benchmarks/throughput.py --device cuda --presets netmy,netmy-fast \
    --batch-presets netmy --batches "${BATCHES:-1,16,64,128,256}" --repeats 3 --steps 200 \
    --out "$out/throughput-cuda.md" 2>&1 | tail -n 30
  python3 benchmarks/fit_tradeoffs.py --model netmy --samples 16 --batch 16 --device cuda \
    --variants fp32,bf16,bf16+stop500:1e-3 --out "$out/tradeoffs-cuda.md" 2>&1 | tail -n 12
  ;;
esac
