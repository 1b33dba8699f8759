"""``python -m pytsnet`` / ``pytsnet``: argparse subcommands discovered from ``pytsnet.commands``.

Each module in ``pytsnet/commands/`` exposes ``register(subparsers)`` which adds its parser and
sets ``func`` (``args -> exit code``); adding a command is adding a file, cli.py never changes.
Here live what every command shares: ``--version``, one-line errors for the typed errors a user can
cause (exit 2), and a quiet exit when stdout is a closed pipe (``pytsnet localnet nodes list | head``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from pytsnet import __version__, commands
from pytsnet.errors import PytsnetError
from pytsnet.localnet.store import NoLocalnetDatabase

USER_ERRORS: tuple[type[BaseException], ...] = (PytsnetError, NoLocalnetDatabase)
"""Errors that are the user's input, not a bug: printed as one line, exit 2."""

EXIT_USER_ERROR = 2
EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE: what a C tool killed by a closed pipe reports."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pytsnet", description="pytsnet: an embeddable Tailscale node")
    parser.add_argument("--version", action="version", version=f"pytsnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = int(args.func(args) or 0)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``| head``): not an error worth a traceback. Point stdout at
        # /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except USER_ERRORS as e:
        print(f"pytsnet: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    return rc


if __name__ == "__main__":
    sys.exit(main())
