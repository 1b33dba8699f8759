"""``pytsnet logout``: log the node out (its key is expired at control; ``tailscale logout``)."""

from __future__ import annotations

import argparse

from pytsnet.commands.localapi_socket import add_socket_args, client


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("logout", help="log the node out of the tailnet")
    add_socket_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    client(args).logout()
    return 0
