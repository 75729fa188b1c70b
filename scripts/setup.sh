#!/usr/bin/env bash
# Create .venv with the local CPU build of torch 2.13.0 and nvbayes (editable) with its test,
# Dask and lint extras.
# Never pulls a CUDA build: torch is pinned and installed first, everything else accepts it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[test,dask,lint]'
