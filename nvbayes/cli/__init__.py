"""The ``nvbayes`` command line: one module per command, loaded only when it runs.

Every user mistake ends in one line on standard error, ``nvbayes: error: <problem>; <fix>``,
exit status 2, and no output file.  ``nvbayes --help`` imports none of the numerical stack: the
parser of a command is built (and its module imported) only when that command is named.

One vocabulary across commands: ``--model``/``--models`` name model files, ``--method`` the
inference method, ``--operator``/``--operators`` the likelihood's operator, ``--simulator`` the
operator that simulates data, ``--data-seed`` the seed of simulated data and ``--seed``/
``--seeds`` the seed of a fit.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from nvbayes import __version__
from nvbayes.errors import NvbayesError

#: Command → one-line summary; the module ``nvbayes.cli.<command>`` defines
#: ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args)``.
COMMANDS = {
    "simulate": "simulate measurements of synthetic scenes",
    "import": "read a lab file (npz, h5, mat, csv) into a measurement",
    "fit": "fit a measurement and write a run folder",
    "train": "train a supervised baseline (U-Net, GAN, hybrid) on simulated pairs",
    "calibrate": "coverage of credible intervals on seeded synthetic scenes",
    "sbc": "simulation-based calibration of the generative posterior",
    "benchmark": "models x operators x samples x seeds, resumable",
    "ablate": "NeTMY ablations (Table 3) and hyperparameter sweeps (Table 10)",
    "diagnose": "centre-collapse mechanism: iter-0 gradient, first step, barrier",
    "rucl3": "α-RuCl3 relaxometry: Gaussian-ansatz HMC, depths, slopes, landscape",
    "plot": "draw a measurement or redraw a run's figure",
}
#: Commands whose module is not named after them (``import`` is a Python keyword).
MODULES = {"import": "importing"}
#: Commands whose interruption keeps finished work (they resume).
RESUMABLE = ("benchmark", "ablate", "calibrate", "sbc", "train")


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line (exit status 2)."""

    def error(self, message):
        self.exit(2, f"nvbayes: error: {message}; see '{self.prog} --help'\n")


def build_parser(command: "str | None" = None) -> argparse.ArgumentParser:
    """The parser, with the arguments of ``command`` (and its module imported) if given."""
    parser = Parser(prog="nvbayes", description="Probabilistic inversion of NV noise spectra.")
    parser.add_argument("--version", action="version", version=f"nvbayes {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, summary in COMMANDS.items():
        if name != command:
            sub.add_parser(name, help=summary)
            continue
        module = importlib.import_module(f"nvbayes.cli.{MODULES.get(name, name)}")
        p = sub.add_parser(name, help=summary, description=module.DESCRIPTION)
        module.add_arguments(p)
        p.set_defaults(handler=module.run)
    return parser


def _command(argv: list[str]) -> "str | None":
    """The command named in ``argv`` (its first word that is not an option)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT), raised where the process is, so that atomic writes clean up.

    A subclass, not ``KeyboardInterrupt`` itself: when a bare ``KeyboardInterrupt`` leaves code
    run by ``exec`` of a string (dataclasses and namedtuples build their methods so, for
    instance while torch imports ``torch._dynamo`` lazily), CPython marks it unhandled and kills
    the process with SIGINT at exit even after it was caught, so the exit status would be -2
    instead of 130.  CPython checks the exception's exact type; a subclass is not marked.
    """


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that atomic writes clean up as on Ctrl-C."""


#: Signal → the exception it raises in the main thread while a command runs.
STOPS = {signal.SIGINT: Interrupted, signal.SIGTERM: Terminated}


def _stop(signum, frame):
    raise STOPS[signum]()


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command(argv)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, _stop) for signum in STOPS}
    try:
        return _run(argv)
    except KeyboardInterrupt as stop:
        what = "terminated" if isinstance(stop, Terminated) else "interrupted"
        if command in RESUMABLE:
            print(f"nvbayes: {what}; the finished fits are kept, rerun the same command "
                  "to resume", file=sys.stderr)
        else:
            print(f"nvbayes: {what}; no output was written, rerun the same command to start "
                  "again", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run(argv: list[str]) -> int:
    try:
        args = build_parser(_command(argv)).parse_args(argv)
    except SystemExit as stop:          # --help, --version (0) or a usage error (2)
        return stop.code
    try:
        args.handler(args)
    except NvbayesError as exc:
        print(f"nvbayes: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:             # the reader of stdout has gone (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


__all__ = ["COMMANDS", "Parser", "build_parser", "main"]
