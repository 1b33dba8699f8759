"""``pytsnet down``: stop a ``pytsnet up`` (Go: ``WantRunning=false`` through ``PATCH prefs``;
``up`` answers by stopping its node and exiting). An embedded node refuses: it stops with its app."""

from __future__ import annotations

import argparse

from pytsnet.commands.localapi_socket import add_socket_args, client
from pytsnet.localapi.server import MaskedPrefs


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("down", help="stop the `pytsnet up` node")
    add_socket_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    client(args).edit_prefs(MaskedPrefs(WantRunningSet=True, WantRunning=False))
    return 0
