"""What the LocalAPI commands share: where ``pytsnet up``'s socket is, and the client over it.

``pytsnet up`` serves its LocalAPI at ``<state dir>/localapi.sock``; the state dir defaults to
``<user config dir>/tsnet-pytsnet`` whatever the program is called (``python -m pytsnet`` and the
``pytsnet`` script find the same node). ``--socket PATH`` reaches any process that enabled one
(``Config(local_api_socket=PATH)``); ``--dir`` names another ``up``'s state dir.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pytsnet.localapi.client import LocalClient

__all__ = ["SOCKET_NAME", "add_socket_args", "client", "default_state_dir", "socket_path"]

SOCKET_NAME = "localapi.sock"


def default_state_dir() -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "tsnet-pytsnet"


def socket_path(args: argparse.Namespace) -> Path:
    if getattr(args, "socket", None):
        return Path(args.socket)
    return Path(getattr(args, "dir", None) or default_state_dir()) / SOCKET_NAME


def add_socket_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", default=None, help=f"LocalAPI socket (default: <state dir>/{SOCKET_NAME})")
    p.add_argument("--dir", default=None, help="state dir of the `pytsnet up` to ask")


def client(args: argparse.Namespace) -> LocalClient:
    return LocalClient.unix(str(socket_path(args)))
