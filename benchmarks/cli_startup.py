"""Start-up time of the command line: ``nvbayes --help`` and ``nvbayes fit --help``, the median
of several runs in fresh processes, and which heavy packages ``import nvbayes.cli`` loads.

    python benchmarks/cli_startup.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def median_seconds(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    exe = shutil.which("nvbayes") or str(Path(sys.executable).parent / "nvbayes")
    for command in ([exe, "--help"], [exe, "fit", "--help"],
                    [sys.executable, "-c", "import nvbayes.cli"]):
        shown = " ".join(Path(command[0]).name if i == 0 else c for i, c in enumerate(command))
        print(f"{shown:45s} median {median_seconds(command, args.repeats):.3f} s "
              f"over {args.repeats} runs")
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, nvbayes.cli; print(sorted(m for m in ('torch', "
         "'pyro', 'arviz', 'matplotlib', 'xarray', 'scipy', 'numpy') if m in sys.modules))"],
        check=True, capture_output=True, text=True).stdout.strip()
    print(f"heavy packages loaded by 'import nvbayes.cli': {loaded}")


if __name__ == "__main__":
    main()
