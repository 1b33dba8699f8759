"""``pytsnet version [--daemon]``: this CLI's version, or the running node's (``tailscale version``)."""

from __future__ import annotations

import argparse

from pytsnet import __version__
from pytsnet.commands.localapi_socket import add_socket_args, client


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("version", help="print the version")
    p.add_argument("--daemon", action="store_true", help="the running node's version (over its socket)")
    add_socket_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(client(args).status(peers=False).Version if args.daemon else __version__)
    return 0
