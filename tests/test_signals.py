"""A real SIGINT or SIGTERM to a running command: complete files or none, one line that says
how to go on, and a benchmark that resumes where it stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr

from nvbayes.data.io import write_netcdf
from nvbayes.data.scenes import SimulationSettings, simulate
from nvbayes.physics.geometry import Grid

ENV = dict(os.environ, CI="true", OMP_NUM_THREADS="1")


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nvbayes.cli", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("the command never got there")
        time.sleep(0.05)


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.name.endswith((".tmp", ".old"))]


@pytest.fixture
def measurement(tmp_path):
    path = tmp_path / "m.nc"
    write_netcdf(simulate("few/far", 0, SimulationSettings(grid=Grid(16))), path)
    return path


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated")])
def test_a_stopped_fit_writes_nothing_and_says_so(measurement, tmp_path, model_file, sig,
                                                  code, word):
    out = tmp_path / "run"
    model = model_file("netmy-fast", 200_000)          # far longer than the test waits
    proc = _start("fit", str(measurement), "--model", str(model), "--out", str(out))
    time.sleep(4.0)                       # into the fit: it runs for minutes from here
    assert proc.poll() is None
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and word in lines[0] and "rerun the same command" in lines[0]
    assert "Traceback" not in err
    assert not out.exists() and not _temporaries(tmp_path)


def test_a_terminated_benchmark_keeps_its_cells_and_resumes(tmp_path, model_file):
    out = tmp_path / "bench"
    model = model_file("tikhonov", 1500)
    args = ("benchmark", "--classes", "few/far", "--per-class", "4", "--grid", "16",
            "--models", str(model), "--operators", "F2", "--seeds", "0", "--out", str(out))
    proc = _start(*args)
    cells = out / "cells"
    _wait_for(lambda: proc.poll() is not None or (cells.is_dir() and any(cells.glob("*.nc"))))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    kept = sorted(cells.glob("*.nc"))
    assert proc.returncode == 143, err
    assert "resume" in err.strip().splitlines()[-1] and "Traceback" not in err
    assert 1 <= len(kept) < 4 and not _temporaries(tmp_path)
    stamps = {p.name: p.stat().st_mtime_ns for p in kept}
    for path in kept:                                   # every kept cell is complete
        xr.open_dataset(path).close()
    done = subprocess.run([sys.executable, "-m", "nvbayes.cli", *args], env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert len(list(cells.glob("*.nc"))) == 4 and (out / "results.nc").is_file()
    assert {p.name: p.stat().st_mtime_ns for p in kept} == stamps   # not fitted again


PROBE = '''
import sys
import nvbayes.cli as cli

def run(argv):   # Ctrl-C arrives while code built by exec() of a string runs, as it does while
    exec("import os, signal\\nos.kill(os.getpid(), signal.SIGINT)\\nfor _ in range(10**6): pass")
    return 0     # torch imports torch._dynamo (its dataclasses) lazily in the first fit

cli._run = run
sys.exit(cli.main(["fit", "m.nc"]))
'''


def test_ctrl_c_inside_exec_code_still_exits_130(tmp_path):
    """CPython kills the process with SIGINT at exit (status -2) when a bare KeyboardInterrupt
    left exec()'d code, even though main caught it; the CLI's own exception type avoids that."""
    (tmp_path / "ctrl_c_probe.py").write_text(PROBE)
    env = dict(ENV, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    done = subprocess.run([sys.executable, "-m", "ctrl_c_probe"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == [
        "nvbayes: interrupted; no output was written, rerun the same command to start again"]
