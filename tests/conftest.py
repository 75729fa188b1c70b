"""Shared test set-up: under pytest-xdist each worker process gets its share of the cores
for torch's intra-op threads, so that N workers do not each start one thread per core."""

import os
import re
from importlib.resources import files
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture
def model_file(tmp_path):
    """``model_file(name, steps)``: a copy of a shipped model file with other stage lengths
    (one number for every stage, or one per stage) and the same objective; its path."""
    def write(name: str, steps) -> Path:
        text = (files("nvbayes") / "models" / f"{name}.toml").read_text()
        found = re.findall(r"^steps = \d+$", text, flags=re.M)
        lengths = [steps] * len(found) if isinstance(steps, int) else list(steps)
        for old, new in zip(found, lengths, strict=True):
            text = text.replace(old, f"steps = {new}", 1)
        path = tmp_path / f"{name}-{'-'.join(map(str, lengths))}.toml"
        path.write_text(text.replace(f'name = "{name}"', f'name = "{path.stem}"'))
        return path
    return write
