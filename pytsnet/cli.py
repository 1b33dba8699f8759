"""``python -m pytsnet`` / ``pytsnet``: argparse subcommands discovered from ``pytsnet.commands``.

Each module in ``pytsnet/commands/`` exposes ``register(subparsers)`` which adds its parser and
sets ``func`` (``args -> exit code``); adding a command is adding a file, cli.py never changes.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from pytsnet import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pytsnet", description="pytsnet: an embeddable Tailscale node")
    sub = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
