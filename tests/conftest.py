"""Shared test set-up: under pytest-xdist each worker process gets its share of the cores
for torch's intra-op threads, so that N workers do not each start one thread per core."""

import os

import torch

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
